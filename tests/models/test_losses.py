import torch
import torch.nn.functional as F

from models.imf import ScoreBreakdown
from models.losses import imf_objective, info_nce, smoothed_bce


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
