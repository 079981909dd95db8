"""The one place that wires the entity store, the feature files and the model together.

Commands call these functions; :mod:`models` never sees SQLite and :mod:`kgdata` never sees the model.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from kgdata import paths
from kgdata.errors import ImfError

if TYPE_CHECKING:
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
    initialise the structure branch, or None for a random initialisation. The model knows the graph
    entities only (ids ``0 … G-1``); the rows of entities added later are left out.
    """
    import torch

    from kgdata.features import load_features
    from kgdata.rules import graph_entities
    from models.training import KGTensors

    unknown = [m for m in modalities if m not in BRANCHES]
    if unknown:
        raise ImfError(f"unknown modality {unknown[0]!r}; choose from {', '.join(BRANCHES)}")
    encoders = {"text": text_encoder, "image": image_encoder}
    graph = graph_entities(store)
    features, manifests = {}, []
    for branch in modalities:
        if branch == "structure":
            continue
        modality = BRANCH_FEATURES[branch]
        feature_set = load_features(store, modality, encoders[modality])
        features[branch] = (torch.from_numpy(feature_set.matrix[:graph]), torch.from_numpy(feature_set.mask[:graph]))
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
        "path": str(feature_set.path),
    }


def read_config_file(config_file: Path | None) -> dict:
    """The values of a YAML config file (empty without one). Errors become :class:`ImfError`."""
    from models.config import ConfigError, load_yaml

    if config_file is None:
        return {}
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


def train_model(
    dataset: str,
    *,
    config_file: Path | None = None,
    config_values: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
    modalities: tuple[str, ...] | None = None,
    text_encoder: str | None = None,
    image_encoder: str | None = None,
    structure_init: str | None = None,
    run_dir: Path | None = None,
    progress: bool = True,
) -> "TrainResult":
    """Train IMF on an imported dataset into a new, write-once run directory.

    The config is layered as defaults ← ``config_file`` (or ``config_values``, a mapping of the same
    shape) ← ``flags``.
    """
    from kgdata.store import EntityStore
    from models.training import train

    flags = dict(flags or {})
    file_values = dict(config_values) if config_values is not None else read_config_file(config_file)
    with EntityStore.open(dataset) as store:
        # Precedence: --modalities, else the config file's, else structure plus every encoded modality.
        if modalities is None and not _sets_modalities(file_values):
            modalities = available_branches(store)
        if modalities is not None:
            flags["model.modalities"] = list(modalities)
        if structure_init is not None:
            flags["model.structure_init"] = structure_init
        config = resolve_config(file_values, flags)
        structure_init = config.model.structure_init
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
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(dataset)
    try:
        result = train(prepared.tensors, config, run_dir, metadata=metadata, progress=progress)
    except (FileExistsError, ValueError) as error:
        raise ImfError(str(error)) from error
    _place_unseen(result, prepared, progress=progress)
    return result


def _place_unseen(result: "TrainResult", prepared: PreparedData, *, progress: bool) -> None:
    """The step after training: fit and store the placement of entities outside the graph (see :mod:`imf_cli.unseen`).

    Under ``torchrun`` only rank 0 writes it.
    """
    import os

    import torch

    from imf_cli.unseen import write_run_placement

    if os.environ.get("RANK", "0") == "0" and (Path(result.run_dir) / "best.pt").is_file():
        facts = torch.cat([prepared.tensors.train, prepared.tensors.valid])
        write_run_placement(result.run_dir, prepared.tensors.features, facts, progress=progress)


def run_metadata(run_dir: Path) -> dict:
    """The ``config.yaml`` document of a run directory."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ImfError(f"{run_dir}: not a run directory (no config.yaml)")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ImfError(f"{path}: not valid YAML ({error})") from error


def resume_model(run_dir: Path, *, progress: bool = True) -> "TrainResult":
    """Continue a killed run with the dataset and features it recorded.

    A run killed before it wrote any ``last.pt`` starts again from epoch 0 with its recorded config
    and seed, which gives the run it would have been.
    """
    from kgdata.store import EntityStore
    from models.checkpoint import CheckpointError
    from models.training import restart, resume

    document = run_metadata(run_dir)
    meta = document["metadata"]
    with EntityStore.open(meta["dataset"]) as store:
        _check_same_dataset(store, meta, run_dir)
        prepared = prepare_data(
            store,
            tuple(document["config"]["model"]["modalities"]),
            **_recorded_encoders(meta),
        )
    try:
        if not (Path(run_dir) / "last.pt").exists():
            result = restart(run_dir, prepared.tensors, _recorded_config(run_dir, document), progress=progress)
        else:
            result = resume(run_dir, prepared.tensors, progress=progress)
    except (CheckpointError, ValueError) as error:
        raise ImfError(str(error)) from error
    _place_unseen(result, prepared, progress=progress)
    return result


def run_features(store: "EntityStore", document: dict) -> dict:
    """Branch → ``(matrix, mask)``: the frozen features a run trained with, read again from the feature files."""
    meta = document["metadata"]
    modalities = tuple(document["config"]["model"]["modalities"])
    prepared = prepare_data(store, modalities, **{**_recorded_encoders(meta), "structure_init": None})
    return dict(prepared.tensors.features)


def _recorded_config(run_dir: Path, document: dict) -> "RunConfig":
    from models.config import ConfigError, RunConfig

    try:
        return RunConfig.from_dict(document["config"])
    except (ConfigError, AttributeError, TypeError) as error:
        raise ImfError(f"{Path(run_dir) / 'config.yaml'}: {error}") from error


def _recorded_encoders(meta: dict) -> dict:
    by_modality = {m["modality"]: m["encoder"] for m in meta.get("features", [])}
    return {
        "text_encoder": by_modality.get("text"),
        "image_encoder": by_modality.get("image"),
        "structure_init": meta.get("structure_init"),
    }


def _check_same_dataset(store: "EntityStore", meta: dict, run_dir: Path) -> None:
    if store.content_hash != meta.get("dataset_hash"):
        raise ImfError(
            f"dataset {store.name!r} changed since run {run_dir} was trained (it was re-imported); "
            f"re-import the original data or train a new run"
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
