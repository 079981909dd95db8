"""Feature files: one safetensors file per (modality, encoder), with a mask and a manifest row.

Layout: ``$IMF_HOME/datasets/<name>/features/<modality>-<encoder>.safetensors`` holding

- ``features``: float32 ``(N, D)``, row ``i`` belongs to entity id ``i``;
- ``mask``: uint8 ``(N,)``, 1 where the entity has a real feature. Rows of masked-out entities are
  zeros, never a stand-in vector, and consumers must ignore them through the mask;
- ``relation_features`` (structure encoders only): float32 ``(R, D)``.

- ``input_row_hashes`` (text and image): uint8 ``(N, 16)``, a digest of each entity's input
  (:mod:`kgdata.inputs`), so that ``imf encode`` re-encodes only new or changed entities.

The safetensors metadata names the modality, the encoder, the hash of the inputs and a hash of the
entity keys, so a file is never applied to the wrong entity order. It also records what the features
were computed from (``computed_from``: texts, images, train triples, or only the entity keys for a
file imported with ``--from-file``) and the hash of exactly that for the graph entities
(``graph_input_hash``). Loading compares it with the store's current inputs and refuses stale
features ("re-run imf encode NAME --modality M"). Every write also upserts a row of the ``features``
manifest table in ``store.db`` (migration ``m004``).

A file may have fewer rows than the store has entities when entities were added after it was
written (``imf entities add``): it still covers the graph entities, and the added ones load as
missing until ``imf encode`` fills their rows.

Values must be finite and at most :data:`MAX_MAGNITUDE` in size, and a matrix needs at least one
column: anything else would break float32 arithmetic (PCA, scores) or train an empty branch.
Features computed elsewhere are imported by :mod:`kgdata.feature_import` (``imf encode --from-file``).

Writes are atomic: a temporary file beside the final one, fsynced, then ``os.replace``.
This module imports neither torch nor transformers (``.pt`` imports load torch lazily).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kgdata.errors import DataError, ImfError
from kgdata.inputs import COMPUTED_FROM, ROW_HASH_BYTES, graph_input_hash, keys_hash, read_inputs
from kgdata.wording import count

if TYPE_CHECKING:
    from kgdata.store import EntityStore

MODALITIES = ("text", "image", "structure")
FEATURES_DIR = "features"
SUFFIX = ".safetensors"
FORMAT = "imf-features"
FORMAT_VERSION = "1"
#: The largest feature value allowed, in magnitude: squares of larger values summed over rows and
#: columns (PCA, scores) could overflow float32 (about 3.4e38).
MAX_MAGNITUDE = 1e9

_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class FeatureSet:
    """One modality's features for every entity of a dataset (see the module docstring)."""

    modality: str
    encoder: str
    matrix: np.ndarray  # float32 (N, D); rows of masked entities are zeros and must be ignored
    mask: np.ndarray  # bool (N,): True where the entity has a real feature
    relation_matrix: np.ndarray | None  # float32 (R, D) for structure features, else None
    path: Path
    input_hash: str
    extra: dict = field(default_factory=dict, compare=False)
    computed_from: str | None = None  # texts, images, train-triples, entity-keys; None: not recorded
    graph_input_hash: str | None = None  # the hash of exactly that, for the graph entities
    others: tuple[str, ...] = ()  # the modality's other encoders, passed over for this newest one (no encoder asked)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def missing(self) -> int:
        return int((~self.mask).sum())

    def __repr__(self) -> str:
        return (
            f"FeatureSet(modality={self.modality!r}, encoder={self.encoder!r}, rows={len(self.matrix)}, "
            f"dim={self.dim}, missing={self.missing})"
        )


@dataclass
class FeatureReport:
    """What a run of :func:`import_features` or ``encode_dataset`` did.

    ``status`` is ``"written"`` or ``"unchanged"`` (the inputs hash matched the stored file).
    """

    dataset: str
    modality: str
    encoder: str
    path: str
    dim: int
    rows: int
    missing: int
    input_hash: str
    status: str
    encoded: int = 0  # entities (structure: triples) computed by this run
    reused: int = 0  # entities whose rows were kept from the previous file (inputs unchanged)
    seconds: float = 0.0
    items_per_second: float | None = None
    warnings: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------- paths
def safe_encoder_name(encoder: str) -> str:
    """A file-name-safe form of an encoder id; ids that need escaping get a short hash suffix."""
    safe = _UNSAFE_RE.sub("-", encoder).strip("-.")
    if safe == encoder and safe and len(safe) <= 64:  # longer names: cut, with the hash (file names ≤ 255 bytes)
        return safe
    digest = hashlib.sha1(encoder.encode()).hexdigest()[:8]
    return f"{safe[:48]}-{digest}" if safe else digest


def feature_path(dataset_dir: Path, modality: str, encoder: str) -> Path:
    """``dataset_dir/features/<modality>-<encoder>.safetensors``."""
    check_modality(modality)
    return Path(dataset_dir) / FEATURES_DIR / f"{modality}-{safe_encoder_name(encoder)}{SUFFIX}"


def check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise ImfError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    return modality


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def _opened(store_or_dataset_dir: "EntityStore | str | Path"):
    """Yield an :class:`EntityStore`, opening (and closing) one when given a dataset directory."""
    from kgdata.store import EntityStore

    if isinstance(store_or_dataset_dir, EntityStore):
        yield store_or_dataset_dir
        return
    store = EntityStore(Path(store_or_dataset_dir) / "store.db")
    try:
        yield store
    finally:
        store.close()


# --------------------------------------------------------------------------------------- writing
def _as_float_matrix(name: str, value: Any, path: Path | None = None) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (rows × dim), got shape {tuple(array.shape)}", path)
    if array.shape[1] == 0:
        raise DataError(f"{name} has zero width ({array.shape[0]} × 0): a feature needs at least one column", path)
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise DataError(f"{name} must hold real numbers, got dtype {array.dtype}", path)
    return np.ascontiguousarray(array, dtype=np.float32)


def check_values(matrix: np.ndarray, rows: np.ndarray | None, path: Path | None, name=lambda row: f"row {row}") -> None:
    """Refuse NaN, infinite and over-large values (:data:`MAX_MAGNITUDE`) in ``matrix[rows]`` (all rows: None).

    ``name(row)`` says which entity a row is, for the message.
    """
    checked = matrix if rows is None else matrix[rows]
    index = np.arange(len(matrix)) if rows is None else np.flatnonzero(rows)
    bad = np.flatnonzero(~np.isfinite(checked).all(axis=1))
    if len(bad):
        raise DataError(
            f"{name(index[bad[0]])} holds NaN or infinite values" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""),
            path,
        )
    large = np.flatnonzero((np.abs(checked) > MAX_MAGNITUDE).any(axis=1))
    if len(large):
        biggest = float(np.abs(checked).max())
        raise DataError(
            f"{name(index[large[0]])} holds values as large as {biggest:.3g}"
            + (f" (and {len(large) - 1} more rows)" if len(large) > 1 else "")
            + f"; features must stay within ±{MAX_MAGNITUDE:.0e} so that float32 arithmetic cannot overflow: "
            f"rescale them",
            path,
        )


def save_features(
    store_or_dataset_dir: "EntityStore | str | Path",
    modality: str,
    encoder: str,
    matrix: np.ndarray,
    mask: np.ndarray,
    *,
    relation_matrix: np.ndarray | None = None,
    input_hash: str,
    extra: dict | None = None,
    computed_from: str | None = None,
    graph_input_hash: str | None = None,
    row_hashes: np.ndarray | None = None,
) -> Path:
    """Write one feature file atomically and upsert its manifest row; return the file's path.

    ``matrix`` must have one row per entity; rows where ``mask`` is False are written as zeros.
    ``computed_from`` (a value of :data:`kgdata.inputs.COMPUTED_FROM`) and ``graph_input_hash`` record
    what the features were computed from, so that later loads can tell when they went stale;
    ``row_hashes`` ``uint8 (N, 16)`` are the per-entity input digests that incremental encoding reads.
    Raises :class:`DataError` for a wrong shape or non-finite or over-large values.
    """
    check_modality(modality)
    with _opened(store_or_dataset_dir) as store:
        final = feature_path(store.dataset_dir, modality, encoder)
        matrix = _as_float_matrix("the feature matrix", matrix).copy()
        mask = np.asarray(mask).astype(bool).reshape(-1)
        n = store.num_entities
        if matrix.shape[0] != n:
            raise DataError(
                f"{matrix.shape[0]} feature rows for {n} entities of dataset {store.name!r}", final
            )
        if mask.shape != (n,):
            raise DataError(f"mask of shape {tuple(mask.shape)} for {n} entities", final)
        matrix[~mask] = 0.0
        check_values(matrix, None, final)
        tensors = {"features": matrix, "mask": mask.astype(np.uint8)}
        if row_hashes is not None:
            row_hashes = np.ascontiguousarray(row_hashes, dtype=np.uint8)
            if row_hashes.shape != (n, ROW_HASH_BYTES):
                raise DataError(f"row hashes of shape {tuple(row_hashes.shape)}; expected ({n}, {ROW_HASH_BYTES})", final)
            tensors["input_row_hashes"] = row_hashes
        if relation_matrix is not None:
            relations = _as_float_matrix("the relation matrix", relation_matrix)
            if relations.shape != (store.num_relations, matrix.shape[1]):
                raise DataError(
                    f"relation matrix of shape {tuple(relations.shape)}; expected "
                    f"({store.num_relations}, {matrix.shape[1]})",
                    final,
                )
            check_values(relations, None, final, name=lambda row: f"relation row {row}")
            tensors["relation_features"] = relations
        created_at = _now()
        metadata = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "dataset": store.name,
            "modality": modality,
            "encoder": encoder,
            "input_hash": input_hash,
            "entity_keys_hash": keys_hash(store.entity_keys),
            "graph_entities": str(store.num_graph_entities),
            "created_at": created_at,
            "extra": json.dumps(extra or {}, sort_keys=True, default=str),
        }
        if computed_from is not None and graph_input_hash is not None:
            if computed_from not in COMPUTED_FROM.values():
                raise ValueError(f"unknown computed_from {computed_from!r}; expected one of {list(COMPUTED_FROM.values())}")
            metadata.update(computed_from=computed_from, graph_input_hash=graph_input_hash)
        _write_atomic(final, tensors, metadata)
        _upsert_manifest(
            store.path,
            {
                "modality": modality,
                "encoder": encoder,
                "dim": int(matrix.shape[1]),
                "rows": int(matrix.shape[0]),
                "missing": int((~mask).sum()),
                "input_hash": input_hash,
                "path": str(final),
                "created_at": created_at,
                "extra": metadata["extra"],
            },
        )
    return final


def _write_atomic(final: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    from safetensors.numpy import save_file

    from models.atomic import safetensors_short_write, write_atomically

    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.parent / f".{final.name}.{os.getpid()}.tmp"

    def write(to: Path) -> None:
        save_file(tensors, str(to), metadata=metadata)

    write_atomically(final, temporary, write, what="the features file", short_write=safetensors_short_write, durable=True)


def _upsert_manifest(store_path: Path, row: dict) -> None:
    """Write a manifest row through a separate read-write connection (EntityStore is read-only)."""
    from sqlite_utils import Database

    from kgdata import migrations

    db = Database(store_path)
    try:
        migrations.apply(db)  # stores imported before m004 lack the table
        with db.atomic():
            db["features"].upsert(row, pk=("modality", "encoder"))
    finally:
        db.close()


# --------------------------------------------------------------------------------------- reading
def read_header(path: Path) -> dict:
    """The metadata, its parsed ``extra`` and the tensor shapes of a feature file, without reading the
    tensors. A damaged ``extra`` is refused here, once, for every reader (:func:`parse_extra`)."""
    from safetensors import safe_open

    from kgdata.files import file_problem

    problem = file_problem(path)  # a FIFO blocked safe_open for good (not even SIGTERM ended it)
    if problem == "does not exist":
        raise DataError("no such feature file", path)
    if problem is not None:
        raise DataError(f"not a feature file: it {problem}", path)
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = dict(handle.metadata() or {})
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except FileNotFoundError:
        raise DataError("no such feature file", path) from None
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise DataError(f"not a readable safetensors feature file ({exc})", path) from exc
    return {"metadata": metadata, "shapes": shapes, "extra": parse_extra(metadata.get("extra"), path)}


def parse_extra(text: str | None, path: str | Path) -> dict:
    """The ``extra`` metadata of a feature file (JSON text; None: ``{}``) as a dict.

    Raises:
        DataError: Naming ``path``, if it is not a JSON object or its encoder ``options`` are not a
            mapping (a damaged or hand-edited header).
    """
    try:
        extra = json.loads(text or "{}")
    except (json.JSONDecodeError, TypeError) as error:
        raise DataError(f"damaged feature file: its 'extra' metadata is not JSON ({error}); encode it again", path) from None
    if not isinstance(extra, dict):
        raise DataError("damaged feature file: its 'extra' metadata is not a JSON object; encode it again", path)
    options = extra.get("options")
    if options is not None and not isinstance(options, dict):
        raise DataError(
            f"damaged feature file: its encoder options are {type(options).__name__}, not a mapping; encode it again",
            path,
        )
    return extra


def _feature_files(dataset_dir: Path) -> list[tuple[Path, dict]]:
    directory = Path(dataset_dir) / FEATURES_DIR
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        if path.name.startswith("."):
            continue
        try:
            header = read_header(path)
        except DataError:
            continue
        if header["metadata"].get("format") == FORMAT:
            found.append((path, header))
    return found


def _refuse_damaged(store: "EntityStore", modality: str) -> None:
    """Name an unreadable feature file of ``modality`` (a cut copy, a full disk): without this, the
    modality's features were reported as never encoded ("stored: none"), or an older readable file
    was used in its place when it may have been the newest."""
    directory = Path(store.dataset_dir) / FEATURES_DIR
    for path in sorted(directory.glob(f"{modality}-*{SUFFIX}")) if directory.is_dir() else ():
        if path.name.startswith("."):
            continue
        try:
            read_header(path)
        except DataError as error:
            raise DataError(f"{error.reason}; {_damaged_hint(store, modality, path)}", path) from None


def _damaged_hint(store: "EntityStore", modality: str, path: Path) -> str:
    """How to make a damaged feature file again: the manifest says which encoder wrote it, and
    :func:`_recreate_hint` how to run that encoder (or to import the file) again."""
    encoder = None
    if "features" in store.db.table_names():
        rows = store.db["features"].rows_where("modality = ?", [modality])
        encoder = next((row["encoder"] for row in rows if Path(row["path"]).name == path.name), None)
    if encoder is None:
        return f"encode again (imf encode {store.name} --modality {modality} --force) or remove the file"
    imported = not _is_encoder(modality, encoder)  # file:NAME, or a name of the user's
    metadata = {"modality": modality, "encoder": encoder, "computed_from": COMPUTED_FROM["file"] if imported else None}
    how = _recreate_hint(store, metadata).removeprefix("re-run ")
    return f"{'import its file again' if imported else 'encode again'}: {how} --force"


def _is_encoder(modality: str, encoder: str) -> bool:
    """Whether ``imf encode`` can run ``encoder`` for ``modality`` (a registered name, or an ``hf:`` one)."""
    from kgdata.encoders import available

    known = available(modality)
    return encoder in known or any(encoder.startswith(p) for p in known if p.endswith(":"))


def _recreate_hint(store: "EntityStore", metadata: dict) -> str:
    modality = metadata.get("modality", "?")
    encoder = metadata.get("encoder")
    if str(encoder or "").startswith("file:"):
        return f"re-run imf encode {store.name} --modality {modality} --from-file FILE"
    if metadata.get("computed_from") == COMPUTED_FROM["file"]:  # imported under a name of the user's
        return f"re-run imf encode {store.name} --modality {modality} --from-file FILE --encoder {encoder}"
    from_default = encoder is None or DEFAULT_ENCODER_IDS.get(modality) == encoder
    return f"re-run imf encode {store.name} --modality {modality}" + ("" if from_default else f" --encoder {encoder}")


#: The encoder id that ``imf encode`` uses when given none (kgdata.encoders.DEFAULT_ENCODERS, without torch).
DEFAULT_ENCODER_IDS = {"text": "minilm", "image": "efficientnet-lite0", "structure": "gat"}


def _check_header(store: "EntityStore", path: Path, header: dict) -> None:
    """Refuse a file whose shape or entity order does not fit ``store`` (see the module docstring)."""
    metadata, shapes = header["metadata"], header["shapes"]
    if "features" not in shapes or "mask" not in shapes:
        raise DataError("not an imf feature file (needs 'features' and 'mask' tensors)", path)
    rows = shapes["features"]
    n, g = store.num_entities, store.num_graph_entities
    if len(rows) != 2:
        raise DataError(f"'features' must be 2-D, got shape {rows}", path)
    recreate = _recreate_hint(store, metadata) + " --force"
    if rows[1] == 0:
        raise DataError(f"holds zero-width features ({rows[0]} × 0); {recreate}", path)
    keys = metadata.get("entity_keys_hash")
    covered = g <= rows[0] <= n if keys is not None else rows[0] == n
    if not covered or shapes["mask"] != (rows[0],):
        raise DataError(f"holds {rows[0]} rows but dataset {store.name!r} has {n} entities; {recreate}", path)
    if keys is not None and keys != keys_hash(store.entity_keys[: rows[0]]):
        raise DataError(
            f"was computed for other entities than those of dataset {store.name!r} (re-imported since?); {recreate}",
            path,
        )
    relations = shapes.get("relation_features")
    if relations is not None and relations != (store.num_relations, rows[1]):
        raise DataError(
            f"'relation_features' has shape {relations}; expected ({store.num_relations}, {rows[1]})", path
        )
    hashes = shapes.get("input_row_hashes")
    if hashes is not None and hashes != (rows[0], ROW_HASH_BYTES):
        raise DataError(f"'input_row_hashes' has shape {hashes}; expected ({rows[0]}, {ROW_HASH_BYTES})", path)


#: How stale-feature messages name what features were computed from.
_SOURCES = {
    "texts": "texts (descriptions or names)",
    "images": "images",
    "train-triples": "train triples",
    "entity-keys": "entities",
}


def stale_reason(store: "EntityStore", header: dict) -> str | None:
    """Why the features of a file no longer match ``store``'s inputs, or None when they match (or the
    file does not say what it was computed from).

    Files written since ``computed_from`` existed are checked by their ``graph_input_hash``; older files
    written by ``imf encode`` by recomputing their full input hash from the encoder options they recorded.
    """
    metadata = header["metadata"]
    source, recorded = metadata.get("computed_from"), metadata.get("graph_input_hash")
    if source and recorded:
        if graph_input_hash(store, source) == recorded:
            return None
    else:
        options = header["extra"].get("options")
        modality = metadata.get("modality")
        rows = header["shapes"].get("features", (0,))[0]
        if options is None or modality not in MODALITIES or rows != store.num_entities:
            return None
        if read_inputs(store, modality).full_hash(options) == metadata.get("input_hash"):
            return None
        source = COMPUTED_FROM[modality]
    what = _SOURCES.get(source, source)
    return (
        f"stale: computed from other {what} than dataset {store.name!r} now holds (re-imported or edited since "
        f"imf encode); {_recreate_hint(store, metadata)}"
    )


def _how_to_encode(dataset: str, modality: str, encoder: str | None) -> str:
    """The command that makes the missing features: ``imf encode`` for a built-in encoder, else an
    import of a file under that name (no encoder of that name exists to run)."""
    from kgdata.encoders import available

    command = f"imf encode {dataset} --modality {modality}"
    known = available(modality)
    if encoder is None or _is_encoder(modality, encoder):
        return "run: " + command + (f" --encoder {encoder}" if encoder else "")
    importable = modality != "structure"  # --from-file takes text and image features only
    return (
        f"{encoder!r} is no {modality} encoder imf has (those: {', '.join(known)}); encode with one of "
        f"them ({command} --encoder NAME)"
        + (f" or import a file under that name ({command} --from-file FILE --encoder {encoder})" if importable else "")
    )


def load_features(store: "EntityStore", modality: str, encoder: str | None = None) -> FeatureSet:
    """Load the features of one modality: of ``encoder``, or the only / most recent one.

    The result has one row per store entity; entities added after the file was written are missing.
    Raises :class:`ImfError` listing what exists when nothing matches, and :class:`DataError` naming
    the file when its shape does not match the dataset or its features are stale (computed from
    other inputs than the store holds now).
    """
    from safetensors.numpy import load_file

    check_modality(modality)
    stored = _feature_files(store.dataset_dir)
    available = [(path, header) for path, header in stored if header["metadata"].get("modality") == modality]
    if encoder is not None:
        available = [(p, h) for p, h in available if h["metadata"].get("encoder") == encoder]
        expected = feature_path(store.dataset_dir, modality, encoder)
        if not available and expected.is_file():
            read_header(expected)  # raises a DataError naming the unreadable file
            raise DataError(f"not an imf {modality} feature file of encoder {encoder!r}", expected)
    if not available or encoder is None:  # "the most recent" cannot skip a damaged file: it may be it
        _refuse_damaged(store, modality)
    if not available:
        existing = sorted(f"{h['metadata'].get('modality')}/{h['metadata'].get('encoder')}" for _, h in stored)
        wanted = f"{modality} features" + (f" from encoder {encoder!r}" if encoder else "")
        raise ImfError(
            f"no {wanted} for dataset {store.name!r} (stored: {', '.join(existing) or 'none'}); "
            + _how_to_encode(store.name, modality, encoder)
        )
    path, header = max(available, key=lambda item: item[1]["metadata"].get("created_at", ""))
    _check_header(store, path, header)
    stale = stale_reason(store, header)
    if stale is not None:
        raise DataError(stale, path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a truncated body
        raise DataError(f"not a readable safetensors feature file ({exc})", path) from None
    metadata = header["metadata"]
    matrix = np.ascontiguousarray(tensors["features"], dtype=np.float32)
    mask = tensors["mask"].astype(bool)
    check_values(matrix, mask, path)
    missing_rows = store.num_entities - len(matrix)
    if missing_rows:  # entities added since the file was written: missing until encoded
        matrix = np.concatenate([matrix, np.zeros((missing_rows, matrix.shape[1]), np.float32)])
        mask = np.concatenate([mask, np.zeros(missing_rows, bool)])
    relation = tensors.get("relation_features")
    return FeatureSet(
        modality=modality,
        encoder=metadata["encoder"],
        matrix=matrix,
        mask=mask,
        relation_matrix=None if relation is None else np.ascontiguousarray(relation, dtype=np.float32),
        path=path,
        input_hash=metadata.get("input_hash", ""),
        extra=header["extra"],
        computed_from=metadata.get("computed_from"),
        graph_input_hash=metadata.get("graph_input_hash"),
        others=() if encoder is not None else tuple(sorted(
            {h["metadata"].get("encoder") for _, h in available} - {None, metadata["encoder"]})),
    )


def list_features(store: "EntityStore") -> list[dict]:
    """What is stored for ``store``: one dict per feature file, manifest and file merged.

    Keys: modality, encoder, dim, rows, covered, missing, input_hash, created_at, path, extra, status
    (``ok``, ``file missing``, ``not in manifest``, ``stale: <reason>``, or ``partial: <how many>`` when
    entities were added since the file was written).
    """
    entries: dict[tuple[str, str], dict] = {}
    files = _feature_files(store.dataset_dir)
    headers = dict(files)
    if "features" in store.db.table_names():
        for row in store.db["features"].rows:
            entry = dict(row)
            try:
                entry["extra"] = parse_extra(entry.get("extra"), store.path)
            except DataError:  # a damaged manifest row: listed, without its options
                entry["extra"] = {}
            path = Path(entry["path"])
            if not path.is_file():
                entry["status"] = "file missing"
            else:
                entry["status"] = _status(store, path, headers.get(path))
            entries[(row["modality"], row["encoder"])] = entry
    for path, header in files:
        metadata, shapes = header["metadata"], header["shapes"]
        key = (metadata.get("modality", "?"), metadata.get("encoder", "?"))
        if key in entries:
            continue
        entry = entries[key] = {
            "modality": key[0],
            "encoder": key[1],
            "dim": shapes.get("features", (0, 0))[-1],
            "rows": shapes.get("features", (0,))[0],
            "missing": None,
            "input_hash": metadata.get("input_hash"),
            "path": str(path),
            "created_at": metadata.get("created_at"),
            "extra": header["extra"],
            "status": "not in manifest",
        }
        status = _status(store, path, header)
        if status != "ok":
            entry["status"] = status
    order = {m: i for i, m in enumerate(MODALITIES)}
    result = sorted(entries.values(), key=lambda e: (order.get(e["modality"], 9), e["created_at"] or ""))
    for entry in result:
        if Path(entry["path"]) not in headers and entry.get("rows") is not None:
            entry["missing"] = entry["rows"]  # the file is gone or unreadable: it covers nobody now
        missing = entry["missing"]
        entry["covered"] = None if missing is None else entry["rows"] - missing
    return result


def _status(store: "EntityStore", path: Path, header: dict | None) -> str:
    """``ok``, or ``stale: <reason>`` for a file that does not fit ``store`` or was computed from other inputs."""
    try:
        header = header or read_header(path)
        _check_header(store, path, header)
    except DataError as exc:
        return f"stale: {exc.reason}"
    stale = stale_reason(store, header)
    if stale is not None:
        return stale
    added = store.num_entities - header["shapes"]["features"][0]
    if added:
        return (
            f"partial: {count(added, 'entity', 'entities')} added since it was written, missing until "
            f"{_recreate_hint(store, header['metadata']).removeprefix('re-')}"
        )
    return "ok"


def current_features(store: "EntityStore", modality: str, encoder: str, input_hash: str) -> FeatureReport | None:
    """A report for an existing, valid file of ``(modality, encoder)`` built from ``input_hash``, else None.

    Used for no-op re-runs; it re-registers the manifest row when the manifest lacks it.
    """
    path = feature_path(store.dataset_dir, modality, encoder)
    if not path.is_file():
        return None
    try:
        header = read_header(path)
        _check_header(store, path, header)
    except DataError:
        return None
    metadata = header["metadata"]
    if metadata.get("input_hash") != input_hash or metadata.get("encoder") != encoder:
        return None
    if header["shapes"]["features"][0] != store.num_entities:
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        missing = int((~handle.get_tensor("mask").astype(bool)).sum())
    rows, dim = header["shapes"]["features"]
    registered = "features" in store.db.table_names() and any(
        store.db["features"].rows_where(
            "modality = ? AND encoder = ? AND input_hash = ?", [modality, encoder, input_hash]
        )
    )
    if not registered:
        _upsert_manifest(
            store.path,
            {
                "modality": modality,
                "encoder": encoder,
                "dim": dim,
                "rows": rows,
                "missing": missing,
                "input_hash": input_hash,
                "path": str(path),
                "created_at": metadata.get("created_at") or _now(),
                "extra": metadata.get("extra") or "{}",
            },
        )
    return FeatureReport(
        dataset=store.name,
        modality=modality,
        encoder=encoder,
        path=str(path),
        dim=dim,
        rows=rows,
        missing=missing,
        input_hash=input_hash,
        status="unchanged",
        extra=header["extra"],
    )


@dataclass(frozen=True)
class StoredRows:
    """The rows of an existing feature file that incremental encoding may keep (see :func:`previous_rows`)."""

    matrix: np.ndarray  # float32 (rows, D)
    mask: np.ndarray  # bool (rows,)
    row_hashes: np.ndarray | None  # uint8 (rows, 16), or None in files written before they were recorded
    relation_matrix: np.ndarray | None
    graph_input_hash: str | None
    extra: dict = field(default_factory=dict)  # what the file recorded: encoder options, seed, ...


def _canonical(options: Any) -> str:
    return json.dumps(options, sort_keys=True, default=str)


def previous_rows(store: "EntityStore", modality: str, encoder: str, spec: dict) -> StoredRows | None:
    """The stored file of ``(modality, encoder)`` if it was written with the same encoder options ``spec``;
    None when there is none, it is unreadable, or the options differ (then every row is recomputed)."""
    from safetensors.numpy import load_file

    path = feature_path(store.dataset_dir, modality, encoder)
    if not path.is_file():
        return None
    try:
        header = read_header(path)
        tensors = load_file(str(path))
    except Exception:  # an unreadable or foreign file is simply not reused
        return None
    metadata, options = header["metadata"], header["extra"].get("options")
    if metadata.get("format") != FORMAT or metadata.get("modality") != modality or metadata.get("encoder") != encoder:
        return None
    if "features" not in tensors or "mask" not in tensors or _canonical(options) != _canonical(spec):
        return None
    relation = tensors.get("relation_features")
    return StoredRows(
        matrix=np.ascontiguousarray(tensors["features"], dtype=np.float32),
        mask=tensors["mask"].astype(bool),
        row_hashes=tensors.get("input_row_hashes"),
        relation_matrix=None if relation is None else np.ascontiguousarray(relation, dtype=np.float32),
        graph_input_hash=metadata.get("graph_input_hash"),
        extra=header["extra"],
    )
