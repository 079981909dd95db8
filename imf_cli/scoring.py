"""How much each branch counts in one fused decision: the one definition that every view shows.

IMF's decision fusion scores a triple with ``fused = Σ_b w_b · ℓ_b``: the relation's weight ``w_b`` of
each branch ``b`` (they sum to 1) times that branch's logit ``ℓ_b``. A branch's *share* of the decision
is its weighted probability that the triple holds, normalised over the branches::

    share_b = w_b · σ(ℓ_b) / Σ_c w_c · σ(ℓ_c)

Shares lie in [0, 1] and sum to 1. A branch gets a large share when the fusion trusts it for this
relation (large ``w_b``) *and* it believes the triple (large ``σ(ℓ_b)``); a branch that votes against
the triple (negative logit) or that the fusion ignores gets a small one. Unlike ``|w·ℓ|`` shares, a
confident "no" does not look like a large part of a "yes".

The explore TUI's per-branch bars and its detail pane both show this quantity. Pure Python: no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def sigmoid(x: float) -> float:
    """The logistic function, without overflow for large ``|x|``."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def branch_shares(weights: Mapping[str, float], logits: Mapping[str, float]) -> dict[str, float]:
    """Each branch's share of the fused decision (see the module docstring), in the order of ``logits``.

    Args:
        weights: Branch → decision-fusion weight for the query's relation.
        logits: Branch → that branch's logit for the triple.

    Returns:
        Branch → share in [0, 1]; the shares sum to 1 (all 0 when every weighted probability is 0).
        A branch missing from ``weights`` has weight 0; a NaN logit counts as probability 0.
    """
    votes = {}
    for branch, logit in logits.items():
        probability = 0.0 if logit is None or math.isnan(logit) else sigmoid(logit)
        votes[branch] = max(float(weights.get(branch, 0.0)), 0.0) * probability
    total = sum(votes.values())
    return {branch: (vote / total if total > 0 else 0.0) for branch, vote in votes.items()}
