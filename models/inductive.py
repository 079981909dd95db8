"""Scoring entities the model never trained on, from the branches that have their features.

A graph entity has a vector in every branch. An *unseen* entity (added to the store after training, or
given inline to ``imf predict``) has only features, so it is *placed* in each feature branch's space:

``project`` mode
    The model's own projection of the features: exactly the map it was trained with.
``finetune`` mode
    The learned entity table has drifted from the PCA-reduced features that initialised it, so the
    PCA map no longer lands where the trained rows are. After training, :func:`fit_placement` fits a
    ridge regression from the frozen features ``(n, D)`` to the learned rows ``(n, d)`` of the graph
    entities that have a feature, in closed form (one SVD, :func:`fit_ridge`). Its strength is chosen
    on a held-out fifth of those entities, then it is refitted on all of them.

The structure branch has nothing for an unseen entity. The multimodal branch fuses the placed vectors
with the model's own fusion: a modality the entity lacks gets that branch's learned "missing" vector
(as a graph entity without that feature does), and the structure input, which no unseen entity has,
is the mean of the structure table.

:class:`InductiveScorer` scores triples in which either end may be unseen. A branch scores a triple
only when it is *present* at both ends, and the decision weights are renormalised over those
branches, so the fused score stays a weighted mean of branch logits on the usual scale.

A fitted placement is stored beside the run's checkpoints (:func:`save_placement`), tagged with
:func:`placement_fingerprint` of the entity vectors it was fitted to.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from models.evaluation import FrozenScorer
from models.imf import IMF, MULTIMODAL, STRUCTURE

#: Ridge strengths tried, relative to the mean eigenvalue of the centred features' scatter matrix.
ALPHAS = tuple(10.0 ** (k / 2) for k in range(-8, 5))
#: The share of the fitted entities held out to choose the ridge strength.
HELDOUT_FRACTION = 0.2
#: Below this many entities with a feature, nothing is held out and :data:`DEFAULT_ALPHA` is used.
MIN_HELDOUT_ROWS = 10
DEFAULT_ALPHA = 1.0
FORMAT = "imf-placement"
VERSION = "1"


class PlacementError(ValueError):
    """A placement file is missing, unreadable, or does not fit the model."""


@dataclass(frozen=True)
class PlacementMap:
    """An affine map from one modality's frozen features to its branch's entity space: ``x @ weight + bias``.

    Attributes:
        weight: ``(D, d)``.
        bias: ``(d,)``.
        method: ``"ridge"`` (fitted after training) or ``"projection"`` (the model's own, ``project`` mode).
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


# -------------------------------------------------------------------------------------------- fitting
def _ridge_parts(features: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, float]:
    """Means, the SVD of the centred features and ``Uᵀ Y``, and the mean scatter eigenvalue."""
    x_mean, y_mean = features.mean(0), targets.mean(0)
    x, y = features - x_mean, targets - y_mean
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    scale = float((s**2).sum()) / features.shape[1]
    return x_mean, y_mean, s, vh, u.T @ y, scale


def _solve(s: Tensor, vh: Tensor, uty: Tensor, lam: float) -> Tensor:
    """The ridge weight ``(D, d)`` from an SVD: ``V diag(s / (s² + λ)) Uᵀ Y``."""
    shrink = s / (s**2 + lam) if lam > 0 else torch.where(s > 0, 1.0 / s.clamp_min(1e-30), torch.zeros_like(s))
    return vh.T @ (uty * shrink[:, None])


def fit_ridge(
    features: Tensor, targets: Tensor, *, alphas: tuple[float, ...] = ALPHAS, heldout: float = HELDOUT_FRACTION,
    seed: int = 0,
) -> PlacementMap:
    """The ridge regression ``features`` ``(n, D)`` → ``targets`` ``(n, d)``, with an intercept.

    The strength is ``λ = α · ‖X_c‖²_F / D`` (``α`` relative to the mean eigenvalue of the centred
    scatter matrix, so it does not depend on the features' scale). ``α`` is the one of ``alphas`` with
    the least squared error on a held-out ``heldout`` share of the rows (a seeded permutation); then the
    map is refitted on every row. With fewer than :data:`MIN_HELDOUT_ROWS` rows, ``α`` is
    :data:`DEFAULT_ALPHA`. Computed in float64 on the features' device.
    """
    if features.dim() != 2 or targets.dim() != 2 or features.shape[0] != targets.shape[0]:
        raise ValueError(f"expected (n, D) features and (n, d) targets, got {tuple(features.shape)} and {tuple(targets.shape)}")
    if features.shape[0] == 0:
        raise ValueError("no rows to fit a placement to")
    x, y = features.double(), targets.double().to(features.device)
    n = x.shape[0]
    alpha, r2 = DEFAULT_ALPHA, None
    held = int(round(n * heldout))
    if n >= MIN_HELDOUT_ROWS and held >= 1 and len(alphas) > 0:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(x.device)
        test, train = order[:held], order[held:]
        x_mean, y_mean, s, vh, uty, scale = _ridge_parts(x[train], y[train])
        projected = (x[test] - x_mean) @ vh.T  # (held, k)
        truth = y[test] - y_mean
        errors = []
        for candidate in alphas:
            shrink = s / (s**2 + candidate * scale) if scale > 0 else torch.zeros_like(s)
            errors.append(float(((projected * shrink) @ uty - truth).pow(2).sum()))
        best = min(range(len(alphas)), key=errors.__getitem__)
        alpha = alphas[best]
        total = float((y[test] - y[train].mean(0)).pow(2).sum())
        r2 = 1.0 - errors[best] / total if total > 0 else None
    x_mean, y_mean, s, vh, uty, scale = _ridge_parts(x, y)
    weight = _solve(s, vh, uty, alpha * scale) if scale > 0 else x.new_zeros(x.shape[1], y.shape[1])
    bias = y_mean - x_mean @ weight
    return PlacementMap(weight.float(), bias.float(), "ridge", alpha, r2, n)


@torch.no_grad()
def fit_placement(
    model: IMF, features: Mapping[str, tuple[Tensor, Tensor]], *, seed: int = 0
) -> dict[str, PlacementMap]:
    """A :class:`PlacementMap` for every feature branch of ``model`` given in ``features``.

    Args:
        model: The trained model.
        features: Branch → ``(matrix (G, D), mask (G,))``, the frozen features of the ``G`` graph
            entities the model was trained with (True: a real feature). Only ``finetune`` branches
            need them; a branch whose entities all lack a feature gets no map.
        seed: Seeds the held-out split of :func:`fit_ridge`.
    """
    maps: dict[str, PlacementMap] = {}
    was_training = model.training
    model.eval()
    try:
        for branch in model.feature_dims:
            representation = model.entity_representations[branch]
            if model.feature_mode == "project":
                projection = representation.projection
                maps[branch] = PlacementMap(
                    projection.weight.detach().T.float().clone(), projection.bias.detach().float().clone(),
                    "projection", rows=int(representation.mask.sum()),
                )
                continue
            if branch not in features:
                continue
            matrix, mask = features[branch]
            if matrix.shape != (model.num_entities, model.feature_dims[branch]) or mask.shape != (model.num_entities,):
                raise ValueError(
                    f"features of {branch!r} must be ({model.num_entities}, {model.feature_dims[branch]}) with a "
                    f"({model.num_entities},) mask, got {tuple(matrix.shape)} and {tuple(mask.shape)}"
                )
            device = representation.missing.device
            mask = mask.to(device, torch.bool)
            trained = model.feature_mask(branch)
            if trained is not None:  # rows the model gave the "missing" vector were never learned
                mask = mask & trained.to(device)
            if not mask.any():
                continue
            learned = representation()[mask]
            maps[branch] = fit_ridge(matrix.to(device, torch.float32)[mask], learned, seed=seed)
    finally:
        model.train(was_training)
    return maps


def placement_fingerprint(scorer: FrozenScorer, features: Mapping[str, tuple[Tensor, Tensor]] | None = None) -> str:
    """A hash of the feature branches' entity vectors and of ``features`` (as given to :func:`fit_placement`).

    A stored placement whose fingerprint differs was fitted to another model or other features.
    """
    digest = hashlib.sha256(b"imf-placement-v1\0")
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
    try:
        save_file(tensors, str(temporary), metadata=header)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


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
        fused: ``(B, C)`` the weighted mean of the present branches' logits, with the weights
            renormalised over them; ``-inf`` where no branch is present.
    """

    branches: dict[str, Tensor]
    present: dict[str, Tensor]
    weights: Tensor
    fused: Tensor


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
                scorer.entities[STRUCTURE].mean(0) if STRUCTURE in self.branch_names else None
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
        numerator = denominator = None
        for index, name in enumerate(self.branch_names):
            parts, on = [], []
            if graph:
                parts.append(queries[name] @ self.scorer.entities[name].T)
                on.append(head_present[:, index : index + 1].expand(-1, parts[-1].shape[1]))
            if candidates is not None:
                parts.append(queries[name] @ candidates.vectors[name].T)
                on.append(head_present[:, index : index + 1] & candidates.present[None, :, index])
            scores, mask = torch.cat(parts, dim=1), torch.cat(on, dim=1)
            weight = weights[:, index : index + 1] * mask
            term = weight * torch.where(mask, scores, torch.zeros_like(scores))
            numerator = term if numerator is None else numerator + term
            denominator = weight if denominator is None else denominator + weight
            branches[name] = torch.where(mask, scores, torch.full_like(scores, float("nan")))
            present[name] = mask
        fused = torch.where(
            denominator > 0, numerator / denominator.clamp_min(1e-30), torch.full_like(numerator, float("-inf"))
        )
        return InductiveScores(branches, present, weights, fused)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(branches={self.branch_names}, placeable={self.placeable})"
