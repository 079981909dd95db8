"""IMF: Interactive Multimodal Fusion for link prediction (Li et al., WWW 2023).

Each modality is one *branch* with its own entity and relation representations and its own TuckER
scorer. With two or more modalities, a fourth *multimodal* branch scores with low-rank Tucker fusions
of the modality entity vectors and relation vectors (stage 1). Decision fusion (stage 2) mixes every
branch's logits. Relation ids ``0 … R-1`` are the given relations and ``R … 2R-1`` their inverses:
``(t, r + R, h)`` asks for the head of ``(?, r, t)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor, nn

from models.decision import DecisionFusion
from models.fusion import LowRankTuckerFusion
from models.representations import FeatureRepresentation, LearnedRepresentation
from models.scorer import RelationGroups, TuckERScorer

if TYPE_CHECKING:
    from models.config import ModelConfig

STRUCTURE = "structure"
MULTIMODAL = "multimodal"


class BranchEmbeddings(NamedTuple):
    """All vectors of one branch: ``entities`` ``(N, d)`` and ``relations`` ``(2R, d)``."""

    entities: Tensor
    relations: Tensor


@dataclass(frozen=True)
class ScoreBreakdown:
    """Every branch's scores for a batch, with the decision-fusion weights and the fused score.

    Scores are logits; ``torch.sigmoid`` turns them into probabilities. For 1-N scoring
    (:meth:`IMF.forward`) every score tensor is ``(B, N)``; for triples (:meth:`IMF.score_triples`) it is ``(B,)``.

    Attributes:
        branches: Branch name → scores, in the model's branch order.
        weights: Fusion weights, ``(n_branches,)`` or ``(B, n_branches)`` per query.
        fused: The weighted sum of the branch logits.
    """

    branches: dict[str, Tensor]
    weights: Tensor
    fused: Tensor

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.branches)

    def weight_of(self, branch: str) -> Tensor:
        """The weight of ``branch``: a scalar, or ``(B,)`` per query."""
        return self.weights[..., self.names.index(branch)]


class IMF(nn.Module):
    """The IMF model.

    Args:
        num_entities: ``N``.
        num_relations: ``R``, the number of relations *without* inverses. The model holds ``2R`` relation ids.
        dim: The width of all entity and relation vectors.
        modalities: The branches, in order: ``"structure"`` (a learned table) and/or feature modalities
            such as ``"visual"`` and ``"text"`` (built from frozen features).
        feature_dims: The width of each feature modality's frozen features, e.g. ``{"visual": 1280}``.
        feature_mode: ``"finetune"`` or ``"project"`` (see :mod:`models.representations`).
        fusion: Decision fusion mode (see :mod:`models.decision`).
        fusion_rank: ``K`` of the low-rank Tucker fusion.
        fusion_dropout: Dropout on the fusion inputs.
        detach_fusion_inputs: Stop the multimodal branch's gradient at its inputs, so that its loss
            trains the fusion and its scorer but never the modality branches' vectors.
        fusion_residual: Add the mean of the modality vectors to the fusion's output (see
            :class:`LowRankTuckerFusion`).
        input_dropout, relation_dropout, hidden_dropout: The TuckER dropouts (see :class:`TuckERScorer`).
        fusion_relu: The reference's ReLUs in the Mutan fusion (see :class:`LowRankTuckerFusion`).
        decision_space: ``"logit"`` or ``"probability"`` (see :mod:`models.decision`).
        relation_dropout_per_query, core_init: See :class:`TuckERScorer`.
        feature_reduction: ``"pca"`` or ``"avgpool"`` (see :mod:`models.representations`).
        interactive: Build the multimodal branch (stage 1's interactive fusion) when there are two or
            more modalities. False leaves only the modality branches: the ablation "without
            interactive fusion".
        fusion_gradient_scale: Without ``detach_fusion_inputs``, the factor on the multimodal loss's
            gradient where it reaches the modality vectors (1: joint training).

    Until :meth:`set_features` is called, a feature branch has no features and gives every entity its
    "missing" vector.
    """

    def __init__(
        self,
        num_entities: int,
        num_relations: int,
        *,
        dim: int = 256,
        modalities: Sequence[str] = (STRUCTURE, "visual", "text"),
        feature_dims: Mapping[str, int] | None = None,
        feature_mode: str = "finetune",
        fusion: str = "learned",
        fusion_rank: int = 2,
        fusion_dropout: float = 0.2,
        detach_fusion_inputs: bool = False,
        fusion_residual: bool = False,
        input_dropout: float = 0.3,
        relation_dropout: float = 0.4,
        hidden_dropout: float = 0.5,
        fusion_relu: bool = False,
        decision_space: str = "logit",
        relation_dropout_per_query: bool = False,
        core_init: str = "xavier",
        feature_reduction: str = "pca",
        interactive: bool = True,
        fusion_gradient_scale: float = 1.0,
    ):
        super().__init__()
        modalities = tuple(modalities)
        if not modalities or len(set(modalities)) != len(modalities) or MULTIMODAL in modalities:
            raise ValueError(f"modalities must be distinct, non-empty and exclude {MULTIMODAL!r}: {modalities}")
        feature_dims = dict(feature_dims or {})
        missing = [m for m in modalities if m != STRUCTURE and m not in feature_dims]
        if missing:
            raise ValueError(f"feature_dims gives no width for modality {missing[0]!r}")
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.dim = dim
        self.modalities = modalities
        self.feature_dims = {m: int(feature_dims[m]) for m in modalities if m != STRUCTURE}
        self.feature_mode = feature_mode
        self.detach_fusion_inputs = detach_fusion_inputs
        self.fusion_gradient_scale = 0.0 if detach_fusion_inputs else float(fusion_gradient_scale)
        self.interactive = interactive
        self.branch_names = modalities + ((MULTIMODAL,) if interactive and len(modalities) > 1 else ())

        self.entity_representations = nn.ModuleDict(
            {
                m: LearnedRepresentation(num_entities, dim)
                if m == STRUCTURE
                else FeatureRepresentation(
                    num_entities, self.feature_dims[m], dim, mode=feature_mode, reduction=feature_reduction
                )
                for m in modalities
            }
        )
        self.relation_representations = nn.ModuleDict(
            {m: LearnedRepresentation(2 * num_relations, dim) for m in modalities}
        )
        if MULTIMODAL in self.branch_names:
            fusion_args = dict(rank=fusion_rank, dropout=fusion_dropout, residual=fusion_residual, relu=fusion_relu)
            self.entity_fusion = LowRankTuckerFusion(len(modalities), dim, **fusion_args)
            self.relation_fusion = LowRankTuckerFusion(len(modalities), dim, **fusion_args)
        self.scorers = nn.ModuleDict(
            {
                branch: TuckERScorer(
                    dim,
                    dim,
                    input_dropout=input_dropout,
                    relation_dropout=relation_dropout,
                    hidden_dropout=hidden_dropout,
                    relation_dropout_per_query=relation_dropout_per_query,
                    core_init=core_init,
                )
                for branch in self.branch_names
            }
        )
        self.decision = DecisionFusion(len(self.branch_names), 2 * num_relations, mode=fusion, space=decision_space)

    def reset_parameters(self) -> None:
        parts = [*self.entity_representations.values(), *self.relation_representations.values()]
        parts += [*self.scorers.values(), self.decision]
        if MULTIMODAL in self.branch_names:
            parts += [self.entity_fusion, self.relation_fusion]
        for part in parts:
            part.reset_parameters()

    @torch.no_grad()
    def set_features(self, modality: str, matrix: Tensor, mask: Tensor) -> None:
        """Attach frozen features ``matrix`` ``(N, D_m)`` and ``mask`` ``(N,)`` (True: real) to ``modality``."""
        if modality not in self.feature_dims:
            raise KeyError(f"the model has no feature modality {modality!r} (it has {tuple(self.feature_dims)})")
        self.entity_representations[modality].set_features(matrix, mask)

    @torch.no_grad()
    def attach_features(self, modality: str, matrix: Tensor, mask: Tensor) -> None:
        """Give a loaded model the frozen features of ``modality`` back, without touching trained parameters."""
        if modality not in self.feature_dims:
            raise KeyError(f"the model has no feature modality {modality!r} (it has {tuple(self.feature_dims)})")
        self.entity_representations[modality].attach_features(matrix, mask)

    @property
    def modalities_needing_features(self) -> tuple[str, ...]:
        """The feature modalities that cannot score without their frozen features (``"project"`` mode).

        Checkpoints do not hold feature matrices, so a model loaded from one needs :meth:`attach_features`
        for each of these.
        """
        return tuple(m for m in self.feature_dims if self.entity_representations[m].needs_features)

    @torch.no_grad()
    def set_structure_init(self, entities: Tensor | None = None, relations: Tensor | None = None) -> None:
        """Initialise the structure branch from GAT output: ``entities`` ``(N, d)`` and ``relations`` ``(R, d)``.

        Widths other than ``dim`` are reduced by PCA. As in the reference, inverse relation ``r + R``
        starts at ``-relations[r]``.
        """
        if STRUCTURE not in self.modalities:
            raise KeyError("the model has no structure branch")
        if entities is not None:
            self.entity_representations[STRUCTURE].initialise_from(entities)
        if relations is not None:
            self.relation_representations[STRUCTURE].initialise_from(torch.cat([relations, -relations]))

    def feature_mask(self, modality: str) -> Tensor | None:
        """``(N,)`` True where the entity has a real feature of ``modality``; None for the structure branch."""
        if modality == STRUCTURE:
            return None
        return self.entity_representations[modality].mask

    def encode(self) -> dict[str, BranchEmbeddings]:
        """Every branch's entity ``(N, d)`` and relation ``(2R, d)`` vectors.

        :meth:`forward` calls this itself. Evaluation calls it once and passes the result to every batch.
        """
        encoded = {
            m: BranchEmbeddings(self.entity_representations[m](), self.relation_representations[m]())
            for m in self.modalities
        }
        if MULTIMODAL in self.branch_names:
            inputs = [encoded[m] for m in self.modalities]
            if self.fusion_gradient_scale != 1.0:
                inputs = [
                    BranchEmbeddings(_scale_gradient(e.entities, self.fusion_gradient_scale),
                                     _scale_gradient(e.relations, self.fusion_gradient_scale))
                    for e in inputs
                ]
            encoded[MULTIMODAL] = BranchEmbeddings(
                self.entity_fusion([e.entities for e in inputs]),
                self.relation_fusion([e.relations for e in inputs]),
            )
        return encoded

    def forward(
        self,
        heads: Tensor,
        relations: Tensor,
        *,
        encoded: Mapping[str, BranchEmbeddings] | None = None,
        groups: RelationGroups | None = None,
    ) -> ScoreBreakdown:
        """1-N scores: the logit of every entity as the tail of each query ``(heads[b], relations[b], ?)``.

        Args:
            heads: ``(B,)`` head entity ids.
            relations: ``(B,)`` relation ids in ``[0, 2R)``.
            encoded: The output of :meth:`encode`, to reuse across batches; computed when None.
            groups: The batch's relation groups (see :class:`RelationGroups`); computed when None.

        Returns:
            A :class:`ScoreBreakdown` of ``(B, N)`` scores.
        """
        encoded = self.encode() if encoded is None else encoded
        groups = RelationGroups.of(relations) if groups is None else groups
        branches = {
            name: self.scorers[name](
                encoded[name].entities[heads], encoded[name].relations, relations, encoded[name].entities, groups
            )
            for name in self.branch_names
        }
        fused, weights = self.decision(list(branches.values()), relations)
        return ScoreBreakdown(branches, weights, fused)

    def score_triples(
        self,
        heads: Tensor,
        relations: Tensor,
        tails: Tensor,
        *,
        encoded: Mapping[str, BranchEmbeddings] | None = None,
    ) -> ScoreBreakdown:
        """Scores of single triples, each ``(B,)``; equal to ``forward(heads, relations)`` at ``tails``."""
        encoded = self.encode() if encoded is None else encoded
        groups = RelationGroups.of(relations)
        branches = {}
        for name in self.branch_names:
            entities, relation_table = encoded[name]
            query = self.scorers[name].query(entities[heads], relation_table, relations, groups)
            branches[name] = (query * entities[tails]).sum(dim=-1)
        fused, weights = self.decision(list(branches.values()), relations)
        return ScoreBreakdown(branches, weights, fused)

    def inverse(self, relations: Tensor) -> Tensor:
        """The id of each relation's inverse (``r ↔ r + R``)."""
        return (relations + self.num_relations) % (2 * self.num_relations)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.num_entities}, {self.num_relations}, dim={self.dim}, "
            f"modalities={self.modalities}, feature_mode={self.feature_mode!r}, fusion={self.decision.mode!r}, "
            f"decision_space={self.decision.space!r})"
        )


def build_model(
    config: ModelConfig, *, num_entities: int, num_relations: int, feature_dims: Mapping[str, int]
) -> IMF:
    """The :class:`IMF` that ``config`` describes, for a KG of the given sizes."""
    return IMF(
        num_entities,
        num_relations,
        dim=config.dim,
        modalities=config.modalities,
        feature_dims=feature_dims,
        feature_mode=config.feature_mode,
        fusion=config.fusion,
        fusion_rank=config.fusion_rank,
        fusion_dropout=config.fusion_dropout,
        detach_fusion_inputs=config.detach_fusion_inputs,
        fusion_residual=config.fusion_residual,
        input_dropout=config.input_dropout,
        relation_dropout=config.relation_dropout,
        hidden_dropout=config.hidden_dropout,
        fusion_relu=config.fusion_relu,
        decision_space=config.decision_space,
        relation_dropout_per_query=config.relation_dropout_per_query,
        core_init=config.core_init,
        feature_reduction=config.feature_reduction,
        interactive=config.interactive,
        fusion_gradient_scale=config.fusion_gradient_scale,
    )


def _scale_gradient(x: Tensor, scale: float) -> Tensor:
    """``x`` in the forward pass, ``scale ×`` its gradient in the backward pass (0: detached)."""
    if scale == 0.0:
        return x.detach()
    return x.detach() + scale * (x - x.detach())
