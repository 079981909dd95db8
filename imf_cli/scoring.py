"""What each branch contributes to a fused score: one definition for every view of it.

``imf explain``, the explore detail pane and the explore table's highlight all show a branch's *share*
of a prediction, and must agree. A branch's **contribution** to a triple is its decision weight times
its own probability that the triple holds, ``w_b · σ(logit_b)``; its **share** is its contribution
over the sum of the contributions of the branches that scored the triple::

    share_b = w_b σ(ℓ_b) / Σ_c w_c σ(ℓ_c)

Why probabilities and not the fused logit's terms ``w_b · ℓ_b``: those are signed, so their "largest"
can be a branch of weight 0.006 with a large logit, or a branch arguing *against* the triple, and
shares of ``|w·ℓ|`` credit a branch for confident disagreement. ``w · σ(ℓ)`` is non-negative, bounded
by the weight, and sums to the weighted mean probability; a branch earns its share by weight *and*
by believing the triple. Shares are ratios, so they need no renormalised weights: a branch that did
not score the triple (the structure branch for an entity outside the training graph) is simply left
out of ``logits``.

Pure Python: no torch, no rich, so every view (and a fake service in tests) can use it.
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


def branch_contributions(weights: Mapping[str, float], logits: Mapping[str, float]) -> dict[str, float]:
    """Branch → ``weight × σ(logit)``, for the branches of ``logits`` (in its order).

    A branch missing from ``weights`` has weight 0 (a negative or non-finite weight counts as 0); a NaN
    or missing logit counts as probability 0.
    """
    result = {}
    for branch, logit in logits.items():
        weight = weights.get(branch, 0.0)
        weight = float(weight) if weight is not None and math.isfinite(weight) and weight > 0 else 0.0
        probability = 0.0 if logit is None or math.isnan(logit) else sigmoid(logit)
        result[branch] = weight * probability
    return result


def decision_terms(weights: Mapping[str, float], logits: Mapping[str, float], space: str) -> dict[str, float]:
    """Branch → its term of the fused decision, which the terms sum to: ``weight × logit`` in logit space
    (the sum is the fused logit), ``weight × σ(logit)`` in probability space (the sum is the fused
    probability, σ of the fused logit); see :mod:`models.decision`. ``weights`` are those the fusion
    used for this triple (renormalised over the branches that scored it)."""
    if space == "probability":
        return {branch: weights[branch] * sigmoid(logit) for branch, logit in logits.items()}
    return {branch: weights[branch] * logit for branch, logit in logits.items()}


def branch_shares(weights: Mapping[str, float], logits: Mapping[str, float]) -> dict[str, float]:
    """Branch → its share of the prediction, ``w σ(ℓ) / Σ w σ(ℓ)`` over the branches of ``logits``.

    Args:
        weights: Branch → decision weight for the query's relation (renormalised or not: shares are ratios).
        logits: Branch → its logit for the triple; only the branches that scored it.

    Returns:
        Shares in ``[0, 1]`` that sum to 1, in the order of ``logits``; all 0 when no branch contributes.
    """
    contributions = branch_contributions(weights, logits)
    total = sum(contributions.values())
    if total <= 0:
        return {branch: 0.0 for branch in contributions}
    return {branch: value / total for branch, value in contributions.items()}


def dominant_branch(weights: Mapping[str, float], logits: Mapping[str, float]) -> str | None:
    """The branch with the largest share (the first on a tie), or None when none contributes."""
    shares = branch_shares(weights, logits)
    best = max(shares, key=shares.__getitem__, default=None)
    return best if best is not None and shares[best] > 0 else None
