"""Filtered link-prediction evaluation with realistic ranks, on the model's device, in chunks.

Each test triple ``(h, r, t)`` gives two queries: ``(h, r, ?)`` → ``t``, and through the inverse relation,
``(t, r + R, ?)`` → ``h``. In the *filtered* setting, every other known answer of a query is removed
(its score set to ``-inf``) before ranking. The target itself is kept.

Ties are resolved with the *realistic* rank: the mean of the optimistic rank (1 + the number of
candidates scoring strictly higher) and the pessimistic rank (the number scoring higher or equal,
the target included). If all ``N'`` remaining candidates score the same, the rank is ``(1 + N') / 2``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from models.imf import IMF
from models.index import TailIndex, with_inverses

FUSED = "fused"
HITS_AT = (1, 3, 10)


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


def realistic_ranks(
    scores: Tensor, targets: Tensor, filter_rows: Tensor | None = None, filter_tails: Tensor | None = None
) -> Tensor:
    """Filtered realistic rank of each target.

    Args:
        scores: ``(B, N)`` scores; higher is better. Not modified.
        targets: ``(B,)`` the true answer of each query.
        filter_rows, filter_tails: ``(M,)`` pairs of (query, candidate) to remove, as from
            :meth:`TailIndex.lookup`. A pair that names the target is ignored.

    Returns:
        ``(B,)`` float ranks, from 1.
    """
    targets = targets.view(-1, 1)
    target_scores = scores.gather(1, targets)
    if filter_rows is not None and filter_rows.numel():
        scores = scores.index_put((filter_rows, filter_tails), scores.new_tensor(float("-inf")))
        scores.scatter_(1, targets, target_scores)
    higher = (scores > target_scores).sum(dim=1)
    higher_or_equal = (scores >= target_scores).sum(dim=1)
    return (higher + 1 + higher_or_equal).double() / 2.0


def rank_metrics(ranks: Tensor) -> dict[str, float]:
    """MRR, MR and Hits@{1,3,10} of ``ranks`` ``(n,)``."""
    ranks = ranks.double()
    metrics = {"mrr": ranks.reciprocal().mean().item(), "mr": ranks.mean().item()}
    metrics.update({f"hits@{k}": (ranks <= k).double().mean().item() for k in HITS_AT})
    return metrics


@torch.inference_mode()
def evaluate_ranks(
    model: IMF, triples: Tensor, filter_index: TailIndex, *, batch_size: int = 512, num_relations: int
) -> dict[str, Tensor]:
    """Realistic filtered ranks of the answers of both query directions of ``triples``.

    Returns:
        Branch name (and ``"fused"``) → ``(2n,)`` ranks: first the tail queries ``(h, r, ?)``, then the
        head queries ``(t, r + R, ?)``.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    filter_index = filter_index.to(device)
    queries = with_inverses(triples.long(), num_relations).to(device)
    encoded = model.encode()
    ranks: dict[str, list[Tensor]] = {}
    try:
        for batch in queries.split(batch_size):
            heads, relations, answers = batch.unbind(1)
            scores = model(heads, relations, encoded=encoded)
            rows, tails = filter_index.lookup(heads, relations)
            for name, branch_scores in {**scores.branches, FUSED: scores.fused}.items():
                ranks.setdefault(name, []).append(realistic_ranks(branch_scores.float(), answers, rows, tails))
    finally:
        model.train(was_training)
    return {name: torch.cat(parts) for name, parts in ranks.items()}


def evaluate(
    model: IMF, triples: Tensor, filter_index: TailIndex, *, batch_size: int = 512, num_relations: int
) -> dict[str, dict[str, float]]:
    """Filtered MRR, MR and Hits@{1,3,10} of ``triples`` ``(n, 3)``, both directions pooled.

    Args:
        model: The model, on the device to evaluate on. Its train/eval mode is restored afterwards.
        triples: ``(n, 3)`` ``(head, relation, tail)`` ids with relations in ``[0, R)``.
        filter_index: Known triples to filter out (see :func:`build_filter`).
        batch_size: Queries scored at once; bounds memory to ``batch_size × N`` scores per branch.
        num_relations: ``R``, without inverses.

    Returns:
        Branch name and ``"fused"`` → metric name → value.
    """
    if triples.numel() == 0:
        raise ValueError("no triples to evaluate")
    ranks = evaluate_ranks(model, triples, filter_index, batch_size=batch_size, num_relations=num_relations)
    return {name: rank_metrics(branch_ranks) for name, branch_ranks in ranks.items()}
