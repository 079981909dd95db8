"""A knowledge graph as tensors: the splits, the frozen features and the optional GAT initialisation.

:class:`KGTensors` is everything :mod:`models.training` needs; :mod:`imf_cli.pipeline` builds it from
the entity store and the feature files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor

from models.checkpoint import feature_hash


@dataclass(frozen=True)
class KGTensors:
    """A knowledge graph as tensors, everything training needs. Relation ids are in ``[0, R)``, without inverses.

    Attributes:
        num_entities: ``N``.
        num_relations: ``R``.
        train, valid, test: ``(n, 3)`` int64 ``(head, relation, tail)`` triples.
        features: Modality → ``(matrix (N, D_m) float32, mask (N,) bool)``; True marks a real feature.
        structure_entity_init: Optional ``(N, d)`` GAT entity vectors for the structure branch.
        structure_relation_init: Optional ``(R, d)`` GAT relation vectors.
    """

    num_entities: int
    num_relations: int
    train: Tensor
    valid: Tensor
    test: Tensor
    features: Mapping[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    structure_entity_init: Tensor | None = None
    structure_relation_init: Tensor | None = None

    def __post_init__(self) -> None:
        for split in ("train", "valid", "test"):
            triples = getattr(self, split)
            if triples.dim() != 2 or triples.shape[1] != 3:
                raise ValueError(f"{split} triples must have shape (n, 3), got {tuple(triples.shape)}")
            if triples.numel() and (
                triples[:, [0, 2]].min() < 0
                or triples[:, [0, 2]].max() >= self.num_entities
                or triples[:, 1].min() < 0
                or triples[:, 1].max() >= self.num_relations
            ):
                raise ValueError(
                    f"{split} triples hold ids outside {self.num_entities} entities and {self.num_relations} relations"
                )
        for modality, (matrix, mask) in self.features.items():
            if matrix.dim() != 2 or matrix.shape[0] != self.num_entities or mask.shape != (self.num_entities,):
                raise ValueError(
                    f"features of {modality!r} must be ({self.num_entities}, D) with a ({self.num_entities},) mask"
                )

    @property
    def feature_dims(self) -> dict[str, int]:
        return {modality: matrix.shape[1] for modality, (matrix, _) in self.features.items()}

    def feature_hashes(self) -> dict[str, str]:
        """Modality (and ``structure_init``) → a hash of the exact frozen inputs, which checkpoints record."""
        hashes = {m: feature_hash(matrix, mask) for m, (matrix, mask) in self.features.items()}
        if self.structure_entity_init is not None:
            hashes["structure_init"] = feature_hash(self.structure_entity_init, self.structure_relation_init)
        return dict(sorted(hashes.items()))

    def fingerprint(self) -> str:
        """A hash of the sizes and triples, to check that a resumed run sees the same data."""
        sizes = f"{self.num_entities}/{self.num_relations}/{sorted(self.feature_dims.items())}"
        digest = hashlib.sha256(sizes.encode())
        for triples in (self.train, self.valid, self.test):
            digest.update(triples.long().contiguous().cpu().numpy().tobytes())
        return digest.hexdigest()


