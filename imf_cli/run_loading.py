"""Loading a run: its chosen checkpoint on a device, with its dataset's store open under a read lock.

:func:`load_run` is what ``imf eval``, ``imf predict``, ``imf explain`` and ``imf explore`` open a run
with. It checks, before a score is computed, that the run's dataset is the one it trained on (not
re-imported since), that the checkpoint is the run's own (not another run's copied in) and that the
model fits the graph; and it reads the frozen features again from the feature files (checkpoints
carry their hashes, not the tensors). :mod:`imf_cli.runs` finds and describes runs without torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imf_cli.runs import (
    BRANCH_FEATURES,
    CHECKPOINTS,
    _missing_checkpoint,
    check_feature_options,
    check_same_dataset,
    other_checkpoint_reads,
    run_config,
    run_metadata,
)
from kgdata.errors import ImfError

if TYPE_CHECKING:
    import torch

    from kgdata.store import EntityStore
    from models.imf import IMF


@dataclass
class LoadedRun:
    """A run's model on a device, and its dataset's store, open under the dataset's read lock.

    The caller calls :meth:`close` (or uses it in a ``with`` block): while it is open, an ``imf import
    --replace`` of the dataset fails clearly instead of pulling the store from under it.
    """

    run_dir: Path
    checkpoint: str
    model: "IMF"
    store: "EntityStore"
    document: dict
    lock: Any = None

    def close(self) -> None:
        """Close the store and release the dataset's read lock."""
        try:
            self.store.close()
        finally:
            if self.lock is not None:
                self.lock.release()

    def __enter__(self) -> "LoadedRun":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def load_run(run_dir: str | Path, *, checkpoint: str = "best", device: str = "auto") -> LoadedRun:
    """Load ``<run_dir>/<checkpoint>.pt`` on ``device`` (``auto``, ``cpu``, ``cuda[:i]``) and open its dataset.

    Raises:
        ImfError: If the run directory, the checkpoint or the dataset cannot be used, or the dataset
            was re-imported since the run was trained.
    """
    from kgdata.locking import dataset_lock
    from kgdata.store import EntityStore
    from models.checkpoint import CheckpointError, load_checkpoint

    if checkpoint not in CHECKPOINTS:
        raise ImfError(f"unknown checkpoint {checkpoint!r}; choose best or last")
    run_dir = Path(run_dir)
    document = run_metadata(run_dir)
    metadata = document.get("metadata") or {}
    if "dataset" not in metadata:
        raise ImfError(f"{run_dir / 'config.yaml'}: records no dataset")
    run_config(run_dir, document)  # a damaged config is named before anything reads its parts
    torch_device = pick_device(device)
    lock = dataset_lock(metadata["dataset"], "read").acquire()
    try:
        store = EntityStore.open(metadata["dataset"])
    except BaseException:
        lock.release()
        raise
    try:
        check_same_dataset(store, metadata, run_dir)
        features = _run_features(store, document, run_dir) if _needs_features(document) else None
        missing = _missing_checkpoint(run_dir, checkpoint)
        if missing:
            raise ImfError(missing)
        try:
            # trained on other data of the same sizes, the weights would load and score other entities
            fingerprint = (document.get("data") or {}).get("fingerprint")
            model, stored = load_checkpoint(
                run_dir / f"{checkpoint}.pt", map_location=torch_device, features=features,
                data_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
            )
        except CheckpointError as error:
            raise ImfError(f"{error}{_other_checkpoint_hint(run_dir, checkpoint)}") from error
        check_model_fits_store(model, store, run_dir / f"{checkpoint}.pt")
        check_checkpoint_is_the_runs(stored, run_dir, document, checkpoint)
    except BaseException:
        store.close()
        lock.release()
        raise
    return LoadedRun(run_dir, checkpoint, model, store, document, lock)


def _other_checkpoint_hint(run_dir: Path, checkpoint: str) -> str:
    """"; its last.pt reads: add --checkpoint last" when the other checkpoint is a sound-looking file."""
    other = other_checkpoint_reads(run_dir, checkpoint)
    return f"; its {other}.pt reads: add --checkpoint {other} to use that one" if other else ""


def check_checkpoint_is_the_runs(stored: dict, run_dir: Path, document: dict, checkpoint: str) -> None:
    """Refuse a checkpoint whose config differs from the run's ``config.yaml`` beyond the schedule
    (:meth:`models.config.RunConfig.differences_beyond_schedule`): another run's weights, copied in,
    would be reported as this run's."""
    from models.config import ConfigError, RunConfig

    path = Path(run_dir) / f"{checkpoint}.pt"
    try:
        differ = run_config(run_dir, document).differences_beyond_schedule(RunConfig.from_dict(stored))
    except ConfigError:
        return  # the checkpoint loaded, so its config rebuilt: nothing to compare against
    if differ:
        raise ImfError(
            f"{path}: its {', '.join(differ[:3])}{' …' if len(differ) > 3 else ''} "
            "differ from the run's config.yaml: it is another run's checkpoint"
        )


def check_model_fits_store(model, store: "EntityStore", checkpoint: Path | None = None) -> None:
    """Raise an :class:`ImfError` unless ``model`` has as many entities and relations as the training
    graph of ``store``: a checkpoint copied from another run would index past the graph (or silently
    score the wrong entities)."""
    graph = store.num_graph_entities
    if (model.num_entities, model.num_relations) != (graph, store.num_relations):
        where = f"{checkpoint}: " if checkpoint is not None else ""
        raise ImfError(
            f"{where}the model has {model.num_entities} entities and {model.num_relations} relations, "
            f"but the graph of dataset {store.name!r} has {graph} and {store.num_relations}"
            + ("; is the checkpoint another run's?" if checkpoint is not None else "")
        )


def _needs_features(document: dict) -> bool:
    """Whether the run's model scores from its frozen features (``project`` mode), which checkpoints do not hold."""
    model = ((document or {}).get("config") or {}).get("model") or {}
    return model.get("feature_mode") == "project"


def _run_features(store, document: dict, run_dir: Path) -> dict:
    """Branch → ``(matrix, mask)``: the frozen features the run trained with, read again from the feature files."""
    import torch

    from kgdata.features import load_features

    recorded = {m["modality"]: m["encoder"] for m in (document.get("metadata") or {}).get("features", [])}
    features = {}
    for branch in document["config"]["model"]["modalities"]:
        modality = BRANCH_FEATURES.get(branch)
        if modality is not None:
            feature_set = load_features(store, modality, recorded.get(modality))
            check_feature_options(feature_set, document.get("metadata"), run_dir)
            graph = store.num_graph_entities  # the model knows the graph entities only
            features[branch] = (
                torch.from_numpy(feature_set.matrix[:graph]),
                torch.from_numpy(feature_set.mask[:graph]),
            )
    return features


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
            raise ImfError(
                f"device {name}, but CUDA is not available on this machine; use --device cpu or auto (or "
                "train.device in a config file)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ImfError(
                f"device {name}, but this machine has {count} CUDA device(s): cuda:0 … cuda:{count - 1} (--device, "
                "or train.device in a config file)"
            )
    return device
