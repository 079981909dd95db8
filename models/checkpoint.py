"""Checkpoint files: plain dicts of tensors and primitives that load with ``torch.load(weights_only=True)``.

A checkpoint holds the model's ``state_dict``, the sizes that rebuild the model (``model_args``), the
resolved config as a plain dict, the optimizer and scheduler states, the loop counters and every RNG
state. RNG states are stored as tensors and ints; numpy arrays and Python's state tuple are converted
first. The frozen feature matrices are not stored: the feature files are their record, and a
checkpoint carries their hashes (``feature_hashes``). A model in ``"project"`` feature mode needs them
to score, so :func:`load_checkpoint` takes them.
"""

from __future__ import annotations

import hashlib
import re
import stat
import random
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.atomic import torch_short_write, write_atomically
from models.config import ConfigError, RunConfig
from models.imf import IMF, build_model

FORMAT = "imf-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("model", "model_args", "config")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or not an IMF checkpoint."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"cannot load checkpoint {path}: {reason}")
        self.path = Path(path)


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (through a temporary file and a rename), tagged with the format version."""
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    temporary = path.with_name(path.name + ".tmp")
    write_atomically(
        path, temporary, lambda to: torch.save(payload, to), what="the checkpoint", short_write=torch_short_write
    )


def describe_load_failure(error: Exception, loads: str = "checkpoints") -> str:
    """What went wrong in ``torch.load(weights_only=True)``, in one short clause.

    torch's refusal of a non-tensor object advises loading with ``weights_only=False``; that would run
    whatever code the file holds, so the advice is left out: imf never loads a file that way. ``loads``
    names what imf was loading, for the clause that says so.
    """
    text = str(error)
    refused = re.search(r"WeightsUnpickler error:(.*?)(?:Check the documentation|$)", text, re.S)
    if refused or "Weights only load failed" in text:
        # The first sentence only: the rest advises allow-listing globals or weights_only=False.
        detail = " ".join(refused.group(1).split()).split(". ")[0].rstrip(".") if refused else ""
        return (
            f"torch's safe loader refused it{': ' + detail if detail else ''}; "
            f"imf loads {loads} only as tensors and plain values"
        )
    if isinstance(error, EOFError):
        return "the file is empty or cut short"
    first = text.strip().splitlines()[0].split(". ")[0].rstrip(".") if text.strip() else ""
    return f"{type(error).__name__}: {first[:200]}" if first else type(error).__name__


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, loaded with ``weights_only=True``.

    Raises:
        CheckpointError: If the file is missing, corrupt, or not an IMF checkpoint.
    """
    path = Path(path)
    return _checked(path, _load(path, map_location=map_location))


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check that ``path`` is a loadable IMF checkpoint without reading its tensors (memory-mapped), and
    return its payload (the tensors stay on disk: read only its config and plain values).

    Raises:
        CheckpointError: As :func:`read_checkpoint` would.
    """
    path = Path(path)
    return _checked(path, _load(path, map_location="cpu", mmap=True))


def _load(path: Path, **options: Any) -> Any:
    if not path.exists():
        raise CheckpointError(path, "no such file")
    if not path.is_file():
        kind = stat.S_IFMT(path.stat().st_mode)
        what = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket"}
        raise CheckpointError(path, f"not a regular file: it is {what.get(kind, 'a device')}")
    try:
        with open(path, "rb") as file:  # unreadable (permissions, I/O): said as such below, not called corrupt
            zipped = zipfile.is_zipfile(file)
        if not zipped:  # torch.save writes a zip archive; a text file read as torch's old format failed as
            # "the safe loader refused it: Unsupported operand 110", which reads as a refusal
            raise CheckpointError(path, "the file is corrupt or unreadable (not the zip archive torch.save writes)")
        return torch.load(path, weights_only=True, **options)
    except CheckpointError:
        raise
    except PermissionError as error:  # not damaged: the file may not be read
        raise CheckpointError(path, f"cannot be read ({error.strerror})") from error
    except Exception as error:  # torch raises many types for a damaged file (RuntimeError, EOFError, …)
        raise CheckpointError(path, f"the file is corrupt or unreadable ({describe_load_failure(error)})") from error


#: The type of each top-level field a checkpoint may hold (None: the field may be None). A field of
#: another type (an edited or damaged file) is refused here, not met later as a TypeError deep inside
#: loading or resuming.
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "version": (int,), "model": (dict,), "model_args": (dict,), "config": (dict,), "metadata": (dict, type(None)),
    "data_fingerprint": (str,), "feature_hashes": (dict, type(None)), "optimizer": (dict,), "scheduler": (dict,),
    "epoch": (int,), "best_epoch": (int, type(None)), "best_valid_mrr": (int, float, type(None)),
    "bad_evaluations": (int,), "finished": (bool,), "stopped_early": (bool,), "progress": (dict, type(None)),
    "rng": (list,), "world_size": (int,),
}


def _checked(path: Path, payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(path, "not an IMF checkpoint")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(path, f"missing {', '.join(missing)}")
    for key, types in FIELD_TYPES.items():
        value = payload.get(key)
        bad_bool = isinstance(value, bool) and bool not in types  # True is an int to isinstance
        if key in payload and (not isinstance(value, types) or bad_bool):
            raise CheckpointError(path, f"damaged: its {key!r} is a {type(value).__name__}, not a "
                                        f"{' or '.join(t.__name__ for t in types)}")
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(path, f"format version {payload['version']} is newer than this code ({VERSION})")
    if "rng" in payload and not (payload["rng"] and all(isinstance(state, dict) for state in payload["rng"])):
        raise CheckpointError(path, "damaged: its random states ('rng') are not a list of states")
    return payload


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    features: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    data_fingerprint: str | None = None,
) -> tuple[IMF, dict[str, Any]]:
    """Rebuild the model stored in ``path`` for inference.

    Args:
        path: The checkpoint file.
        map_location: Where to put the model.
        features: Modality → ``(matrix (N, D), mask (N,))``, the frozen features the run trained with.
            Needed for every modality in ``"project"`` mode (:attr:`IMF.modalities_needing_features`);
            others are ignored. Their hashes are checked against the checkpoint's when it has them.
        data_fingerprint: The fingerprint of the data the model must have been trained on (the run's
            record); a checkpoint of other data of the same sizes would load, and score other entities.

    Returns:
        The model, on ``map_location`` and in eval mode, and the run's config as a plain dict
        (``{"model": …, "train": …, "eval": …}``).

    Raises:
        CheckpointError: If the file cannot be read, its config or weights do not fit together, or
            features it needs are missing or differ from those it was trained with.
    """
    payload = read_checkpoint(path, map_location)
    check_same_data(path, payload, data_fingerprint)
    try:
        config = RunConfig.from_dict(payload["config"])
        model = build_model(config.model, **payload["model_args"])
        # Checkpoints of older versions still hold the feature buffers: keep what fits, ignore the rest.
        state = {key: value for key, value in payload["model"].items() if not _is_feature_buffer(key)}
        model.load_state_dict(state)
    except (ConfigError, KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise CheckpointError(path, f"the stored model does not rebuild ({error})") from error
    _check_finite(path, state)
    needed = model.modalities_needing_features
    if needed:
        stored = {key: value for key, value in payload["model"].items() if _is_feature_buffer(key)}
        _attach(model, path, needed, features or {}, stored, payload.get("feature_hashes"))
    return model.to(map_location).eval(), payload["config"]


def check_same_data(path: str | Path, payload: Mapping[str, Any], data_fingerprint: str | None) -> None:
    """Refuse a checkpoint ``payload`` (read from ``path``) trained on other data than ``data_fingerprint``
    (the run's record; None, or a checkpoint that records none: nothing to compare)."""
    if data_fingerprint is not None and payload.get("data_fingerprint") not in (None, data_fingerprint):
        theirs = (payload.get("metadata") or {}).get("dataset")
        raise CheckpointError(
            path, "trained on other data than the run records" + (f" (dataset {theirs!r})" if isinstance(theirs, str) else "")
            + ": it is another run's checkpoint"
        )


def _check_finite(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    """Refuse weights with NaN or infinite values: such a model scores every entity NaN, and ranks
    read from NaN scores are meaningless (training stops on a non-finite loss, so only a damaged or
    edited file holds them)."""
    bad = [
        key for key, value in state.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise CheckpointError(path, f"the model holds NaN or infinite weights ({bad[0]}{more})")


def _is_feature_buffer(key: str) -> bool:
    return key.startswith("entity_representations.") and key.endswith((".features", ".reduced"))


def _attach(
    model: IMF,
    path: str | Path,
    needed: tuple[str, ...],
    features: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    stored: Mapping[str, torch.Tensor],
    hashes: Mapping[str, str] | None,
) -> None:
    for modality in needed:
        old = stored.get(f"entity_representations.{modality}.features")
        if modality in features:
            matrix, mask = features[modality]
            if hashes and modality in hashes and feature_hash(matrix, mask) != hashes[modality]:
                raise CheckpointError(
                    path, f"the {modality} features differ from those the run was trained with (re-encoded since?)"
                )
        elif old is not None:  # an older checkpoint that still carries its features
            matrix, mask = old, model.entity_representations[modality].mask
        else:
            raise CheckpointError(path, f"the {modality} branch needs its features to score; none were given")
        try:
            model.attach_features(modality, matrix.float(), mask.bool())
        except ValueError as error:
            raise CheckpointError(path, f"the {modality} features do not fit the model ({error})") from error


def feature_hash(matrix: torch.Tensor, mask: torch.Tensor | None) -> str:
    """A hash of a feature matrix and its mask exactly as training used them (see ``KGTensors.feature_hashes``)."""
    digest = hashlib.sha256()
    for tensor in (matrix, mask):
        if tensor is not None:
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def capture_rng_state(shuffle: torch.Generator) -> dict[str, Any]:
    """Every RNG state of this process, as tensors and primitives: torch (CPU and CUDA), numpy, Python, ``shuffle``."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "shuffle": shuffle.get_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], shuffle: torch.Generator) -> None:
    """The inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    shuffle.set_state(state["shuffle"].cpu())
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate(
        (python_state["version"], tuple(int(x) for x in python_state["internal"].tolist()), python_state["gauss_next"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
