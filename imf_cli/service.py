"""The prediction service: a trained run plus its entity store, loaded once, answering link queries.

``imf predict`` and the ``imf explore`` TUI use :class:`PredictionService`; it only answers queries
(evaluation lives in :mod:`imf_cli.run_eval`, runs in :mod:`imf_cli.runs`). It imports
neither Typer nor Textual, and imports torch only when a service is built, so importing this module
is cheap. Everything it returns is a plain frozen dataclass, so a fake service for tests only
has to produce the same dataclasses.

Relation ids follow the model: ``0 … R-1`` are the dataset's relations, ``R … 2R-1`` their inverses.
``(t, r + R, ?)`` asks for the heads of ``(?, r, t)``.
"""

from __future__ import annotations

import difflib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from imf_cli.scoring import branch_shares, decision_terms
from kgdata.errors import ImfError, UnknownEntityError
from kgdata.store import Entity, EntityStore, fold, named_by
from kgdata.wording import count, truncate

if TYPE_CHECKING:
    import torch

    from imf_cli.explain import Explanation
    from kgdata.rules import Edges, RelationPairIndex
    from models.imf import IMF
    from models.inductive import InductiveScorer, PlacedEntities

SPLITS = ("train", "valid", "test")
#: Candidates listed in an ambiguous- or unknown-name error.
CANDIDATES = 5
#: Entity counts up to which an unknown name is compared with every name for suggestions.
FUZZY_LIMIT = 200_000
#: Marks before a relation that ask for its inverse, longest first: ``← r``, ``<- r`` or ``< r``.
#: Marks of an inverse relation typed before its name; ``^`` is SPARQL's inverse path (``^borders``).
INVERSE_MARKS = ("←", "<-", "<", "^")
#: The id of an entity given inline (``imf predict --new-text``), which the store does not hold.
INLINE_ID = -1


class AmbiguousNameError(ImfError):
    """A name matched several entities or relations; ``candidates`` holds the best few."""

    def __init__(self, message: str, candidates: list):
        super().__init__(message)
        self.candidates = candidates


#: One entity as shown to people: the store's own record (``image`` is an absolute path, or None).
EntityInfo = Entity


@dataclass(frozen=True)
class RelationChoice:
    """A relation id of the model, ``[0, 2R)``. Inverse relations predict heads."""

    id: int
    key: str
    name: str
    inverse: bool = False

    @property
    def label(self) -> str:
        """``name``, or ``← name`` for an inverse relation."""
        return f"← {self.name}" if self.inverse else self.name

    def to_dict(self) -> dict:
        return {"id": self.id, "key": self.key, "name": self.name, "inverse": self.inverse}


@dataclass(frozen=True)
class Prediction:
    """One ranked candidate answer.

    Attributes:
        rank: 1-based position among the returned rows.
        entity: The candidate.
        fused: The fused logit (the decision fusion of the branch logits).
        branches: Branch name → that branch's logit, for the branches that scored the triple (all of
            them between graph entities; an end outside the training graph has no structure score).
        contributions: Branch name → its term of the fused decision, with the weights renormalised over
            ``branches`` (:func:`imf_cli.scoring.decision_terms`): weight × logit, summing to ``fused``, or
            in probability space weight × probability, summing to ``σ(fused)``.
        known: The splits in which the triple (head, relation, candidate) is a known fact.
        in_graph: False for a candidate added to the store after training.
    """

    rank: int
    entity: EntityInfo
    fused: float
    branches: Mapping[str, float]
    contributions: Mapping[str, float]
    known: frozenset[str] = field(default_factory=frozenset)
    in_graph: bool = True

    @property
    def scored_by(self) -> tuple[str, ...]:
        """The branches that scored this row."""
        return tuple(self.branches)

    def to_dict(self) -> dict:
        """Plain JSON values; ``known`` becomes one flag per split."""
        return {
            "rank": self.rank,
            "entity": self.entity.to_dict(),
            "in_graph": self.in_graph,
            "scored_by": list(self.scored_by),
            "fused": self.fused,
            "branches": dict(self.branches),
            "contributions": dict(self.contributions),
            "known": {split: split in self.known for split in SPLITS},
        }


@dataclass(frozen=True)
class Fact:
    """A known triple of the store, with names, for supporting evidence."""

    head: EntityInfo
    relation: RelationChoice
    tail: EntityInfo
    split: str

    def to_dict(self) -> dict:
        return {
            "head": self.head.to_dict(),
            "relation": self.relation.to_dict(),
            "tail": self.tail.to_dict(),
            "split": self.split,
        }


@dataclass(frozen=True)
class QueryResult:
    """The answer to one query ``(entity, relation, ?)``.

    Attributes:
        entity: The query's given entity (the head, or the tail for an inverse relation); an entity
            given inline has id :data:`INLINE_ID`.
        relation: The relation asked about.
        weights: Branch name → the decision-fusion weight used for this relation, for the branches
            that score the query entity (renormalised over them when it is outside the training graph).
        predictions: The top rows, best first.
        hidden_known: How many known answers were left out (0 with ``include_known``).
        in_graph: False when the query entity is outside the training graph (added, or inline).
        include_new: The entities added after training were ranked too (``top_k(..., include_new=True)``).
    """

    entity: EntityInfo
    relation: RelationChoice
    weights: Mapping[str, float]
    predictions: list[Prediction]
    hidden_known: int = 0
    in_graph: bool = True
    include_new: bool = False

    @property
    def scored_by(self) -> tuple[str, ...]:
        """The branches that score the query entity."""
        return tuple(self.weights)

    def shares(self, prediction: Prediction) -> dict[str, float]:
        """Each branch's share of ``prediction``'s fused decision (:func:`imf_cli.scoring.branch_shares`)."""
        return branch_shares(self.weights, prediction.branches)

    def to_dict(self) -> dict:
        return {
            "entity": self.entity.to_dict(),
            "relation": self.relation.to_dict(),
            "in_graph": self.in_graph,
            "scored_by": list(self.scored_by),
            "weights": dict(self.weights),
            "hidden_known": self.hidden_known,
            "predictions": [p.to_dict() for p in self.predictions],
        }


class Service(Protocol):
    """What the TUI and ``imf predict`` need; :class:`PredictionService` implements it."""

    dataset: str
    branch_names: tuple[str, ...]

    def search_entities(self, text: str, limit: int = 10) -> list[EntityInfo]: ...
    def resolve_entity(self, text: str) -> EntityInfo: ...
    def relations(self) -> list[RelationChoice]: ...
    def resolve_relation(self, text: str, *, inverse: bool = False) -> RelationChoice: ...
    def entity(self, entity_id: int) -> EntityInfo: ...
    def is_added(self, entity_id: int) -> bool: ...
    def top_k(
        self, entity: int, relation: int, k: int = 10, *, include_known: bool = False, include_new: bool = False
    ) -> QueryResult: ...
    def supporting_facts(self, head: int, tail: int, limit: int = 5) -> list[Fact]: ...
    def explain(self, head: int, relation: int, tail: int, *, include_new: bool = False) -> "Explanation": ...


class UnknownNameError(UnknownEntityError):
    """No entity or relation matches a name; ``candidates`` holds the closest few (maybe none)."""

    def __init__(self, message: str, candidates: list):
        super().__init__(message)
        self.candidates = candidates


def _echo(text: str) -> str:
    """What the user typed, quoted; past 40 characters its start and end around how many were left out
    (as the CLI's error lines elide long words): a long paste echoed whole pushed the advice after it
    off the TUI's three-line status line."""
    if len(text) <= 40:
        return repr(text)
    return repr(f"{text[:28]}…[{len(text) - 36:,} characters]…{text[-8:]}")


def _describe(candidates: list) -> str:
    return "; ".join(f"{c.label if isinstance(c, RelationChoice) else c.name} [{c.key}]" for c in candidates)


def split_relation_text(text: str) -> tuple[str, bool | None]:
    """Split an inverse mark (:data:`INVERSE_MARKS`) off typed relation text.

    ``"← borders"``, ``"<- borders"`` and ``"<borders"`` → ``("borders", True)``; without a mark the
    direction is open: ``"borders"`` → ``("borders", None)``. The text is stripped.
    """
    text = text.strip()
    for mark in INVERSE_MARKS:
        if text.startswith(mark):
            return text[len(mark) :].strip(), True
    return text, None


def closest_relations(text: str, relations: list[RelationChoice]) -> list[RelationChoice]:
    """The relations most like ``text`` (at most :data:`CANDIDATES`): by the best similarity to their key,
    name or a word of either, for typos ("shres bordr")."""

    def similarity(relation: RelationChoice) -> float:
        words = {relation.key.casefold(), relation.name.casefold()}
        words |= {w for name in tuple(words) for w in re.split(r"[\W_]+", name) if w}
        return max(difflib.SequenceMatcher(None, text, word).ratio() for word in words)

    scored = sorted(((similarity(r), r.id, r) for r in relations), key=lambda item: (-item[0], item[1]))
    return [r for score, _, r in scored[:CANDIDATES] if score >= 0.6]


class PredictionService:
    """A run's model and its dataset's store, loaded once (see the module docstring).

    Build with :meth:`from_run`. Caches every branch's encoded entity and relation matrices, so a
    query is a few matrix-vector products.

    The model knows the ``G`` entities of the training graph, store ids ``0 … G-1``. Entities added to
    the store later (ids ``G …``) and entities given inline have no structure vector; they are scored
    from their features (see :mod:`imf_cli.unseen`), which are loaded, with the run's placement, on
    first use.

    Each method may be called from a worker thread: scoring runs under ``torch.inference_mode`` and
    the store is used under a lock. :meth:`close` (or a ``with`` block) closes the store.

    Args:
        model: The trained model, on the device to score on.
        store: The entity store of the dataset the model was trained on.
        run_dir: The run directory: for reports, and where the placement of unseen entities is stored.
        checkpoint: Which checkpoint of the run the model is.
        metadata: The run's recorded metadata (its feature manifests name the encoders of the features
            that unseen entities are placed from); None: the most recent features of each modality.
    """

    def __init__(
        self,
        model: "IMF",
        store: EntityStore,
        *,
        run_dir: str | Path | None = None,
        checkpoint: str = "best",
        metadata: Mapping[str, Any] | None = None,
    ):
        from models.evaluation import FrozenScorer
        from models.index import TailIndex, with_inverses

        from imf_cli.run_loading import check_model_fits_store

        check_model_fits_store(model, store)
        graph = store.num_graph_entities
        self.model = model
        self.store = store
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoint = checkpoint
        self.metadata = dict(metadata or {})
        self.dataset = store.name
        self.branch_names: tuple[str, ...] = tuple(model.branch_names)
        #: ``G``: the entities of the training graph, which the model knows.
        self.num_graph_entities = graph
        #: ``N``: every entity of the store, added ones included.
        self.num_entities = store.num_entities
        self.num_relations = store.num_relations
        self.scorer = FrozenScorer(model, cache_relations=True)
        self.device = self.scorer.device
        self.splits = {split: store.triples_tensor(split) for split in SPLITS}
        self._known = {
            split: TailIndex.from_triples(
                with_inverses(triples, self.num_relations),
                num_entities=self.num_graph_entities,
                num_relations=2 * self.num_relations,
            )
            for split, triples in self.splits.items()
        }
        stored = store.relations()
        self._relations = [RelationChoice(r.id, r.key, r.name) for r in stored]
        self._relations += [RelationChoice(r.id + self.num_relations, r.key, r.name, inverse=True) for r in stored]
        self._edges: Edges | None = None
        self._rules: RelationPairIndex | None = None
        self._unit_vectors: dict = {}
        self._lock = threading.RLock()  # one sqlite connection, shared by the threads that call in
        self._dataset_lock = None  # the dataset's read lock, when from_run took it
        from imf_cli.unseen import UnseenEntities

        #: Entities outside the training graph: their features and placement, loaded on first use.
        self.unseen = UnseenEntities(self)

    @classmethod
    def from_run(cls, run_dir: str | Path, *, checkpoint: str = "best", device: str = "auto") -> "PredictionService":
        """Load ``<run_dir>/<checkpoint>.pt`` on ``device`` (``auto``, ``cpu``, ``cuda[:i]``) and open its dataset.

        Raises:
            ImfError: If the run directory, the checkpoint or the dataset cannot be used, or the dataset
                was re-imported since the run was trained (see :func:`imf_cli.run_loading.load_run`).
        """
        from imf_cli.run_loading import load_run

        loaded = load_run(run_dir, checkpoint=checkpoint, device=device)
        try:
            metadata = (loaded.document or {}).get("metadata") or {}
            service = cls(loaded.model, loaded.store, run_dir=loaded.run_dir, checkpoint=checkpoint, metadata=metadata)
        except BaseException:
            loaded.close()
            raise
        # Held until close(): an import --replace of this dataset fails clearly while the service reads it.
        service._dataset_lock = loaded.lock
        return service

    @property
    def lock(self) -> threading.RLock:
        """The lock that serialises use of the store's one connection (reentrant)."""
        return self._lock

    # ---------------------------------------------------------------------------- lifetime
    def close(self) -> None:
        with self._lock:
            self.store.close()
            if self._dataset_lock is not None:
                self._dataset_lock.release()

    def __enter__(self) -> "PredictionService":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(dataset={self.dataset!r}, run={str(self.run_dir)!r}, "
            f"checkpoint={self.checkpoint!r}, branches={self.branch_names}, device={str(self.device)!r})"
        )

    def refresh(self) -> None:
        """Take in the entities added to the dataset (``imf entities add``) and the features encoded
        (``imf encode``) since the service read them: without this, a TUI left open counted the entities
        it was opened with, refused the features encoded for the new ones, and kept asking for an encode
        already done. Cheap when nothing changed (one SQLite pragma); called by the methods that count
        or look up entities."""
        with self._lock:
            if not self.store.refresh():
                return
            graph = (self.store.num_graph_entities, self.store.num_relations)
            if graph != (self.num_graph_entities, self.num_relations):  # a re-import takes the write lock first
                raise ImfError(
                    f"dataset {self.dataset!r} was re-imported while this run was open; open the run again"
                )
            self.num_entities = self.store.num_entities
            self.unseen.forget_added()

    # ---------------------------------------------------------------------------- entities
    def entity(self, entity_id: int) -> EntityInfo:
        """The entity with dense id ``entity_id``."""
        with self._lock:
            return self.store.entity(int(entity_id))

    def entities(self, ids: list[int]) -> list[EntityInfo]:
        """The entities of ``ids``, in that order."""
        with self._lock:
            return self.store.entities(ids)

    def search_entities(self, text: str, limit: int = 10) -> list[EntityInfo]:
        """Entities for the text typed so far, best first: names or keys that start with it (shortest
        first), then full-text matches (:meth:`EntityStore.search`), then, when those are fewer than ``limit``, names within a small edit distance of the text or of
        its start (:meth:`EntityStore.entities_with_close_names`), so that a typo still finds its entity.
        A structure-only run suggests no entity added after training: it cannot score one (named in full,
        the query says why).
        """
        text = text.strip()
        if not text:
            return []
        with self._lock:
            self.refresh()
            found = self.store.entities_with_prefix(text, limit=limit)  # "Fra" → France before Swiss franc
            seen = {entity.id for entity in found}
            found += [entity for entity in self.store.search(text, limit=limit) if entity.id not in seen]
            found = found[:limit]
            if len(found) < limit and self.num_entities <= FUZZY_LIMIT:
                seen = {entity.id for entity in found}
                close = self.store.entities_with_close_names(text, limit=limit, cutoff=0.7, prefixes=True)
                found += [entity for entity in close if entity.id not in seen][: limit - len(found)]
            if not self.model.feature_dims:  # structure only: an added entity is nothing this run can score
                found = [entity for entity in found if entity.id < self.num_graph_entities]
            return found

    def resolve_entity(self, text: str) -> EntityInfo:
        """The one entity that ``text`` names.

        Tried in order: an exact key; an exact name (case-insensitive); a unique prefix of a key or
        name, unless ``text`` is also a whole word of other names ("Korea": "Korean", "South Korea",
        "North Korea" are then listed); among the full-text search matches, the one whose name is the
        text or else the one whose name or key holds the words (in any order), ignoring case and
        diacritics ("Curacao" is Curaçao). A single match by its description alone is named in an
        :class:`UnknownNameError`, not taken.

        Raises:
            AmbiguousNameError: Several entities match; the message lists the best candidates.
            UnknownNameError: Nothing matches; the message lists close names, if any.
        """
        text = text.strip()
        if not text:
            raise ImfError("no entity given")
        with self._lock:
            self.refresh()
            try:
                return self.store.entity(text)  # by key
            except UnknownEntityError:
                pass
            named = self.store.entities_named(text, limit=CANDIDATES + 1)
            if len(named) == 1:
                return named[0]
            if named:
                raise AmbiguousNameError(
                    f"{len(named) if len(named) <= CANDIDATES else 'many'} entities are named {text!r}: "
                    f"{_describe(named[:CANDIDATES])}; give a key instead",
                    named[:CANDIDATES],
                )
            prefixed = self.store.entities_with_prefix(text, limit=CANDIDATES + 1)
            if len(prefixed) == 1:
                # "Korea" begins only "Korean" but is a whole word of "South Korea" and "North Korea":
                # taking the prefix would answer for the language without a word.
                worded = [
                    hit for hit in self.store.search(text, limit=CANDIDATES + 1)
                    if hit.id != prefixed[0].id and named_by(hit, text, whole_words=True)
                ]
                if not worded:
                    return prefixed[0]
                prefixed = [prefixed[0], *worded]
            hits = [] if prefixed else self.store.search(text, limit=CANDIDATES + 1)
            # Typed without its accents or in another case ("Sao Tome and Principe", "Curacao"): the one
            # hit whose name is the text, else the one named by its words, is meant; the others matched
            # by their descriptions ("Netherlands" mentions Curaçao).
            for named in ([h for h in hits if fold(h.name or "") == fold(text)], [h for h in hits if named_by(h, text)]):
                if len(named) == 1:
                    return named[0]
            if len(hits) == 1:  # the words occur only in its description: say so, never switch silently
                raise UnknownNameError(
                    f"no entity of dataset {self.dataset!r} has the name or key {_echo(text)}; the words occur in "
                    f"the description of {_describe(hits)}: give its key or name to use it",
                    hits,
                )
            candidates = (prefixed or hits)[:CANDIDATES]
            if candidates:
                raise AmbiguousNameError(
                    f"{_echo(text)} matches several entities (give a key or a longer name): {_describe(candidates)}"
                    f"{' …' if len(prefixed or hits) > CANDIDATES else ''}",
                    candidates,
                )
            close = self._close_entities(text)
        hint = f"; did you mean: {_describe(close)}" if close else ""
        raise UnknownNameError(f"no entity of dataset {self.dataset!r} matches {_echo(text)}{hint}", close)

    def _close_entities(self, text: str) -> list[EntityInfo]:
        """Entities with names close to ``text`` (difflib), on graphs small enough to scan."""
        if self.num_entities > FUZZY_LIMIT:
            return []
        return self.store.entities_with_close_names(text, limit=CANDIDATES, cutoff=0.6)

    # ---------------------------------------------------------------------------- relations
    def relations(self) -> list[RelationChoice]:
        """Every relation id of the model: the ``R`` relations, then their ``R`` inverses."""
        return list(self._relations)

    def relation(self, relation_id: int) -> RelationChoice:
        self._check_relation(relation_id)
        return self._relations[relation_id]

    def resolve_relation(self, text: str, *, inverse: bool = False) -> RelationChoice:
        """The relation that ``text`` names: an exact key, an exact name (case-insensitive), or a unique
        prefix or substring of a key or name. A leading inverse mark (``←``, ``<-``, ``<`` or ``^``, see
        :func:`split_relation_text`) asks for the inverse, as does ``inverse``; the two together cancel
        (``(?, ← r, t)`` is ``(t, r, ?)``). Text that is a relation's
        key exactly is taken as that key, even if it starts with a mark (as ``<http://…>`` keys do).

        Raises:
            AmbiguousNameError: Several relations match; the message lists them.
            UnknownNameError: Nothing matches; the message lists close ones.
        """
        forward = self._relations[: self.num_relations]
        text = text.strip()
        if not any(r.key == text for r in forward):
            text, marked = split_relation_text(text)
            inverse = inverse != bool(marked)  # a marked relation with --tail reads it forwards again
        if not text:
            raise ImfError("no relation given")
        lowered = text.casefold()
        tests = (
            lambda r: r.key == text,
            lambda r: r.name.casefold() == lowered or r.key.casefold() == lowered,
            lambda r: r.name.casefold().startswith(lowered) or r.key.casefold().startswith(lowered),
            lambda r: lowered in r.name.casefold() or lowered in r.key.casefold(),
        )
        for test in tests:
            found = [r for r in forward if test(r)]
            if len(found) == 1:
                chosen = found[0]
                return self._relations[chosen.id + (self.num_relations if inverse else 0)]
            if found:
                shown = found[:CANDIDATES]
                raise AmbiguousNameError(
                    f"{_echo(text)} matches several relations (give a key or a longer name): {_describe(shown)}"
                    f"{' …' if len(found) > CANDIDATES else ''}",
                    shown,
                )
        close = closest_relations(lowered, forward)
        if close:
            hint = f"; did you mean: {_describe(close)}"
        else:
            hint = f"; the relations are: {_describe(forward)}" if len(forward) <= 2 * CANDIDATES else ""
        raise UnknownNameError(f"no relation of dataset {self.dataset!r} matches {_echo(text)}{hint}", close)

    # ---------------------------------------------------------------------------- queries
    def known(self, entity: int, relation: int) -> dict[str, Any]:
        """Split → the known answers ``(k,)`` of ``(entity, relation, ?)`` in that split, as a CPU tensor.

        An entity outside the training graph has none.
        """
        import torch

        if self.is_added(entity):
            return {split: torch.zeros(0, dtype=torch.long) for split in SPLITS}
        query = torch.tensor([int(entity)]), torch.tensor([int(relation)])
        return {split: index.lookup(*query)[1] for split, index in self._known.items()}

    def top_k(
        self, entity: int, relation: int, k: int = 10, *, include_known: bool = False, include_new: bool = False
    ) -> QueryResult:
        """The ``k`` best answers of ``(entity, relation, ?)`` by fused score.

        Args:
            entity: The given entity's id (the head; the tail when ``relation`` is an inverse). An entity
                added after training (``id ≥ G``) is scored from its features.
            relation: A relation id of :meth:`relations`, in ``[0, 2R)``.
            k: Rows to return.
            include_known: Keep answers already known in train, valid or test. By default they are left
                out, as in filtered evaluation, and counted in ``hidden_known``.
            include_new: Also rank the entities added after training, from their features. Off by
                default: they have no facts, only their feature branches score them, and rankings (and
                ``imf eval``) stay those of the training graph.
        """
        import torch

        self._check_entity(entity)
        self._check_relation(relation)
        self._check_k(k)
        if self.is_added(entity) or include_new:
            from imf_cli.unseen import rank_unseen

            heads = self.placed(int(entity)) if self.is_added(entity) else torch.tensor([int(entity)])
            return rank_unseen(self, self.entity(entity), heads, relation, k, include_known, include_new)
        known = self.known(entity, relation)
        with torch.inference_mode():
            heads = torch.tensor([int(entity)], device=self.device)
            relations = torch.tensor([int(relation)], device=self.device)
            breakdown = self.scorer.score(heads, relations)
            fused = breakdown.fused[0]
            hidden = 0
            if not include_known:
                answers = torch.unique(torch.cat(list(known.values())))
                hidden = answers.numel()
                fused = fused.index_fill(0, answers.to(self.device), float("-inf"))
            count = min(k, self.num_graph_entities - hidden)
            top = torch.topk(fused, count).indices if count > 0 else fused.new_empty(0, dtype=torch.long)
            ids = top.cpu()
            branch_rows = {name: scores[0, top].cpu().tolist() for name, scores in breakdown.branches.items()}
            fused_rows = breakdown.fused[0, top].cpu().tolist()
            weights = dict(zip(self.branch_names, breakdown.weights[0].cpu().tolist()))
            flags = {split: torch.isin(ids, tails).tolist() for split, tails in known.items()}
        infos = self.entities(ids.tolist())
        predictions = [
            Prediction(
                rank=position + 1,
                entity=info,
                fused=fused_rows[position],
                branches={name: values[position] for name, values in branch_rows.items()},
                contributions=decision_terms(
                    weights, {name: values[position] for name, values in branch_rows.items()}, self.model.decision.space
                ),
                known=frozenset(split for split in SPLITS if flags[split][position]),
            )
            for position, info in enumerate(infos)
        ]
        return QueryResult(self.entity(entity), self._relations[relation], weights, predictions, hidden)

    def predict_new(
        self,
        relation: int,
        *,
        text: str | None = None,
        image: str | Path | None = None,
        k: int = 10,
        include_new: bool = False,
    ) -> QueryResult:
        """The ``k`` best answers of ``(new, relation, ?)`` for an entity given inline, without adding it.

        Its ``text`` and ``image`` are encoded with the encoders (and options) of the run's features;
        the branches with a feature score it (see :mod:`models.inductive`). Nothing is stored.
        """
        from imf_cli.unseen import encode_inline, inline_text, rank_unseen

        self._check_relation(relation)
        self._check_k(k)
        text = inline_text(text)
        inductive = self.inductive()
        features = encode_inline(self.unseen.feature_sets(), text=text, image=image, device=str(self.device))
        placed = inductive.place(features)
        image_path = str(Path(image).expanduser().resolve()) if image is not None else None
        entity = Entity(INLINE_ID, "(new)", _inline_name(text, image), description=text, image=image_path)
        return rank_unseen(self, entity, placed, relation, k, False, include_new)

    def query(
        self,
        *,
        relation: str,
        head: str | None = None,
        tail: str | None = None,
        k: int = 10,
        include_known: bool = False,
        include_new: bool = False,
    ) -> QueryResult:
        """Resolve names and answer ``(head, relation, ?)``, or ``(?, relation, tail)`` through the inverse.

        Exactly one of ``head`` and ``tail`` is given. Names resolve as in :meth:`resolve_entity` and
        :meth:`resolve_relation`.
        """
        if (head is None) == (tail is None):
            raise ImfError("give exactly one of --head (to predict tails) and --tail (to predict heads)")
        entity = self.resolve_entity(head if head is not None else tail)
        chosen = self.resolve_relation(relation, inverse=tail is not None)
        return self.top_k(entity.id, chosen.id, k, include_known=include_known, include_new=include_new)

    # ---------------------------------------------------------------------------- unseen entities
    def is_added(self, entity_id: int) -> bool:
        """True for an entity added to the store after training: it is not in the training graph."""
        return int(entity_id) >= self.num_graph_entities

    def why_no_new_entities(self, *, quick: bool = False) -> str | None:
        """Why ``top_k(..., include_new=True)`` would rank no added entity (None: it can rank some).
        ``quick`` skips the check that needs the added entities placed (their features read, and the
        run's placement loaded or fitted), for a caller that must not wait."""
        self.refresh()
        if not self.model.feature_dims:
            return (
                "this run has only a structure branch, which knows only the entities of the training graph; "
                "train with text or image features to rank entities added after training"
            )
        if self.num_entities == self.num_graph_entities:
            return f"no entities were added to {self.dataset} after training (imf entities add {self.dataset} …)"
        if quick:
            return None
        ids, placed = self.unseen.added()
        if placed is None or not bool(placed.present.any()):
            from imf_cli.unseen import BRANCH_FEATURES, feature_words

            branches = self.inductive().placeable
            commands = " and ".join(
                f"imf encode {self.dataset} --modality {BRANCH_FEATURES[b]}" for b in branches if b in BRANCH_FEATURES
            )
            return (
                f"none of the {count(len(ids), 'entity', 'entities')} added to {self.dataset} has features this run "
                f"reads ({' or '.join(feature_words(branches))}, encoded): {commands}"
            )
        return None

    def inductive(self) -> "InductiveScorer":
        """The scorer of entities outside the training graph, built on first use (see :mod:`imf_cli.unseen`).

        Raises:
            ImfError: If the run has no feature branch, or its feature files cannot be loaded.
        """
        return self.unseen.inductive()

    def placed(self, entity: int) -> "PlacedEntities":
        """The placement of one entity added after training (``id ≥ G``)."""
        return self.unseen.placed(entity)

    def scored_by(self, entity: int) -> tuple[str, ...]:
        """The branches that can score ``entity``: all of them for a graph entity."""
        if not self.is_added(entity):
            return self.branch_names
        return self.placed(entity).scored_by(0)

    def train_answers(self, entities: list[int], relations: list[int]) -> list[list[int]]:
        """Each graph entity's answers to its relation (ids in ``[0, 2R)``) in train, sorted."""
        import torch

        grouped: list[list[int]] = [[] for _ in entities]
        if entities:
            rows, tails = self._known["train"].lookup(torch.tensor(entities), torch.tensor(relations))
            for row, answer in zip(rows.tolist(), tails.tolist()):
                grouped[row].append(answer)
        return grouped

    def unit_vectors(self, branch: str) -> "torch.Tensor":
        """The graph entities' vectors of ``branch`` scaled to unit length ``(G, d)``, cached (for cosine neighbours)."""
        import torch

        with self._lock:
            if branch not in self._unit_vectors:
                self._unit_vectors[branch] = torch.nn.functional.normalize(self.scorer.entities[branch], dim=1)
            return self._unit_vectors[branch]

    # ---------------------------------------------------------------------------- evidence
    def supporting_facts(self, head: int, tail: int, limit: int = 5) -> list[Fact]:
        """Training facts that link ``head`` and ``tail``, best first, at most ``limit``.

        First the facts between the two (in either direction); then two-hop paths ``head – x – tail``
        through a shared neighbour ``x``, each as its two facts, the rarest ``x`` (fewest training
        facts) first, as a rare neighbour says more than a hub. A path is never cut in half. An entity
        outside the training graph has no facts.
        """
        self._check_entity(head)
        self._check_entity(tail)
        if limit < 1 or head == tail or self.is_added(head) or self.is_added(tail):
            return []
        edges = self.edges()
        head_relations, head_targets = edges.out(head)
        tail_relations, tail_targets = edges.out(tail)
        links: list[tuple[int, int, int]] = [  # (from, relation id in [0, 2R), to), as seen from head
            (head, int(r), tail) for r in head_relations[head_targets == tail]
        ][:limit]
        shared = np.intersect1d(head_targets, tail_targets)
        shared = shared[(shared != head) & (shared != tail)]
        degree = edges.offsets[shared + 1] - edges.offsets[shared]
        for x in shared[np.lexsort((shared, degree))]:
            if len(links) + 2 > limit:
                break
            first = int(head_relations[head_targets == x][0])
            second = int(tail_relations[tail_targets == x][0])
            links += [(head, first, int(x)), (tail, second, int(x))]
        return self.facts(links)

    def facts(
        self, links: list[tuple[int, int, int]], split: str = "train", info: Mapping[int, EntityInfo] | None = None
    ) -> list[Fact]:
        """``(source, relation id in [0, 2R), target)`` edges as stored facts with names (inverses turned round).

        ``info`` holds entities already read (id → entity); the rest are read from the store.
        """
        info = dict(info or {})
        ids = sorted({e for a, _, b in links for e in (a, b)} - set(info))
        info.update(zip(ids, self.entities(ids)))
        facts = []
        for source, relation, target in links:
            if relation >= self.num_relations:  # stored the other way round
                source, relation, target = target, relation - self.num_relations, source
            facts.append(Fact(info[source], self._relations[relation], info[target], split))
        return facts

    def edges(self) -> "Edges":
        """The training edges in both directions, indexed by source (see :class:`kgdata.rules.Edges`)."""
        with self._lock:
            if self._edges is None:
                from kgdata.rules import Edges

                self._edges = Edges.from_triples(
                    self.splits["train"].numpy(), self.num_graph_entities, self.num_relations
                )
            return self._edges

    def rules(self) -> "RelationPairIndex":
        """The rule confidences of the training graph, from the dataset's cache (see :mod:`kgdata.rules`)."""
        with self._lock:
            if self._rules is None:
                from kgdata.rules import cached_index

                self._rules = cached_index(self.store, self.edges())
            return self._rules

    def explain(self, head: int, relation: int, tail: int, *, include_new: bool = False) -> "Explanation":
        """Why ``tail`` answers ``(head, relation, ?)``: see :func:`imf_cli.explain.explain`; ``include_new``
        ranks it among the entities added after training too, as ``top_k`` does."""
        from imf_cli.explain import explain

        return explain(self, head, relation, tail, include_new=include_new)

    # ---------------------------------------------------------------------------- checks
    def check_ids(self, *, entities: tuple[int, ...] = (), relations: tuple[int, ...] = ()) -> None:
        """Raise :class:`UnknownEntityError` for an entity id outside ``[0, N)`` or a relation id outside ``[0, 2R)``."""
        for entity in entities:
            self._check_entity(entity)
        for relation in relations:
            self._check_relation(relation)

    def _check_entity(self, entity: int) -> None:
        if int(entity) >= self.num_entities:
            self.refresh()  # the store may have grown since this service opened (imf entities add elsewhere)
        if not 0 <= int(entity) < self.num_entities:
            if int(entity) >= self.num_entities:
                try:  # a row committed after the refresh read the counts
                    added = self.store.entity(int(entity))
                except ImfError:
                    added = None
                if added is not None:  # the search finds it, but its features are not loaded here
                    raise UnknownEntityError(
                        f"{added.name!r} was added to dataset {self.dataset!r} after this session opened; "
                        "encode its features (imf encode) and start again to rank it"
                    )
            raise UnknownEntityError(
                f"no entity id {entity} in dataset {self.dataset!r} (ids 0–{self.num_entities - 1})"
            )

    def _check_relation(self, relation: int) -> None:
        if not 0 <= int(relation) < 2 * self.num_relations:
            raise UnknownEntityError(
                f"no relation id {relation} in the model (ids 0–{2 * self.num_relations - 1}, inverses included)"
            )

    @staticmethod
    def _check_k(k: int) -> None:
        if k < 1:
            raise ImfError(f"k must be at least 1, not {k}")


def _inline_name(text: str | None, image: str | Path | None, width: int = 40) -> str:
    """A short label for an entity given inline: the start of its text, else its image's file name."""
    if text and text.strip():
        return truncate(" ".join(text.split()), width)
    if image is None:
        return "(new entity)"
    from kgdata.files import escape_controls

    return truncate(escape_controls(Path(image).name), width)  # a file name may hold a terminal's escapes
