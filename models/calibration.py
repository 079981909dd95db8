"""Fit the decision-fusion weights on held-out queries (stacking), and select epochs without bias.

Trained jointly on the training triples, the decision weights learn which branch fits the *training*
graph best, and the structure branch, which can memorise it, wins. What the fused ranking needs is
the mix that generalises. So at every validation the trainer refits the weights on the validation
queries, with every branch frozen, and keeps them fixed until the next validation. The test split is
never read.

The fit maximises the filtered log-likelihood of each true answer under a softmax over the candidates
(every other known answer removed). In logit space the fused logits are ``Σ_b exp(a_b) · s_b``: the
free overall scale ``Σ_b exp(a_b)`` acts as a temperature and is dropped afterwards, since the model
keeps ``softmax(a)``, which ranks identically. In probability space the fused logit is
``logit(Σ_b softmax(a)_b σ(s_b))`` over a learned temperature.

Weights fitted on the valid queries must not also pick the epoch on those same queries: the MRR would
be in-sample. :func:`crossfit_valid` splits the valid triples into two halves, fits on each and ranks
the other, so every valid query is ranked with weights that never saw it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.decision import mixture_logit
from models.evaluation import FrozenScorer, RankResult, rank_queries
from models.imf import IMF
from models.index import TailIndex, with_inverses

#: Bound on each branch's log weight: ``e^-12`` is as good as zero next to a useful branch.
LOG_WEIGHT_BOUND = 12.0

#: Scores held in memory for the fit: ``queries × entities × branches`` floats.
MAX_FIT_SCORES = 32_000_000

#: When L-BFGS stops: the weights are a handful of numbers, and a change of 1e-6 in the mean
#: log-likelihood moves no rank. Tighter tolerances cost many more evaluations for nothing.
LBFGS_TOLERANCES = {"tolerance_grad": 1e-5, "tolerance_change": 1e-6}


def fit_fusion_logits(
    scores: list[Tensor],
    answers: Tensor,
    exclude_rows: Tensor,
    exclude_cols: Tensor,
    *,
    space: str = "logit",
    steps: int = 50,
    groups: Tensor | None = None,
    num_groups: int = 0,
) -> Tensor:
    """Branch logits that maximise the filtered likelihood of ``answers``.

    Args:
        scores: One ``(Q, N)`` logit matrix per branch, for the same ``Q`` queries.
        answers: ``(Q,)`` the true answer of each query.
        exclude_rows, exclude_cols: ``(M,)`` (query, candidate) pairs to leave out of the softmax: the
            other known answers. A pair naming the query's own answer is ignored.
        space: The decision space, ``"logit"`` or ``"probability"``.
        steps: L-BFGS iterations at most.
        groups: ``(Q,)`` the group (relation id) of each query, to fit one weight vector per group:
            a shared vector plus a per-group offset pulled towards zero (:data:`GROUP_PRIOR`), so a
            group with few queries keeps about the shared weights and one with none keeps them exactly.
        num_groups: ``G``, the number of groups.

    Returns:
        Logits centred at zero, ``(n_branches,)`` or ``(G, n_branches)`` with ``groups``; ``softmax``
        of them gives the weights.
    """
    stacked = torch.stack([s.float() for s in scores])  # (n_branches, Q, N)
    rows = torch.arange(answers.numel(), device=answers.device)
    drop = torch.zeros(stacked.shape[1:], dtype=torch.bool, device=stacked.device)  # built once, not per step
    if exclude_rows.numel():
        drop[exclude_rows, exclude_cols] = True
    drop[rows, answers] = False
    stacked = stacked.nan_to_num(nan=-1e4, posinf=1e4, neginf=-1e4)  # a diverged branch must not poison the fit
    # In logit space each branch is standardised so that one step size suits all; the fitted scale
    # folds back in below. Probabilities are comparable as they are, and a free temperature plays its part.
    scale = stacked.std(dim=(1, 2)).clamp_min(1e-6) if space == "logit" else torch.ones(len(scores))
    stacked = stacked / scale.view(-1, 1, 1)
    branches = list(stacked.unbind(0))
    n = len(scores)
    shared = torch.zeros(n, device=stacked.device, requires_grad=True)
    offsets = torch.zeros(max(num_groups, 1), n, device=stacked.device, requires_grad=groups is not None)
    log_temperature = torch.zeros((), device=stacked.device, requires_grad=space == "probability")
    parameters = [shared] + ([offsets] if groups is not None else []) + ([log_temperature] if space == "probability" else [])
    optimizer = torch.optim.LBFGS(parameters, lr=0.5, max_iter=steps, line_search_fn="strong_wolfe", **LBFGS_TOLERANCES)

    def per_query(values: Tensor) -> Tensor:
        return values if groups is None else values + offsets[groups]  # (n,) or (Q, n)

    def closure() -> Tensor:
        optimizer.zero_grad()
        log_weights = per_query(shared).clamp(-LOG_WEIGHT_BOUND, LOG_WEIGHT_BOUND)
        if space == "probability":
            fused = mixture_logit(branches, torch.softmax(log_weights, dim=-1)) * log_temperature.clamp(-5, 5).exp()
        else:
            weights = log_weights.exp()
            fused = weights_times(weights, stacked)
        fused = fused.masked_fill(drop, float("-inf"))
        # A small pull towards equal weights keeps a useless branch's weight finite.
        loss = (fused.logsumexp(dim=1) - fused[rows, answers]).mean() + 1e-4 * shared.square().sum()
        if groups is not None:
            loss = loss + GROUP_PRIOR * offsets.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        for parameter in (shared, offsets):
            if not torch.isfinite(parameter).all():
                parameter.zero_()
        table = (shared + offsets) if groups is not None else shared
        table = table.clamp(-LOG_WEIGHT_BOUND, LOG_WEIGHT_BOUND)
        if space == "logit":
            table = table - scale.log()
        return table - table.mean(dim=-1, keepdim=True)


#: The pull of each per-relation offset towards the shared weights (per squared unit of log weight).
GROUP_PRIOR = 1e-2


def weights_times(weights: Tensor, stacked: Tensor) -> Tensor:
    """``Σ_b w_b s_b`` for ``stacked`` ``(n, Q, N)`` with weights ``(n,)`` or per query ``(Q, n)``."""
    if weights.dim() == 1:
        return torch.einsum("b,bqn->qn", weights, stacked)
    return torch.einsum("qb,bqn->qn", weights, stacked)


@dataclass(frozen=True)
class _ScoredQueries:
    """The branch scores of a set of queries, with their answers and the known answers to exclude."""

    scores: list[Tensor]  # one (Q, N) per branch
    answers: Tensor  # (Q,)
    relations: Tensor  # (Q,) relation ids, inverses included
    exclude_rows: Tensor  # (M,)
    exclude_cols: Tensor  # (M,)

    def select(self, index: Tensor) -> _ScoredQueries:
        """The queries at ``index`` ``(q,)``, renumbered ``0 … q-1``."""
        position = torch.full((self.answers.numel(),), -1, dtype=torch.long, device=self.answers.device)
        position[index] = torch.arange(index.numel(), device=index.device)
        keep = position[self.exclude_rows] >= 0
        return _ScoredQueries(
            [s[index] for s in self.scores],
            self.answers[index],
            self.relations[index],
            position[self.exclude_rows[keep]],
            self.exclude_cols[keep],
        )


def _score_queries(
    scorer: FrozenScorer, triples: Tensor, filter_index: TailIndex, *, batch_size: int, limit: int, seed: int
) -> _ScoredQueries:
    """Branch scores of both query directions of ``triples``, a seeded sample of at most ``limit`` queries."""
    queries = with_inverses(triples.long(), scorer.num_relations).to(scorer.device)
    if len(queries) > limit:
        generator = torch.Generator().manual_seed(seed)
        queries = queries[torch.randperm(len(queries), generator=generator)[:limit].to(scorer.device)]
    parts: list[list[Tensor]] = [[] for _ in scorer.branch_names]
    for batch in queries.split(batch_size):
        breakdown = scorer.score(batch[:, 0], batch[:, 1])
        for index, name in enumerate(scorer.branch_names):
            parts[index].append(breakdown.branches[name].float())
    rows, cols = filter_index.to(scorer.device).lookup(queries[:, 0], queries[:, 1])
    return _ScoredQueries([torch.cat(p) for p in parts], queries[:, 2], queries[:, 1], rows, cols)


def _fit(scored: _ScoredQueries, scorer: FrozenScorer, per_relation: bool) -> Tensor:
    """Logits ``(n,)``, or ``(2R, n)`` per relation id."""
    return fit_fusion_logits(
        scored.scores,
        scored.answers,
        scored.exclude_rows,
        scored.exclude_cols,
        space=scorer.space,
        groups=scored.relations if per_relation else None,
        num_groups=2 * scorer.num_relations,
    )


def fit_limit(num_entities: int, num_branches: int) -> int:
    """How many queries one fit may score: :data:`MAX_FIT_SCORES` over ``entities × branches``."""
    return max(1, MAX_FIT_SCORES // (num_entities * num_branches))


def fit_decision_weights(
    model: IMF,
    triples: Tensor,
    filter_index: TailIndex,
    *,
    num_relations: int,
    batch_size: int = 512,
    seed: int = 0,
) -> Tensor:
    """Refit ``model.decision`` on both query directions of ``triples`` ``(n, 3)``.

    ``"learned"`` fits one weight vector, ``"learned-per-relation"`` one per relation id (shrunk
    towards a shared one). Uses at most :data:`MAX_FIT_SCORES` scores, a seeded sample of the queries
    on large graphs. ``filter_index`` holds the known triples to leave out (train and valid while training).

    Returns:
        The new weights, ``(n_branches,)`` or ``(2R, n_branches)``, also written into ``model.decision``.
    """
    if model.decision.mode not in FITTED_MODES:
        raise ValueError(f"only {' or '.join(FITTED_MODES)} decision fusion can be fitted, not {model.decision.mode!r}")
    if num_relations != model.num_relations:
        raise ValueError(f"num_relations={num_relations} but the model has {model.num_relations}")
    scorer = FrozenScorer(model)
    limit = fit_limit(scorer.num_entities, len(scorer.branch_names))
    scored = _score_queries(scorer, triples, filter_index, batch_size=batch_size, limit=limit, seed=seed)
    logits = _fit(scored, scorer, model.decision.mode == "learned-per-relation")
    with torch.no_grad():
        model.decision.logits.copy_(logits)
    return torch.softmax(logits, dim=-1)


#: The decision-fusion modes whose weights can be fitted on held-out queries.
FITTED_MODES = ("learned", "learned-per-relation")


@dataclass(frozen=True)
class CrossFit:
    """The outcome of :func:`crossfit_valid`.

    Attributes:
        ranks: Every valid query's ranks, each half fused with the weights fitted on the other half.
        logits: The decision logits fitted on all the valid queries, which the model keeps.
        fold_logits: The logits fitted on each half.
        halves: How many triples each half holds.
    """

    ranks: RankResult
    logits: Tensor
    fold_logits: tuple[Tensor, Tensor]
    halves: tuple[int, int]


def crossfit_valid(
    scorer: FrozenScorer,
    triples: Tensor,
    filter_index: TailIndex,
    *,
    batch_size: int = 512,
    seed: int = 0,
    chunk_size: int | None = None,
    per_relation: bool = False,
) -> CrossFit:
    """Fit decision weights on each half of ``triples`` and rank the other half with them.

    The halves are a seeded split of the triples (both query directions of a triple stay in the same
    half), the same at every epoch of a run. The branch scores are computed once for the fits. With a
    single valid triple there is nothing to split: its weights are fitted on it and rank it.
    """
    if len(triples) < 2:
        limit = fit_limit(scorer.num_entities, len(scorer.branch_names))
        scored = _score_queries(scorer, triples, filter_index, batch_size=batch_size, limit=limit, seed=seed)
        logits = _fit(scored, scorer, per_relation)
        ranks = rank_queries(scorer.with_weights(torch.softmax(logits, -1)), triples, filter_index, chunk_size=chunk_size)
        return CrossFit(ranks, logits, (logits, logits), (len(triples), 0))
    generator = torch.Generator().manual_seed(seed)
    permutation = torch.randperm(len(triples), generator=generator)
    halves = (permutation[: len(triples) // 2], permutation[len(triples) // 2 :])
    limit = fit_limit(scorer.num_entities, len(scorer.branch_names))
    folds = []
    for index, half in enumerate(halves):
        scored = _score_queries(
            scorer, triples[half], filter_index, batch_size=batch_size, limit=limit // 2, seed=seed + index
        )
        folds.append(scored)
    fold_logits = (_fit(folds[0], scorer, per_relation), _fit(folds[1], scorer, per_relation))
    everything = _ScoredQueries(
        [torch.cat([a, b]) for a, b in zip(folds[0].scores, folds[1].scores)],
        torch.cat([folds[0].answers, folds[1].answers]),
        torch.cat([folds[0].relations, folds[1].relations]),
        torch.cat([folds[0].exclude_rows, folds[1].exclude_rows + folds[0].answers.numel()]),
        torch.cat([folds[0].exclude_cols, folds[1].exclude_cols]),
    )
    logits = _fit(everything, scorer, per_relation)
    # Half 0 is ranked with the weights of half 1, and the other way round.
    parts = [
        rank_queries(
            scorer.with_weights(torch.softmax(fold_logits[1 - index], dim=-1)),
            triples[half],
            filter_index,
            chunk_size=chunk_size,
        )
        for index, half in enumerate(halves)
    ]
    return CrossFit(_merge(parts, halves, len(triples)), logits, fold_logits, (len(halves[0]), len(halves[1])))


def _merge(parts: list[RankResult], halves: tuple[Tensor, Tensor], n: int) -> RankResult:
    """One :class:`RankResult` over all ``n`` triples, in their original order, from the results of the halves."""
    # A result lists the tail queries of its triples, then their head queries.
    positions = [torch.cat([half, half + n]) for half in halves]

    def scatter(get) -> dict[str, Tensor]:
        merged = {}
        for name in parts[0].names:
            values = torch.empty(2 * n, dtype=torch.long)
            for part, where in zip(parts, positions):
                values[where] = get(part)[name]
            merged[name] = values
        return merged

    relations = torch.empty(2 * n, dtype=torch.long)
    for part, where in zip(parts, positions):
        relations[where] = part.relations
    return RankResult(
        scatter(lambda p: p.optimistic),
        scatter(lambda p: p.pessimistic),
        relations,
        parts[0].num_relations,
        parts[0].chunk_size,
    )
