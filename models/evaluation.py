"""Filtered link-prediction evaluation with realistic ranks, on the model's device, in chunks.

Each test triple ``(h, r, t)`` gives two queries: ``(h, r, ?)`` → ``t`` (a *tail* query), and through the
inverse relation, ``(t, r + R, ?)`` → ``h`` (a *head* query). In the *filtered* setting, every other known
answer of a query is left out of its ranking. The target itself is kept.

Ties are resolved with the *realistic* rank: the mean of the optimistic rank (1 + the number of
candidates scoring strictly higher) and the pessimistic rank (the number scoring higher or equal,
the target included). If all ``N'`` remaining candidates score the same, the rank is ``(1 + N') / 2``.
These are PyKEEN's definitions (``pykeen.evaluation.ranks``).

Non-finite scores (nan, ±inf) rank last: a target whose score is not finite gets rank ``N'`` (both
bounds), and a candidate whose score is not finite never outranks a finite target. A diverged model
therefore scores an MRR near 0, never the 2.0 that a nan target would give (nan compares False with
everything, so it would count no candidate above it).

The filter: test is filtered with the train, valid and test triples; valid with the train and valid
triples (:func:`filter_splits`), during training and in ``imf eval --split valid`` alike, so that
choosing a model on valid never reads test.

Memory stays bounded: queries are scored a chunk at a time (``chunk × N`` scores per branch), and the
filter is applied by index on the chunk. The known answers of the chunk's queries are looked up in a
CSR :class:`~models.index.TailIndex`; their comparisons with the target are counted and subtracted, so
no score matrix is copied and no dense mask of the known triples is ever built. Queries are sorted by
relation first, so that each chunk builds the per-relation query matrices of only a few relations.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from models.decision import combine, mixture_logit
from models.imf import IMF, ScoreBreakdown
from models.index import TailIndex, with_inverses
from models.scorer import RelationGroups, apply_relation_matrices

FUSED = "fused"
#: The mean of the branches' sigmoid probabilities: the reference code's fusion, reported as a baseline.
MEAN_FUSION = "mean_fusion"
HITS_AT = (1, 3, 10)
#: The relation categories of Bordes et al. (2013), as LibKGE and OpenKE report them, and ``unseen`` for
#: a relation without a training triple (its vectors were never trained: no category applies).
CATEGORIES = ("1-1", "1-N", "N-1", "N-N", "unseen")
UNSEEN_CATEGORY = CATEGORIES.index("unseen")
#: A side is "N" when a relation has more than this many answers per query on it, on average.
CATEGORY_THRESHOLD = 1.5
#: Chunk-size caps: past these, larger chunks only cost memory.
MAX_CHUNK = {"cpu": 1024, "cuda": 8192}
#: On CPU, one chunk's score matrix stays within this many bytes: larger ones run slower (cache
#: misses, and page faults on every fresh allocation).
CPU_MATRIX_BYTES = 16 << 20
#: The share of the free memory that one chunk's scores may use.
MEMORY_FRACTION = 0.25


def filter_splits(split: str) -> tuple[str, ...]:
    """The splits whose triples filter the ranking of ``split``: valid never sees test."""
    if split == "valid":
        return ("train", "valid")
    if split == "test":
        return ("train", "valid", "test")
    raise ValueError(f"unknown split {split!r}; expected valid or test")


def build_filter(splits: Iterable[Tensor], *, num_entities: int, num_relations: int) -> TailIndex:
    """The filter index of the known triples in ``splits`` (each ``(n, 3)``), inverses included.

    Args:
        splits: The triples to filter with, e.g. train, valid and test.
        num_relations: ``R``, without inverses.
    """
    triples = torch.cat([s.long().cpu() for s in splits])
    return TailIndex.from_triples(
        with_inverses(triples, num_relations), num_entities=num_entities, num_relations=2 * num_relations
    )


# --------------------------------------------------------------------------------------------- ranks
def _other_known(rows: Tensor, tails: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """The (query, candidate) pairs that are not the query's own target."""
    keep = tails != targets[rows]
    return rows[keep], tails[keep]


def _count_ranks(scores: Tensor, targets: Tensor, rows: Tensor, tails: Tensor) -> tuple[Tensor, Tensor]:
    """Optimistic and pessimistic ranks, with distinct non-target pairs ``(rows, tails)`` filtered out.

    Non-finite scores rank last (see the module docstring). The finite case pays one extra pass.
    """
    if not torch.isfinite(scores).all():
        return _count_ranks_nonfinite(scores, targets, rows, tails)
    target_scores = scores.gather(1, targets.view(-1, 1))
    higher = torch.count_nonzero(scores > target_scores, dim=1)  # faster than .sum() on CPU
    not_lower = torch.count_nonzero(scores >= target_scores, dim=1)  # the target included
    if rows.numel():
        known = scores[rows, tails]
        reference = target_scores[rows, 0]
        higher -= torch.zeros_like(higher).index_add_(0, rows, (known > reference).long())
        not_lower -= torch.zeros_like(not_lower).index_add_(0, rows, (known >= reference).long())
    return higher + 1, not_lower


def _count_ranks_nonfinite(scores: Tensor, targets: Tensor, rows: Tensor, tails: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`_count_ranks` for scores with nan or ±inf: those candidates sink below every finite score."""
    finite = torch.isfinite(scores)
    target_scores = scores.gather(1, targets.view(-1, 1))
    target_finite = finite.gather(1, targets.view(-1, 1)).squeeze(1)
    above = torch.count_nonzero(finite & (scores > target_scores), dim=1)
    level = torch.count_nonzero(finite & (scores >= target_scores), dim=1)  # the target included
    remaining = torch.full_like(above, scores.shape[1])  # the candidates left after filtering
    if rows.numel():
        known_finite = finite[rows, tails]
        known = scores[rows, tails]
        reference = target_scores[rows, 0]
        above -= torch.zeros_like(above).index_add_(0, rows, (known_finite & (known > reference)).long())
        level -= torch.zeros_like(level).index_add_(0, rows, (known_finite & (known >= reference)).long())
        remaining -= torch.zeros_like(remaining).index_add_(0, rows, torch.ones_like(rows))
    return torch.where(target_finite, above + 1, remaining), torch.where(target_finite, level, remaining)


def rank_bounds(
    scores: Tensor, targets: Tensor, filter_rows: Tensor | None = None, filter_tails: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Filtered optimistic and pessimistic rank of each target.

    Args:
        scores: ``(B, N)`` scores; higher is better. Not modified.
        targets: ``(B,)`` the true answer of each query.
        filter_rows, filter_tails: ``(M,)`` pairs of (query, candidate) to leave out, as from
            :meth:`TailIndex.lookup`. Repeated pairs count once; a pair that names the target is ignored.

    Returns:
        ``(B,)`` int64 optimistic and pessimistic ranks, from 1.
    """
    targets = targets.long().view(-1)
    if filter_rows is None or not filter_rows.numel():
        empty = targets.new_empty(0)
        return _count_ranks(scores, targets, empty, empty)
    pairs = torch.unique(filter_rows.long() * scores.shape[1] + filter_tails.long())
    rows, tails = _other_known(pairs // scores.shape[1], pairs % scores.shape[1], targets)
    return _count_ranks(scores, targets, rows, tails)


def realistic_from_bounds(optimistic: Tensor, pessimistic: Tensor) -> Tensor:
    """The realistic rank, the mean of the optimistic and pessimistic ranks, as float64."""
    return (optimistic + pessimistic).double() / 2.0


def realistic_ranks(
    scores: Tensor, targets: Tensor, filter_rows: Tensor | None = None, filter_tails: Tensor | None = None
) -> Tensor:
    """Filtered realistic rank of each target: the mean of :func:`rank_bounds`, ``(B,)`` float64."""
    return realistic_from_bounds(*rank_bounds(scores, targets, filter_rows, filter_tails))


def rank_metrics(ranks: Tensor) -> dict[str, float]:
    """MRR, MR and Hits@{1,3,10} of ``ranks`` ``(n,)``."""
    ranks = ranks.double()
    metrics = {"mrr": ranks.reciprocal().mean().item(), "mr": ranks.mean().item()}
    metrics.update({f"hits@{k}": (ranks <= k).double().mean().item() for k in HITS_AT})
    return metrics


# ------------------------------------------------------------------------------------ chunk size
def free_memory_bytes(device: torch.device | str) -> int:
    """Free memory on ``device``: ``torch.cuda.mem_get_info`` on CUDA, the free physical pages on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # not POSIX: assume a modest 2 GiB
        return 2 << 30


def auto_chunk_size(num_entities: int, num_matrices: int, device: torch.device | str) -> int:
    """Queries per chunk so that a chunk's scores use at most :data:`MEMORY_FRACTION` of the free memory.

    A query holds ``num_matrices`` float32 score rows (each branch, fused, mean fusion) plus one
    temporary row and two boolean comparison rows, of ``num_entities`` each. Capped by :data:`MAX_CHUNK`,
    and on CPU by :data:`CPU_MATRIX_BYTES` per score matrix.
    """
    device = torch.device(device)
    per_query = num_entities * (4 * (num_matrices + 1) + 2)
    fits = int(free_memory_bytes(device) * MEMORY_FRACTION) // max(1, per_query)
    cap = MAX_CHUNK.get(device.type, MAX_CHUNK["cpu"])
    if device.type != "cuda":
        cap = min(cap, max(16, CPU_MATRIX_BYTES // (4 * max(1, num_entities))))
    return max(1, min(cap, fits))


# ------------------------------------------------------------------------------------- scoring
class FrozenScorer:
    """An :class:`IMF` frozen for inference: every branch's matrices, cached, scoring queries with matmuls.

    At construction it encodes the model once (in eval mode, without autograd) and folds each branch's
    two batch norms into its TuckER relation matrices: in eval mode the query of ``(h, r)`` is
    ``bn1(bn0(e_h) · W_r)``, an affine map ``e_h · W'_r + c_r``. The scores equal the model's
    :meth:`IMF.forward` in eval mode. Later changes to the model do not reach a built scorer.

    Args:
        model: The model; its train/eval mode is left as it was.
        cache_relations: Keep every ``(W'_r, c_r)`` once built (``d²`` floats per relation and branch),
            for repeated single queries. Without it, a call builds the matrices of the relations it uses.
    """

    def __init__(self, model: IMF, *, cache_relations: bool = False):
        self.branch_names = model.branch_names
        self.num_entities = model.num_entities
        self.num_relations = model.num_relations
        self.device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                encoded = model.encode()
                relation_ids = torch.arange(2 * model.num_relations, device=self.device)
                weights = model.decision.weights(relation_ids).float()
        finally:
            model.train(was_training)
        self.space = model.decision.space
        self.weights = weights.expand(2 * model.num_relations, len(self.branch_names)).contiguous()
        self.entities = {name: encoded[name].entities.float() for name in self.branch_names}
        self._distinct = {name: _distinct_rows(vectors) for name, vectors in self.entities.items()}
        self._relation_vectors = {name: encoded[name].relations.float() for name in self.branch_names}
        self._parts = {name: _frozen_scorer_parts(model.scorers[name]) for name in self.branch_names}
        self._cache: dict[int, dict[str, tuple[Tensor, Tensor]]] | None = {} if cache_relations else None
        self._lock = threading.Lock()

    def tail_scores(self, name: str, queries: Tensor) -> Tensor:
        """``(B, N)`` scores of branch ``name``'s ``queries`` ``(B, d)`` against every entity.

        Entities whose vectors in the branch are equal (those without the branch's features often
        share one vector) get bit-equal scores, so that ranking sees them as tied. A matmul does not
        promise that for equal rows: its blocking can round them apart (it did at ``7 × 16 × 25``). So
        when a branch has equal rows, each distinct row is scored once and the scores are gathered.
        """
        distinct = self._distinct[name]
        if distinct is None:
            return queries @ self.entities[name].T
        rows, inverse = distinct
        return (queries @ rows.T).index_select(1, inverse)

    def with_weights(self, weights: Tensor) -> FrozenScorer:
        """A scorer that shares these matrices but fuses with ``weights``: ``(n_branches,)`` or ``(2R, n_branches)``."""
        other = copy.copy(self)
        weights = weights.to(self.device, torch.float32)
        other.weights = weights.expand(2 * self.num_relations, len(self.branch_names)).contiguous()
        return other

    def without_cache(self) -> FrozenScorer:
        """A scorer that shares these matrices but builds relation maps per call and keeps none.

        Evaluation uses it, so that its memory does not grow with the number of relations ranked.
        """
        other = copy.copy(self)
        other._cache = None
        return other

    def relation_maps(self, relations: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """Branch → ``(W', c)``: ``(U, d, d)`` matrices and ``(U, d)`` offsets of ``relations`` ``(U,)`` in order."""
        if self._cache is None:
            return self._build_maps(relations)
        ids = relations.tolist()
        with self._lock:
            missing = sorted({i for i in ids if i not in self._cache})
            if missing:
                built = self._build_maps(torch.tensor(missing, device=self.device))
                for position, relation in enumerate(missing):
                    self._cache[relation] = {name: (m[position], c[position]) for name, (m, c) in built.items()}
            entries = [self._cache[i] for i in ids]
        return {
            name: (torch.stack([e[name][0] for e in entries]), torch.stack([e[name][1] for e in entries]))
            for name in self.branch_names
        }

    @torch.inference_mode()
    def _build_maps(self, relations: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        maps = {}
        for name in self.branch_names:
            core, (scale0, shift0), (scale1, shift1) = self._parts[name]
            d = core.shape[-1]
            matrices = (self._relation_vectors[name][relations] @ core.flatten(1)).view(-1, d, d)
            offsets = (shift0 @ matrices) * scale1 + shift1  # (U, d)
            maps[name] = (scale0.view(1, -1, 1) * matrices * scale1.view(1, 1, -1), offsets)
        return maps

    @torch.inference_mode()
    def queries(self, heads: Tensor, relations: Tensor) -> dict[str, Tensor]:
        """Branch → ``(B, d)`` query vectors; the score of candidate ``t`` is ``q · e_t``."""
        return self.queries_for({name: self.entities[name][heads] for name in self.branch_names}, relations)

    @torch.inference_mode()
    def queries_for(self, heads: Mapping[str, Tensor], relations: Tensor) -> dict[str, Tensor]:
        """:meth:`queries` of head *vectors*: branch → ``(B, d)`` head vectors, for the branches given."""
        groups = RelationGroups.of(relations)
        maps = self.relation_maps(groups.distinct)
        result = {}
        for name, vectors in heads.items():
            matrices, offsets = maps[name]
            x = apply_relation_matrices(vectors, matrices, groups)
            result[name] = x + offsets[groups.inverse]
        return result

    @torch.inference_mode()
    def score(self, heads: Tensor, relations: Tensor) -> ScoreBreakdown:
        """1-N scores of the queries ``(heads[b], relations[b], ?)``: ``(B, N)`` per branch and fused."""
        queries = self.queries(heads, relations)
        branches = {name: self.tail_scores(name, queries[name]) for name in self.branch_names}
        weights = self.weights[relations]
        scores = list(branches.values())
        fused = scores[0] if len(scores) == 1 else combine(scores, weights, self.space)
        return ScoreBreakdown(branches, weights, fused)

    def __repr__(self) -> str:
        cached = "off" if self._cache is None else f"{len(self._cache)} relations"
        return (
            f"{self.__class__.__name__}({self.num_entities}, {self.num_relations}, "
            f"branches={self.branch_names}, cache={cached})"
        )


def _distinct_rows(vectors: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(rows, inverse)`` with ``rows[inverse]`` equal to ``vectors`` ``(N, d)`` when some rows are equal; else None."""
    rows, inverse = torch.unique(vectors, dim=0, return_inverse=True)
    return None if len(rows) == len(vectors) else (rows, inverse)


def _frozen_scorer_parts(scorer) -> tuple[Tensor, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The core and each batch norm's eval-mode affine map ``x · scale + shift``, detached."""

    def affine(bn) -> tuple[Tensor, Tensor]:
        scale = torch.rsqrt(bn.running_var + bn.eps)
        shift = -bn.running_mean * scale
        if bn.weight is not None:
            scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
        return scale.detach().float(), shift.detach().float()

    with torch.inference_mode():
        return scorer.core.detach().float(), affine(scorer.bn0), affine(scorer.bn1)


# ------------------------------------------------------------------------------------- ranking
@dataclass(frozen=True)
class RankResult:
    """Optimistic and pessimistic ranks of every query of an evaluation, on the CPU.

    Attributes:
        optimistic, pessimistic: Score name (each branch, ``"fused"``, ``"mean_fusion"``) → ``(2n,)`` int64
            ranks: first the tail queries ``(h, r, ?)``, then the head queries ``(t, r + R, ?)``.
        relations: ``(2n,)`` the relation id of each query, in ``[0, 2R)``.
        num_relations: ``R``.
        chunk_size: The queries scored at once.
    """

    optimistic: Mapping[str, Tensor]
    pessimistic: Mapping[str, Tensor]
    relations: Tensor
    num_relations: int
    chunk_size: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.optimistic)

    def realistic(self, name: str) -> Tensor:
        return realistic_from_bounds(self.optimistic[name], self.pessimistic[name])


@torch.inference_mode()
def rank_queries(
    scorer: FrozenScorer, triples: Tensor, filter_index: TailIndex, *, chunk_size: int | None = None
) -> RankResult:
    """Filtered ranks of both query directions of ``triples`` ``(n, 3)``, for every branch and both fusions.

    Args:
        scorer: The frozen model; ranking runs on its device.
        triples: ``(n, 3)`` ``(head, relation, tail)`` ids with relations in ``[0, R)``.
        filter_index: Known triples to filter out (see :func:`build_filter`).
        chunk_size: Queries scored at once; None picks it from the free memory (:func:`auto_chunk_size`).
    """
    device, num_relations = scorer.device, scorer.num_relations
    names = (*scorer.branch_names, FUSED, MEAN_FUSION)
    num_branches = len(scorer.branch_names)
    if chunk_size is None:
        # Every branch's scores, the fused and mean scores, and the two running log-sums of each mixture.
        matrices = len(names) if num_branches == 1 else 2 * num_branches + 4
        chunk_size = auto_chunk_size(scorer.num_entities, matrices, device)
    filter_index = filter_index.to(device)
    queries = with_inverses(triples.long(), num_relations).to(device)
    order = torch.argsort(queries[:, 1], stable=True)  # few distinct relations per chunk
    uniform = torch.full((num_branches,), 1.0 / num_branches, device=device)
    optimistic = {name: torch.empty(len(queries), dtype=torch.long, device=device) for name in names}
    pessimistic = {name: torch.empty(len(queries), dtype=torch.long, device=device) for name in names}
    for chunk in order.split(chunk_size):
        heads, relations, answers = queries[chunk].unbind(1)
        rows, tails = _other_known(*filter_index.lookup(heads, relations), answers)
        query_vectors = scorer.queries(heads, relations)
        scores = []
        for name in scorer.branch_names:
            branch_scores = scorer.tail_scores(name, query_vectors[name])
            optimistic[name][chunk], pessimistic[name][chunk] = _count_ranks(branch_scores, answers, rows, tails)
            scores.append(branch_scores)
        if num_branches == 1:  # one branch: its weight is exactly 1, and the mean of one is itself
            for name in (FUSED, MEAN_FUSION):
                optimistic[name][chunk] = optimistic[scorer.branch_names[0]][chunk]
                pessimistic[name][chunk] = pessimistic[scorer.branch_names[0]][chunk]
            continue
        fused = combine(scores, scorer.weights[relations], scorer.space)
        optimistic[FUSED][chunk], pessimistic[FUSED][chunk] = _count_ranks(fused, answers, rows, tails)
        del fused
        mean = mixture_logit(scores, uniform)
        optimistic[MEAN_FUSION][chunk], pessimistic[MEAN_FUSION][chunk] = _count_ranks(mean, answers, rows, tails)
        del mean, scores
    return RankResult(
        {name: ranks.cpu() for name, ranks in optimistic.items()},
        {name: ranks.cpu() for name, ranks in pessimistic.items()},
        queries[:, 1].cpu(),
        num_relations,
        chunk_size,
    )


# ------------------------------------------------------------------------------------- metrics
def _grouped_metrics(optimistic: Tensor, pessimistic: Tensor, groups: Tensor, num_groups: int) -> dict[str, Tensor]:
    """Metric name → ``(num_groups,)`` values; a group without queries gets NaN."""
    realistic = realistic_from_bounds(optimistic, pessimistic)
    count = torch.bincount(groups, minlength=num_groups).double()

    def mean(values: Tensor) -> Tensor:
        return torch.zeros(num_groups, dtype=torch.float64).index_add_(0, groups, values.double()) / count

    metrics = {"mrr": mean(realistic.reciprocal()), "mr": mean(realistic)}
    metrics.update({f"hits@{k}": mean(realistic <= k) for k in HITS_AT})
    metrics["optimistic_mrr"] = mean(optimistic.double().reciprocal())
    metrics["pessimistic_mrr"] = mean(pessimistic.double().reciprocal())
    return metrics


def _blocks(result: RankResult, name: str, groups: Tensor, num_groups: int) -> list[dict]:
    """One metric block per group: both directions pooled at the top, and ``"heads"`` / ``"tails"``."""
    optimistic, pessimistic = result.optimistic[name], result.pessimistic[name]
    is_head = (result.relations >= result.num_relations).long()
    both = _grouped_metrics(optimistic, pessimistic, groups, num_groups)
    split = _grouped_metrics(optimistic, pessimistic, groups * 2 + is_head, 2 * num_groups)
    blocks = []
    for g in range(num_groups):
        block = {key: values[g].item() for key, values in both.items()}
        block["heads"] = {key: values[2 * g + 1].item() for key, values in split.items()}
        block["tails"] = {key: values[2 * g].item() for key, values in split.items()}
        blocks.append(block)
    return blocks


def relation_categories(triples: Tensor, num_relations: int, *, threshold: float = CATEGORY_THRESHOLD) -> Tensor:
    """Each relation's category among :data:`CATEGORIES`, from ``triples`` ``(n, 3)`` (the training split).

    For relation ``r``, tails per head is its number of triples over its number of distinct heads, and
    heads per tail its number of triples over its distinct tails. A side is "N" when that average is
    above ``threshold`` (1.5, as in Bordes et al. 2013, OpenKE and LibKGE): ``1-N`` means several
    tails per head. A relation without a triple in ``triples`` is ``unseen``.

    Returns:
        ``(R,)`` int64 indices into :data:`CATEGORIES`.
    """
    triples = triples.long().reshape(-1, 3)
    if not len(triples):
        return torch.full((num_relations,), UNSEEN_CATEGORY, dtype=torch.long)
    counts = torch.bincount(triples[:, 1], minlength=num_relations).double()

    def distinct(column: int) -> Tensor:
        """``(R,)`` the number of distinct entities in ``column`` per relation."""
        width = int(triples[:, column].max()) + 1
        keys = torch.unique(triples[:, 1] * width + triples[:, column])
        return torch.bincount(keys // width, minlength=num_relations).double()

    tails_per_head = counts / distinct(0).clamp_min(1)
    heads_per_tail = counts / distinct(2).clamp_min(1)
    kinds = (tails_per_head > threshold).long() + 2 * (heads_per_tail > threshold).long()
    return kinds.masked_fill(counts == 0, UNSEEN_CATEGORY)


def metrics_report(result: RankResult, *, per_relation: bool = False, categories: Tensor | None = None) -> dict:
    """Metrics of every score of ``result``.

    Each metric block holds ``mrr``, ``mr``, ``hits@1``, ``hits@3``, ``hits@10`` (realistic ranks) and
    ``optimistic_mrr`` / ``pessimistic_mrr`` over both directions, plus the same for ``"heads"`` and
    ``"tails"`` alone.

    Returns:
        ``{"fused": block, "branches": {branch: block}, "mean_fusion": block, "per_relation": …}``;
        ``per_relation`` is None unless asked for, else relation id ``r`` (of ``[0, R)``, with at least
        one triple) → ``{"triples": n, "fused": …, "branches": …, "mean_fusion": …}``. With
        ``categories`` (``(R,)`` indices into :data:`CATEGORIES`, see :func:`relation_categories`),
        also ``"per_category"``: category name (with at least one triple) → ``{"relations": k,
        "triples": n, "fused": …, "branches": …, "mean_fusion": …}``. In a category's blocks, "tails"
        are the queries ``(h, r, ?)``: on a 1-N relation those have many answers, "heads" one.
    """
    branches = [name for name in result.names if name not in (FUSED, MEAN_FUSION)]

    def grouped(groups: Tensor, num_groups: int) -> list[dict]:
        blocks = {name: _blocks(result, name, groups, num_groups) for name in result.names}
        return [
            {
                FUSED: blocks[FUSED][g],
                "branches": {name: blocks[name][g] for name in branches},
                MEAN_FUSION: blocks[MEAN_FUSION][g],
            }
            for g in range(num_groups)
        ]

    report = {**grouped(torch.zeros_like(result.relations), 1)[0], "per_relation": None}
    if per_relation:
        by_relation = result.relations % result.num_relations
        counts = torch.bincount(by_relation, minlength=result.num_relations) // 2
        report["per_relation"] = {
            r: {"triples": int(counts[r]), **blocks}
            for r, blocks in enumerate(grouped(by_relation, result.num_relations))
            if counts[r] > 0
        }
    if categories is not None:
        categories = categories.to(result.relations.device).long()
        if categories.shape != (result.num_relations,):
            raise ValueError(f"categories must have shape ({result.num_relations},), not {tuple(categories.shape)}")
        by_relation = result.relations % result.num_relations
        by_category = categories[by_relation]
        triples = torch.bincount(by_category, minlength=len(CATEGORIES)) // 2
        present = torch.bincount(by_relation, minlength=result.num_relations) > 0
        relations = torch.bincount(categories[present], minlength=len(CATEGORIES))
        report["per_category"] = {
            CATEGORIES[c]: {"relations": int(relations[c]), "triples": int(triples[c]), **blocks}
            for c, blocks in enumerate(grouped(by_category, len(CATEGORIES)))
            if triples[c] > 0
        }
    return report


# --------------------------------------------------------------------------------- entry points
def evaluate_ranks(
    model: IMF,
    triples: Tensor,
    filter_index: TailIndex,
    *,
    batch_size: int | None = None,
    num_relations: int,
) -> dict[str, Tensor]:
    """Realistic filtered ranks of the answers of both query directions of ``triples``.

    Returns:
        Branch name, ``"fused"`` and ``"mean_fusion"`` → ``(2n,)`` ranks: first the tail queries
        ``(h, r, ?)``, then the head queries ``(t, r + R, ?)``.
    """
    if num_relations != model.num_relations:
        raise ValueError(f"num_relations={num_relations} but the model has {model.num_relations}")
    result = rank_queries(FrozenScorer(model), triples, filter_index, chunk_size=batch_size)
    return {name: result.realistic(name) for name in result.names}


def evaluate(
    model: IMF, triples: Tensor, filter_index: TailIndex, *, batch_size: int | None = None, num_relations: int
) -> dict[str, dict[str, float]]:
    """Filtered MRR, MR and Hits@{1,3,10} of ``triples`` ``(n, 3)``, both directions pooled.

    The model is evaluated as in eval mode, and its train/eval mode is left as it was.

    Args:
        model: The model, on the device to evaluate on.
        triples: ``(n, 3)`` ``(head, relation, tail)`` ids with relations in ``[0, R)``.
        filter_index: Known triples to filter out (see :func:`build_filter`).
        batch_size: Queries scored at once; bounds memory to ``batch_size × N`` scores per branch.
            None picks it from the free memory.
        num_relations: ``R``, without inverses.

    Returns:
        Branch name and ``"fused"`` → metric name → value.
    """
    if triples.numel() == 0:
        raise ValueError("no triples to evaluate")
    ranks = evaluate_ranks(model, triples, filter_index, batch_size=batch_size, num_relations=num_relations)
    return {name: rank_metrics(ranks[name]) for name in (*model.branch_names, FUSED)}
