"""Fitting the maps that place unseen entities in each feature branch's space (see :mod:`models.inductive`).

:func:`fit_placement` runs after training, on the frozen model, in two steps:

1. **A closed-form start** (:func:`initial_placement`). In ``project`` mode, the model's own projection.
   In ``finetune`` mode, a ridge regression from the frozen features ``(n, D)`` to the learned table
   rows ``(n, d)`` of the graph entities with a feature (:func:`fit_ridge`: one SVD, the strength
   chosen on a held-out fifth of the rows). Matching the rows is the obvious target but a weak one:
   training has moved the rows far from anything the features predict (on Countries-MM the ridge
   explains 13 % of the text rows' variance on held-out entities), and most of what it misses does
   not matter for ranking.
2. **A fit to the model's own scores** (:func:`refine_placement`, when the training triples are
   given). Every graph entity with features is treated as if it were new: its placed vectors replace
   its learned ones, and the maps are trained by the 1-N link-prediction loss of the frozen scorers
   (each feature branch and the multimodal branch, as the query's head and as a candidate tail), so
   they learn what ranks an entity's true answers. How long to train is chosen on a held-out fifth
   of those entities (their placed-head MRR), then the maps are trained again on all of them for
   that long. On Countries-MM with 10 % of the entities held out of training this lifts the
   cold-start MRR from 0.14 (ridge) to about 0.30 (``benchmarks/bench_inductive.py``).

Everything else stays frozen; the fit needs the model, the graph entities' features and the triples
it should rank (train, and valid: both are graph facts, and the model is already chosen).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from models.evaluation import FrozenScorer, realistic_ranks
from models.imf import IMF
from models.index import TailIndex, with_inverses
from models.inductive import InductiveScorer, PlacedEntities, PlacementMap
from models.scorer import RelationGroups, apply_relation_matrices

#: Ridge strengths tried, relative to the mean eigenvalue of the centred features' scatter matrix.
ALPHAS = tuple(10.0 ** (k / 2) for k in range(-8, 5))
#: The share of the fitted entities held out to choose the ridge strength and the training length.
HELDOUT_FRACTION = 0.2
#: Below this many entities with a feature, nothing is held out and :data:`DEFAULT_ALPHA` is used.
MIN_HELDOUT_ROWS = 10
DEFAULT_ALPHA = 1.0
#: The refinement: Adam's step size; (head, relation) pairs per step; the steps of an epoch (one pass
#: over the pairs, or on a large graph ``MAX_STEPS_PER_EPOCH`` batches of a fresh shuffle, so that an
#: epoch costs the same on DB15K as on a graph of 12,800 pairs); candidates per step on the tail side;
#: the epochs it may run, and the epochs without a better held-out MRR before it stops; the held-out
#: pairs ranked to choose the epoch, at most (a seeded sample beyond that).
LEARNING_RATE = 3e-3
BATCH_PAIRS = 128
MAX_STEPS_PER_EPOCH = 100
CANDIDATES = 256
MAX_EPOCHS = 40
PATIENCE = 5
MAX_CHECK_PAIRS = 4096

Progress = Callable[[str, int, int], None]


# ---------------------------------------------------------------------------------------------- ridge
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
def initial_placement(
    model: IMF, features: Mapping[str, tuple[Tensor, Tensor]], *, seed: int = 0
) -> dict[str, PlacementMap]:
    """The closed-form start of :func:`fit_placement`: the projection (``project``) or a ridge fit (``finetune``).

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


# ------------------------------------------------------------------------------------------- refinement
class _Frozen:
    """The frozen model's tensors the fit reads: entity vectors, every relation's folded query map, weights."""

    def __init__(self, scorer: FrozenScorer, num_relations: int, heads: Tensor, relations: Tensor, branches):
        built = scorer._build_maps(torch.arange(2 * num_relations, device=scorer.device))
        self.maps = {name: (m.clone(), c.clone()) for name, (m, c) in built.items()}
        self.entities = {name: e.clone() for name, e in scorer.entities.items()}
        #: Branch → ``(P, d)`` the learned queries of every (head, relation) pair, for the tail side.
        with torch.no_grad():
            self.pair_queries = {name: self.queries(name, self.entities[name][heads], relations) for name in branches}

    def queries(self, branch: str, vectors: Tensor, relations: Tensor) -> Tensor:
        """Differentiable :meth:`FrozenScorer.queries_for` of one branch: ``(B, d)`` head vectors → queries."""
        groups = RelationGroups.of(relations)
        matrices, offsets = self.maps[branch]
        x = apply_relation_matrices(vectors, matrices[groups.distinct], groups)
        return x + offsets[groups.distinct][groups.inverse]


def refine_placement(
    model: IMF,
    maps: Mapping[str, PlacementMap],
    features: Mapping[str, tuple[Tensor, Tensor]],
    triples: Tensor,
    *,
    seed: int = 0,
    max_epochs: int = MAX_EPOCHS,
    progress: Progress | None = None,
) -> dict[str, PlacementMap]:
    """Train ``maps`` by the frozen model's link-prediction loss (see the module docstring).

    Args:
        model: The trained model (left unchanged).
        maps: The start, e.g. :func:`initial_placement`.
        features: Branch → ``(matrix (G, D), mask (G,))`` of the graph entities.
        triples: ``(n, 3)`` graph facts to rank (relations in ``[0, R)``); inverses are added.
        seed: Seeds the held-out entities, the batches and the candidates.
        max_epochs: At most this many passes over the (head, relation) pairs of the fitted entities.
        progress: Called with ``(stage, done, total)`` as epochs finish.

    Returns:
        The refined maps (``method="fitted"``); ``maps`` unchanged when there is nothing to fit.
    """
    branches = [b for b in maps if b in features]
    device = next(model.parameters()).device
    graph = model.num_entities
    if not branches or not len(triples):
        return dict(maps)
    masks = {b: features[b][1].to(device, torch.bool) for b in branches}
    having = torch.stack(list(masks.values())).any(0)
    entities = torch.nonzero(having).flatten()
    if len(entities) < 2:
        return dict(maps)
    index = TailIndex.from_triples(
        with_inverses(triples.long().to(device), model.num_relations), num_entities=graph,
        num_relations=2 * model.num_relations,
    )
    heads, relations = index.pairs()
    generator = torch.Generator().manual_seed(seed)
    order = entities[torch.randperm(len(entities), generator=generator).to(device)]
    held = int(round(len(order) * HELDOUT_FRACTION)) if len(order) >= MIN_HELDOUT_ROWS else 0

    requires = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval().requires_grad_(False)
    try:
        scorer = FrozenScorer(model)
        placeable = InductiveScorer(model, scorer, maps).placeable
        frozen = _Frozen(scorer, model.num_relations, heads, relations, placeable)
        epochs = max_epochs
        if held:
            # The held-out entities must be unseen by the start too: refit it without their rows.
            unseen = torch.zeros(graph, dtype=torch.bool, device=device)
            unseen[order[:held]] = True
            without = {b: (m, k.to(device, torch.bool) & ~unseen) for b, (m, k) in features.items()}
            start = {b: m for b, m in initial_placement(model, without, seed=seed).items() if b in maps}
            _, epochs = _train_maps(model, scorer, frozen, start, features, index, heads, relations,
                                    fit=order[held:], check=order[:held], epochs=max_epochs, seed=seed,
                                    progress=progress)
        fitted, _ = _train_maps(model, scorer, frozen, maps, features, index, heads, relations, fit=order,
                                check=None, epochs=epochs, seed=seed, progress=progress)
    finally:
        for parameter, flag in zip(model.parameters(), requires):
            parameter.requires_grad_(flag)
        model.train(was_training)
    return {
        b: PlacementMap(fitted[b].weight, fitted[b].bias, "fitted", maps[b].alpha, maps[b].heldout_r2,
                        int(masks[b].sum()))
        for b in branches
    }


def _train_maps(model, scorer, frozen, start, features, index, heads, relations, *, fit, check, epochs, seed,
                progress) -> tuple[dict[str, PlacementMap], int]:
    """Adam on the maps from ``start`` for ``epochs``; with ``check``, stop at its best MRR and return that epoch."""
    device = fit.device
    graph = model.num_entities
    in_fit = torch.zeros(graph, dtype=torch.bool, device=device)
    in_fit[fit] = True
    pairs = torch.nonzero(in_fit[heads]).flatten()
    batch = BATCH_PAIRS
    steps = min(math.ceil(len(pairs) / batch), MAX_STEPS_PER_EPOCH)
    params = {
        b: PlacementMap(m.weight.detach().clone().to(device).requires_grad_(True),
                        m.bias.detach().clone().to(device).requires_grad_(True), m.method)
        for b, m in start.items() if b in features
    }
    inductive = InductiveScorer(model, scorer, params)
    optimizer = torch.optim.Adam([t for m in params.values() for t in (m.weight, m.bias)], lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(seed + 1)
    matrices = {b: (features[b][0].to(device, torch.float32), features[b][1].to(device, torch.bool)) for b in params}
    scoring = inductive.placeable

    def place(rows: Tensor) -> PlacedEntities:
        return inductive.place_differentiably({b: (m[rows], k[rows]) for b, (m, k) in matrices.items()})

    def loss_of(pair_ids: Tensor) -> Tensor:
        h, r = heads[pair_ids], relations[pair_ids]
        targets = index.multi_hot(h, r)
        placed = place(h)
        candidates = fit[torch.randint(len(fit), (min(CANDIDATES, len(fit)),), generator=generator).to(device)]
        as_candidates = place(candidates)
        total = torch.zeros((), device=device)
        for name in scoring:
            column = inductive.branch_names.index(name)
            present = placed.present[:, column].float()
            logits = frozen.queries(name, placed.vectors[name], r) @ frozen.entities[name].T
            head_loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)
            total = total + (head_loss * present).sum() / present.sum().clamp_min(1.0)
            logits = frozen.pair_queries[name][pair_ids] @ as_candidates.vectors[name].T
            tail_loss = F.binary_cross_entropy_with_logits(logits, targets[:, candidates], reduction="none")
            kept = as_candidates.present[:, column].float()
            total = total + (tail_loss * kept).sum() / (kept.sum().clamp_min(1.0) * len(h))
        return total

    if check is not None:
        in_check = torch.zeros(graph, dtype=torch.bool, device=device)
        in_check[check] = True
        checked = torch.nonzero(in_check[heads]).flatten()
        if len(checked) > MAX_CHECK_PAIRS:
            sample = torch.randperm(len(checked), generator=torch.Generator().manual_seed(seed + 2))
            checked = checked[sample[:MAX_CHECK_PAIRS].sort().values.to(device)]

    def check_mrr() -> float:
        with torch.no_grad():
            reciprocal = []
            for part in checked.split(1024):
                h, r = heads[part], relations[part]
                placed = place(h)
                scores = inductive.score(r, heads=placed).fused
                first = index.tails[index.offsets[torch.searchsorted(index.keys, h * index.num_relations + r)]]
                rows, tails = index.lookup(h, r)
                reciprocal.append(realistic_ranks(scores.float(), first, rows, tails).reciprocal())
            return float(torch.cat(reciprocal).mean())

    def snapshot() -> dict[str, PlacementMap]:
        return {b: PlacementMap(m.weight.detach().clone(), m.bias.detach().clone(), m.method) for b, m in params.items()}

    # The first epochs often rank worse than the closed-form start before they rank better, so patience
    # counts from the best epoch trained, and the start wins only if no epoch beats it.
    start_mrr = check_mrr() if check is not None else None
    best = (-math.inf, 0, None)
    for epoch in range(1, epochs + 1):
        shuffled = pairs[torch.randperm(len(pairs), generator=generator).to(device)]
        for chosen in shuffled.split(batch)[:steps]:
            optimizer.zero_grad(set_to_none=True)
            loss_of(chosen).backward()
            optimizer.step()
        if progress is not None:
            progress("choosing" if check is not None else "fitting", epoch, epochs)
        if check is not None:
            mrr = check_mrr()
            if mrr > best[0]:
                best = (mrr, epoch, snapshot())
            elif epoch - best[1] >= PATIENCE:
                break
    if check is not None:
        if best[0] <= start_mrr:
            return dict(start), 0
        return best[2], best[1]
    return snapshot(), epochs


def fit_placement(
    model: IMF,
    features: Mapping[str, tuple[Tensor, Tensor]],
    *,
    triples: Tensor | None = None,
    seed: int = 0,
    max_epochs: int = MAX_EPOCHS,
    progress: Progress | None = None,
) -> dict[str, PlacementMap]:
    """A :class:`PlacementMap` for every feature branch of ``model`` that can have one.

    Args:
        model: The trained model.
        features: Branch → ``(matrix (G, D), mask (G,))``, the frozen features of the ``G`` graph
            entities (True: a real feature).
        triples: ``(n, 3)`` graph facts (train and valid). With them the maps are fitted to the model's
            scores (:func:`refine_placement`); without, the closed-form start is returned.
        seed: Seeds every held-out split and the batches.
        max_epochs, progress: See :func:`refine_placement`.
    """
    maps = initial_placement(model, features, seed=seed)
    if triples is None or not maps:
        return maps
    return refine_placement(model, maps, features, triples, seed=seed, max_epochs=max_epochs, progress=progress)
