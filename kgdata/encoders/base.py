"""The encoder protocol, the registry, devices and the rules for finding pretrained weights.

An encoder is one class: a ``name``, a ``modality``, keyword-only ``__init__`` options with their
defaults, ``load(device)`` (heavy: builds the model and reads weights) then ``dim`` and
``encode(batch) -> Tensor (B, dim)``. Options that change the output are recorded (``spec``) and
hashed with the inputs; runtime-only ones (``download``) are not.

Weights are never downloaded unless the user passes ``--download`` (``download=True``), and never
while ``HF_HUB_OFFLINE`` is set. Missing weights raise :class:`WeightsNotFoundError` at once.
"""

from __future__ import annotations

import inspect
import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from kgdata.errors import ImfError

#: name → encoder class. ``hf:<id-or-path>`` resolves through :data:`PREFIXES`.
REGISTRY: dict[str, type["Encoder"]] = {}
#: prefix → encoder class whose ``model`` option is the rest of the id (``hf:bert-base-cased``).
PREFIXES: dict[str, type["Encoder"]] = {}
#: The offline default encoder of each modality.
DEFAULT_ENCODERS = {"text": "minilm", "image": "efficientnet-lite0", "structure": "gat"}


class WeightsNotFoundError(ImfError):
    """Pretrained weights are not on this machine and may not be downloaded."""


class Encoder(ABC):
    """Base class of all encoders; see the module docstring for the protocol."""

    name: ClassVar[str]
    modality: ClassVar[str]
    #: Items per batch when the caller gives none, on a GPU and on the CPU. On the CPU, small batches
    #: keep activations below glibc's mmap threshold, which saves page faults (sys time) per batch.
    default_batch_size: ClassVar[int] = 64
    cpu_batch_size: ClassVar[int] = 16
    #: Options that do not change the output, left out of :attr:`spec` and the input hash.
    runtime_options: ClassVar[frozenset[str]] = frozenset({"download"})

    def __init__(self, **options: Any):
        self.options = options
        self.device = torch.device("cpu")

    @property
    def id(self) -> str:
        """The encoder id stored with the features (the registry name, or ``prefix:model``)."""
        return self.name

    @property
    def spec(self) -> dict:
        """The id and every output-relevant option: what the input hash covers."""
        options = {k: v for k, v in sorted(self.options.items()) if k not in self.runtime_options}
        return {"encoder": self.id, **options}

    def batch_size_for(self, device: torch.device) -> int:
        return self.default_batch_size if device.type == "cuda" else self.cpu_batch_size

    @property
    @abstractmethod
    def dim(self) -> int:
        """Output dimension (known after :meth:`load` for encoders that read it from a config)."""

    @abstractmethod
    def load(self, device: torch.device) -> None:
        """Build the model on ``device``; raise :class:`WeightsNotFoundError` if weights are missing."""

    @abstractmethod
    def encode(self, batch: Any) -> torch.Tensor:
        """Encode one batch into a float tensor of shape ``(len(batch), dim)``."""

    @classmethod
    def option_names(cls) -> list[str]:
        parameters = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.spec.items() if k != "encoder")
        return f"{type(self).__name__}({self.id!r}{', ' if options else ''}{options})"


def register(cls: type[Encoder]) -> type[Encoder]:
    """Class decorator: add an encoder to the registry under ``cls.name``."""
    REGISTRY[cls.name] = cls
    return cls


def register_prefix(prefix: str):
    def decorate(cls: type[Encoder]) -> type[Encoder]:
        PREFIXES[prefix] = cls
        return cls

    return decorate


def available(modality: str | None = None) -> list[str]:
    """Registered encoder names (of one modality), plus ``prefix:`` families, e.g. ``hf:``."""
    names = [n for n, c in REGISTRY.items() if modality is None or c.modality == modality]
    names += [f"{p}:" for p, c in PREFIXES.items() if modality is None or c.modality == modality]
    return names


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


#: Encoder options that ``imf encode`` offers as flags; an error lists only these, since the others
#: (``heads``, ``layers``, ``max_length``, ``normalize``) are left at the encoder's defaults there.
FLAG_OPTIONS = frozenset({"pooling", "weights", "download", "dim", "epochs", "lr", "margin", "negatives", "seed"})


def create_encoder(name: str, modality: str | None = None, **options: Any) -> Encoder:
    """Instantiate an encoder by registry name (or ``prefix:rest``) with only the options it accepts.

    Raises :class:`ImfError` for an unknown name, a modality mismatch or an option that does not apply.
    """
    cls = REGISTRY.get(name)
    if cls is None and ":" in name:
        prefix, rest = name.split(":", 1)
        cls = PREFIXES.get(prefix)
        if cls is not None:
            if not rest:
                raise ImfError(f"encoder {name!r} needs a model after '{prefix}:' (a hub id or a directory)")
            options = {**options, "model": rest}
    if cls is None:
        known = ", ".join(available(modality)) or "none"
        raise ImfError(f"unknown encoder {name!r}" + (f" for {modality}" if modality else "") + f"; known: {known}")
    if modality is not None and cls.modality != modality:
        raise ImfError(
            f"encoder {name!r} encodes {cls.modality}, not {modality}; use --modality {cls.modality} "
            f"or one of: {', '.join(available(modality))}"
        )
    accepted = set(cls.option_names())
    for option in options:
        if option not in accepted:
            shown = ", ".join(_flag(o) for o in sorted(accepted & FLAG_OPTIONS)) or "none"
            raise ImfError(f"option {_flag(option)} does not apply to encoder {name!r} (its options: {shown})")
    return cls(**options)


# ------------------------------------------------------------------------------------ runtime
def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ImfError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ImfError(f"unknown device {device!r}; expected auto, cpu or cuda")
    return torch.device(device)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device`` (the CPU: ``MemAvailable``), or None when unknown."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except RuntimeError:
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def format_bytes(count: float) -> str:
    """``16.0 PB``, ``22.0 GB``, ``512 B``: decimal units; from 1,000 PB a power of ten, ``10^302 B``
    (a size typed with 300 digits overflowed a float division here)."""
    if count >= 1000**6:
        return f"10^{len(str(int(count))) - 1} B"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000:
            return f"{int(count)} B" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1000
    return f"{count:,.1f} PB"


def require_memory(needed: int, device: torch.device, asked: str, advice: str) -> None:
    """Refuse work that needs more memory than ``device`` has free, before allocating any of it.

    Allocating it would fail with an opaque error or, worse, get the process killed by the kernel's
    out-of-memory killer without a word. ``asked`` names what was asked for (``model.dim 100000``).
    """
    available = available_memory(device)
    if available is not None and needed > available:
        raise ImfError(
            f"{asked} needs about {format_bytes(needed)} of memory, but {device} has {format_bytes(available)} free; "
            f"{advice}"
        )


def configure_threads(count: int | None = None) -> int:
    """Use ``count`` threads for intra-op parallelism, by default every CPU this process may run on
    (cgroup/affinity aware)."""
    if count is not None:
        torch.set_num_threads(count)
        return torch.get_num_threads()
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    if count > 0 and torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return torch.get_num_threads()


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network access."""
    return any(
        os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def may_download(download: bool) -> bool:
    return bool(download) and not offline()


def download_refusal(download: bool) -> str:
    if download and offline():
        return "downloads are off (HF_HUB_OFFLINE is set)"
    return "downloads are off (pass --download to allow one)"
