"""Stage 2 of IMF: decision fusion, a learned weighted combination of the branches' scores.

The weights are a softmax over branches, so they are non-negative and sum to one:

``"learned"``
    One weight vector for the whole model, ``(n_branches,)``.
``"learned-per-relation"``
    One weight vector per relation id (inverse relations included), ``(B, n_branches)`` for a batch.
``"mean"``
    Uniform weights, nothing learned (what the reference code does).

The branches' *logits* (pre-sigmoid) are combined, not their probabilities. A weighted sum of logits
is a weighted geometric mean of the odds, a product of experts in which a confident branch can
outvote unsure ones. It also keeps the fused score a logit, so the fused loss can use the stable
``binary_cross_entropy_with_logits``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.config import FUSION_MODES


class DecisionFusion(nn.Module):
    """Combine the scores of ``num_branches`` branches.

    Args:
        num_branches: The number of branches combined.
        num_relations: The number of relation ids (``2R`` with inverses); used by ``"learned-per-relation"``.
        mode: One of ``"learned"``, ``"learned-per-relation"``, ``"mean"``.
    """

    def __init__(self, num_branches: int, num_relations: int, *, mode: str = "learned"):
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"unknown fusion mode {mode!r}; expected one of {FUSION_MODES}")
        self.num_branches = num_branches
        self.num_relations = num_relations
        self.mode = mode
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
        fused = None
        for index, branch_scores in enumerate(scores):
            weight = weights[..., index]
            if weight.dim() == 1:  # per query: broadcast over the trailing score dimensions
                weight = weight.view(-1, *([1] * (branch_scores.dim() - 1)))
            term = weight * branch_scores
            fused = term if fused is None else fused + term
        return fused, weights

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.num_branches}, {self.num_relations}, mode={self.mode!r})"
