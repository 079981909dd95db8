"""``imf encode --from-file``: features computed elsewhere, imported into a feature file.

The file holds a 2-D array whose rows follow entity id order (or the order of a ``--keys`` file), or a
``{entity key: vector}`` mapping. Pickles are never read, since unpickling runs whatever code the file
names: ``.pkl`` is refused, ``.npy`` is read with ``allow_pickle=False``, ``.pt`` with
``torch.load(weights_only=True)``, and ``.safetensors`` holds tensors only. Values are checked as
:func:`kgdata.features.save_features` checks them; the keys file is read as dataset files are
(UTF-8, no control characters, errors at file:line).
"""

from __future__ import annotations

import hashlib
import pickle
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kgdata.errors import DataError, ImfError
from kgdata.features import MAX_MAGNITUDE, FeatureReport, check_values, current_features, save_features
from kgdata.files import check_regular_file, escape_controls
from kgdata.inputs import COMPUTED_FROM, graph_input_hash, hash_file, keys_hash
from kgdata.wording import truncate

if TYPE_CHECKING:
    from kgdata.store import EntityStore

#: Containers accepted by :func:`import_features`.
IMPORT_SUFFIXES = (".npy", ".pt", ".safetensors")
#: Pickle files, refused outright: unpickling runs whatever code the file names.
PICKLE_SUFFIXES = (".pkl", ".pickle")


def _to_numpy(value: Any, source: Path, what: str) -> np.ndarray:
    tensor = hasattr(value, "detach") and hasattr(value, "cpu")  # a torch tensor, without importing torch
    if (value.is_complex() if tensor else np.iscomplexobj(value)):
        raise DataError(f"{what} holds complex numbers; save real-valued features", source)
    if tensor:
        layout = str(getattr(value, "layout", "torch.strided"))
        if layout != "torch.strided":
            raise DataError(f"{what} is a {layout.removeprefix('torch.')} tensor; save a dense one (.to_dense())", source)
        if getattr(value, "is_meta", False):
            raise DataError(f"{what} is a tensor without data (on the meta device)", source)
        try:
            value = value.detach().cpu()
            # float64 stays so until the range check below: .float() turned 1e300 into inf without a word
            value = value.numpy() if str(value.dtype) == "torch.float64" else value.float().numpy()
        except (RuntimeError, TypeError, ValueError, NotImplementedError) as exc:  # quantized, nested, …
            raise DataError(f"{what} cannot be read as a dense array of numbers ({exc})", source) from None
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    if kind in ("M", "m"):  # numpy turns dates and durations into numbers silently
        raise DataError(f"{what} is not numeric (it holds {value.dtype} dates or durations)", source)
    if kind in ("U", "S", "V"):  # and strings of digits ("1.5") and records too
        held = "records (a structured array)" if kind == "V" else "text"
        raise DataError(f"{what} is not numeric (it holds {held}, dtype {value.dtype})", source)
    try:
        wide = np.asarray(value)
        if wide.dtype.kind != "f" or wide.dtype.itemsize <= 4:
            return np.asarray(wide, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} is not numeric ({exc})", source) from None
    with np.errstate(over="ignore", invalid="ignore"):
        large = np.isfinite(wide) & (np.abs(wide) > MAX_MAGNITUDE)
        if large.any():  # said here, before float32 turns the largest into inf ("holds NaN or infinite values")
            raise DataError(
                f"{what} holds values as large as {float(np.abs(wide[large]).max()):.3g}; features must stay within "
                f"±{MAX_MAGNITUDE:.0e} so that float32 arithmetic cannot overflow: rescale them",
                source,
            )
        return wide.astype(np.float32)


def _to_mask(value: Any, source: Path, rows: int) -> np.ndarray:
    """The file's ``mask`` as ``(rows,)`` booleans: booleans, or numbers that are all 0 or 1 (a NaN read
    as True, so a mask of NaNs covered every entity)."""
    values = _to_numpy(value, source, "'mask'")
    if values.shape != (rows,):
        raise DataError(f"'mask' has shape {tuple(values.shape)}; expected ({rows},), one flag per row", source)
    if not np.isin(values, (0.0, 1.0)).all():
        bad = int(np.flatnonzero(~np.isin(values, (0.0, 1.0)))[0])
        raise DataError(f"'mask' must hold booleans (or 0 and 1); row {bad} holds {values[bad]}", source)
    return values.astype(bool)


def _check_npy_size(source: Path, array: np.ndarray) -> None:
    """Refuse a ``.npy`` file with bytes after its array: numpy ignores them, but such a file was cut
    together or damaged, and what it was meant to hold is unknown."""
    with source.open("rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(handle)
        else:  # 2.0 and 3.0 share the header's layout (3.0 only allows UTF-8 field names)
            np.lib.format.read_array_header_2_0(handle)
        expected = handle.tell() + array.nbytes
    size = source.stat().st_size
    if size != expected:
        raise DataError(
            f"holds {size - expected:,} bytes after its {'x'.join(map(str, array.shape))} array; a .npy file ends "
            "with its array (was it cut together or damaged?)",
            source,
        )


def _read_container(source: Path) -> Any:
    """Load a features file: an array-like, or a ``{key: vector}`` mapping."""
    suffix = source.suffix.lower()
    try:
        if suffix == ".npy":
            try:
                return np.load(source, allow_pickle=False)
            except ValueError as exc:
                with source.open("rb") as handle:
                    numpy_header = handle.read(6) == b"\x93NUMPY"
                if not numpy_header:  # numpy takes any other bytes for a pickle
                    raise DataError("is not a .npy file (it does not start with numpy's header)", source) from None
                if "allow_pickle" in str(exc):
                    raise DataError(
                        "holds Python objects (a pickle), which imf never loads; save a plain numeric array, "
                        "or a key → vector dict as .safetensors or .pt",
                        source,
                    ) from None
                raise
        if suffix == ".pt":
            import torch

            try:
                with warnings.catch_warnings():  # a sparse tensor is refused below, by name, in one line
                    warnings.filterwarnings("ignore", message="Validating sparse tensor invariants")
                    return torch.load(source, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc:
                from models.checkpoint import describe_load_failure

                raise DataError(
                    f"not loadable with torch.load(weights_only=True): save only tensors, or a dict of "
                    f"key → tensor ({describe_load_failure(exc, 'feature files')})",
                    source,
                ) from None
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            tensors = load_file(str(source))
            if "features" in tensors:
                return tensors
            only = next(iter(tensors.values())) if len(tensors) == 1 else None
            if only is not None and only.ndim != 1:  # one matrix, whatever its name; one vector is a mapping
                return only
            return tensors
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"could not read the features file ({type(exc).__name__}: {exc})", source) from None
    raise DataError(f"unsupported features file type {suffix!r}; expected one of {', '.join(IMPORT_SUFFIXES)}", source)


def _read_keys(path: Path, known: dict[str, int]) -> list[int]:
    """The entity ids of a keys file (one key per line), checked as import checks a dataset file."""
    from kgdata.importers.common import iter_lines

    check_regular_file(path, "keys file")
    ids, seen = [], {}
    for number, line in iter_lines(path, skip_blank=False):
        key = line.strip()
        if not key:
            raise DataError("empty line; the keys file needs one entity key per line", path, number)
        if key not in known:
            raise DataError(f"entity key {key!r} is not in the dataset", path, number)
        if key in seen:
            raise DataError(f"entity key {key!r} is listed twice (first on line {seen[key]})", path, number)
        seen[key] = number
        ids.append(known[key])
    return ids


def import_features(
    store: "EntityStore",
    modality: str,
    source: str | Path,
    *,
    keys: str | Path | None = None,
    encoder: str | None = None,
    force: bool = False,
) -> FeatureReport:
    """Import precomputed features (``.npy``, ``.pt`` or ``.safetensors``) for one modality.

    The file holds a 2-D array whose rows follow entity id order, or the order of ``keys`` (a file of
    one entity key per line), or a ``{entity key: vector}`` mapping. Entities left out are recorded as
    missing in the mask. Pickles (``.pkl``, ``.npy`` object arrays, ``.pt`` files that are not
    weights-only) are refused: loading one can run arbitrary code.
    """
    if modality not in ("text", "image"):
        raise ImfError(f"--from-file imports text or image features, not {modality!r}")
    source = Path(source).expanduser()
    if source.suffix.lower() in PICKLE_SUFFIXES:
        raise DataError(
            "is a Python pickle, which imf refuses (unpickling can run arbitrary code); save the features as "
            ".npy, .safetensors or a weights-only .pt (torch.save of tensors or a dict of key → tensor)",
            source,
        )
    if not source.exists() and not source.is_symlink():
        raise DataError("no such features file", source)
    check_regular_file(source, "features file")
    if source.suffix.lower() not in IMPORT_SUFFIXES:
        raise DataError(
            f"unsupported features file type {source.suffix!r}; expected one of {', '.join(IMPORT_SUFFIXES)}",
            source,
        )
    keys_path = Path(keys).expanduser() if keys is not None else None
    if encoder is not None and (not encoder.strip() or len(encoder) > 200 or escape_controls(encoder) != encoder):
        raise ImfError(
            f"--encoder {truncate(escape_controls(encoder), 60)!r}: name the features with 1–200 printable "
            "characters (imf features lists them by it)"
        )
    if encoder is not None:
        from kgdata.encoders import REGISTRY

        if encoder in REGISTRY or encoder.startswith("hf:"):  # its file would be the encoder's own, and the hints wrong
            raise ImfError(
                f"--encoder {encoder!r} is the name of one of imf's encoders; name imported features otherwise "
                f"(e.g. file-{encoder.removeprefix('hf:').replace('/', '-')})"
            )
    if encoder is None and (len(source.name) > 195 or escape_controls(source.name) != source.name):
        raise ImfError(  # the name would reach the manifest, run configs and every listing as it is
            f"{truncate(escape_controls(source.name), 60)!r}: a file name with control characters or over 195 "
            "characters cannot name the features; name them with --encoder NAME"
        )
    encoder = encoder or f"file:{source.name}"
    started = time.perf_counter()

    digest = hashlib.sha256(b"imf-import-v1\0")
    digest.update(f"{modality}\0{encoder}\0{keys_hash(store.entity_keys)}\0".encode())
    hash_file(source, digest)
    digest.update(b"\0keys\0")
    if keys_path is not None:  # checked before the "unchanged" answer: a missing --keys is never fine
        hash_file(check_regular_file(keys_path, "keys file"), digest)
        digest.update(b"\0given\0")  # an empty keys file is not the same as none
    input_hash = digest.hexdigest()
    if not force:
        unchanged = current_features(store, modality, encoder, input_hash)
        if unchanged is not None:
            return unchanged

    n = store.num_entities
    known = {key: i for i, key in enumerate(store.entity_keys)}
    content = _read_container(source)
    if source.suffix.lower() == ".npy":
        _check_npy_size(source, content)
    given_mask = None
    if isinstance(content, dict) and "features" in content and not isinstance(content["features"], dict):
        others = sorted(str(key) for key in content if key not in ("features", "mask"))
        if others:
            raise DataError(
                f"holds {', '.join(repr(k) for k in others[:3])}{' …' if len(others) > 3 else ''} beside 'features' "
                "and 'mask', which imf would ignore; save only those two",
                source,
            )
        given_mask = content.get("mask")
        content = content["features"]

    if isinstance(content, dict):
        if keys_path is not None:
            raise DataError("holds a key → vector mapping, which names its own keys; drop --keys", source)
        if not content:
            raise DataError("holds an empty mapping", source)
        unknown = [str(k) for k in content if str(k) not in known]
        if unknown:
            raise DataError(
                f"key {unknown[0]!r} is not an entity of dataset {store.name!r}"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""),
                source,
            )
        vectors = {known[str(k)]: _to_numpy(v, source, f"the vector of {k!r}") for k, v in content.items()}
        dims = {v.shape for v in vectors.values()}
        if len(dims) != 1 or len(next(iter(dims))) != 1:
            raise DataError(f"mapping values must be 1-D vectors of one length, got shapes {sorted(dims)}", source)
        dim = next(iter(dims))[0]
        if dim == 0:
            raise DataError("holds zero-length vectors: a feature needs at least one value", source)
        matrix = np.zeros((n, dim), dtype=np.float32)
        mask = np.zeros(n, dtype=bool)
        for index, vector in vectors.items():
            matrix[index] = vector
            mask[index] = True
    else:
        array = _to_numpy(content, source, "the array")
        if array.ndim != 2:
            raise DataError(f"expected a 2-D array (entities × dim), got shape {tuple(array.shape)}", source)
        if array.shape[1] == 0:
            raise DataError(
                f"holds a zero-width array ({array.shape[0]} × 0): a feature needs at least one column", source
            )
        if keys_path is not None:
            ids = _read_keys(keys_path, known)
            if len(ids) != array.shape[0]:
                raise DataError(
                    f"lists {len(ids)} entity keys but {source.name} has {array.shape[0]} rows", keys_path
                )
            matrix = np.zeros((n, array.shape[1]), dtype=np.float32)
            mask = np.zeros(n, dtype=bool)
            matrix[ids] = array
            mask[ids] = True if given_mask is None else _to_mask(given_mask, source, len(ids))
        else:
            if array.shape[0] != n:
                raise DataError(
                    f"has {array.shape[0]} rows but dataset {store.name!r} has {n} entities "
                    f"(rows follow entity2id order; pass --keys FILE to name the row of each key)",
                    source,
                )
            matrix = array
            mask = np.ones(n, dtype=bool) if given_mask is None else _to_mask(given_mask, source, n)
    if not mask.any():  # every path above: a mask of all False, an empty dict, an empty keys file
        raise DataError("gives no entity a vector (its mask is all False); nothing to import", source)
    check_values(matrix, mask, source, name=lambda row: f"the vector of entity {store.entity_keys[row]!r}")
    extra = {"source": str(source.resolve()), "keys": str(keys_path.resolve()) if keys_path else None}
    path = save_features(
        store, modality, encoder, matrix, mask, input_hash=input_hash, extra=extra,
        computed_from=COMPUTED_FROM["file"], graph_input_hash=graph_input_hash(store, "file"),
    )
    return FeatureReport(
        dataset=store.name,
        modality=modality,
        encoder=encoder,
        path=str(path),
        dim=int(matrix.shape[1]),
        rows=n,
        missing=int((~mask).sum()),
        input_hash=input_hash,
        status="written",
        encoded=int(mask.sum()),
        seconds=round(time.perf_counter() - started, 3),
        extra=extra,
    )
