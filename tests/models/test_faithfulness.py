"""Issue-12 defects: non-finite scores and losses, label smoothing at ε = 0, the reference's probability
mean, the reference's Mutan ReLUs and feature pooling, and cross-fitted (out-of-sample) selection."""

from __future__ import annotations

import json
import math

import pytest
import torch

from models.calibration import crossfit_valid, fit_decision_weights
from models.config import resolve
from models.decision import DecisionFusion, mixture_logit
from models.evaluation import FUSED, FrozenScorer, build_filter, rank_bounds, rank_metrics, rank_queries
from models.fusion import LowRankTuckerFusion
from models.imf import IMF
from models.losses import Positives, smoothed_bce, smoothed_targets, sparse_target_bce
from models.representations import FeatureRepresentation
from models.run_files import append_trace, read_trace
from models.training import NonFiniteLossError, train

FAST = {
    "model": {"dim": 16, "input_dropout": 0.0, "relation_dropout": 0.0, "hidden_dropout": 0.1, "fusion_dropout": 0.0},
    "train": {"lr": 0.01, "batch_size": 16, "eval_every": 1, "patience": 0, "device": "cpu"},
    "eval": {"batch_size": 7},
}


# ------------------------------------------------------------------------------ non-finite scores
def test_nan_and_inf_scores_rank_last():
    nan, inf = float("nan"), float("inf")
    scores = torch.tensor(
        [
            [nan, 0.5, 0.2, 0.1],  # the target (0) is nan: last of the 4 candidates
            [0.3, nan, inf, -inf],  # the target (0) is finite: nan and ±inf never outrank it
            [nan, nan, nan, nan],  # a diverged model: every target last
            [-inf, 0.0, 1.0, 2.0],  # -inf target: last too
        ]
    )
    targets = torch.tensor([0, 0, 2, 0])
    optimistic, pessimistic = rank_bounds(scores, targets)
    assert optimistic.tolist() == [4, 1, 4, 4]
    assert pessimistic.tolist() == [4, 1, 4, 4]
    # A filtered candidate leaves the count; the nan target is last of the 3 that remain.
    optimistic, pessimistic = rank_bounds(scores[:1], targets[:1], torch.tensor([0]), torch.tensor([3]))
    assert (optimistic.item(), pessimistic.item()) == (3, 3)


def test_a_nan_model_scores_near_zero_mrr_not_two():
    ranks = rank_bounds(torch.full((50, 30), float("nan")), torch.zeros(50, dtype=torch.long))
    mrr = rank_metrics((ranks[0] + ranks[1]).double() / 2)["mrr"]
    assert mrr == pytest.approx(1 / 30)


def test_a_diverging_run_stops_with_a_clear_error_and_saves_nothing_of_it(tmp_path, kg):
    config = resolve(FAST, {"train.epochs": 3, "train.lr": 1e30, "train.seed": 1})
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"epoch 1: the .* loss is not finite.*lower learning rate"):
        train(kg, config, run_dir, progress=False)
    assert not (run_dir / "best.pt").exists() and not (run_dir / "last.pt").exists()


def test_a_run_diverging_with_a_huge_loss_weight_names_the_weight(tmp_path, kg):
    """It blamed the learning rate for --contrastive-weight 1e300."""
    config = resolve(FAST, {"train.epochs": 1, "train.contrastive_weight": 1e300, "train.seed": 1})
    with pytest.raises(NonFiniteLossError, match=r"smaller loss weights \(train.contrastive_weight = 1e\+300\)"):
        train(kg, config, tmp_path / "run", progress=False)


def test_the_trace_is_strict_json(tmp_path):
    path = tmp_path / "trace.jsonl"
    append_trace(path, {"epoch": 1, "loss": {"total": float("nan")}, "valid": {"fused": {"mrr": float("inf")}}})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda token: pytest.fail(f"non-standard JSON token {token}"))
    # Written as null, and left out as the trace is read (a value that is not a finite number is unknown).
    assert json.loads(text)["loss"]["total"] is None
    record = read_trace(path)[0]
    assert record["epoch"] == 1 and "total" not in record["loss"] and "mrr" not in record["valid"]["fused"]


def test_a_torn_last_trace_line_is_skipped_and_other_bad_lines_are_named(tmp_path):
    path = tmp_path / "trace.jsonl"
    append_trace(path, {"epoch": 1})
    with open(path, "a") as trace:
        trace.write('{"epoch": 2, "loss": {"to')  # killed while writing
    assert [r["epoch"] for r in read_trace(path)] == [1]
    path.write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match=r"trace.jsonl:2"):
        read_trace(path)


# --------------------------------------------------------------------------------- label smoothing
@pytest.mark.parametrize("mode", ["tucker", "pykeen"])
def test_no_smoothing_leaves_the_targets_alone(mode):
    targets = (torch.rand(4, 9) > 0.6).float()
    smoothed = smoothed_targets(targets, label_smoothing=0.0, mode=mode)
    assert torch.equal(smoothed, targets)  # in [0, 1]; before the fix positives were 1 + 1/N
    logits = torch.randn(4, 9)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    torch.testing.assert_close(smoothed_bce(logits, targets, label_smoothing=0.0, mode=mode), expected)


def test_smoothing_modes():
    targets = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]])
    tucker = smoothed_targets(targets, label_smoothing=0.1, mode="tucker")
    torch.testing.assert_close(tucker, torch.tensor([[0.9 + 0.2, 0.2, 0.2, 0.2, 0.2]]))
    pykeen = smoothed_targets(targets, label_smoothing=0.1, mode="pykeen")
    torch.testing.assert_close(pykeen, torch.tensor([[0.9, 0.025, 0.025, 0.025, 0.025]]))
    assert float(pykeen.sum()) == pytest.approx(1.0)  # ε of the positive's mass moves to the others


@pytest.mark.parametrize(("mode", "epsilon"), [("tucker", 0.0), ("tucker", 0.1), ("pykeen", 0.1)])
def test_the_sparse_bce_equals_the_dense_one_with_gradients(mode, epsilon):
    logits = torch.randn(6, 11, requires_grad=True)
    targets = (torch.rand(6, 11) > 0.7).float()
    dense = smoothed_bce(logits, targets, label_smoothing=epsilon, mode=mode)
    (dense_grad,) = torch.autograd.grad(dense, logits)
    sparse = sparse_target_bce(logits, Positives.from_dense(targets), label_smoothing=epsilon, mode=mode)
    (sparse_grad,) = torch.autograd.grad(sparse, logits)
    torch.testing.assert_close(sparse, dense)
    torch.testing.assert_close(sparse_grad, dense_grad)


# ------------------------------------------------------------------------ the reference's fusion
def test_the_probability_mean_is_the_reference_mean_of_sigmoids():
    scores = [torch.randn(5, 7) * 4 for _ in range(4)]
    by_hand = sum(torch.sigmoid(s.double()) for s in scores) / 4
    fused, _ = DecisionFusion(4, 6, mode="mean", space="probability")(scores, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(torch.sigmoid(fused.double()), by_hand, atol=1e-6, rtol=1e-5)
    # The logit mean is another scheme: it ranks differently from the probability mean.
    logit_mean, _ = DecisionFusion(4, 6, mode="mean", space="logit")(scores, torch.zeros(5, dtype=torch.long))
    assert not torch.equal(logit_mean.argsort(dim=1), fused.argsort(dim=1))


def test_the_probability_mixture_does_not_saturate():
    # σ rounds both to 1.0 in float32; the mixture's logit keeps them apart.
    high = mixture_logit([torch.tensor([[40.0, 30.0]]), torch.tensor([[35.0, 30.0]])], torch.tensor([0.5, 0.5]))
    assert high[0, 0] > high[0, 1] and torch.isfinite(high).all()


def test_the_reference_mutan_has_relus():
    fusion = LowRankTuckerFusion(2, 4, relu=True, dropout=0.0)
    inputs = [torch.randn(3, 4), torch.randn(3, 4)]
    expected_sum = None
    for x, projection in zip(inputs, fusion.projections):
        z = torch.relu(projection(x)).unflatten(-1, (2, 4))
        expected_sum = z if expected_sum is None else expected_sum * z
    expected = fusion.output(torch.relu(expected_sum.sum(dim=-2)))
    torch.testing.assert_close(fusion(inputs), expected)


@pytest.mark.parametrize("mode", ["finetune", "project"])
def test_average_pooling_reduces_l2_normalised_features(mode):
    matrix = torch.randn(5, 12) * 3
    mask = torch.tensor([True, True, False, True, True])
    rep = FeatureRepresentation(5, 12, 4, mode=mode, reduction="avgpool")
    rep.set_features(matrix, mask)
    normalised = matrix / matrix.norm(dim=1, keepdim=True)
    expected = normalised.view(5, 4, 3).mean(dim=2)  # 12 values pooled into 4 groups of 3
    torch.testing.assert_close(rep()[mask].detach(), expected[mask])


# -------------------------------------------------------------------------- out-of-sample selection
def test_crossfit_ranks_each_half_with_the_weights_of_the_other(kg):
    model = IMF(kg.num_entities, kg.num_relations, dim=8, feature_dims=kg.feature_dims).eval()
    for modality, (matrix, mask) in kg.features.items():
        model.set_features(modality, matrix, mask)
    index = build_filter([kg.train, kg.valid], num_entities=kg.num_entities, num_relations=kg.num_relations)
    scorer = FrozenScorer(model)
    result = crossfit_valid(scorer, kg.valid, index, seed=3)
    half = torch.randperm(len(kg.valid), generator=torch.Generator().manual_seed(3))
    halves = (half[: len(kg.valid) // 2], half[len(kg.valid) // 2 :])
    assert set(halves[0].tolist()).isdisjoint(halves[1].tolist()) and result.halves == (len(halves[0]), len(halves[1]))
    for index_half, (own, other) in enumerate(((0, 1), (1, 0))):
        triples = kg.valid[halves[index_half]]
        # The weights fitted on a half come from that half's queries alone...
        fitted = fit_decision_weights(model, triples, index, num_relations=kg.num_relations, seed=3 + own)
        torch.testing.assert_close(torch.softmax(result.fold_logits[own], 0), fitted, atol=1e-5, rtol=1e-4)
        # ...and rank only the other half.
        alone = rank_queries(scorer.with_weights(torch.softmax(result.fold_logits[other], 0)), triples, index)
        n = len(kg.valid)
        where = torch.cat([halves[index_half], halves[index_half] + n])
        assert torch.equal(result.ranks.optimistic[FUSED][where], alone.optimistic[FUSED])
        assert torch.equal(result.ranks.pessimistic[FUSED][where], alone.pessimistic[FUSED])


def test_training_selects_on_crossfitted_valid_and_records_the_filter(tmp_path, kg):
    config = resolve(FAST, {"train.epochs": 2, "train.seed": 5})
    train(kg, config, tmp_path / "run", progress=False)
    record = read_trace(tmp_path / "run" / "trace.jsonl")[-1]
    assert record["valid_filter"] == ["train", "valid"]
    assert math.isclose(sum(record["fusion_weights"].values()), 1.0, rel_tol=1e-6)


def _reference_mixture_logit(scores, weights):
    """The probability mixture's logit in float64 through ATen's log-sigmoid and logaddexp."""
    positive = negative = None
    for index, branch in enumerate(scores):
        log_weight = weights[..., index].double().log()
        if log_weight.dim() == 1:
            log_weight = log_weight.view(-1, 1)
        branch = branch.double()
        up = torch.nn.functional.logsigmoid(branch) + log_weight
        down = torch.nn.functional.logsigmoid(-branch) + log_weight
        positive = up if positive is None else torch.logaddexp(positive, up)
        negative = down if negative is None else torch.logaddexp(negative, down)
    return positive - negative


@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("scale", [0.01, 4.0, 40.0])
def test_the_cpu_mixture_logit_and_its_gradients_equal_the_float64_reference(per_row, scale):
    generator = torch.Generator().manual_seed(7)
    scores = [torch.randn(6, 9, generator=generator) * scale for _ in range(3)]
    for branch in scores:
        branch[0, :3] = 0.0  # the |s| form's autograd would be wrong exactly here
    weights = torch.softmax(torch.randn(*((6, 3) if per_row else (3,)), generator=generator), dim=-1)
    leaves = [s.clone().requires_grad_() for s in scores]
    weight_leaf = weights.clone().requires_grad_()
    fused = mixture_logit(leaves, weight_leaf)
    upstream = torch.randn(fused.shape, generator=generator)
    (fused * upstream).sum().backward()

    exact_leaves = [s.double().requires_grad_() for s in scores]
    exact_weights = weights.double().requires_grad_()
    exact = _reference_mixture_logit(exact_leaves, exact_weights)
    (exact * upstream.double()).sum().backward()

    assert fused.dtype == torch.float32 and fused.shape == (6, 9)
    torch.testing.assert_close(fused.double(), exact, atol=1e-5, rtol=1e-6)
    for leaf, exact_leaf in zip(leaves, exact_leaves):
        torch.testing.assert_close(leaf.grad.double(), exact_leaf.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weight_leaf.grad.double(), exact_weights.grad, atol=1e-5, rtol=1e-5)


def test_the_cpu_mixture_logit_keeps_zero_weights_and_extreme_scores_finite():
    scores = [torch.tensor([[60.0, -60.0, 0.0]]), torch.tensor([[-60.0, 60.0, 0.0]])]
    weights = torch.tensor([[1.0, 0.0]], requires_grad=True)
    leaves = [s.clone().requires_grad_() for s in scores]
    fused = mixture_logit(leaves, weights)
    # With the second branch's weight at zero the mixture is the first branch alone.
    torch.testing.assert_close(fused, scores[0])
    fused.sum().backward()
    assert torch.isfinite(weights.grad).all() and all(torch.isfinite(leaf.grad).all() for leaf in leaves)
    torch.testing.assert_close(leaves[1].grad, torch.zeros(1, 3))
    # ∂/∂s of a branch at weight 1 is 1 (the fused logit is its logit).
    torch.testing.assert_close(leaves[0].grad, torch.ones(1, 3))
