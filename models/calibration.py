"""Fit the decision-fusion weights on held-out queries (stacking).

Trained jointly on the training triples, the decision weights learn which branch fits the *training*
graph best, and the structure branch, which can memorise it, wins. What the fused ranking needs is
the mix that generalises. So at every validation the trainer refits the weights on the validation
queries, with every branch frozen, and keeps them fixed until the next validation. The test split is
never read.

The fit maximises the filtered log-likelihood of each true answer under a softmax over the candidates
(every other known answer removed), with fused logits ``Σ_b exp(a_b) · s_b``. The free overall scale
``Σ_b exp(a_b)`` acts as a temperature and is dropped afterwards: the model keeps ``softmax(a)``, which
ranks identically.
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.imf import IMF
from models.index import TailIndex, with_inverses

#: Bound on each branch's log weight: ``e^-12`` is as good as zero next to a useful branch.
LOG_WEIGHT_BOUND = 12.0

#: Scores held in memory for the fit: ``queries × entities × branches`` floats.
MAX_FIT_SCORES = 32_000_000


def fit_fusion_logits(
    scores: list[Tensor], answers: Tensor, exclude_rows: Tensor, exclude_cols: Tensor, *, steps: int = 100
) -> Tensor:
    """Branch logits ``a`` ``(n_branches,)`` that maximise the filtered likelihood of ``answers``.

    Args:
        scores: One ``(Q, N)`` logit matrix per branch, for the same ``Q`` queries.
        answers: ``(Q,)`` the true answer of each query.
        exclude_rows, exclude_cols: ``(M,)`` (query, candidate) pairs to leave out of the softmax: the
            other known answers. A pair naming the query's own answer is ignored.
        steps: L-BFGS iterations.

    Returns:
        Logits centred at zero; ``softmax`` of them gives the weights.
    """
    stacked = torch.stack([s.float() for s in scores])  # (n_branches, Q, N)
    rows = torch.arange(answers.numel(), device=answers.device)
    drop = torch.zeros(stacked.shape[1:], dtype=torch.bool, device=stacked.device)  # built once, not per step
    if exclude_rows.numel():
        drop[exclude_rows, exclude_cols] = True
    drop[rows, answers] = False
    # Standardise each branch so that one step size suits all; the fitted scale folds back in below.
    scale = stacked.std(dim=(1, 2)).clamp_min(1e-6)
    stacked = stacked / scale.view(-1, 1, 1)
    log_weights = torch.zeros(len(scores), device=stacked.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_weights], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        weights = log_weights.clamp(-LOG_WEIGHT_BOUND, LOG_WEIGHT_BOUND).exp()
        fused = torch.einsum("b,bqn->qn", weights, stacked).masked_fill(drop, float("-inf"))
        # A small pull towards equal weights keeps a useless branch's weight finite.
        loss = (fused.logsumexp(dim=1) - fused[rows, answers]).mean() + 1e-4 * log_weights.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        if not torch.isfinite(log_weights).all():
            log_weights.zero_()
        log_weights.clamp_(-LOG_WEIGHT_BOUND, LOG_WEIGHT_BOUND)
        weights = log_weights.exp() / scale
        logits = weights.log()
        return logits - logits.mean()


@torch.inference_mode()
def _branch_scores(model: IMF, queries: Tensor, batch_size: int) -> list[Tensor]:
    encoded = model.encode()
    parts: list[list[Tensor]] = [[] for _ in model.branch_names]
    for batch in queries.split(batch_size):
        breakdown = model(batch[:, 0], batch[:, 1], encoded=encoded)
        for index, name in enumerate(model.branch_names):
            parts[index].append(breakdown.branches[name].float())
    return [torch.cat(p) for p in parts]


def fit_decision_weights(
    model: IMF,
    triples: Tensor,
    filter_index: TailIndex,
    *,
    num_relations: int,
    batch_size: int = 512,
    seed: int = 0,
) -> Tensor:
    """Refit ``model.decision`` (``"learned"`` mode) on both query directions of ``triples`` ``(n, 3)``.

    Uses at most :data:`MAX_FIT_SCORES` scores, a seeded sample of the queries on large graphs.
    ``filter_index`` holds the known triples to leave out (train and valid while training).

    Returns:
        The new weights ``(n_branches,)``, also written into ``model.decision``.
    """
    if model.decision.mode != "learned":
        raise ValueError(f"only 'learned' decision fusion can be fitted, not {model.decision.mode!r}")
    device = next(model.parameters()).device
    queries = with_inverses(triples.long(), num_relations).to(device)
    limit = max(1, MAX_FIT_SCORES // (model.num_entities * len(model.branch_names)))
    if len(queries) > limit:
        generator = torch.Generator().manual_seed(seed)
        queries = queries[torch.randperm(len(queries), generator=generator)[:limit].to(device)]
    was_training = model.training
    model.eval()
    try:
        scores = _branch_scores(model, queries, batch_size)
    finally:
        model.train(was_training)
    rows, cols = filter_index.to(device).lookup(queries[:, 0], queries[:, 1])
    logits = fit_fusion_logits(scores, queries[:, 2], rows, cols)
    with torch.no_grad():
        model.decision.logits.copy_(logits)
    return torch.softmax(logits, dim=-1)
