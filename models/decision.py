"""Stage 2 of IMF: decision fusion, a learned weighted combination of the branches' scores.

The weights are a softmax over branches, so they are non-negative and sum to one:

``"learned"``
    One weight vector for the whole model, ``(n_branches,)``.
``"learned-per-relation"``
    One weight vector per relation id (inverse relations included), ``(B, n_branches)`` for a batch.
``"mean"``
    Uniform weights, nothing learned (what the reference code does).

Two spaces (``model.decision_space``):

``"logit"``
    The branches' logits are combined: ``Σ_b w_b s_b``. A weighted sum of logits is a weighted
    geometric mean of the odds, a product of experts in which a confident branch can outvote unsure
    ones.
``"probability"`` (the IMF reference)
    The branches' probabilities are combined: ``p = Σ_b w_b σ(s_b)``. With uniform weights this is
    exactly the reference code's fusion, the mean of the sigmoid probabilities.

Either way the fused score is a logit. In probability space it is ``logit(p)``, computed as
``log Σ_b w_b σ(s_b) − log Σ_b w_b σ(−s_b)`` with log-sigmoids and ``logsumexp``, so it never
saturates: a float32 ``σ`` rounds every logit above about 17 to 1.0 and would tie the top candidates.
The fused loss can therefore always use the stable ``binary_cross_entropy_with_logits``, and ranking
by the fused logit ranks by ``p``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import DECISION_SPACES, FUSION_MODES


def mixture_logit(scores: Sequence[Tensor], weights: Tensor) -> Tensor:
    """``logit(Σ_b w_b σ(s_b))``: the logit of the weighted mean of the branches' probabilities.

    Args:
        scores: One logit tensor per branch, each ``(B, *)``.
        weights: ``(n_branches,)``, or ``(B, n_branches)`` per row; non-negative, summing to one.

    Returns:
        ``(B, *)``, in the scores' dtype (computed in float32 at least).
    """
    if all(s.device.type == "cpu" for s in scores) and weights.device.type == "cpu":
        return _CpuMixtureLogit.apply(weights, *scores)
    dtype = torch.promote_types(scores[0].dtype, torch.float32)
    positive = negative = None
    for index, branch_scores in enumerate(scores):
        log_weight = _per_row(weights[..., index].to(dtype).log(), branch_scores)
        branch_scores = branch_scores.to(dtype)
        up = F.logsigmoid(branch_scores) + log_weight
        down = F.logsigmoid(-branch_scores) + log_weight
        positive = up if positive is None else torch.logaddexp(positive, up)
        negative = down if negative is None else torch.logaddexp(negative, down)
    fused = positive - negative
    return fused.to(scores[0].dtype)


def _per_row(weight: Tensor, scores: Tensor) -> Tensor:
    """A branch's weight, ``()`` or ``(B,)``, shaped to broadcast over ``scores`` ``(B, *)``."""
    return weight.view(-1, *([1] * (scores.dim() - 1))) if weight.dim() == 1 else weight


def _log_sum_exp(terms: list[Tensor]) -> Tensor:
    """``log Σ_b exp(terms[b])`` elementwise, shifted by the largest term (−inf where all are −inf)."""
    top = terms[0]
    for term in terms[1:]:
        top = torch.maximum(top, term)
    top = top.clamp(min=torch.finfo(top.dtype).min)  # all −inf: exp(−inf − finite) = 0, log 0 = −inf
    total = torch.zeros_like(top)
    for term in terms:
        total.add_(torch.exp(term - top))
    return total.log_().add_(top)


class _CpuMixtureLogit(torch.autograd.Function):
    """:func:`mixture_logit` on the CPU without ATen's scalar ``log1p``.

    ATen's CPU ``logsigmoid`` and ``logaddexp`` go through ``log1p``, which is not vectorised: each
    pass over a ``512 × 12,842`` score matrix costs several times a ``sigmoid``. Here ``log σ(s) =
    min(s, 0) + log σ(|s|)`` (``σ(|s|)`` lies in ``[½, 1)``, so its logarithm loses nothing but terms
    below float resolution), ``log σ(−s) = log σ(s) − s``, and the two mixtures are log-sum-exps shifted
    by their largest term, whose sums lie in ``[1, n]``. The gradient is written out, so it stays exact
    at ``s = 0`` (where the ``|s|`` form's autograd would not) and for zero weights:
    ``∂/∂s_b = w_b σ(s_b) σ(−s_b) (1/p + 1/(1 − p))`` and ``∂/∂w_b = σ(s_b)/p − σ(−s_b)/(1 − p)``.
    """

    @staticmethod
    def forward(ctx, weights: Tensor, *scores: Tensor) -> Tensor:
        dtype = torch.promote_types(scores[0].dtype, torch.float32)
        values = [s.to(dtype) for s in scores]
        log_weights = weights.to(dtype).log()
        log_sigmoids = []  # log σ(s_b)
        for s in values:
            log_sigmoid = torch.sigmoid(s.abs()).log_()
            log_sigmoids.append(log_sigmoid.add_(s.clamp(max=0)))
        shaped = [_per_row(log_weights[..., b], s) for b, s in enumerate(values)]
        positive = _log_sum_exp([ls + lw for ls, lw in zip(log_sigmoids, shaped)])
        negative = _log_sum_exp([ls - s + lw for ls, s, lw in zip(log_sigmoids, values, shaped)])
        ctx.save_for_backward(weights, positive, negative, *values, *log_sigmoids)
        ctx.score_dtypes = [s.dtype for s in scores]
        return (positive - negative).to(scores[0].dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        weights, positive, negative, *rest = ctx.saved_tensors
        count = len(ctx.score_dtypes)
        values, log_sigmoids = rest[:count], rest[count:]
        grad = grad.to(positive.dtype)
        weight_grads, score_grads = [], []
        for b, (s, ls) in enumerate(zip(values, log_sigmoids)):
            to_positive = torch.exp(ls - positive)  # σ(s_b) / p
            to_negative = torch.exp(ls - s - negative)  # σ(−s_b) / (1 − p)
            if ctx.needs_input_grad[0]:
                weight_grad = grad * (to_positive - to_negative)
                weight_grads.append(weight_grad.sum() if weights.dim() == 1 else weight_grad.flatten(1).sum(1))
            if ctx.needs_input_grad[1 + b]:
                weight = _per_row(weights[..., b].to(s.dtype), s)
                # w_b σ(s_b) σ(−s_b) (1/p + 1/(1 − p)) = w_b (σ(s_b)/p · σ(−s_b) + σ(−s_b)/(1 − p) · σ(s_b))
                mixed = to_positive.mul_(torch.sigmoid(-s)).add_(to_negative.mul_(torch.sigmoid(s)))
                score_grads.append((grad * mixed * weight).to(ctx.score_dtypes[b]))
            else:
                score_grads.append(None)
        weight_grad = torch.stack(weight_grads, dim=-1).to(weights.dtype) if ctx.needs_input_grad[0] else None
        return (weight_grad, *score_grads)


def weighted_logit_sum(scores: Sequence[Tensor], weights: Tensor) -> Tensor:
    """``Σ_b w_b s_b`` for scores ``(B, *)`` and weights ``(n_branches,)`` or ``(B, n_branches)``."""
    fused = None
    for index, branch_scores in enumerate(scores):
        weight = weights[..., index]
        if weight.dim() == 1:  # per row: broadcast over the trailing score dimensions
            weight = weight.view(-1, *([1] * (branch_scores.dim() - 1)))
        term = weight * branch_scores
        fused = term if fused is None else fused + term
    return fused


def combine(scores: Sequence[Tensor], weights: Tensor, space: str) -> Tensor:
    """The fused logit of ``scores`` with ``weights`` in decision ``space`` (``"logit"`` or ``"probability"``)."""
    if space == "probability":
        return mixture_logit(scores, weights)
    return weighted_logit_sum(scores, weights)


class DecisionFusion(nn.Module):
    """Combine the scores of ``num_branches`` branches.

    Args:
        num_branches: The number of branches combined.
        num_relations: The number of relation ids (``2R`` with inverses); used by ``"learned-per-relation"``.
        mode: One of ``"learned"``, ``"learned-per-relation"``, ``"mean"``.
        space: ``"logit"`` or ``"probability"`` (see the module docstring).
    """

    def __init__(self, num_branches: int, num_relations: int, *, mode: str = "learned", space: str = "logit"):
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"unknown fusion mode {mode!r}; expected one of {FUSION_MODES}")
        if space not in DECISION_SPACES:
            raise ValueError(f"unknown decision space {space!r}; expected one of {DECISION_SPACES}")
        self.num_branches = num_branches
        self.num_relations = num_relations
        self.mode = mode
        self.space = space
        if mode == "learned":
            self.logits = nn.Parameter(torch.empty(num_branches))
        elif mode == "learned-per-relation":
            self.logits = nn.Parameter(torch.empty(num_relations, num_branches))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.mode != "mean":
            nn.init.zeros_(self.logits)  # start from the uniform mixture

    def weights(self, relations: Tensor) -> Tensor:
        """Branch weights: ``(n_branches,)``, or ``(B, n_branches)`` per query in ``"learned-per-relation"`` mode."""
        if self.mode == "mean":
            return torch.full((self.num_branches,), 1.0 / self.num_branches, device=relations.device)
        if self.mode == "learned":
            return torch.softmax(self.logits, dim=-1)
        return torch.softmax(self.logits[relations], dim=-1)

    def forward(self, scores: Sequence[Tensor], relations: Tensor) -> tuple[Tensor, Tensor]:
        """Fuse per-branch scores.

        Args:
            scores: One tensor per branch, each ``(B, *)``: ``(B, N)`` for 1-N scores, ``(B,)`` for triples.
            relations: ``(B,)`` the relation id of each query.

        Returns:
            The fused scores ``(B, *)`` and the weights (see :meth:`weights`).
        """
        if len(scores) != self.num_branches:
            raise ValueError(f"expected {self.num_branches} branch scores, got {len(scores)}")
        weights = self.weights(relations)
        if len(scores) == 1:
            return scores[0], weights
        return combine(scores, weights, self.space), weights

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.num_branches}, {self.num_relations}, mode={self.mode!r}, "
            f"space={self.space!r})"
        )
