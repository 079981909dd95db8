"""Entities outside the training graph, for the prediction service: their features and their placement.

An *added* entity (a store id ``G … N-1``, see ``EntityStore.num_graph_entities``) and an entity given
inline (``imf predict --new-text``) have features but no facts. This module loads the feature files a
run was trained with (every store entity has a row), places unseen entities with
:mod:`models.inductive`, and encodes inline text and images with the encoder, and the options, that
the run's features were computed with (the feature file records them).

The placement of a run is stored in ``<run>/inductive-<checkpoint>.safetensors``. ``imf train`` writes
it for ``best`` once training ends (:func:`write_run_placement`). A run without one (trained before
placements existed, or ``last``) gets one fitted on first use and stored if the run directory is
writable. A stored placement is used only when its fingerprint matches the checkpoint's entity vectors
and the graph entities' features; otherwise it is refitted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from imf_cli.pipeline import BRANCH_FEATURES
from kgdata.errors import DataError, ImfError

if TYPE_CHECKING:
    import torch

    from kgdata.features import FeatureSet
    from kgdata.store import EntityStore
    from models.evaluation import FrozenScorer
    from models.imf import IMF
    from models.inductive import PlacementMap



def placement_path(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """Where the placement of ``<run_dir>/<checkpoint>.pt`` is stored."""
    return Path(run_dir) / f"inductive-{checkpoint}.safetensors"


def run_feature_sets(store: "EntityStore", model: "IMF", metadata: Mapping | None) -> dict[str, "FeatureSet"]:
    """Branch → the feature set it was trained with, one row per store entity.

    The encoders come from the run's recorded feature manifests (``metadata["features"]``); without
    them, the most recent features of each modality.

    Raises:
        ImfError: If a feature file is missing or does not fit the dataset or the model.
    """
    from kgdata.features import load_features

    encoders = {m["modality"]: m.get("encoder") for m in (metadata or {}).get("features", []) or []}
    sets = {}
    for branch, width in model.feature_dims.items():
        modality = BRANCH_FEATURES.get(branch)
        if modality is None:
            continue
        feature_set = load_features(store, modality, encoders.get(modality))
        if feature_set.dim != width:
            raise DataError(
                f"holds {feature_set.dim}-wide {modality} features, but the model's {branch} branch was trained "
                f"on {width}-wide ones",
                feature_set.path,
            )
        sets[branch] = feature_set
    return sets


def graph_features(sets: Mapping[str, "FeatureSet"], graph_entities: int) -> dict[str, tuple["torch.Tensor", "torch.Tensor"]]:
    """Branch → ``(matrix (G, D), mask (G,))`` of the graph entities: what the model trained with."""
    import torch

    return {
        branch: (torch.from_numpy(s.matrix[:graph_entities]), torch.from_numpy(s.mask[:graph_entities]))
        for branch, s in sets.items()
    }


def fitted_placement(
    model: "IMF",
    scorer: "FrozenScorer",
    features: Mapping[str, tuple["torch.Tensor", "torch.Tensor"]],
    triples: "torch.Tensor",
    *,
    run_dir: str | Path | None,
    checkpoint: str = "best",
    progress: bool = False,
) -> dict[str, "PlacementMap"]:
    """The run's stored placement when it fits ``model`` and ``features``; else a fresh fit, stored if possible.

    Args:
        model, scorer: The checkpoint's model and its frozen scorer.
        features: Branch → the graph entities' ``(matrix (G, D), mask (G,))``.
        triples: The graph facts the placement is fitted to rank (train and valid).
        run_dir: The run directory (None: fit, store nothing).
        checkpoint: ``best`` or ``last``.
        progress: Show a progress bar while fitting.
    """
    from models.inductive import PlacementError, load_placement, placement_fingerprint, save_placement
    from models.placement import fit_placement

    fingerprint = placement_fingerprint(scorer, features)
    path = placement_path(run_dir, checkpoint) if run_dir is not None else None
    if path is not None and path.is_file():
        try:
            maps, metadata = load_placement(path)
            if metadata.get("fingerprint") == fingerprint:
                return maps
        except PlacementError:
            pass  # damaged: fitted again below and rewritten
    with _fit_progress(progress) as update:
        maps = fit_placement(model, features, triples=triples, progress=update)
    if path is not None:
        metadata = {
            "fingerprint": fingerprint,
            "checkpoint": checkpoint,
            "triples": int(len(triples)),
            "fitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        try:
            save_placement(path, maps, metadata)
        except OSError:
            pass  # a read-only run still scores; it fits again next time
    return maps


@contextlib.contextmanager
def _fit_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress bar on stderr for :func:`models.placement.fit_placement`, one line per stage."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"placement for new entities: {stage} epochs", total=total)
            bar.update(tasks[stage], completed=done)

        yield update


def write_run_placement(
    run_dir: str | Path,
    features: Mapping[str, tuple["torch.Tensor", "torch.Tensor"]],
    triples: "torch.Tensor",
    *,
    checkpoint: str = "best",
    progress: bool = False,
) -> Path | None:
    """Fit and store the placement of a finished run's checkpoint (the explicit step after ``imf train``).

    Returns:
        The placement file, or None when the model has no feature branch (nothing to place).
    """
    from models.checkpoint import load_checkpoint
    from models.evaluation import FrozenScorer

    model, _ = load_checkpoint(Path(run_dir) / f"{checkpoint}.pt")
    if not model.feature_dims:
        return None
    fitted_placement(
        model, FrozenScorer(model), features, triples, run_dir=run_dir, checkpoint=checkpoint, progress=progress
    )
    return placement_path(run_dir, checkpoint)


def encode_inline(
    sets: Mapping[str, "FeatureSet"], *, text: str | None = None, image: str | Path | None = None, device: str = "cpu"
) -> dict[str, tuple["torch.Tensor", "torch.Tensor"]]:
    """Encode one inline entity's ``text`` and ``image`` as the run's features were: branch → ``(1, D)``, mask.

    Raises:
        ImfError: If neither is given, the run has no branch for one that is, or the run's features
            cannot be reproduced (imported from a file, or from an encoder that is not installed).
    """
    import torch

    from kgdata.encoders.pipeline import encode_items

    given = {"text": text, "image": image}
    if all(value is None for value in given.values()):
        raise ImfError("give the new entity's text (--new-text) or image (--new-image)")
    by_modality = {BRANCH_FEATURES[branch]: branch for branch in sets}
    encoded = {}
    for modality, value in given.items():
        if value is None:
            continue
        branch = by_modality.get(modality)
        if branch is None:
            flag = "--new-text" if modality == "text" else "--new-image"
            raise ImfError(
                f"the run has no {'text' if modality == 'text' else 'visual'} branch (it was trained without "
                f"{modality} features), so {flag} cannot score"
            )
        feature_set = sets[branch]
        spec = feature_set.extra.get("options")
        if not spec:
            raise ImfError(
                f"the run's {modality} features came from {feature_set.encoder!r} (imported, not encoded by imf), so "
                f"imf cannot encode new {modality} the same way; add the entity with its features instead"
            )
        if modality == "image" and not Path(value).expanduser().is_file():
            raise DataError("no such image file", value)
        item = str(Path(value).expanduser().resolve()) if modality == "image" else value
        matrix = encode_items(modality, spec, [item], device=device)
        if matrix.shape[1] != feature_set.dim:
            raise ImfError(
                f"encoder {feature_set.encoder!r} now gives {matrix.shape[1]}-wide {modality} features, but the run "
                f"was trained on {feature_set.dim}-wide ones"
            )
        encoded[branch] = (torch.from_numpy(matrix), torch.ones(1, dtype=torch.bool))
    return encoded
