import pytest
import torch

from models.fusion import LowRankTuckerFusion


@pytest.mark.parametrize("num_inputs", [1, 2, 3])
def test_fusion_shapes_and_gradients_for_any_number_of_modalities(num_inputs):
    fusion = LowRankTuckerFusion(num_inputs, 8, rank=3, out_dim=5, dropout=0.0)
    inputs = [torch.randn(7, 8, requires_grad=True) for _ in range(num_inputs)]
    out = fusion(inputs)
    assert out.shape == (7, 5)
    out.square().sum().backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in inputs)


def test_fusion_is_a_sum_of_rank_one_products():
    """With K rank-one terms, the fused vector is M_d · Σ_k Π_m z_m[k]; check against an explicit loop."""
    torch.manual_seed(3)
    fusion = LowRankTuckerFusion(3, 4, rank=2, hidden_dim=3, out_dim=2, dropout=0.0).eval()
    inputs = [torch.randn(5, 4) for _ in range(3)]
    expected = torch.zeros(5, 3)
    for k in range(2):
        term = torch.ones(5, 3)
        for x, projection in zip(inputs, fusion.projections):
            z = projection(x).view(5, 2, 3)
            term = term * z[:, k]
        expected += term
    torch.testing.assert_close(fusion(inputs), fusion.output(expected))


def test_fusion_rows_are_independent():
    fusion = LowRankTuckerFusion(2, 6, dropout=0.0).eval()
    a, b = torch.randn(9, 6), torch.randn(9, 6)
    perm = torch.randperm(9)
    torch.testing.assert_close(fusion([a, b])[perm], fusion([a[perm], b[perm]]))


def test_fusion_checks_input_count_and_has_a_repr():
    fusion = LowRankTuckerFusion(2, 6)
    with pytest.raises(ValueError, match="expected 2 inputs"):
        fusion([torch.randn(3, 6)])
    assert repr(fusion) == "LowRankTuckerFusion(2, 6, rank=2, hidden_dim=6, out_dim=6, residual=False, relu=False)"


def test_residual_fusion_of_detached_inputs_has_the_same_values_and_weight_gradients():
    torch.manual_seed(0)
    fusion = LowRankTuckerFusion(3, 4, rank=2, dropout=0.0, residual=True)
    inputs = [torch.randn(5, 4) for _ in range(3)]
    detached = fusion(inputs)  # the in-place path: no input needs a gradient
    detached.square().sum().backward()
    grads = [p.grad.clone() for p in fusion.parameters()]
    fusion.zero_grad()
    tracked = fusion([x.clone().requires_grad_() for x in inputs])  # the autograd path
    tracked.square().sum().backward()
    assert torch.equal(detached, tracked)
    for grad, p in zip(grads, fusion.parameters()):
        torch.testing.assert_close(grad, p.grad)


def test_residual_fusion_adds_the_mean_of_its_inputs():
    torch.manual_seed(4)
    plain = LowRankTuckerFusion(3, 4, rank=2, dropout=0.0).eval()
    residual = LowRankTuckerFusion(3, 4, rank=2, dropout=0.0, residual=True).eval()
    residual.load_state_dict(plain.state_dict())
    inputs = [torch.randn(5, 4) for _ in range(3)]
    torch.testing.assert_close(residual(inputs), plain(inputs) + (inputs[0] + inputs[1] + inputs[2]) / 3)
    with pytest.raises(ValueError, match="out_dim == dim"):
        LowRankTuckerFusion(2, 4, out_dim=3, residual=True)
