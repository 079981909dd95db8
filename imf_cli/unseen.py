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
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from imf_cli.pipeline import BRANCH_FEATURES
from imf_cli.scoring import decision_terms
from kgdata.errors import DataError, ImfError

if TYPE_CHECKING:
    import torch

    from imf_cli.service import EntityInfo, PredictionService, QueryResult
    from kgdata.features import FeatureSet
    from kgdata.store import EntityStore
    from models.evaluation import FrozenScorer
    from models.imf import IMF
    from models.inductive import InductiveScorer, PlacedEntities, PlacementMap



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
    from imf_cli.runs import check_feature_options
    from kgdata.features import load_features

    encoders = {m["modality"]: m.get("encoder") for m in (metadata or {}).get("features", []) or []}
    sets = {}
    for branch, width in model.feature_dims.items():
        modality = BRANCH_FEATURES.get(branch)
        if modality is None:
            continue
        feature_set = load_features(store, modality, encoders.get(modality))
        check_feature_options(feature_set, metadata)
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

    model, _ = load_checkpoint(Path(run_dir) / f"{checkpoint}.pt", features=features)
    if not model.feature_dims:
        return None
    fitted_placement(
        model, FrozenScorer(model), features, triples, run_dir=run_dir, checkpoint=checkpoint, progress=progress
    )
    return placement_path(run_dir, checkpoint)


#: Spaces, tabs and line breaks: a paragraph pasted into --new-text reads as one line.
_SPACES = re.compile(r"[ \t\r\n]+")


def inline_text(text: str | None) -> str | None:
    """The text of an entity given inline, as it is encoded and shown: each run of whitespace (newlines
    and tabs of a pasted paragraph too) one space.

    Raises:
        DataError: If it holds a control character, a line separator or a bidirectional override,
            which an imported description may not hold either (:func:`kgdata.files.check_text`).
    """
    from kgdata.files import check_text

    if text is None:
        return None
    return check_text(_SPACES.sub(" ", text).strip(), what="the text of a new entity")


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
    from kgdata.files import check_regular_file, exists

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
        if modality == "image":
            if not exists(Path(value).expanduser()):
                raise DataError("no such image file", value)
            check_regular_file(Path(value).expanduser(), "image file")  # a directory, a FIFO, /dev/zero
        item = str(Path(value).expanduser().resolve()) if modality == "image" else value
        matrix = encode_items(modality, spec, [item], device=device)
        if matrix.shape[1] != feature_set.dim:
            raise ImfError(
                f"encoder {feature_set.encoder!r} now gives {matrix.shape[1]}-wide {modality} features, but the run "
                f"was trained on {feature_set.dim}-wide ones"
            )
        encoded[branch] = (torch.from_numpy(matrix), torch.ones(1, dtype=torch.bool))
    return encoded


class UnseenEntities:
    """The entities outside one service's training graph: the run's features, its placement, the added ones.

    Everything is loaded on first use, under the service's lock: a service that never meets an unseen
    entity never reads a feature file.
    """

    def __init__(self, service: "PredictionService"):
        self.service = service
        self._feature_sets: dict | None = None
        self._inductive: "InductiveScorer | None" = None
        self._added: "tuple[list[int], PlacedEntities | None] | None" = None

    def forget_added(self) -> None:
        """Entities were added to the store: read the feature files and place the added entities again
        on next use (the placement of the graph, ``inductive``, stays)."""
        with self.service.lock:
            self._feature_sets = self._added = None

    def feature_sets(self) -> dict[str, "FeatureSet"]:
        """Branch → the feature set the run was trained with (see :func:`run_feature_sets`)."""
        service = self.service
        with service.lock:
            service.refresh()  # an imf encode since the last look makes the files read again
            if self._feature_sets is None:
                self._feature_sets = run_feature_sets(service.store, service.model, service.metadata)
            return self._feature_sets

    def inductive(self) -> "InductiveScorer":
        """The run's :class:`~models.inductive.InductiveScorer`, with its stored (or freshly fitted) placement."""
        import torch

        from models.inductive import InductiveScorer

        service = self.service
        with service.lock:
            if self._inductive is None:
                if not service.model.feature_dims:
                    where = f"run {service.run_dir.name}" if service.run_dir is not None else "this run"
                    raise ImfError(
                        f"{where} has only a structure branch, which knows only the entities of the training "
                        "graph; train with text or image features to score entities outside it"
                    )
                features = graph_features(self.feature_sets(), service.num_graph_entities)
                facts = torch.cat([service.splits["train"], service.splits["valid"]])
                maps = fitted_placement(
                    service.model, service.scorer, features, facts, run_dir=service.run_dir,
                    checkpoint=service.checkpoint,
                )
                self._inductive = InductiveScorer(service.model, service.scorer, maps)
            return self._inductive

    def added(self) -> "tuple[list[int], PlacedEntities | None]":
        """The ids of the entities added after training (``G … N-1``), and their placements (None: none)."""
        import torch

        service = self.service
        with service.lock:
            service.refresh()  # entities added or features encoded since the last look place them again
            if self._added is None:
                ids = list(range(service.num_graph_entities, service.num_entities))
                placed = None
                if ids:
                    features = {
                        branch: (torch.from_numpy(s.matrix[ids[0] :]), torch.from_numpy(s.mask[ids[0] :]))
                        for branch, s in self.feature_sets().items()
                    }
                    placed = self.inductive().place(features)
                self._added = (ids, placed)
            return self._added

    def placed(self, entity: int) -> "PlacedEntities":
        """The placement of one added entity."""
        from models.inductive import PlacedEntities

        _, placed = self.added()
        row = int(entity) - self.service.num_graph_entities
        return PlacedEntities(
            {name: vectors[row : row + 1] for name, vectors in placed.vectors.items()},
            placed.present[row : row + 1],
            placed.branch_names,
        )


#: What an entity needs for a feature branch to score it, in words.
NEEDS = {"text": "a description", "visual": "an image"}


def feature_words(branches: tuple[str, ...]) -> list[str]:
    """What an entity needs for each of ``branches`` to score it, in words."""
    return [NEEDS[b] for b in branches if b in NEEDS] or ["features"]


def missing_features_advice(entity: "EntityInfo", branches: tuple[str, ...], dataset: str) -> str:
    """What to do for an added entity that none of ``branches`` can score: encode what it already has
    (a description or an image not yet turned into features), or add what it lacks."""
    has = {"text": bool(entity.description and entity.description.strip()), "visual": bool(entity.image)}
    encodable = [b for b in branches if has.get(b)]
    if encodable:
        what = " and ".join(NEEDS[b] for b in encodable)
        commands = " and ".join(f"imf encode {dataset} --modality {BRANCH_FEATURES[b]}" for b in encodable)
        return f"it has {what} not encoded yet: run {commands}"
    return f"it needs {' or '.join(feature_words(branches))}; add them and run imf encode {dataset}"


def rank_unseen(
    service: "PredictionService", entity: "EntityInfo", heads: "torch.Tensor | PlacedEntities", relation: int, k: int,
    include_known: bool, include_new: bool,
) -> "QueryResult":
    """:meth:`PredictionService.top_k` where the query entity or some candidates are outside the training graph.

    ``heads`` is the query entity: a ``(1,)`` graph id, or its placement. With ``include_new`` the
    entities added after training are candidates too, after the graph's.
    """
    import torch

    from imf_cli.service import SPLITS, Prediction, QueryResult
    from models.inductive import PlacedEntities, renormalised

    inductive = service.inductive()
    in_graph = not isinstance(heads, PlacedEntities)
    if not in_graph and not heads.present.any():
        raise ImfError(
            f"entity {entity.key!r} is not in the training graph and has no feature that a branch of this run "
            f"can score it by; {missing_features_advice(entity, inductive.placeable, service.dataset)}"
        )
    added_ids, added = service.unseen.added() if include_new else ([], None)
    known = service.known(entity.id, relation) if in_graph else {split: torch.zeros(0, dtype=torch.long) for split in SPLITS}
    with torch.inference_mode():
        scores = inductive.score(torch.tensor([int(relation)]), heads=heads, candidates=added)
        fused = scores.fused[0].clone()
        hidden = 0
        if not include_known and in_graph:
            answers = torch.unique(torch.cat(list(known.values())))
            hidden = answers.numel()
            fused[answers.to(fused.device)] = float("-inf")
        count = min(k, int(torch.isfinite(fused).sum()))
        top = torch.topk(fused, count).indices.cpu().tolist() if count > 0 else []
        head_present = heads.present[0] if not in_graph else torch.ones(len(service.branch_names), dtype=torch.bool)
        base = scores.weights[0].cpu()
        query_weights = renormalised(base, head_present.cpu())
        rows = []
        for column in top:
            present = torch.tensor([bool(scores.present[name][0, column]) for name in service.branch_names])
            pair_weights = renormalised(base, present).tolist()
            logits = {
                name: float(scores.branches[name][0, column])
                for name, on in zip(service.branch_names, present.tolist()) if on
            }
            contributions = decision_terms(
                dict(zip(service.branch_names, pair_weights)), logits, service.model.decision.space
            )
            rows.append((column, float(scores.fused[0, column]), logits, contributions))
    graph = service.num_graph_entities
    ids = [column if column < graph else added_ids[column - graph] for column, *_ in rows]
    known_ids = {split: set(tails.tolist()) for split, tails in known.items()}
    predictions = [
        Prediction(
            rank=position + 1,
            entity=info,
            fused=fused_value,
            branches=logits,
            contributions=contributions,
            known=frozenset(split for split in SPLITS if info.id in known_ids[split]),
            in_graph=column < graph,
        )
        for position, (info, (column, fused_value, logits, contributions)) in enumerate(zip(service.entities(ids), rows))
    ]
    weights = {
        name: value
        for name, value, on in zip(service.branch_names, query_weights.tolist(), head_present.tolist()) if on
    }
    return QueryResult(
        entity, service.relation(relation), weights, predictions, hidden, in_graph=in_graph, include_new=include_new
    )
