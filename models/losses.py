"""IMF's training objective: 1-N BCE per branch and for the fused score, plus a contrastive term.

``total = Σ_branches BCE(branch) + fused_weight · BCE(fused) + contrastive_weight · InfoNCE(modalities)``

:class:`Objective` wraps a model and this loss in one module, the step the training loop runs (and
wraps in DDP or a CUDA graph).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.imf import IMF, ScoreBreakdown
from models.scorer import RelationGroups


def smoothed_targets(targets: Tensor, *, label_smoothing: float = 0.1, mode: str = "tucker") -> Tensor:
    """Multi-hot ``targets`` ``(B, N)`` with label smoothing ε, as float32 within ``[0, 1]``.

    ``"tucker"`` (TuckER's code and the IMF reference): ``(1 - ε)·y + 1/N`` when ε > 0; a positive target
    then sits at ``1 - ε + 1/N``. ``"pykeen"``: ``(1 - ε)·y + ε·(1 - y)/(N - 1)``, which moves ε of the
    mass of each positive onto the ``N - 1`` others. ε = 0 leaves the targets as they are in both.
    """
    targets = targets.to(torch.float32)
    if not label_smoothing:
        return targets
    num = targets.shape[-1]
    if mode == "pykeen":
        return targets * (1.0 - label_smoothing) + (1.0 - targets) * (label_smoothing / max(1, num - 1))
    if mode == "tucker":
        return (1.0 - label_smoothing) * targets + 1.0 / num
    raise ValueError(f"unknown label smoothing mode {mode!r}")


def smoothed_bce(logits: Tensor, targets: Tensor, *, label_smoothing: float = 0.1, mode: str = "tucker") -> Tensor:
    """Mean BCE of 1-N ``logits`` ``(B, N)`` against multi-hot ``targets`` ``(B, N)``, smoothed by :func:`smoothed_targets`."""
    targets = smoothed_targets(targets, label_smoothing=label_smoothing, mode=mode)
    return F.binary_cross_entropy_with_logits(logits.float(), targets)


class Positives(NamedTuple):
    """The known answers of a batch of 1-N queries, sparse: ``scores[rows[i], cols[i]]`` is a positive.

    ``rows`` and ``cols`` are ``(M,)`` int64, without repeats. ``weight`` ``(M,)`` (1 for a positive, 0
    for padding) lets a fixed-size list carry fewer positives: the CUDA-graph step pads the list to a
    shape that does not change from batch to batch (padding may repeat an entry; its weight is 0).
    """

    rows: Tensor
    cols: Tensor
    weight: Tensor | None = None

    @classmethod
    def from_dense(cls, targets: Tensor) -> Positives:
        """The positives of a multi-hot ``(B, N)`` matrix."""
        rows, cols = (targets > 0).nonzero(as_tuple=True)
        return cls(rows, cols)


def smoothing_coefficients(num_entities: int, label_smoothing: float, mode: str) -> tuple[float, float]:
    """``(a, c)`` such that the smoothed target is ``a·y + c`` (see :func:`smoothed_targets`)."""
    if not label_smoothing:
        return 1.0, 0.0
    if mode == "pykeen":
        off = label_smoothing / max(1, num_entities - 1)
        return 1.0 - label_smoothing - off, off
    if mode == "tucker":
        return 1.0 - label_smoothing, 1.0 / num_entities
    raise ValueError(f"unknown label smoothing mode {mode!r}")


def softplus_sum(x: Tensor) -> Tensor:
    """``Σ softplus(x)`` over all elements, as a scalar.

    On the CPU this is ``Σ relu(x) − Σ log σ(|x|)``: ATen's CPU ``softplus`` (like ``log1p``) is not
    vectorised and took 8.1 ms over a DB15K batch's ``128 × 12,842`` logits against 1.6 ms for this
    form (2 threads). ``σ(|x|)`` lies in ``[0.5, 1)``, so the logarithm loses nothing but terms below
    float resolution. Only the loss value uses it; the gradient is ``σ(x)`` either way.
    """
    if x.device.type != "cpu":
        return F.softplus(x).sum()
    return F.relu(x).sum() - torch.sigmoid(x.abs()).log_().sum()


class _SparseTargetBCE(torch.autograd.Function):
    """Mean BCE-with-logits against targets ``a·y + c`` with ``y`` given by its positives.

    With ``t = a·y + c`` the mean loss is ``(Σ softplus(s) − c·Σ s − a·Σ_pos s) / (B·N)``, and its
    gradient is ``(σ(s) − c − a·y) / (B·N)``. Neither the dense targets nor a second ``B × N``
    intermediate is ever built: the forward pass holds one temporary, the backward pass one gradient.
    """

    @staticmethod
    def forward(ctx, scores: Tensor, rows: Tensor, cols: Tensor, weight: Tensor | None, a: float, c: float) -> Tensor:
        ctx.dtype = scores.dtype
        scores = scores.float()
        numel = scores.numel()
        loss = softplus_sum(scores)
        if c:
            loss = loss - c * scores.sum()
        if rows.numel():
            picked = scores[rows, cols]
            loss = loss - a * (picked if weight is None else picked * weight).sum()
        ctx.save_for_backward(scores, rows, cols, weight)
        ctx.a, ctx.c, ctx.numel = a, c, numel
        return loss / numel

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        scores, rows, cols, weight = ctx.saved_tensors
        grad = torch.sigmoid(scores)
        if ctx.c:
            grad.sub_(ctx.c)
        if rows.numel():
            if weight is None:
                values = torch.full_like(rows, -ctx.a, dtype=grad.dtype)
            else:
                values = weight.to(grad.dtype) * -ctx.a
            grad.index_put_((rows, cols), values, accumulate=True)
        grad.mul_(grad_output / ctx.numel)
        return grad.to(ctx.dtype), None, None, None, None, None


def sparse_target_bce(
    scores: Tensor, positives: Positives, *, label_smoothing: float = 0.1, mode: str = "tucker"
) -> Tensor:
    """:func:`smoothed_bce` of 1-N ``scores`` ``(B, N)`` whose targets are given by their ``positives``."""
    a, c = smoothing_coefficients(scores.shape[-1], label_smoothing, mode)
    weight = None if positives.weight is None else positives.weight.float()
    return _SparseTargetBCE.apply(scores, positives.rows, positives.cols, weight, a, c)


def info_nce(
    views: Mapping[str, Tensor],
    *,
    masks: Mapping[str, Tensor] | None = None,
    temperature: float = 0.1,
    pairs: Sequence[tuple[str, str]] | None = None,
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
        pairs: The pairs of views to align; every pair when None.

    Returns:
        A scalar; zero when no pair of modalities shares two entities.
    """
    masks = masks or {}
    names = list(views)
    pairs = list(itertools.combinations(names, 2)) if pairs is None else list(pairs)
    if not pairs:
        return torch.zeros((), device=next(iter(views.values())).device if views else None)
    # Rows absent from a pair are masked, not indexed away: boolean indexing would make the host wait
    # for the device to count them. A pair with fewer than two shared rows adds zero and is not counted.
    total = counted = None
    for a, b in pairs:
        present = torch.ones(views[a].shape[0], dtype=torch.bool, device=views[a].device)
        for name in (a, b):
            if name in masks:
                present = present & masks[name]
        left = F.normalize(views[a].float(), dim=-1)
        right = F.normalize(views[b].float(), dim=-1)
        logits = (left @ right.T / temperature).masked_fill(~present[None, :], float("-inf"))
        logits_t = logits.T.masked_fill(~present[None, :], float("-inf"))
        diagonal = logits.diagonal()
        n = present.sum()
        usable = (n >= 2).float()
        weights = present.float() * usable / n.clamp_min(1)
        # Rows that are absent get a finite dummy row so that logsumexp stays finite; their weight is 0.
        rows = torch.where(present[:, None], logits, torch.zeros_like(logits))
        rows_t = torch.where(present[:, None], logits_t, torch.zeros_like(logits_t))
        pair = ((rows.logsumexp(dim=1) - diagonal.where(present, 0.0)) * weights).sum()
        pair = pair + ((rows_t.logsumexp(dim=1) - diagonal.where(present, 0.0)) * weights).sum()
        total = pair if total is None else total + pair
        counted = 2 * usable if counted is None else counted + 2 * usable
    return total / counted.clamp_min(1)


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
    targets: Tensor | Positives,
    views: Mapping[str, Tensor],
    *,
    masks: Mapping[str, Tensor] | None = None,
    label_smoothing: float = 0.1,
    smoothing_mode: str = "tucker",
    contrastive_weight: float = 0.1,
    fused_weight: float = 1.0,
    temperature: float = 0.1,
    contrastive_pairs: Sequence[tuple[str, str]] | None = None,
) -> LossTerms:
    """IMF's loss for one batch.

    Args:
        scores: 1-N scores ``(B, N)`` from :meth:`IMF.forward`.
        targets: The known tails of each query: ``(B, N)`` multi-hot, or their :class:`Positives`.
        views: Modality → ``(E, d)`` vectors of the batch's entities, for the contrastive term.
        masks: Modality → ``(E,)`` feature presence of those entities (see :func:`info_nce`).
        contrastive_pairs: The pairs of views the contrastive term aligns (all pairs when None).

    A term of weight 0 is not computed: its value is reported as zero.
    """
    positives = targets if isinstance(targets, Positives) else Positives.from_dense(targets)

    def bce(logits: Tensor) -> Tensor:
        return sparse_target_bce(logits, positives, label_smoothing=label_smoothing, mode=smoothing_mode)

    branches = {name: bce(s) for name, s in scores.branches.items()}
    total = torch.stack(list(branches.values())).sum()
    zero = torch.zeros((), device=total.device)
    fused = contrastive = zero
    if fused_weight and len(branches) > 1:
        fused = bce(scores.fused)
        total = total + fused_weight * fused
    elif len(branches) == 1:
        fused = next(iter(branches.values()))  # one branch: the fused score is that branch's score
    if contrastive_weight:
        contrastive = info_nce(views, masks=masks, temperature=temperature, pairs=contrastive_pairs)
        total = total + contrastive_weight * contrastive
    return LossTerms(total, branches, fused, contrastive)


def contrastive_pairs(modalities: tuple[str, ...], branches: tuple[str, ...], which: str) -> list[tuple[str, str]]:
    """The view pairs of ``train.contrastive_pairs``: among ``modalities``, with the fused branch, or both."""
    import itertools

    among = list(itertools.combinations(modalities, 2))
    fused = [(m, b) for b in branches if b not in modalities for m in modalities]
    return {"modalities": among, "fused": fused, "all": among + fused}[which]


class Objective(nn.Module):
    """The model and its loss as one module, so that DDP sees every parameter used inside ``forward``."""

    def __init__(
        self,
        model: IMF,
        *,
        label_smoothing: float,
        smoothing_mode: str,
        contrastive_weight: float,
        fused_weight: float,
        temperature: float,
        pairs: str = "modalities",
    ):
        super().__init__()
        self.model = model
        self.contrastive_pairs = pairs
        self.label_smoothing = label_smoothing
        self.smoothing_mode = smoothing_mode
        self.contrastive_weight = contrastive_weight
        self.fused_weight = fused_weight
        self.temperature = temperature

    def forward(
        self,
        heads: Tensor,
        relations: Tensor,
        positives: Positives,
        groups: RelationGroups,
        entities: Tensor,
        entity_mask: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of queries ``(B,)`` and its detached terms.

        Args:
            heads, relations: ``(B,)`` the queries.
            positives: Their known tails.
            groups: Their relation groups, computed on the CPU.
            entities: ``(E,)`` the distinct entities whose modality views the contrastive term aligns.
            entity_mask: ``(E,)`` bool, False where ``entities`` is padding (the CUDA-graph step pads
                them to a fixed count); None: every entry is real.
        """
        encoded = self.model.encode()
        scores = self.model(heads, relations, encoded=encoded, groups=groups)
        views = masks = None
        pairs = None
        if self.contrastive_weight:
            views = {name: encoded[name].entities[entities] for name in self.model.branch_names}
            masks = {
                m: mask[entities] for m in self.model.modalities if (mask := self.model.feature_mask(m)) is not None
            }
            if entity_mask is not None:
                masks = {name: masks[name] & entity_mask if name in masks else entity_mask for name in views}
            pairs = contrastive_pairs(self.model.modalities, self.model.branch_names, self.contrastive_pairs)
        terms = imf_objective(
            scores,
            positives,
            views or {},
            masks=masks,
            label_smoothing=self.label_smoothing,
            smoothing_mode=self.smoothing_mode,
            contrastive_weight=self.contrastive_weight,
            fused_weight=self.fused_weight,
            temperature=self.temperature,
            contrastive_pairs=pairs,
        )
        return terms.total, terms.detached()
