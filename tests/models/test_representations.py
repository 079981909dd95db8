import pytest
import torch

from models.representations import FeatureRepresentation, LearnedRepresentation, pca_basis, xavier_std


def features(n=20, width=12, missing=(3, 7)):
    matrix = torch.randn(n, width)
    mask = torch.ones(n, dtype=torch.bool)
    mask[list(missing)] = False
    return matrix, mask


def test_learned_representation_shapes_and_repr():
    table = LearnedRepresentation(10, 4)
    assert table().shape == (10, 4)
    assert table(torch.tensor([1, 1, 9])).shape == (3, 4)
    assert repr(table) == "LearnedRepresentation(10, 4)"


def test_learned_representation_initialises_from_wider_values_by_pca():
    table = LearnedRepresentation(30, 4)
    values = torch.randn(30, 2) @ torch.randn(2, 9)  # rank 2 in 9 dims
    table.initialise_from(values)
    weight = table.weight.detach()
    assert weight.std().item() == pytest.approx(xavier_std(30, 4), rel=1e-4)
    # PCA keeps the 2-dimensional structure: the last two directions carry nothing.
    assert weight[:, 2:].abs().max() < 1e-4
    with pytest.raises(ValueError, match="expected 30 rows"):
        table.initialise_from(torch.randn(29, 4))


@pytest.mark.parametrize("mode", ["finetune", "project"])
def test_missing_entities_get_the_missing_vector(mode):
    matrix, mask = features()
    rep = FeatureRepresentation(20, 12, 6, mode=mode)
    rep.set_features(matrix, mask)
    out = rep()
    assert out.shape == (20, 6)
    assert torch.equal(out[3], rep.missing.detach()) and torch.equal(out[7], rep.missing.detach())
    assert not torch.equal(out[0], rep.missing.detach())
    assert torch.equal(rep(torch.tensor([7, 0])), out[[7, 0]])


@pytest.mark.parametrize("mode", ["finetune", "project"])
def test_with_every_feature_present_missing_is_frozen_and_a_loaded_mask_brings_it_back(mode):
    matrix, mask = features(missing=())
    rep = FeatureRepresentation(20, 12, 6, mode=mode)
    rep.set_features(matrix, mask)
    out = rep()
    assert not rep.missing.requires_grad  # no row uses it: no gradient to wait for
    expected = rep.table if mode == "finetune" else rep.projection(rep.features)
    assert torch.equal(out, expected)
    out.sum().backward()
    assert rep.missing.grad is None
    # A state whose mask leaves entities out: the missing vector is used and trained again.
    partial = FeatureRepresentation(20, 12, 6, mode=mode)
    partial.set_features(*features())
    rep.load_state_dict(partial.state_dict(), strict=False)
    assert rep.missing.requires_grad
    assert torch.equal(rep()[3], rep.missing.detach())
    rep().sum().backward()
    assert rep.missing.grad is not None and rep.missing.grad.abs().sum() > 0


def test_finetune_and_project_start_from_the_same_pca_vectors():
    matrix, mask = features()
    torch.manual_seed(1)
    finetune = FeatureRepresentation(20, 12, 6, mode="finetune")
    finetune.set_features(matrix, mask)
    torch.manual_seed(1)
    project = FeatureRepresentation(20, 12, 6, mode="project")
    project.set_features(matrix, mask)
    observed = mask.nonzero().squeeze(1)
    torch.testing.assert_close(finetune(observed), project(observed), atol=1e-5, rtol=1e-4)


def test_finetune_trains_a_table_and_project_trains_the_projection():
    matrix, mask = features()
    finetune = FeatureRepresentation(20, 12, 6, mode="finetune")
    project = FeatureRepresentation(20, 12, 6, mode="project")
    assert {n for n, _ in finetune.named_parameters()} == {"table", "missing"}
    assert {n for n, _ in project.named_parameters()} == {"projection.weight", "projection.bias", "missing"}
    assert {n for n, _ in finetune.named_buffers()} == {"mask", "reduced"}
    assert {n for n, _ in project.named_buffers()} == {"mask", "features"}


def test_project_mode_is_inductive_for_new_features():
    matrix, mask = features()
    rep = FeatureRepresentation(20, 12, 6, mode="project")
    rep.set_features(matrix, mask)
    # An entity whose feature changes gets a new vector without any training.
    changed = matrix.clone()
    changed[0] = matrix[1]
    before = rep(torch.tensor([1])).detach()
    rep.features[0] = changed[0]
    torch.testing.assert_close(rep(torch.tensor([0])).detach(), before)


def test_set_features_checks_shapes_and_reset_restores_the_pca_init():
    matrix, mask = features()
    rep = FeatureRepresentation(20, 12, 6)
    with pytest.raises(ValueError, match="shape"):
        rep.set_features(matrix[:, :5], mask)
    rep.set_features(matrix, mask)
    initial = rep().detach().clone()
    with torch.no_grad():
        rep.table.add_(1.0)
    rep.reset_parameters()
    observed = mask.nonzero().squeeze(1)
    torch.testing.assert_close(rep()[observed].detach(), initial[observed])
    assert repr(rep) == "FeatureRepresentation(20, 12, 6, mode='finetune', reduction='pca')"


def test_pca_basis_pads_when_there_are_fewer_directions_than_dim():
    mean, basis = pca_basis(torch.randn(4, 3), 8)
    assert mean.shape == (3,) and basis.shape == (3, 8)
    assert basis[:, 3:].abs().sum() == 0
