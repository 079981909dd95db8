"""IMF's training objective: 1-N BCE per branch and for the fused score, plus a contrastive term.

``total = Σ_branches BCE(branch) + fused_weight · BCE(fused) + contrastive_weight · InfoNCE(modalities)``
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from models.imf import ScoreBreakdown


def smoothed_bce(logits: Tensor, targets: Tensor, *, label_smoothing: float = 0.1) -> Tensor:
    """Mean BCE of 1-N ``logits`` ``(B, N)`` against multi-hot ``targets`` ``(B, N)``, with label smoothing.

    As in TuckER, targets become ``(1 - ε)·y + 1/N``.
    """
    targets = targets.to(torch.float32)
    targets = (1.0 - label_smoothing) * targets + 1.0 / targets.shape[-1]
    return F.binary_cross_entropy_with_logits(logits.float(), targets)


def info_nce(
    views: Mapping[str, Tensor], *, masks: Mapping[str, Tensor] | None = None, temperature: float = 0.1
) -> Tensor:
    """Symmetric InfoNCE between the modality views of the same entities.

    For each pair of modalities ``(a, b)``, row ``i`` of ``a`` must pick row ``i`` of ``b`` out of every
    row of ``b`` in the batch, and the other way round. Vectors are L2-normalised and compared by
    cosine similarity divided by ``temperature``. The loss is the mean over pairs and directions.

    Args:
        views: Modality → ``(B, d)`` vectors of the same ``B`` entities, in the same order.
        masks: Modality → ``(B,)`` bool, True where the entity really has that modality. A pair
            only uses the rows present in both. A modality absent from ``masks`` is always present.
        temperature: Softmax temperature ``τ``.

    Returns:
        A scalar; zero when no pair of modalities shares two entities.
    """
    masks = masks or {}
    names = list(views)
    losses = []
    for a, b in itertools.combinations(names, 2):
        present = torch.ones(views[a].shape[0], dtype=torch.bool, device=views[a].device)
        for name in (a, b):
            if name in masks:
                present = present & masks[name]
        if int(present.sum()) < 2:
            continue
        left = F.normalize(views[a][present].float(), dim=-1)
        right = F.normalize(views[b][present].float(), dim=-1)
        logits = left @ right.T / temperature
        labels = torch.arange(logits.shape[0], device=logits.device)
        losses.append(F.cross_entropy(logits, labels))
        losses.append(F.cross_entropy(logits.T, labels))
    if not losses:
        return torch.zeros((), device=next(iter(views.values())).device if views else None)
    return torch.stack(losses).mean()


@dataclass(frozen=True)
class LossTerms:
    """The terms of the objective: ``total`` (to backpropagate), per-branch BCE, fused BCE and contrastive."""

    total: Tensor
    branches: dict[str, Tensor]
    fused: Tensor
    contrastive: Tensor

    def detached(self) -> dict[str, Tensor]:
        """Name → detached scalar, for logging: ``total``, each branch, ``fused``, ``contrastive``."""
        terms = {"total": self.total, **self.branches, "fused": self.fused, "contrastive": self.contrastive}
        return {name: value.detach().float() for name, value in terms.items()}


def imf_objective(
    scores: ScoreBreakdown,
    targets: Tensor,
    views: Mapping[str, Tensor],
    *,
    masks: Mapping[str, Tensor] | None = None,
    label_smoothing: float = 0.1,
    contrastive_weight: float = 0.1,
    fused_weight: float = 1.0,
    temperature: float = 0.1,
) -> LossTerms:
    """IMF's loss for one batch.

    Args:
        scores: 1-N scores ``(B, N)`` from :meth:`IMF.forward`.
        targets: ``(B, N)`` multi-hot known tails of each query.
        views: Modality → ``(E, d)`` vectors of the batch's entities, for the contrastive term.
        masks: Modality → ``(E,)`` feature presence of those entities (see :func:`info_nce`).
    """
    branches = {name: smoothed_bce(s, targets, label_smoothing=label_smoothing) for name, s in scores.branches.items()}
    fused = smoothed_bce(scores.fused, targets, label_smoothing=label_smoothing)
    contrastive = torch.zeros((), device=fused.device)
    if contrastive_weight:
        contrastive = info_nce(views, masks=masks, temperature=temperature)
    total = torch.stack(list(branches.values())).sum() + fused_weight * fused + contrastive_weight * contrastive
    return LossTerms(total, branches, fused, contrastive)
