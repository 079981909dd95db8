"""Placing unseen entities: the ridge fit, the stored maps, and scoring with renormalised weights."""

from __future__ import annotations

import math

import pytest
import torch

from models.evaluation import FrozenScorer
from models.imf import IMF, MULTIMODAL
from models.inductive import (
    InductiveScorer,
    PlacementError,
    load_placement,
    placement_fingerprint,
    renormalised,
    save_placement,
)
from models.placement import fit_placement, fit_ridge, initial_placement, refine_placement

N, R, DIM = 40, 3, 8
WIDTHS = {"visual": 12, "text": 10}


def build(modalities=("structure", "visual", "text"), feature_mode="finetune", seed=0, space="logit") -> tuple[IMF, dict]:
    torch.manual_seed(seed)
    model = IMF(N, R, dim=DIM, modalities=modalities, feature_dims=WIDTHS, feature_mode=feature_mode,
                fusion_residual=True, decision_space=space)
    features = {}
    for modality, width in WIDTHS.items():
        if modality in modalities:
            mask = torch.ones(N, dtype=torch.bool)
            mask[::5] = False
            features[modality] = (torch.randn(N, width), mask)
            model.set_features(modality, *features[modality])
    return model.eval(), features


def drift(model: IMF, features: dict, noise: float = 0.05, seed: int = 1) -> dict[str, torch.Tensor]:
    """Move every finetuned table to a fresh linear image of the features (plus noise), as training might."""
    generator = torch.Generator().manual_seed(seed)
    maps = {}
    with torch.no_grad():
        for branch, (matrix, mask) in features.items():
            a = torch.randn(matrix.shape[1], DIM, generator=generator) * 0.3
            table = model.entity_representations[branch].table
            table.copy_(matrix @ a + 0.1 + noise * torch.randn(N, DIM, generator=generator))
            maps[branch] = a
    return maps


# ------------------------------------------------------------------------------------------- ridge
def test_ridge_recovers_a_linear_map_and_reports_its_heldout_fit():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=generator) * 3 + 1
    a, b = torch.randn(16, 4, generator=generator), torch.randn(4, generator=generator)
    placement = fit_ridge(x, x @ a + b)
    assert placement.method == "ridge" and placement.rows == 200
    assert placement.alpha == pytest.approx(1e-4)  # the weakest on the grid wins without noise
    assert placement.heldout_r2 > 0.999
    torch.testing.assert_close(placement(x), x @ a + b, atol=2e-3, rtol=1e-3)


def test_ridge_strength_grows_with_noise_and_is_chosen_on_heldout_rows():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(60, 40, generator=generator)
    clean = x @ (torch.randn(40, 4, generator=generator) * 0.1)
    noisy = clean + 3 * torch.randn(60, 4, generator=generator)
    weak, strong = fit_ridge(x, clean), fit_ridge(x, noisy)
    assert strong.alpha > weak.alpha
    assert strong.heldout_r2 < 0.5 < weak.heldout_r2


def test_ridge_with_few_rows_uses_the_default_strength_and_constant_features_give_the_mean():
    placement = fit_ridge(torch.randn(5, 3), torch.randn(5, 2))
    assert placement.alpha == 1.0 and placement.heldout_r2 is None
    targets = torch.randn(12, 2)
    constant = fit_ridge(torch.ones(12, 3), targets)
    torch.testing.assert_close(constant(torch.ones(2, 3)), targets.mean(0).expand(2, -1))
    with pytest.raises(ValueError):
        fit_ridge(torch.zeros(0, 3), torch.zeros(0, 2))
    with pytest.raises(ValueError):
        fit_ridge(torch.zeros(4, 3), torch.zeros(5, 2))


# --------------------------------------------------------------------------------------- placement
def test_finetune_placement_follows_the_drifted_table_where_the_pca_map_does_not():
    model, features = build()
    truth = drift(model, features)
    maps = fit_placement(model, features)
    assert set(maps) == {"visual", "text"} and all(m.method == "ridge" for m in maps.values())
    for branch, (matrix, mask) in features.items():
        learned = model.entity_representations[branch]()[mask]
        placed = maps[branch](matrix[mask])
        pca = model.entity_representations[branch].reduced[mask]  # where the table started
        placed_error = (placed - learned).norm() / learned.norm()
        assert placed_error < 0.1 < (pca - learned).norm() / learned.norm()
        fresh = torch.randn(3, matrix.shape[1])  # entities the fit never saw
        torch.testing.assert_close(maps[branch](fresh), fresh @ truth[branch] + 0.1, atol=0.1, rtol=0.1)
        assert maps[branch].rows == int(mask.sum())  # rows without a feature are not fitted


def test_project_placement_is_the_models_own_projection():
    model, features = build(feature_mode="project")
    maps = fit_placement(model, {})  # needs no features
    for branch, (matrix, mask) in features.items():
        assert maps[branch].method == "projection"
        torch.testing.assert_close(maps[branch](matrix[mask]), model.entity_representations[branch]()[mask])


def test_fit_placement_checks_shapes_and_skips_branches_without_features():
    model, features = build()
    with pytest.raises(ValueError, match="visual"):
        fit_placement(model, {"visual": (torch.zeros(N - 1, 12), torch.ones(N - 1, dtype=torch.bool))})
    maps = fit_placement(model, {"text": features["text"], "visual": (torch.zeros(N, 12), torch.zeros(N, dtype=torch.bool))})
    assert set(maps) == {"text"}


def test_placement_round_trips_through_its_file(tmp_path):
    model, features = build()
    drift(model, features)
    maps = fit_placement(model, features)
    path = tmp_path / "inductive-best.safetensors"
    save_placement(path, maps, {"fingerprint": "abc", "checkpoint": "best"})
    loaded, metadata = load_placement(path)
    assert metadata == {"fingerprint": "abc", "checkpoint": "best"}
    assert set(loaded) == set(maps)
    for branch, placement in maps.items():
        assert loaded[branch].describe() == placement.describe()
        torch.testing.assert_close(loaded[branch].weight, placement.weight)
    assert not list(tmp_path.glob(".*tmp"))
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(PlacementError, match="not a readable placement file"):
        load_placement(path)
    with pytest.raises(PlacementError, match="no such"):
        load_placement(tmp_path / "absent.safetensors")


def test_fingerprint_changes_with_the_feature_branch_vectors_only():
    model, features = build()
    before = placement_fingerprint(FrozenScorer(model))
    with torch.no_grad():
        model.entity_representations["structure"].weight.add_(1.0)
    assert placement_fingerprint(FrozenScorer(model)) == before
    with torch.no_grad():
        model.entity_representations["text"].table.add_(1.0)
    after = placement_fingerprint(FrozenScorer(model))
    assert after != before
    with_features = placement_fingerprint(FrozenScorer(model), features)
    assert with_features != after
    matrix, mask = features["text"]
    changed = {**features, "text": (matrix, ~mask)}
    assert placement_fingerprint(FrozenScorer(model), changed) != with_features


# ----------------------------------------------------------------------------------------- scoring
@pytest.mark.parametrize("space", ["logit", "probability"])
def test_graph_heads_and_candidates_score_as_the_frozen_scorer(space):
    model, features = build(space=space)
    scorer = FrozenScorer(model)
    inductive = InductiveScorer(model, scorer, fit_placement(model, features))
    heads, relations = torch.tensor([0, 3, 7]), torch.tensor([0, 4, 5])
    expected = scorer.score(heads, relations)
    scores = inductive.score(relations, heads=heads)
    torch.testing.assert_close(scores.fused, expected.fused, atol=1e-5, rtol=1e-5)
    for name in model.branch_names:
        torch.testing.assert_close(scores.branches[name], expected.branches[name])


def test_a_placed_graph_entity_scores_as_itself_in_project_mode():
    model, features = build(modalities=("visual", "text"), feature_mode="project")
    scorer = FrozenScorer(model)
    inductive = InductiveScorer(model, scorer, fit_placement(model, {}))
    entity = 1  # has both features
    placed = inductive.place({b: (m[entity : entity + 1], k[entity : entity + 1]) for b, (m, k) in features.items()})
    assert placed.scored_by(0) == ("visual", "text", MULTIMODAL)
    for name in model.branch_names:
        torch.testing.assert_close(placed.vectors[name][0], scorer.entities[name][entity], atol=1e-5, rtol=1e-5)
    relations = torch.tensor([2])
    torch.testing.assert_close(
        inductive.score(relations, heads=placed).fused, scorer.score(torch.tensor([entity]), relations).fused,
        atol=1e-5, rtol=1e-5,
    )


def test_in_probability_space_the_present_branches_mix_their_probabilities():
    model, features = build(space="probability")
    scorer = FrozenScorer(model)
    inductive = InductiveScorer(model, scorer, fit_placement(model, features))
    placed = inductive.place({"text": (torch.randn(1, WIDTHS["text"]), torch.tensor([True]))})
    scores = inductive.score(torch.tensor([2]), heads=placed)
    weights = scorer.weights[2]
    t, m = model.branch_names.index("text"), model.branch_names.index(MULTIMODAL)
    mixed = (weights[t] * torch.sigmoid(scores.branches["text"]) + weights[m] * torch.sigmoid(scores.branches[MULTIMODAL]))
    mixed = mixed / (weights[t] + weights[m])
    torch.testing.assert_close(torch.sigmoid(scores.fused), mixed, atol=1e-6, rtol=1e-5)


def test_missing_modalities_drop_their_branch_and_renormalise_the_weights():
    model, features = build()
    with torch.no_grad():
        model.decision.logits.copy_(torch.tensor([1.0, 0.5, -0.5, 0.2]))
    scorer = FrozenScorer(model)
    inductive = InductiveScorer(model, scorer, fit_placement(model, features))
    text = torch.randn(1, WIDTHS["text"])
    placed = inductive.place({"text": (text, torch.tensor([True]))})
    assert placed.scored_by(0) == ("text", MULTIMODAL)
    # The multimodal branch fuses the placed text with visual's "missing" vector and the structure mean.
    missing = model.entity_representations["visual"].missing
    inputs = [scorer.entities["structure"].mean(0, keepdim=True), missing[None], placed.vectors["text"]]
    with torch.inference_mode():
        torch.testing.assert_close(placed.vectors[MULTIMODAL], model.entity_fusion(inputs))

    relation = torch.tensor([1])
    scores = inductive.score(relation, heads=placed)
    assert torch.isnan(scores.branches["structure"]).all() and torch.isnan(scores.branches["visual"]).all()
    weights = scorer.weights[1]
    names = model.branch_names
    t, m = names.index("text"), names.index(MULTIMODAL)
    expected = (weights[t] * scores.branches["text"] + weights[m] * scores.branches[MULTIMODAL]) / (weights[t] + weights[m])
    torch.testing.assert_close(scores.fused, expected)
    assert renormalised(weights, placed.present[0]).sum().item() == pytest.approx(1.0)


def test_placed_candidates_follow_the_graph_and_score_with_the_branches_both_ends_share():
    model, features = build()
    scorer = FrozenScorer(model)
    inductive = InductiveScorer(model, scorer, fit_placement(model, features))
    candidates = inductive.place({
        "visual": (torch.randn(2, 12), torch.tensor([True, False])),
        "text": (torch.randn(2, 10), torch.tensor([False, False])),
    })
    assert candidates.scored_by(0) == ("visual", MULTIMODAL) and candidates.scored_by(1) == ()
    heads, relations = torch.tensor([4]), torch.tensor([0])
    scores = inductive.score(relations, heads=heads, candidates=candidates)
    assert scores.fused.shape == (1, N + 2)
    torch.testing.assert_close(scores.fused[:, :N], scorer.score(heads, relations).fused, atol=1e-5, rtol=1e-5)
    query = scorer.queries(heads, relations)
    assert scores.branches["visual"][0, N].item() == pytest.approx((query["visual"][0] @ candidates.vectors["visual"][0]).item(), abs=1e-5)
    assert torch.isnan(scores.branches["text"][0, N]) and torch.isnan(scores.branches["structure"][0, N])
    assert scores.fused[0, N + 1].item() == -math.inf  # no branch can score a featureless entity
    only = inductive.score(relations, heads=heads, candidates=candidates, graph=False)
    torch.testing.assert_close(only.fused, scores.fused[:, N:])


def test_place_checks_widths():
    model, features = build()
    inductive = InductiveScorer(model, FrozenScorer(model), fit_placement(model, features))
    with pytest.raises(ValueError, match="text"):
        inductive.place({"text": (torch.randn(1, 3), torch.tensor([True]))})
    with pytest.raises(ValueError, match="same rows"):
        inductive.place({"text": (torch.randn(1, 10), torch.tensor([True])), "visual": (torch.randn(2, 12), torch.ones(2, dtype=torch.bool))})
    assert "placeable=('visual', 'text', 'multimodal')" in repr(inductive)


# -------------------------------------------------------------------------------------- score fitting
def facts(seed: int = 0, count: int = 300) -> torch.Tensor:
    """Random facts: nothing in the features predicts them."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, N, (count,), generator=generator), torch.randint(0, R, (count,), generator=generator),
                        torch.randint(0, N, (count,), generator=generator)], dim=1)


def clustered(model: IMF, clusters: int = 4) -> tuple[dict, torch.Tensor]:
    """Features that name each entity's cluster, and facts that follow it: (i, r, hub of cluster c(i) + r)."""
    generator = torch.Generator().manual_seed(5)
    cluster = torch.arange(N) % clusters
    centres = {b: torch.randn(clusters, w, generator=generator) * 3 for b, w in WIDTHS.items()}
    features = {b: (centres[b][cluster] + 0.1 * torch.randn(N, WIDTHS[b], generator=generator),
                    torch.ones(N, dtype=torch.bool)) for b in WIDTHS}
    for branch, (matrix, mask) in features.items():
        model.set_features(branch, matrix, mask)
    rows = [(i, r, int((cluster[i] + r) % clusters)) for i in range(N) for r in range(R)]
    return features, torch.tensor(rows)


def placed_head_loss(model, maps, features, triples) -> float:
    """The mean 1-N BCE of every (h, r) of ``triples`` with h's learned vectors replaced by its placed ones."""
    from models.index import TailIndex, with_inverses

    index = TailIndex.from_triples(with_inverses(triples, R), num_entities=N, num_relations=2 * R)
    heads, relations = index.pairs()
    scorer = FrozenScorer(model)
    inductive = InductiveScorer(model, scorer, maps)
    placed = inductive.place({b: (m[heads], k[heads]) for b, (m, k) in features.items()})
    scores = inductive.score(relations, heads=placed)
    losses = []
    for name in inductive.placeable:
        logits = scores.branches[name]
        keep = ~torch.isnan(logits[:, 0])
        losses.append(torch.nn.functional.binary_cross_entropy_with_logits(logits[keep], index.multi_hot(heads, relations)[keep]))
    return float(sum(losses))


def test_fitting_to_scores_lowers_the_loss_of_placed_entities_and_leaves_the_model_alone():
    model, _ = build()
    features, triples = clustered(model)
    drift(model, features, noise=0.5)
    start = initial_placement(model, features)
    before = {name: p.clone() for name, p in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    fitted = refine_placement(model, start, features, triples, max_epochs=4)
    assert {m.method for m in fitted.values()} == {"fitted"} and set(fitted) == set(start)
    assert placed_head_loss(model, fitted, features, triples) < placed_head_loss(model, start, features, triples)
    assert all(torch.equal(before[name], p) for name, p in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags and not model.training
    assert fitted["text"].alpha == start["text"].alpha  # the ridge start's facts are kept for reports


def test_fit_placement_without_triples_is_the_closed_form_start_and_the_fit_is_deterministic():
    model, _ = build()
    features, triples = clustered(model)
    drift(model, features, noise=0.5)
    closed = fit_placement(model, features)
    assert {m.method for m in closed.values()} == {"ridge"}
    torch.testing.assert_close(closed["text"].weight, initial_placement(model, features)["text"].weight)
    progress = []
    first = fit_placement(model, features, triples=triples, max_epochs=4, progress=lambda *a: progress.append(a))
    second = fit_placement(model, features, triples=triples, max_epochs=4)
    torch.testing.assert_close(first["visual"].weight, second["visual"].weight)
    stages = {stage for stage, _, _ in progress}
    assert stages == {"choosing", "fitting"}
    assert refine_placement(model, closed, features, facts()[:0]) == closed  # nothing to fit


def test_an_epoch_of_the_fit_is_bounded_on_a_large_graph(monkeypatch):
    """Past MAX_STEPS_PER_EPOCH batches of BATCH_PAIRS pairs an epoch stops, and the held-out check ranks
    at most MAX_CHECK_PAIRS pairs: the fit costs the same per epoch on DB15K as on a small graph."""
    import models.placement as placement

    model, _ = build()
    features, triples = clustered(model)
    drift(model, features, noise=0.5)
    monkeypatch.setattr(placement, "BATCH_PAIRS", 4)
    monkeypatch.setattr(placement, "MAX_STEPS_PER_EPOCH", 3)
    monkeypatch.setattr(placement, "MAX_CHECK_PAIRS", 5)
    batches, ranked, epochs = [], [], []
    multi_hot = placement.TailIndex.multi_hot
    monkeypatch.setattr(placement.TailIndex, "multi_hot", lambda self, h, r: batches.append(len(h)) or multi_hot(self, h, r))
    ranks = placement.realistic_ranks
    monkeypatch.setattr(placement, "realistic_ranks", lambda scores, *a: ranked.append(len(scores)) or ranks(scores, *a))

    def progress(stage, done, total):
        epochs.append((stage, len(batches), sum(ranked)))
        assert max(batches) <= 4
        batches.clear()
        ranked.clear()

    refine_placement(model, initial_placement(model, features), features, triples, max_epochs=2, progress=progress)
    assert [stage for stage, _, _ in epochs][:2] == ["choosing", "choosing"]
    assert all(steps == 3 for _, steps, _ in epochs)  # 3 batches of at most 4 pairs, of the 120 pairs there are
    assert all(0 < checked <= 5 for stage, _, checked in epochs if stage == "choosing")
