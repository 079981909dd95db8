"""Scoring entities the model never trained on, from the branches that have their features.

A graph entity has a vector in every branch. An *unseen* entity (added to the store after training, or
given inline to ``imf predict``) has only features, so it is *placed* in each feature branch's space by
an affine :class:`PlacementMap` of its features, fitted after training (:mod:`models.placement`).

The structure branch has nothing for an unseen entity. The multimodal branch fuses the placed vectors
with the model's own fusion: a modality the entity lacks gets that branch's learned "missing" vector
(as a graph entity without that feature does), and the structure input, which no unseen entity has,
is the mean of the structure table.

:class:`InductiveScorer` scores triples in which either end may be unseen. A branch scores a triple
only when it is *present* at both ends, and the decision weights are renormalised over those
branches, so the fused score stays a weighted mean of branch logits on the usual scale.

A fitted placement is stored beside the run's checkpoints (:func:`save_placement`), tagged with
:func:`placement_fingerprint` of the entity vectors and features it was fitted to."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from models.atomic import safetensors_short_write, write_atomically
from models.evaluation import FrozenScorer
from models.imf import IMF, MULTIMODAL, STRUCTURE

FORMAT = "imf-placement"
VERSION = "1"
#: Part of every fingerprint: a placement fitted by an older method is refitted.
METHOD = "ridge+fitted-to-scores-v1"


class PlacementError(ValueError):
    """A placement file is missing, unreadable, or does not fit the model."""


@dataclass(frozen=True)
class PlacementMap:
    """An affine map from one modality's frozen features to its branch's entity space: ``x @ weight + bias``.

    Attributes:
        weight: ``(D, d)``.
        bias: ``(d,)``.
        method: ``"projection"`` (the model's own, ``project`` mode), ``"ridge"`` (a closed-form fit to the
            learned rows) or ``"fitted"`` (trained on the frozen model's scores); see :mod:`models.placement`.
        alpha: The relative ridge strength chosen (None for a projection).
        heldout_r2: The share of the learned rows' variance the map explains on the held-out entities
            (None when nothing was held out).
        rows: The graph entities it was fitted to.
    """

    weight: Tensor
    bias: Tensor
    method: str
    alpha: float | None = None
    heldout_r2: float | None = None
    rows: int = 0

    def __call__(self, features: Tensor) -> Tensor:
        """Place ``features`` ``(B, D)``: ``(B, d)``."""
        return features.to(self.weight) @ self.weight + self.bias

    def to(self, device: torch.device | str) -> PlacementMap:
        return PlacementMap(
            self.weight.to(device), self.bias.to(device), self.method, self.alpha, self.heldout_r2, self.rows
        )

    def describe(self) -> dict:
        """Everything but the tensors, as plain JSON values."""
        return {"method": self.method, "alpha": self.alpha, "heldout_r2": self.heldout_r2, "rows": self.rows,
                "feature_dim": int(self.weight.shape[0])}


def placement_fingerprint(scorer: FrozenScorer, features: Mapping[str, tuple[Tensor, Tensor]] | None = None) -> str:
    """A hash of the feature branches' entity vectors and of ``features`` (as given to :func:`fit_placement`).

    A stored placement whose fingerprint differs was fitted to another model or other features.
    """
    digest = hashlib.sha256(f"imf-placement\0{METHOD}\0".encode())
    for name in scorer.branch_names:
        if name in (STRUCTURE, MULTIMODAL):
            continue
        digest.update(name.encode() + b"\0")
        digest.update(scorer.entities[name].detach().float().contiguous().cpu().numpy().tobytes())
        if features is not None and name in features:
            matrix, mask = features[name]
            digest.update(b"features\0")
            digest.update(matrix.detach().float().contiguous().cpu().numpy().tobytes())
            digest.update(mask.detach().bool().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------- storage
def save_placement(path: str | Path, maps: Mapping[str, PlacementMap], metadata: Mapping[str, object]) -> None:
    """Write ``maps`` to a safetensors file atomically, with ``metadata`` (plain JSON values) beside them."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {}
    for branch, placement in maps.items():
        tensors[f"{branch}.weight"] = placement.weight.detach().float().cpu().contiguous()
        tensors[f"{branch}.bias"] = placement.bias.detach().float().cpu().contiguous()
    header = {
        "format": FORMAT,
        "version": VERSION,
        "maps": json.dumps({branch: placement.describe() for branch, placement in maps.items()}),
        "metadata": json.dumps(dict(metadata), sort_keys=True, default=str),
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_atomically(
        path,
        temporary,
        lambda to: save_file(tensors, str(to), metadata=header),
        what="the placement file",
        short_write=safetensors_short_write,
    )


def load_placement(path: str | Path) -> tuple[dict[str, PlacementMap], dict]:
    """The maps and metadata written by :func:`save_placement`.

    Raises:
        PlacementError: If the file is missing, unreadable or not a placement file.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise PlacementError(f"{path}: no such placement file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = dict(handle.metadata() or {})
            if header.get("format") != FORMAT:
                raise PlacementError(f"{path}: not an imf placement file")
            described = json.loads(header["maps"])
            maps = {
                branch: PlacementMap(
                    handle.get_tensor(f"{branch}.weight"), handle.get_tensor(f"{branch}.bias"), info["method"],
                    info.get("alpha"), info.get("heldout_r2"), int(info.get("rows", 0)),
                )
                for branch, info in described.items()
            }
            metadata = json.loads(header.get("metadata") or "{}")
    except PlacementError:
        raise
    except Exception as error:  # safetensors and json raise their own types for a damaged file
        raise PlacementError(f"{path}: not a readable placement file ({type(error).__name__}: {error})") from error
    return maps, metadata


# ------------------------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class PlacedEntities:
    """Unseen entities placed in the model's branches.

    Attributes:
        vectors: Branch → ``(B, d)``; rows of an absent branch hold a stand-in and must be ignored.
        present: ``(B, n_branches)`` bool, in the model's branch order: True where the branch can score
            the entity (it has that branch's feature; multimodal when it has any).
        branch_names: The model's branches.
    """

    vectors: dict[str, Tensor]
    present: Tensor
    branch_names: tuple[str, ...]

    def __len__(self) -> int:
        return self.present.shape[0]

    def scored_by(self, row: int) -> tuple[str, ...]:
        """The branches that score entity ``row``."""
        return tuple(name for name, on in zip(self.branch_names, self.present[row].tolist()) if on)


@dataclass(frozen=True)
class InductiveScores:
    """Scores of queries against candidates where either end may be unseen.

    Attributes:
        branches: Branch → ``(B, C)`` logits; NaN where the branch is not present at both ends.
        present: Branch → ``(B, C)`` bool, where it is.
        weights: ``(B, n_branches)`` the decision weights of each query's relation (not renormalised).
        fused: ``(B, C)`` the decision fusion of the present branches (:func:`fuse_present`), with the
            weights renormalised over them; ``-inf`` where no branch is present.
    """

    branches: dict[str, Tensor]
    present: dict[str, Tensor]
    weights: Tensor
    fused: Tensor


def fuse_present(branches: Mapping[str, Tensor], present: Mapping[str, Tensor], weights: Tensor, space: str) -> Tensor:
    """The fused logit of the branches present at each entry, with the weights renormalised over them.

    Args:
        branches: Branch → ``(B, C)`` logits (ignored where not present).
        present: Branch → ``(B, C)`` bool.
        weights: ``(B, n_branches)`` decision weights, in the order of ``branches``.
        space: ``"logit"``: ``Σ w s / Σ w`` over the present branches; ``"probability"``: the logit of
            ``Σ w σ(s) / Σ w``, i.e. ``log Σ w σ(s) − log Σ w σ(−s)`` (see :mod:`models.decision`).

    Returns:
        ``(B, C)``; ``-inf`` where no branch is present.
    """
    names = list(branches)
    if space == "probability":
        up = down = None
        for index, name in enumerate(names):
            log_weight = torch.where(present[name], weights[:, index : index + 1].log(), -math.inf)
            scores = torch.nan_to_num(branches[name].float(), nan=0.0)
            positive = torch.nn.functional.logsigmoid(scores) + log_weight
            negative = torch.nn.functional.logsigmoid(-scores) + log_weight
            up = positive if up is None else torch.logaddexp(up, positive)
            down = negative if down is None else torch.logaddexp(down, negative)
        return torch.where(torch.isfinite(down), up - down, torch.full_like(up, -math.inf))
    numerator = denominator = None
    for index, name in enumerate(names):
        weight = weights[:, index : index + 1] * present[name]
        term = weight * torch.where(present[name], branches[name], torch.zeros_like(branches[name]))
        numerator = term if numerator is None else numerator + term
        denominator = weight if denominator is None else denominator + weight
    return torch.where(
        denominator > 0, numerator / denominator.clamp_min(1e-30), torch.full_like(numerator, -math.inf)
    )


def renormalised(weights: Tensor, present: Tensor) -> Tensor:
    """``weights`` ``(..., n_branches)`` zeroed where not ``present`` and rescaled to sum to 1 (0 where none is)."""
    kept = weights * present.to(weights.dtype)
    total = kept.sum(-1, keepdim=True)
    return torch.where(total > 0, kept / total.clamp_min(torch.finfo(kept.dtype).tiny), torch.zeros_like(kept))


class InductiveScorer:
    """A :class:`FrozenScorer` that also places and scores unseen entities (see the module docstring).

    Args:
        model: The trained model (its fusion and "missing" vectors are read once, in eval mode).
        scorer: The model's frozen scorer (graph entities and relation maps).
        placement: Feature branch → its :class:`PlacementMap`; a feature branch without one cannot
            score unseen entities.
    """

    def __init__(self, model: IMF, scorer: FrozenScorer, placement: Mapping[str, PlacementMap]):
        self.scorer = scorer
        self.device = scorer.device
        self.branch_names = tuple(scorer.branch_names)
        self.modalities = tuple(model.modalities)
        self.placement = {branch: m.to(self.device) for branch, m in placement.items() if branch in model.feature_dims}
        self.feature_dims = dict(model.feature_dims)
        with torch.no_grad():
            self.missing = {
                branch: model.entity_representations[branch].missing.detach().float().to(self.device)
                for branch in model.feature_dims
            }
            self.structure_standin = (
                scorer.entities[STRUCTURE].mean(0).clone() if STRUCTURE in self.branch_names else None
            )
        self._fusion = model.entity_fusion if MULTIMODAL in self.branch_names else None

    @property
    def placeable(self) -> tuple[str, ...]:
        """The branches that can score an unseen entity with every feature: placed ones, then multimodal."""
        placed = tuple(b for b in self.branch_names if b in self.placement)
        return placed + ((MULTIMODAL,) if placed and MULTIMODAL in self.branch_names else ())

    @torch.inference_mode()
    def place(self, features: Mapping[str, tuple[Tensor, Tensor]]) -> PlacedEntities:
        """Place ``B`` unseen entities.

        Args:
            features: Feature branch → ``(matrix (B, D), mask (B,))`` (True: a real feature). A branch
                left out, or without a placement map, is absent for every entity.
        """
        return self.place_differentiably(features)

    def place_differentiably(self, features: Mapping[str, tuple[Tensor, Tensor]]) -> PlacedEntities:
        """:meth:`place` under the caller's autograd mode: gradients reach the maps' tensors (for fitting them)."""
        sizes = {int(matrix.shape[0]) for matrix, _ in features.values()}
        if len(sizes) != 1:
            raise ValueError(f"every branch's features must have the same rows, got {sorted(sizes)}")
        (count,) = sizes
        vectors: dict[str, Tensor] = {}
        present: dict[str, Tensor] = {}
        for branch in self.feature_dims:
            mask = torch.zeros(count, dtype=torch.bool, device=self.device)
            placed = self.missing[branch].expand(count, -1)
            if branch in features and branch in self.placement:
                matrix, given = features[branch]
                if matrix.dim() != 2 or matrix.shape[1] != self.feature_dims[branch] or given.shape != (count,):
                    raise ValueError(
                        f"features of {branch!r} must be (B, {self.feature_dims[branch]}) with a (B,) mask, "
                        f"got {tuple(matrix.shape)} and {tuple(given.shape)}"
                    )
                mask = given.to(self.device, torch.bool)
                placed = torch.where(mask[:, None], self.placement[branch](matrix.to(self.device)), placed)
            vectors[branch], present[branch] = placed, mask
        if MULTIMODAL in self.branch_names:
            inputs = [
                self.structure_standin.expand(count, -1) if m == STRUCTURE else vectors[m] for m in self.modalities
            ]
            vectors[MULTIMODAL] = self._fusion(inputs).float()
            present[MULTIMODAL] = torch.stack([present[m] for m in self.feature_dims]).any(0)
        if STRUCTURE in self.branch_names:
            vectors[STRUCTURE] = self.structure_standin.expand(count, -1)
            present[STRUCTURE] = torch.zeros(count, dtype=torch.bool, device=self.device)
        return PlacedEntities(
            {name: vectors[name] for name in self.branch_names},
            torch.stack([present[name] for name in self.branch_names], dim=1),
            self.branch_names,
        )

    @torch.inference_mode()
    def score(
        self,
        relations: Tensor,
        *,
        heads: Tensor | PlacedEntities,
        candidates: PlacedEntities | None = None,
        graph: bool = True,
    ) -> InductiveScores:
        """Score each query ``(heads[b], relations[b], ?)`` against every candidate.

        Args:
            relations: ``(B,)`` relation ids in ``[0, 2R)``.
            heads: ``(B,)`` graph entity ids, or ``B`` placed unseen entities.
            candidates: Unseen candidates, scored after the graph entities.
            graph: Score the ``G`` graph entities as candidates (columns ``0 … G-1``); placed candidates
                follow as columns ``G …`` (or ``0 …`` without ``graph``).

        Returns:
            :class:`InductiveScores` of ``(B, C)``, ``C = G·graph + len(candidates)``.
        """
        relations = relations.to(self.device)
        if isinstance(heads, PlacedEntities):
            head_vectors, head_present = heads.vectors, heads.present
        else:
            ids = heads.to(self.device)
            head_vectors = {name: self.scorer.entities[name][ids] for name in self.branch_names}
            head_present = torch.ones(len(ids), len(self.branch_names), dtype=torch.bool, device=self.device)
        if not graph and candidates is None:
            raise ValueError("nothing to score: no graph entities and no candidates")
        queries = self.scorer.queries_for(head_vectors, relations)
        weights = self.scorer.weights[relations]
        branches, present = {}, {}
        for index, name in enumerate(self.branch_names):
            parts, on = [], []
            if graph:
                parts.append(self.scorer.tail_scores(name, queries[name]))
                on.append(head_present[:, index : index + 1].expand(-1, parts[-1].shape[1]))
            if candidates is not None:
                parts.append(queries[name] @ candidates.vectors[name].T)
                on.append(head_present[:, index : index + 1] & candidates.present[None, :, index])
            scores, mask = torch.cat(parts, dim=1), torch.cat(on, dim=1)
            branches[name] = torch.where(mask, scores, torch.full_like(scores, float("nan")))
            present[name] = mask
        fused = fuse_present(branches, present, weights, self.scorer.space)
        return InductiveScores(branches, present, weights, fused)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(branches={self.branch_names}, placeable={self.placeable})"
