"""Per-branch entity and relation representations.

A branch represents every entity as one ``dim``-vector. The structure branch learns a free table, and
GAT output can initialise it. A feature branch (visual, text, …) builds its vectors from frozen
features of one modality, in one of two modes:

``"finetune"`` (the reference)
    The features are reduced to ``dim`` by PCA, and the result initialises a trainable per-entity
    table. The model is transductive: an entity it never trained on keeps its PCA vector.
``"project"``
    A learned linear projection of the frozen features. The PCA basis initialises it, so at step 0
    both modes give the same vectors. The model stays inductive: a new entity with features gets a
    sensible vector without training.

An entity without a feature of that modality (``mask`` is False) gets the branch's learned
"missing" vector.

Features reach ``dim`` columns in one of two ways (``model.feature_reduction``): ``"pca"`` (rescaled
to the Xavier scale of a random table), or ``"avgpool"``, the reference's: each feature vector is
L2-normalised and average-pooled down to ``dim`` values.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

import torch.nn.functional as F

from models.config import FEATURE_MODES, FEATURE_REDUCTIONS


def xavier_std(num_rows: int, dim: int) -> float:
    """Standard deviation of ``xavier_normal_`` for a ``(num_rows, dim)`` table, as TuckER uses."""
    return math.sqrt(2.0 / (num_rows + dim))


def pca_basis(rows: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Mean ``(D,)`` and principal directions ``(D, dim)`` of ``rows`` ``(n, D)``.

    At most ``min(n - 1, D)`` directions are real. The remaining columns are zero, so the reduced
    vectors always have ``dim`` columns. ``torch.pca_lowrank`` is randomised. It runs under a fixed
    seed in a forked RNG, and each direction's sign is fixed (largest entry positive), so the result
    depends only on ``rows`` and the global RNG is left alone.
    """
    rows = rows.float()
    mean = rows.mean(dim=0)
    basis = rows.new_zeros(rows.shape[1], dim)
    q = min(dim, rows.shape[0] - 1, rows.shape[1])
    if q > 0:
        with torch.random.fork_rng(devices=[rows.device] if rows.is_cuda else []):
            torch.manual_seed(0)
            _, _, v = torch.pca_lowrank(rows - mean, q=q, center=False)
        v = v[:, :q]
        signs = torch.sign(v.gather(0, v.abs().argmax(dim=0, keepdim=True)))
        basis[:, :q] = v * signs
    return mean, basis


class LearnedRepresentation(nn.Module):
    """A trainable table whose ``i``-th row represents item ``i``: the structure entities, or a branch's relations.

    Args:
        num_items: The number of rows ``n``.
        dim: The width of each row.
    """

    def __init__(self, num_items: int, dim: int):
        super().__init__()
        self.num_items = num_items
        self.dim = dim
        self.weight = nn.Parameter(torch.empty(num_items, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.weight)

    @torch.no_grad()
    def initialise_from(self, values: Tensor) -> None:
        """Copy ``values`` ``(n, k)`` into the table. If ``k != dim``, reduce them by PCA first.

        The rows are rescaled to the table's Xavier scale, so a branch initialised from GAT output
        starts at the same scale as a random one.
        """
        if values.shape[0] != self.num_items:
            raise ValueError(f"expected {self.num_items} rows to initialise from, got {values.shape[0]}")
        values = values.to(self.weight.device, torch.float32)
        if values.shape[1] != self.dim:
            mean, basis = pca_basis(values, self.dim)
            values = (values - mean) @ basis
        std = values.std()
        if torch.isfinite(std) and std > 0:
            self.weight.copy_(values * (xavier_std(self.num_items, self.dim) / std))

    def forward(self, indices: Tensor | None = None) -> Tensor:
        """Rows for ``indices`` ``(B,)`` as ``(B, dim)``, or the whole table ``(n, dim)`` when None."""
        return self.weight if indices is None else self.weight[indices]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.num_items}, {self.dim})"


def average_pool(rows: Tensor, dim: int) -> Tensor:
    """``rows`` ``(n, D)`` L2-normalised and average-pooled to ``(n, dim)`` (the reference's reduction)."""
    return F.adaptive_avg_pool1d(F.normalize(rows.float(), dim=-1).unsqueeze(1), dim).squeeze(1)


class FeatureRepresentation(nn.Module):
    """Entity vectors built from one modality's frozen features (see the module docstring for modes).

    The frozen inputs are buffers that are *not* saved in the ``state_dict``: the feature files they
    come from are the record, and a checkpoint carries their hashes instead. ``mask`` ``(N,)`` is
    saved. In ``"project"`` mode the model needs ``features`` ``(N, D)`` to score, so a loaded model
    must get them back through :meth:`attach_features`. In ``"finetune"`` mode ``reduced`` ``(N,
    dim)``, the reduced features that ``reset_parameters`` restores the table to, is only needed to
    initialise.

    Args:
        num_entities: The number of entities ``N``.
        feature_dim: The width ``D`` of the frozen features.
        dim: The width of the entity vectors.
        mode: ``"finetune"`` or ``"project"``.
        reduction: ``"pca"`` or ``"avgpool"`` (see the module docstring).
    """

    def __init__(
        self, num_entities: int, feature_dim: int, dim: int, *, mode: str = "finetune", reduction: str = "pca"
    ):
        super().__init__()
        if mode not in FEATURE_MODES:
            raise ValueError(f"unknown feature mode {mode!r}; expected one of {FEATURE_MODES}")
        if reduction not in FEATURE_REDUCTIONS:
            raise ValueError(f"unknown feature reduction {reduction!r}; expected one of {FEATURE_REDUCTIONS}")
        self.num_entities = num_entities
        self.feature_dim = feature_dim
        self.dim = dim
        self.mode = mode
        self.reduction = reduction
        self.register_buffer("mask", torch.zeros(num_entities, dtype=torch.bool))
        if mode == "finetune":
            self.register_buffer("reduced", torch.zeros(num_entities, dim), persistent=False)
            self.table = nn.Parameter(torch.empty(num_entities, dim))
        else:
            self.register_buffer("features", torch.zeros(num_entities, feature_dim), persistent=False)
            self.projection = nn.Linear(feature_dim, dim)
        self.missing = nn.Parameter(torch.empty(dim))
        self._all_present = False
        self.register_load_state_dict_post_hook(lambda module, _: module._mask_changed())
        self.reset_parameters()

    @property
    def needs_features(self) -> bool:
        """True when scoring needs the frozen features (``"project"`` mode), so a loaded model must get them back."""
        return self.mode == "project"

    @torch.no_grad()
    def set_features(self, matrix: Tensor, mask: Tensor) -> None:
        """Attach the frozen features, then re-initialise the trainable parameters from them.

        Args:
            matrix: ``(N, D)`` float features. Rows where ``mask`` is False are ignored.
            mask: ``(N,)`` bool, True where the entity has a real feature.
        """
        matrix, mask = self._checked(matrix, mask)
        self.mask.copy_(mask)
        self._mask_changed()
        if self.mode == "finetune":
            self.reduced.zero_()
            if self.reduction == "avgpool":
                self.reduced[mask] = average_pool(matrix[mask], self.dim)
            else:
                mean, basis, scale = self._pca(matrix)
                if basis is not None:
                    self.reduced[mask] = (matrix[mask] - mean) @ basis * scale
        else:
            self.features.copy_(self._prepared(matrix))
        self.reset_parameters()

    @torch.no_grad()
    def attach_features(self, matrix: Tensor, mask: Tensor) -> None:
        """Give a loaded model its frozen features back, leaving every trained parameter as it is.

        Raises:
            ValueError: If the shapes differ, or ``mask`` is not the mask the model was trained with.
        """
        matrix, mask = self._checked(matrix, mask)
        if not torch.equal(mask, self.mask):
            raise ValueError("the features cover other entities than those the model was trained with")
        if self.mode == "project":
            self.features.copy_(self._prepared(matrix))

    def _mask_changed(self) -> None:
        """Note whether every entity has a real feature; then no row uses ``missing``, which is frozen.

        The forward pass then returns the vectors as they are: the ``where`` against ``missing`` cost
        three ``(N, dim)`` passes per step (8 ms of a DB15K structure + text step), and on CUDA the
        flag is read once here, not synchronised per step. A frozen, unused ``missing`` keeps DDP
        from waiting on a gradient that never comes; it would have received zeros.
        """
        self._all_present = bool(self.mask.all())
        self.missing.requires_grad_(not self._all_present)

    def _checked(self, matrix: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if matrix.shape != (self.num_entities, self.feature_dim):
            raise ValueError(
                f"expected features of shape {(self.num_entities, self.feature_dim)}, got {tuple(matrix.shape)}"
            )
        if mask.shape != (self.num_entities,):
            raise ValueError(f"expected a mask of shape ({self.num_entities},), got {tuple(mask.shape)}")
        mask = mask.to(self.mask.device, torch.bool)
        matrix = matrix.to(self.mask.device, torch.float32) * mask[:, None]
        if not torch.isfinite(matrix).all():
            raise ValueError("the features hold non-finite values (nan or inf)")
        return matrix, mask

    def _prepared(self, matrix: Tensor) -> Tensor:
        """The frozen input of ``"project"`` mode: L2-normalised rows for ``"avgpool"``, else as given."""
        return F.normalize(matrix, dim=-1) if self.reduction == "avgpool" else matrix

    def _pca(self, matrix: Tensor) -> tuple[Tensor | None, Tensor | None, float]:
        """PCA of the observed rows, and the scale that brings the reduced vectors to Xavier std.

        Returns ``(None, None, 1.0)`` when fewer than two entities have features (nothing to fit).
        """
        rows = matrix[self.mask]
        if rows.shape[0] < 2:
            return None, None, 1.0
        mean, basis = pca_basis(rows, self.dim)
        std = ((rows - mean) @ basis).std()
        if not torch.isfinite(std) or std == 0:
            return None, None, 1.0
        return mean, basis, xavier_std(self.num_entities, self.dim) / float(std)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        std = xavier_std(self.num_entities, self.dim)
        nn.init.normal_(self.missing, std=std)
        if self.mode == "finetune":
            nn.init.normal_(self.table, std=std)
            self.table[self.mask] = self.reduced[self.mask]
            return
        self.projection.reset_parameters()
        if self.reduction == "avgpool":  # the pooling as a linear map of the (normalised) features
            pooling = F.adaptive_avg_pool1d(torch.eye(self.feature_dim, device=self.mask.device).unsqueeze(1), self.dim)
            self.projection.weight.copy_(pooling.squeeze(1).T)
            self.projection.bias.zero_()
            return
        mean, basis, scale = self._pca(self.features)
        if basis is not None:
            self.projection.weight.copy_(basis.T * scale)
            self.projection.bias.copy_(-(mean @ basis) * scale)

    def forward(self, indices: Tensor | None = None) -> Tensor:
        """Vectors for entity ids ``indices`` ``(B,)`` as ``(B, dim)``, or for all entities ``(N, dim)``."""
        if self.mode == "finetune":
            values = self.table if indices is None else self.table[indices]
        else:
            values = self.projection(self.features if indices is None else self.features[indices])
        if self._all_present:
            return values
        mask = self.mask if indices is None else self.mask[indices]
        return torch.where(mask[:, None], values, self.missing.to(values.dtype))

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.num_entities}, {self.feature_dim}, {self.dim}, mode={self.mode!r}, "
            f"reduction={self.reduction!r})"
        )
