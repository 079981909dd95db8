"""The one place that wires the entity store, the feature files and the model together.

Commands call these functions; :mod:`models` never sees SQLite and :mod:`kgdata` never sees the model.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from kgdata import paths
from kgdata.errors import EnvironmentFault, ImfError

if TYPE_CHECKING:
    import torch

    from kgdata.features import FeatureSet
    from kgdata.store import EntityStore
    from models.config import RunConfig
    from models.training import KGTensors, TrainResult

#: Model branch → the feature modality that feeds it.
BRANCH_FEATURES = {"visual": "image", "text": "text"}
BRANCHES = ("structure", "visual", "text")


@dataclass(frozen=True)
class PreparedData:
    tensors: "KGTensors"
    modalities: tuple[str, ...]
    manifests: list[dict]  # one per feature file used: modality, encoder, dim, missing, input_hash, path


def available_branches(store: "EntityStore") -> tuple[str, ...]:
    """Structure, plus each modality branch whose features have been encoded."""
    from kgdata.features import list_features

    stored = {row["modality"] for row in list_features(store)}
    return ("structure", *(b for b, m in BRANCH_FEATURES.items() if m in stored))


def prepare_data(
    store: "EntityStore",
    modalities: tuple[str, ...],
    *,
    text_encoder: str | None = None,
    image_encoder: str | None = None,
    structure_init: str | None = None,
) -> PreparedData:
    """Load the splits and the frozen features the chosen branches need, as :class:`KGTensors`.

    ``structure_init`` names a structure encoder (``"gat"``) whose entity and relation vectors
    initialise the structure branch, or None for a random initialisation. The model sees the graph
    entities only (``store.num_graph_entities``); entities added after import are left out, and the
    feature matrices are cut to the graph's rows. Stale features (computed from other inputs than the
    store holds now) are refused by :func:`kgdata.features.load_features`.
    """
    import torch

    from kgdata.features import load_features
    from models.training import KGTensors

    unknown = [m for m in modalities if m not in BRANCHES]
    if unknown:
        raise ImfError(f"unknown modality {unknown[0]!r}; choose from {', '.join(BRANCHES)}")
    encoders = {"text": text_encoder, "image": image_encoder}
    graph = store.num_graph_entities
    features, manifests = {}, []
    for branch in modalities:
        if branch == "structure":
            continue
        modality = BRANCH_FEATURES[branch]
        feature_set = load_features(store, modality, encoders[modality])
        matrix, mask = feature_set.matrix[:graph], feature_set.mask[:graph]
        features[branch] = (torch.from_numpy(matrix), torch.from_numpy(mask))
        manifests.append(_manifest(feature_set))

    entity_init = relation_init = None
    if structure_init and "structure" in modalities:
        feature_set = load_features(store, "structure", structure_init)
        if feature_set.relation_matrix is None:
            raise ImfError(f"{feature_set.path}: structure features hold no relation vectors")
        entity_init = torch.from_numpy(feature_set.matrix[:graph])
        relation_init = torch.from_numpy(feature_set.relation_matrix)
        manifests.append(_manifest(feature_set))

    tensors = KGTensors(
        num_entities=graph,
        num_relations=store.num_relations,
        train=store.triples_tensor("train"),
        valid=store.triples_tensor("valid"),
        test=store.triples_tensor("test"),
        features=features,
        structure_entity_init=entity_init,
        structure_relation_init=relation_init,
    )
    return PreparedData(tensors, tuple(modalities), manifests)


def _manifest(feature_set: "FeatureSet") -> dict:
    return {
        "modality": feature_set.modality,
        "encoder": feature_set.encoder,
        "dim": feature_set.dim,
        "missing": feature_set.missing,
        "input_hash": feature_set.input_hash,
        "computed_from": feature_set.computed_from,
        "graph_input_hash": feature_set.graph_input_hash,
        "path": str(feature_set.path),
    }


def read_config_file(config_file: Path | None) -> dict:
    """The values of a YAML config file (empty without one). Errors become :class:`ImfError`."""
    from models.config import ConfigError, load_yaml

    from kgdata.files import read_text

    if config_file is None:
        return {}
    read_text(config_file, "config file")  # a FIFO, a directory or non-UTF-8 bytes: one line with file:line
    try:
        return load_yaml(config_file)
    except ConfigError as error:
        raise ImfError(str(error)) from error
    except OSError as error:
        raise ImfError(f"cannot read config file {config_file}: {error.strerror}") from error


def resolve_config(file_values: Mapping[str, Any], flags: Mapping[str, Any]) -> "RunConfig":
    """Defaults ← file values ← flags (None flags are skipped). Config errors become :class:`ImfError`."""
    from models.config import ConfigError, resolve

    try:
        return resolve(file_values, flags)
    except ConfigError as error:
        raise ImfError(str(error)) from error


def _sets_modalities(file_values: Mapping[str, Any]) -> bool:
    model = file_values.get("model")
    return "model.modalities" in file_values or (isinstance(model, Mapping) and "modalities" in model)


def git_commit() -> str | None:
    """The commit of the imf source tree, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def new_run_dir(dataset: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return paths.runs_dir() / f"{dataset}-{stamp}"


_DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")


def pick_device(name: str) -> "torch.device":
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` as a device this machine has, or an :class:`ImfError` saying why not."""
    import torch

    from models.distributed import pick_device as preferred

    if not isinstance(name, str) or not _DEVICE_RE.fullmatch(name):
        raise ImfError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N")
    try:
        device = preferred(name) if name in ("auto", "cuda") else torch.device(name)
    except RuntimeError:  # an index torch cannot parse, e.g. beyond 64 bits
        raise ImfError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ImfError(f"--device {name}, but CUDA is not available on this machine; use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ImfError(f"--device {name}, but this machine has {count} CUDA device(s): cuda:0 … cuda:{count - 1}")
    return device


#: Bytes per trainable parameter while training with Adam: the weight, its gradient and two moments (float32).
TRAINING_BYTES_PER_PARAMETER = 16


def check_model_fits(config: "RunConfig", tensors: "KGTensors", device: "torch.device") -> None:
    """Refuse a model that cannot fit in ``device``'s free memory, saying what was asked and what it needs.

    The parameters are counted on PyTorch's ``meta`` device, which allocates nothing; that costs a
    second or two the first time, so it runs only when one ``dim³`` core alone could take an eighth of
    the free memory.
    """
    import torch

    from kgdata.encoders.base import available_memory, require_memory
    from models.imf import build_model

    available = available_memory(device)
    dim = config.model.dim
    if available is None or TRAINING_BYTES_PER_PARAMETER * dim**3 <= available / 8:
        return
    feature_dims = {m: tensors.feature_dims[m] for m in config.model.modalities if m != "structure"}
    try:
        import torch.fx.experimental._config as fx_config  # lets boolean indexing run on meta tensors

        with fx_config.patch(meta_nonzero_assume_all_nonzero=True), torch.device("meta"):
            model = build_model(
                config.model,
                num_entities=tensors.num_entities,
                num_relations=tensors.num_relations,
                feature_dims=feature_dims,
            )
    except Exception:  # an estimate only: when it cannot be made, training reports what happens
        return
    parameters = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    require_memory(
        TRAINING_BYTES_PER_PARAMETER * parameters + buffers,
        device,
        f"model.dim {dim} asks for a model of {parameters:,} parameters, which to train (weights, gradients and "
        f"Adam's two moments, float32)",
        "choose a smaller --dim",
    )


def _check_run_dir(run_dir: Path) -> None:
    """Refuse a run directory that cannot be a new run: a file, a non-empty directory, an unwritable place."""
    from kgdata.files import exists

    if exists(run_dir) and not run_dir.is_dir():
        raise ImfError(f"--run-dir {run_dir} is not a directory (a file is in the way)")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise ImfError(f"run directory {run_dir} is not empty; runs are write-once (use --resume to continue one)")
    parent = run_dir
    while not exists(parent):
        parent = parent.parent
    if not parent.is_dir():
        raise ImfError(f"cannot create run directory {run_dir}: {parent} is not a directory")


#: What a start writes before its first checkpoint (and the temporary files of checkpoint writes).
_START_FILES = ("config.yaml", "trace.jsonl", "best.pt.tmp", "last.pt.tmp")


def _remove_failed_start(run_dir: Path, existed: bool) -> None:
    """After a failed start, remove what it wrote: a run without a checkpoint is no run."""
    if not run_dir.is_dir() or any((run_dir / name).exists() for name in paths.CHECKPOINTS):
        return
    for name in _START_FILES:
        (run_dir / name).unlink(missing_ok=True)
    if not existed:
        try:
            run_dir.rmdir()
        except OSError:
            pass  # something else is in it: leave it


def train_model(
    dataset: str,
    *,
    config_file: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    modalities: tuple[str, ...] | None = None,
    text_encoder: str | None = None,
    image_encoder: str | None = None,
    structure_init: str | None = None,
    run_dir: Path | None = None,
    progress: bool = True,
) -> "TrainResult":
    """Train IMF on an imported dataset into a new, write-once run directory.

    Everything that can be checked is checked before the run directory is created (the config, the
    device, the features, that the model fits in memory, the run directory itself); if training still
    fails before its first checkpoint, the directory is removed, so no run without a checkpoint is left.
    The dataset is read under its read lock (:mod:`kgdata.locking`).
    """
    from kgdata.locking import locked_store

    flags = dict(flags or {})
    file_values = read_config_file(config_file)
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(dataset)
    _check_run_dir(run_dir)
    with locked_store(dataset, "read") as store:
        # Precedence: --modalities, else the config file's, else structure plus every encoded modality.
        if modalities is None and not _sets_modalities(file_values):
            modalities = available_branches(store)
        if modalities is not None:
            flags["model.modalities"] = list(modalities)
        config = resolve_config(file_values, flags)
        device = pick_device(config.train.device)
        prepared = prepare_data(
            store,
            tuple(config.model.modalities),
            text_encoder=text_encoder,
            image_encoder=image_encoder,
            structure_init=structure_init,
        )
        metadata = {
            "dataset": store.name,
            "dataset_hash": store.content_hash,
            "store": str(store.path),
            "features": prepared.manifests,
            "structure_init": structure_init,
            "git_commit": git_commit(),
        }
    check_model_fits(config, prepared.tensors, device)
    from models.training import train

    return _run_training(
        run_dir, lambda: train(prepared.tensors, config, run_dir, metadata=metadata, progress=progress), config
    )


def _run_training(run_dir: Path, start, config: "RunConfig | None" = None) -> "TrainResult":
    """Run ``start()`` (a training or a resume), turning its failures into :class:`ImfError`; a new run
    that fails before its first checkpoint is removed (only by rank 0 under torchrun)."""
    import os

    import torch

    from models.checkpoint import CheckpointError

    existed = run_dir.exists()
    main_process = os.environ.get("RANK", "0") == "0"
    try:
        return start()
    except BaseException as error:
        if config is not None and main_process:
            _remove_failed_start(run_dir, existed)
        if isinstance(error, (FileExistsError, ValueError, CheckpointError)):
            raise ImfError(str(error)) from error
        if isinstance(error, torch.linalg.LinAlgError):
            raise ImfError(
                f"a linear-algebra step failed on the features ({str(error).splitlines()[0]}); check them for "
                f"extreme values (imf features NAME) and re-encode"
            ) from None
        if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
            dims = f" (model.dim {config.model.dim}, batch size {config.train.batch_size})" if config else ""
            raise EnvironmentFault(f"out of memory while training{dims}; choose a smaller --dim or --batch-size") from None
        if isinstance(error, OSError) and not isinstance(error, FileExistsError):
            from kgdata.locking import workspace_fault

            raise workspace_fault(error) from None
        raise


def run_metadata(run_dir: Path) -> dict:
    """The ``config.yaml`` document of a run directory, checked: a mapping whose ``metadata.dataset`` is a
    dataset name and whose ``config`` is a mapping. Anything else is one :class:`ImfError` naming the file."""
    import yaml

    from kgdata.files import exists, read_text

    path = Path(run_dir) / "config.yaml"
    if not exists(path):
        raise ImfError(f"{run_dir}: not a run directory (no config.yaml)")
    text = read_text(path, "run config")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ImfError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(document, dict):
        raise ImfError(f"{path}: expected a mapping (config, metadata, …), got {type(document).__name__}")
    meta = document.get("metadata")
    if not isinstance(meta, dict):
        raise ImfError(f"{path}: 'metadata' must be a mapping, got {type(meta).__name__}")
    dataset = meta.get("dataset")
    if dataset is None:
        raise ImfError(f"{path}: records no dataset (metadata.dataset)")
    if not isinstance(dataset, str):
        raise ImfError(f"{path}: metadata.dataset must be a dataset name, got {dataset!r}")
    try:
        paths.check_dataset_name(dataset)
    except ImfError as error:
        raise ImfError(f"{path}: metadata.dataset: {error}") from None
    if not isinstance(document.get("config"), dict):
        raise ImfError(f"{path}: 'config' must be a mapping of model/train/eval sections")
    features = meta.get("features", [])
    if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
        raise ImfError(f"{path}: metadata.features must be a list of mappings")
    return document


def run_config(run_dir: Path, document: dict) -> "RunConfig":
    """The :class:`RunConfig` a run recorded; a bad one is an :class:`ImfError` naming ``config.yaml``."""
    from models.config import ConfigError, RunConfig

    try:
        return RunConfig.from_dict(document["config"])
    except (ConfigError, TypeError, AttributeError) as error:
        raise ImfError(f"{Path(run_dir) / 'config.yaml'}: {error}") from None


def resume_model(run_dir: Path, *, progress: bool = True) -> "TrainResult":
    """Continue a killed run with the dataset and features it recorded."""
    from kgdata.locking import locked_store
    from models.training import resume

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ImfError(f"--resume {run_dir} is not a run directory")
    document = run_metadata(run_dir)
    meta = document["metadata"]
    config = run_config(run_dir, document)
    pick_device(config.train.device)
    with locked_store(meta["dataset"], "read") as store:
        _check_same_dataset(store, meta, run_dir)
        prepared = prepare_data(store, tuple(config.model.modalities), **_recorded_encoders(meta))
    return _run_training(run_dir, lambda: resume(run_dir, prepared.tensors, progress=progress))


def _recorded_encoders(meta: dict) -> dict:
    by_modality = {m.get("modality"): m.get("encoder") for m in meta.get("features", [])}
    return {
        "text_encoder": by_modality.get("text"),
        "image_encoder": by_modality.get("image"),
        "structure_init": meta.get("structure_init"),
    }


def _check_same_dataset(store: "EntityStore", meta: dict, run_dir: Path) -> None:
    """Refuse a store that is not the one the run was trained on, or whose feature inputs changed since.

    The graph's content hash covers keys and triples; each recorded feature file's graph input hash
    covers what those features were computed from (texts, images, train triples).
    """
    from kgdata.inputs import graph_input_hash

    if store.content_hash != meta.get("dataset_hash"):
        raise ImfError(
            f"dataset {store.name!r} changed since run {run_dir} was trained (it was re-imported); "
            f"re-import the original data or train a new run"
        )
    for manifest in meta.get("features", []):
        source, recorded = manifest.get("computed_from"), manifest.get("graph_input_hash")
        if not source or not recorded or graph_input_hash(store, source) == recorded:
            continue
        modality = manifest.get("modality", "?")
        raise ImfError(
            f"run {run_dir} was trained on {modality} features computed from other {source} than dataset "
            f"{store.name!r} holds now (re-imported or edited since); re-run imf encode {store.name} "
            f"--modality {modality} and train a new run"
        )


def evaluate_run(
    run_dir: Path,
    *,
    split: str = "test",
    checkpoint: str = "best",
    batch_size: int | None = None,
    device: str = "auto",
    per_relation: bool = False,
    write: bool = True,
) -> dict:
    """Filtered ranking metrics of a run's checkpoint on ``split``: each branch, fused, and mean fusion.

    Filtering removes every known triple of train, valid and test except the one being ranked; ties
    get the realistic rank (the mean of the optimistic and pessimistic ranks). See
    :meth:`imf_cli.service.PredictionService.evaluate` for the report's keys. With ``write``, the report
    is also written to ``<run_dir>/metrics-<split>.json``.
    """
    from imf_cli.service import PredictionService

    if split not in ("valid", "test"):
        raise ImfError(f"unknown split {split!r}; choose valid or test")
    with PredictionService.from_run(run_dir, checkpoint=checkpoint, device=device) as service:
        report = service.evaluate(split, batch_size=batch_size, per_relation=per_relation)
    report = {"split": report["split"], "checkpoint": report["checkpoint"], "run": str(run_dir), **report}
    if write:
        _write_json(metrics_path(run_dir, split), report)
    return report


def metrics_path(run_dir: Path, split: str) -> Path:
    """Where :func:`evaluate_run` writes the metrics of ``split``."""
    return Path(run_dir) / f"metrics-{split}.json"


def _write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON through a temporary file and a rename, so a reader never sees half a file."""
    import json
    import os

    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError as error:
        raise ImfError(f"cannot write {path}: {error.strerror}") from error
