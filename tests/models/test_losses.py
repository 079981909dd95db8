import torch
import torch.nn.functional as F

from models.imf import ScoreBreakdown
from models.losses import Positives, imf_objective, info_nce, smoothed_bce, softplus_sum, sparse_target_bce


def test_contrastive_loss_is_lower_for_aligned_modalities_than_for_shuffled_ones():
    base = torch.randn(32, 16)
    views = {m: base + 0.1 * torch.randn(32, 16) for m in ("structure", "visual", "text")}
    aligned = info_nce(views, temperature=0.1)
    shuffled = info_nce({m: v[torch.randperm(32)] for m, v in views.items()}, temperature=0.1)
    assert aligned < 0.1 < shuffled


def test_contrastive_loss_is_symmetric_over_pairs_and_ignores_missing_rows():
    a, b = torch.randn(10, 4), torch.randn(10, 4)
    assert torch.allclose(info_nce({"a": a, "b": b}), info_nce({"b": b, "a": a}))
    present = torch.ones(10, dtype=torch.bool)
    present[:3] = False
    masked = info_nce({"a": a, "b": b}, masks={"b": present})
    assert torch.allclose(masked, info_nce({"a": a[3:], "b": b[3:]}))
    assert info_nce({"a": a}) == 0


def test_smoothed_bce_follows_tucker_label_smoothing():
    logits, targets = torch.randn(3, 5), (torch.rand(3, 5) > 0.5).float()
    expected = F.binary_cross_entropy_with_logits(logits, 0.9 * targets + 0.2)
    torch.testing.assert_close(smoothed_bce(logits, targets, label_smoothing=0.1), expected)


def test_objective_sums_branch_fused_and_weighted_contrastive_terms():
    scores = ScoreBreakdown(
        branches={"structure": torch.randn(4, 6), "visual": torch.randn(4, 6)},
        weights=torch.tensor([0.5, 0.5]),
        fused=torch.randn(4, 6),
    )
    targets = torch.zeros(4, 6)
    targets[:, 0] = 1
    views = {"structure": torch.randn(4, 3), "visual": torch.randn(4, 3)}
    terms = imf_objective(scores, targets, views, contrastive_weight=0.5)
    expected = terms.branches["structure"] + terms.branches["visual"] + terms.fused + 0.5 * terms.contrastive
    torch.testing.assert_close(terms.total, expected)
    assert set(terms.detached()) == {"total", "structure", "visual", "fused", "contrastive"}
    assert imf_objective(scores, targets, views, contrastive_weight=0.0).contrastive == 0


def test_softplus_sum_equals_softplus_over_the_whole_range():
    # The CPU form (Σ relu(x) − Σ log σ(|x|)) against float64 softplus, from saturated negatives to
    # large positives, and on a transposed (non-contiguous) view as the 1-N scores are.
    x = torch.cat([torch.linspace(-120, 120, 4001), torch.randn(4999) * 8, torch.tensor([0.0, -0.0, 1e-30])])
    x = x.reshape(-1, 3)
    expected = F.softplus(x.double()).sum()
    torch.testing.assert_close(softplus_sum(x).double(), expected, rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(softplus_sum(x.T).double(), expected, rtol=1e-6, atol=1e-3)
    small = torch.tensor([-30.0, -20.0, 0.0, 3.0])
    torch.testing.assert_close(softplus_sum(small).double(), F.softplus(small.double()).sum(), rtol=1e-6, atol=1e-7)


def test_sparse_target_bce_matches_the_dense_loss_and_its_gradient_on_a_transposed_view():
    logits = (torch.randn(9, 40) * 6).T.detach().requires_grad_()  # (40, 9), column-major as on the CPU
    targets = (torch.rand(40, 9) > 0.8).float()
    loss = sparse_target_bce(logits, Positives.from_dense(targets), label_smoothing=0.1)
    (grad,) = torch.autograd.grad(loss, logits)
    dense = logits.detach().clone().requires_grad_()
    expected = smoothed_bce(dense, targets, label_smoothing=0.1)
    (expected_grad,) = torch.autograd.grad(expected, dense)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-8)
