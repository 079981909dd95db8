"""Why a prediction: everything a run can say about one candidate answer of one query.

:func:`explain` takes the query ``(head, relation, ?)`` and a candidate ``tail`` (for an inverse
relation the query asks for heads, and the stored triple is ``(tail, r, head)``) and returns an
:class:`Explanation`:

- **Branch contributions.** Each branch that scored the triple: its decision weight (renormalised
  over those branches), its logit and probability, weight × probability, and its share of the sum
  (:func:`imf_cli.scoring.branch_shares`, the one definition every view uses).
- **Rank.** The filtered realistic rank of the tail among every candidate (the ``G`` graph entities,
  and the tail itself when it is outside the graph), the unfiltered rank, and the known answers that
  the filter left out, with the ones that scored above the tail first.
- **Evidence from the training graph.** Facts between the two ends, and two-hop paths
  ``h → x → t``, ranked by the rule-mining confidence of their relation (pair) for the stored
  relation in the training graph (:mod:`kgdata.rules`), each readable as a sentence.
- **Nearest neighbours** of the head and of the tail in each branch's space (cosine), each with its
  own answers to the relation in train: what each modality thinks the entity resembles.

Everything comes from state the :class:`~imf_cli.service.PredictionService` builds once: the frozen
scorer's matrices, the CSR training edges, the cached rule index and unit-normalised entity vectors.
A call costs a few matrix–vector products, two small joins and one store read (``benchmarks/
bench_explain.py`` measures it on a model of FB15k-237's size).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from imf_cli.scoring import branch_shares, sigmoid
from kgdata.errors import ImfError

if TYPE_CHECKING:
    import torch

    from imf_cli.service import EntityInfo, Fact, PredictionService, RelationChoice

#: Evidence items, nearest neighbours per side and branch, answers shown per neighbour, filtered answers listed.
EVIDENCE = 5
NEIGHBOURS = 3
ANSWERS = 3
FILTERED = 10


@dataclass(frozen=True)
class BranchContribution:
    """One branch's part in a prediction (see the module docstring)."""

    branch: str
    weight: float
    logit: float
    probability: float
    contribution: float
    share: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Evidence:
    """A fact, or a two-fact path, of the training graph that links the two ends.

    Attributes:
        facts: One fact between the ends, or the two facts of a path ``h → x → t``, as stored.
        body: The relations read along the path from the head (``← r``: ``r`` read backwards).
        confidence: The confidence of the rule ``body ⇒ relation`` in the training graph, in ``[0, 1]``.
        support: How many times the rule holds in train (pairs for one fact, paths for two).
    """

    facts: tuple["Fact", ...]
    body: tuple["RelationChoice", ...]
    confidence: float
    support: int

    @property
    def sentence(self) -> str:
        """The facts in words: ``"France borders Belgium; Belgium borders Germany"``."""
        return "; ".join(f"{f.head.name} {f.relation.name} {f.tail.name}" for f in self.facts)

    def to_dict(self) -> dict:
        return {
            "sentence": self.sentence,
            "facts": [f.to_dict() for f in self.facts],
            "body": [r.to_dict() for r in self.body],
            "confidence": self.confidence,
            "support": self.support,
        }


@dataclass(frozen=True)
class Neighbour:
    """An entity close to an end in one branch's space, with its own answers to the relation in train."""

    entity: "EntityInfo"
    similarity: float
    answers: tuple["EntityInfo", ...]
    answer_count: int

    def to_dict(self) -> dict:
        return {
            "entity": self.entity.to_dict(),
            "similarity": self.similarity,
            "answers": [a.to_dict() for a in self.answers],
            "answer_count": self.answer_count,
        }


@dataclass(frozen=True)
class BranchNeighbours:
    """The nearest neighbours of both ends in one branch; an end the branch cannot place has none."""

    branch: str
    head: tuple[Neighbour, ...]
    tail: tuple[Neighbour, ...]

    def to_dict(self) -> dict:
        return {"branch": self.branch, "head": [n.to_dict() for n in self.head], "tail": [n.to_dict() for n in self.tail]}


@dataclass(frozen=True)
class FilteredAnswer:
    """A known answer of the query that filtered ranking left out."""

    entity: "EntityInfo"
    splits: frozenset[str]
    fused: float
    above: bool  # it scored above the explained tail

    def to_dict(self) -> dict:
        from imf_cli.service import SPLITS

        return {"entity": self.entity.to_dict(), "splits": [s for s in SPLITS if s in self.splits],
                "fused": self.fused, "above": self.above}


@dataclass(frozen=True)
class Explanation:
    """Why ``tail`` answers ``(head, relation, ?)`` (see the module docstring).

    Attributes:
        head, relation, tail: The query's entity, its relation (maybe an inverse) and the candidate.
        head_in_graph, tail_in_graph: False for an entity added after training.
        fused: The fused logit; ``probability`` is its sigmoid.
        contributions: The branches that scored the triple, in the model's order.
        rank: Filtered realistic rank among ``candidates``; ``raw_rank`` without the filter.
        added_candidates: How many of the candidates are entities added after training (with
            ``include_new``; else 0, and an added tail is ranked among the graph's entities alone).
        known: The splits in which the triple is a known fact.
        filtered: The other known answers, highest score first (at most :data:`FILTERED`);
            ``filtered_count`` counts them all.
        evidence: Facts and paths of the training graph, the most confident rule first.
        neighbours: Per branch, the nearest neighbours of each end.
    """

    head: "EntityInfo"
    relation: "RelationChoice"
    tail: "EntityInfo"
    head_in_graph: bool
    tail_in_graph: bool
    fused: float
    probability: float
    contributions: tuple[BranchContribution, ...]
    rank: float
    raw_rank: float
    candidates: int
    added_candidates: int
    known: frozenset[str]
    filtered: tuple[FilteredAnswer, ...]
    filtered_count: int
    evidence: tuple[Evidence, ...]
    neighbours: tuple[BranchNeighbours, ...]

    @property
    def scored_by(self) -> tuple[str, ...]:
        return tuple(c.branch for c in self.contributions)

    def to_dict(self) -> dict:
        from imf_cli.service import SPLITS

        return {
            "head": self.head.to_dict(),
            "relation": self.relation.to_dict(),
            "tail": self.tail.to_dict(),
            "head_in_graph": self.head_in_graph,
            "tail_in_graph": self.tail_in_graph,
            "scored_by": list(self.scored_by),
            "fused": self.fused,
            "probability": self.probability,
            "contributions": [c.to_dict() for c in self.contributions],
            "rank": self.rank,
            "raw_rank": self.raw_rank,
            "candidates": self.candidates,
            "added_candidates": self.added_candidates,
            "known": {split: split in self.known for split in SPLITS},
            "filtered_count": self.filtered_count,
            "filtered": [f.to_dict() for f in self.filtered],
            "evidence": [e.to_dict() for e in self.evidence],
            "neighbours": [n.to_dict() for n in self.neighbours],
        }


# ------------------------------------------------------------------------------------------------ scores
@dataclass(frozen=True)
class _Row:
    """One query's scores against every candidate: ``G`` graph entities, then the tail if it is unseen
    (with ``include_new``, every added entity)."""

    fused: "torch.Tensor"  # (C,)
    branches: dict[str, "torch.Tensor"]  # (C,), NaN where the branch did not score
    weights: "torch.Tensor"  # (n_branches,)
    target: int  # the tail's column
    head_vectors: dict[str, "torch.Tensor"]  # (d,) per branch that places the head
    tail_vectors: dict[str, "torch.Tensor"]  # (d,) per branch that places the tail
    added: int = 0  # the added entities among the candidates, with include_new (else 0)


def _score_row(service: "PredictionService", head: int, relation: int, tail: int, include_new: bool = False) -> _Row:
    """Every candidate's scores for ``(head, relation, ?)`` and the column of ``tail``: the graph's
    entities, then the added ``tail`` or, with ``include_new``, every added entity (as ``top_k`` ranks)."""
    import torch

    graph = service.num_graph_entities
    relations = torch.tensor([relation], device=service.device)
    added_ids, every_added = service.unseen.added() if include_new else ([], None)
    if not service.is_added(head) and not service.is_added(tail) and not added_ids:
        breakdown = service.scorer.score(torch.tensor([head], device=service.device), relations)
        entities = service.scorer.entities
        vectors = {name: entities[name][head] for name in service.branch_names}
        return _Row(
            breakdown.fused[0], {n: s[0] for n, s in breakdown.branches.items()}, breakdown.weights[0], tail,
            vectors, {name: entities[name][tail] for name in service.branch_names},
        )
    inductive = service.inductive()
    heads = service.placed(head) if service.is_added(head) else torch.tensor([head])
    if added_ids:
        candidates, target = every_added, (graph + added_ids.index(tail) if service.is_added(tail) else tail)
    else:
        candidates = service.placed(tail) if service.is_added(tail) else None
        target = graph if candidates is not None else tail
    scores = inductive.score(relations, heads=heads, candidates=candidates)

    def vectors(entity: int) -> dict[str, "torch.Tensor"]:
        if not service.is_added(entity):
            return {name: service.scorer.entities[name][entity] for name in service.branch_names}
        placed = heads if entity == head and service.is_added(head) else service.placed(entity)
        return {name: placed.vectors[name][0] for name in placed.scored_by(0)}

    return _Row(
        scores.fused[0], {n: s[0] for n, s in scores.branches.items()}, scores.weights[0], target,
        vectors(head), vectors(tail), len(added_ids),
    )


def contributions_of(weights: Mapping[str, float], logits: Mapping[str, float]) -> tuple[BranchContribution, ...]:
    """The :class:`BranchContribution` of every branch of ``logits`` (the branches that scored a triple).

    ``weights`` are the relation's decision weights; they are renormalised over the branches of
    ``logits``. Shares come from :func:`imf_cli.scoring.branch_shares`, so every view agrees.
    """
    total = sum(weights.get(name, 0.0) for name in logits) or 1.0
    shares = branch_shares(weights, logits)
    result = []
    for name, logit in logits.items():
        weight = weights.get(name, 0.0) / total
        probability = sigmoid(logit)
        result.append(BranchContribution(name, weight, logit, probability, weight * probability, shares[name]))
    return tuple(result)


def _contributions(service: "PredictionService", row: _Row) -> tuple[BranchContribution, ...]:
    logits = {
        name: float(row.branches[name][row.target])
        for name in service.branch_names
        if not np.isnan(float(row.branches[name][row.target]))
    }
    return contributions_of(dict(zip(service.branch_names, row.weights.cpu().tolist())), logits)


# --------------------------------------------------------------------------------------------- evidence
def _evidence(service: "PredictionService", head: int, relation: int, tail: int, limit: int) -> list[tuple]:
    """``(links, body relation ids, confidence, support)`` of the most confident facts and paths."""
    from kgdata.rules import join_sorted

    edges, rules = service.edges(), service.rules()
    r = service.num_relations
    # The stored triple: an inverse query (h, r + R, t) is the fact (t, r, h).
    first, stored, last = (head, relation, tail) if relation < r else (tail, relation - r, head)
    found = []
    relations, targets = edges.out(first)
    direct = relations[(targets == last) & (relations != stored)]
    if len(direct):
        confidence, support = rules.hop(direct, stored)
        found += [
            ([(first, int(b), last)], (int(b),), float(c), int(s)) for b, c, s in zip(direct, confidence, support)
        ]
    far_relations, far_targets = edges.out(last)
    i, j = join_sorted(targets, far_targets)
    middle = targets[i]
    keep = (middle != first) & (middle != last)
    i, j, middle = i[keep], j[keep], middle[keep]
    if len(i):
        body_first, body_second = relations[i], edges.inverse(far_relations[j])
        confidence, support = rules.pair(body_first, body_second, stored)
        order = np.lexsort((middle, -support, -confidence))
        # One path per middle entity, by its most confident rule: a pair of entities linked both ways
        # would otherwise fill the list with the same path read in different directions.
        _, first_of_middle = np.unique(middle[order], return_index=True)
        order = order[np.sort(first_of_middle)][:limit]
        found += [
            ([(first, int(body_first[k]), int(middle[k])), (int(middle[k]), int(body_second[k]), last)],
             (int(body_first[k]), int(body_second[k])), float(confidence[k]), int(support[k]))
            for k in order
        ]
    # A rule that never holds in train (confidence 0, no supporting pair) is no evidence for the triple.
    found = [item for item in found if item[2] > 0]
    found.sort(key=lambda item: (-item[2], -item[3], len(item[0])))
    return found[:limit]


# ------------------------------------------------------------------------------------------- neighbours
def _nearest(
    service: "PredictionService", branch: str, ends: list[tuple[int, "torch.Tensor"]], k: int
) -> list[list[tuple[int, float]]]:
    """For each ``(entity, vector)`` of ``ends``: its ``k`` nearest graph entities in ``branch`` (cosine), itself left out.

    In a feature branch, entities without that feature (no image, no text) all share one stand-in
    vector: they are neither neighbours (their cosine 1.00 to each other says nothing) nor given any
    (an end without the feature gets an empty list). One product with the branch's unit vectors serves
    every end.
    """
    import torch

    if not ends:
        return []
    unit = service.unit_vectors(branch)
    vectors = torch.nn.functional.normalize(torch.stack([v.to(unit) for _, v in ends]), dim=1)
    similarity = vectors @ unit.T
    mask = service.model.feature_mask(branch) if branch in service.model.feature_dims else None
    if mask is not None:
        mask = mask[: unit.shape[0]].to(similarity.device)
        similarity = similarity.masked_fill(~mask, float("-inf"))
    values, ids = torch.topk(similarity, min(k + 1, unit.shape[0]), dim=1)
    graph = unit.shape[0]
    return [
        []
        if mask is not None and entity < graph and not bool(mask[entity])
        else [(i, v) for i, v in zip(row_ids, row_values) if i != entity and v != float("-inf")][:k]
        for (entity, _), row_ids, row_values in zip(ends, ids.cpu().tolist(), values.cpu().tolist())
    ]


# ---------------------------------------------------------------------------------------------- explain
def explain(
    service: "PredictionService",
    head: int,
    relation: int,
    tail: int,
    *,
    evidence: int = EVIDENCE,
    neighbours: int = NEIGHBOURS,
    include_new: bool = False,
) -> Explanation:
    """Explain why ``tail`` answers ``(head, relation, ?)`` (ids; see the module docstring).

    ``include_new`` ranks ``tail`` among the entities added after training too, as
    ``top_k(..., include_new=True)`` does, so that the rank is the one a list with them shows.

    Raises:
        ImfError: For an unknown id, or an end outside the training graph that no branch can score.
    """
    import torch

    from models.evaluation import rank_bounds, realistic_from_bounds

    service.check_ids(entities=(head, tail), relations=(relation,))
    with torch.inference_mode():
        row = _score_row(service, int(head), int(relation), int(tail), include_new)
        contributions = _contributions(service, row)
        if not contributions:
            from imf_cli.unseen import missing_features_advice

            unseen = service.entity(tail if service.is_added(tail) else head)
            placeable = service.inductive().placeable
            raise ImfError(
                f"entity {unseen.key!r} is not in the training graph and no branch of this run can score it; "
                f"{missing_features_advice(unseen, placeable, service.dataset)}"
            )
        fused = row.fused.float().cpu()
        target = row.target
        known = service.known(head, relation)
        splits_of: dict[int, set[str]] = {}
        for split, answers in known.items():
            for answer in answers.tolist():
                splits_of.setdefault(answer, set()).add(split)
        others = torch.tensor(sorted(a for a in splits_of if a != tail), dtype=torch.long)  # graph ids = columns
        zeros = torch.zeros_like(others)
        ranked = fused[None]
        targets = torch.tensor([target])
        rank = float(realistic_from_bounds(*rank_bounds(ranked, targets, zeros, others))[0])
        raw_rank = float(realistic_from_bounds(*rank_bounds(ranked, targets))[0])
        by_score = sorted(others.tolist(), key=lambda a: (-float(fused[a]), a))

        heads_near, tail_groups = {}, {}
        for name in service.branch_names:
            ends = [(int(e), vectors[name]) for e, vectors in ((head, row.head_vectors), (tail, row.tail_vectors))
                    if name in vectors]
            found = iter(_nearest(service, name, ends, neighbours))
            if name in row.head_vectors:
                heads_near[name] = next(found)
            if name in row.tail_vectors:
                tail_groups[name] = next(found)
    branches = [name for name in service.branch_names if name in heads_near or name in tail_groups]
    inverse = int(service.model.inverse(torch.tensor(relation)))
    near_ids = [n for name in branches for n, _ in heads_near.get(name, [])]
    near_tail_ids = [n for name in branches for n, _ in tail_groups.get(name, [])]
    answer_lists = service.train_answers(near_ids + near_tail_ids, [relation] * len(near_ids) + [inverse] * len(near_tail_ids))
    answers_of = dict(zip([("h", n) for n in near_ids] + [("t", n) for n in near_tail_ids], answer_lists))

    both_in_graph = not service.is_added(head) and not service.is_added(tail)
    found = _evidence(service, int(head), int(relation), int(tail), evidence) if both_in_graph and head != tail else []

    wanted = {int(head), int(tail), *by_score[:FILTERED], *near_ids, *near_tail_ids}
    wanted |= {a for answers in answer_lists for a in answers[:ANSWERS]}
    wanted |= {e for links, *_ in found for a, _, b in links for e in (a, b)}
    ids = sorted(wanted)
    info = dict(zip(ids, service.entities(ids)))
    relations = service.relations()

    def neighbour_list(side: str, pairs: list[tuple[int, float]]) -> tuple[Neighbour, ...]:
        return tuple(
            Neighbour(info[n], similarity, tuple(info[a] for a in answers_of[(side, n)][:ANSWERS]), len(answers_of[(side, n)]))
            for n, similarity in pairs
        )

    return Explanation(
        head=info[int(head)],
        relation=relations[int(relation)],
        tail=info[int(tail)],
        head_in_graph=not service.is_added(head),
        tail_in_graph=not service.is_added(tail),
        fused=float(fused[target]),
        probability=sigmoid(float(fused[target])),
        contributions=contributions,
        rank=rank,
        raw_rank=raw_rank,
        candidates=len(fused) - len(others),
        added_candidates=row.added,
        known=frozenset(splits_of.get(int(tail), ())) if not service.is_added(tail) else frozenset(),
        filtered=tuple(
            FilteredAnswer(info[a], frozenset(splits_of[a]), float(fused[a]), float(fused[a]) > float(fused[target]))
            for a in by_score[:FILTERED]
        ),
        filtered_count=len(by_score),
        evidence=tuple(
            Evidence(tuple(service.facts(links, info=info)), tuple(relations[b] for b in body), confidence, support)
            for links, body, confidence, support in found
        ),
        neighbours=tuple(
            BranchNeighbours(name, neighbour_list("h", heads_near.get(name, [])), neighbour_list("t", tail_groups.get(name, [])))
            for name in branches
        ),
    )
