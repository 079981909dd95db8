"""The contextual relation model of one branch: a TuckER scorer with 1-N scoring.

TuckER scores ``(h, r, t)`` as ``W ×1 r ×2 h ×3 t``, where the core ``W`` has shape ``(d_r, d_e, d_e)``.
For a query ``(h, r)`` the scorer first builds the relation-specific matrix ``W_r = r ×1 W``
``(d_e, d_e)``. The query vector ``q = bn1(bn0(h) · W_r)`` is then scored against every entity with one
matmul.

Building ``W_r`` costs ``d_r·d_e²``. The reference builds it once per query. Here it is built once per
distinct relation of the batch (:class:`RelationGroups`), which divides the dominant cost by
``batch / distinct relations``; batches built from few relations (``train.relations_per_batch``) make
that ratio large. Each head is then multiplied by its relation's matrix:

* on CUDA, a batched matmul over the gathered ``W_r`` (one kernel; ``B·d²`` gathered memory is cheap there);
* on CPU, one matmul per group of rows of the same relation. The copy of ``B`` matrices would cost
  more there than the arithmetic.

The groups are computed once per batch and shared by every branch. A training batch brings its own,
computed on the CPU by the sampler, so the step never waits on the device for ``torch.unique``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.config import CORE_INITS
from models.dropout import MaskDropout


def tail_scores(queries: Tensor, entities: Tensor) -> Tensor:
    """``queries @ entities.T``: ``(B, N)`` scores of ``queries`` ``(B, d)`` against ``entities`` ``(N, d)``.

    On the CPU the product is computed as ``(entities @ queries.T).T`` and returned as that transposed
    view. MKL's sgemm runs the 1-N shape about twice as fast with the long side first (DB15K, 128 × 200
    × 12,842, 2 threads: 3.9 against 8.7 ms), and the backward products keep their speed. The same
    numbers up to float rounding; the training loss (elementwise passes, sums, gathers) does not care
    about the layout. On CUDA the plain product is as fast and stays contiguous.
    """
    if queries.device.type == "cpu":
        return (entities @ queries.T).T
    return queries @ entities.T


@dataclass(frozen=True)
class RelationGroups:
    """How the rows of a batch group by relation.

    Attributes:
        distinct: ``(U,)`` the distinct relation ids, on the model's device.
        inverse: ``(B,)`` the position in ``distinct`` of each row's relation, on the model's device.
        counts: How many rows each distinct relation has, as Python ints (``U`` of them).
        contiguous: True when the rows are already sorted by ``inverse``.
        slots: ``(B,)`` each row's place in a padded ``(U, width)`` layout: group ``g``'s rows fill
            ``g·width … g·width + counts[g] - 1`` in their order. On the model's device.
        width: The largest group, the padded layout's width.
    """

    distinct: Tensor
    inverse: Tensor
    counts: tuple[int, ...]
    contiguous: bool
    slots: Tensor
    width: int

    @classmethod
    def of(
        cls,
        relations: Tensor,
        device: torch.device | str | None = None,
        *,
        capacity: tuple[int, int] | None = None,
    ) -> RelationGroups:
        """The groups of ``relations`` ``(B,)``. Pass a CPU tensor on the training path: nothing then waits on a GPU.

        ``capacity`` ``(groups, width)`` pads the layout to a fixed shape, whatever the batch holds:
        ``distinct`` gets ``groups`` entries (the padding repeats relation 0, and no row uses it) and the
        padded layout is ``(groups, width)``. The CUDA-graph step (:mod:`models.graphs`) needs shapes
        that do not change from batch to batch. Raises ValueError when the batch does not fit.
        """
        distinct, inverse, counts = torch.unique(relations, return_inverse=True, return_counts=True)
        contiguous = bool((inverse[1:] >= inverse[:-1]).all()) if inverse.numel() > 1 else True
        width = int(counts.max()) if counts.numel() else 0
        if capacity is not None:
            groups, capacity_width = capacity
            if distinct.numel() > groups or width > capacity_width:
                raise ValueError(
                    f"{distinct.numel()} relations of up to {width} rows do not fit a ({groups}, {capacity_width}) layout"
                )
            distinct = torch.cat([distinct, distinct.new_zeros(groups - distinct.numel())])
            counts = torch.cat([counts, counts.new_zeros(groups - counts.numel())])
            width = capacity_width
        order = torch.argsort(inverse, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(inverse)
        rank[order] = torch.arange(inverse.numel(), device=inverse.device) - starts[inverse[order]]
        slots = inverse * width + rank
        device = relations.device if device is None else device
        return cls(
            distinct.to(device, non_blocking=True),
            inverse.to(device, non_blocking=True),
            tuple(counts.tolist()),
            contiguous,
            slots.to(device, non_blocking=True),
            width,
        )


#: How :func:`apply_relation_matrices` multiplies: see its docstring.
PRODUCTS = ("padded", "grouped", "gathered")


def apply_relation_matrices(x: Tensor, matrices: Tensor, groups: RelationGroups, *, how: str = "padded") -> Tensor:
    """Compute ``x[b] @ matrices[groups.inverse[b]]`` for every row ``b``.

    ``how``:

    ``"padded"`` (the default)
        The rows are scattered into a zero-padded ``(U, width, d)`` block, one slot row per group,
        and multiplied by the ``U`` matrices in one batched matmul. One kernel whatever ``U`` is; on
        the CPU, one OpenMP region instead of one per relation (24 small matmuls forward and backward
        at 8 relations per batch took about 10 ms of a 45 ms DB15K step), and no ``(B, d, d)`` copy of
        the matrices on CUDA.
    ``"grouped"``
        One matmul per group of rows.
    ``"gathered"``
        A batched matmul over the matrices gathered per row, ``(B, d, d)``.

    Args:
        x: ``(B, d)`` query vectors.
        matrices: ``(U, d, d')`` one matrix per distinct relation.
        groups: Which matrix each row uses.

    Returns:
        ``(B, d')``.
    """
    if len(groups.counts) == 1:
        return x @ matrices[0]
    if how == "padded":
        padded = x.new_zeros(len(groups.counts) * groups.width, x.shape[1]).index_copy(0, groups.slots, x)
        products = torch.bmm(padded.view(len(groups.counts), groups.width, -1), matrices)
        return products.view(-1, products.shape[-1])[groups.slots]
    if how == "gathered":
        return torch.bmm(x.unsqueeze(1), matrices[groups.inverse]).squeeze(1)
    if how != "grouped":
        raise ValueError(f"unknown product {how!r}; expected one of {PRODUCTS}")
    if groups.contiguous:
        parts = torch.split(x, groups.counts)
        return torch.cat([part @ matrix for part, matrix in zip(parts, matrices.unbind(0))])
    order = torch.argsort(groups.inverse, stable=True)
    parts = torch.split(x[order], groups.counts)
    products = torch.cat([part @ matrix for part, matrix in zip(parts, matrices.unbind(0))])
    return torch.empty_like(products).index_copy_(0, order, products)


class TuckERScorer(nn.Module):
    """TuckER scoring with a per-relation precomputed core.

    Args:
        entity_dim: ``d_e``, the width of the entity vectors.
        relation_dim: ``d_r``, the width of the relation vectors.
        input_dropout: Dropout on the batch-normalised head (TuckER's ``input_dropout``).
        relation_dropout: Dropout on each relation-specific matrix ``W_r`` (TuckER's ``hidden_dropout1``).
        hidden_dropout: Dropout on the batch-normalised query vector (TuckER's ``hidden_dropout2``).
        relation_dropout_per_query: Each query draws its own dropout mask on ``W_r``, as the reference
            does (a ``(B, d_e, d_e)`` copy of the matrices). Otherwise the queries of one relation in a
            batch share the mask of its matrix, which is built once.
        core_init: ``"xavier"`` (Xavier-uniform, the IMF reference) or ``"uniform"`` (U(-1, 1), as in
            TuckER's code and PyKEEN). With batch norm after ``h·W_r`` the score ignores the core's
            scale, but Adam's steps of about ``lr`` are large next to a Xavier core (std ≈ 0.005 at
            d = 200) and small next to a U(-1, 1) one.
    """

    def __init__(
        self,
        entity_dim: int,
        relation_dim: int,
        *,
        input_dropout: float = 0.3,
        relation_dropout: float = 0.4,
        hidden_dropout: float = 0.5,
        relation_dropout_per_query: bool = False,
        core_init: str = "xavier",
    ):
        super().__init__()
        if core_init not in CORE_INITS:
            raise ValueError(f"unknown core_init {core_init!r}; expected one of {CORE_INITS}")
        self.entity_dim = entity_dim
        self.relation_dim = relation_dim
        self.relation_dropout_per_query = relation_dropout_per_query
        self.core_init = core_init
        self.core = nn.Parameter(torch.empty(relation_dim, entity_dim, entity_dim))
        self.bn0 = nn.BatchNorm1d(entity_dim)
        self.bn1 = nn.BatchNorm1d(entity_dim)
        self.input_dropout = MaskDropout(input_dropout)
        self.relation_dropout = MaskDropout(relation_dropout)
        self.hidden_dropout = MaskDropout(hidden_dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.core_init == "uniform":
            nn.init.uniform_(self.core, -1.0, 1.0)
        else:
            nn.init.xavier_uniform_(self.core)
        self.bn0.reset_parameters()
        self.bn1.reset_parameters()

    def relation_matrices(self, relation_vectors: Tensor) -> Tensor:
        """``W_r = r ×1 W`` for each row of ``relation_vectors`` ``(U, d_r)``, as ``(U, d_e, d_e)``."""
        return (relation_vectors @ self.core.flatten(1)).view(-1, self.entity_dim, self.entity_dim)

    def query(
        self, heads: Tensor, relation_table: Tensor, relations: Tensor, groups: RelationGroups | None = None
    ) -> Tensor:
        """Query vectors ``q`` ``(B, d_e)``; the score of tail ``t`` is ``q · e_t``.

        Args:
            heads: ``(B, d_e)`` head entity vectors.
            relation_table: ``(R', d_r)`` the vectors of all relations of this branch.
            relations: ``(B,)`` relation ids, rows of ``relation_table``.
            groups: The batch's :class:`RelationGroups`; computed from ``relations`` when None.
        """
        groups = RelationGroups.of(relations) if groups is None else groups
        matrices = self.relation_matrices(relation_table[groups.distinct])
        x = self.input_dropout(self.bn0(heads))
        if self.relation_dropout_per_query and self.training and self.relation_dropout.p > 0:
            per_query = self.relation_dropout(matrices[groups.inverse])  # (B, d, d): one mask per query
            x = torch.bmm(x.unsqueeze(1), per_query).squeeze(1)
        else:
            x = apply_relation_matrices(x, self.relation_dropout(matrices), groups)
        return self.hidden_dropout(self.bn1(x))

    def forward(
        self,
        heads: Tensor,
        relation_table: Tensor,
        relations: Tensor,
        entities: Tensor,
        groups: RelationGroups | None = None,
    ) -> Tensor:
        """1-N logits ``(B, N)`` of every entity in ``entities`` ``(N, d_e)`` as the tail of each query."""
        queries = self.query(heads, relation_table, relations, groups)
        # The transposed product in training only: the loss does not care which way a score rounds.
        # In eval mode the plain product, as evaluation's FrozenScorer computes it (which also scores
        # equal entity vectors once, so that they tie exactly: no matmul order promises that).
        return tail_scores(queries, entities) if self.training else queries @ entities.T

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.entity_dim}, {self.relation_dim}, "
            f"input_dropout={self.input_dropout.p}, relation_dropout={self.relation_dropout.p}, "
            f"hidden_dropout={self.hidden_dropout.p}, relation_dropout_per_query={self.relation_dropout_per_query}, "
            f"core_init={self.core_init!r})"
        )
