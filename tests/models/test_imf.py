import pytest
import torch

from models.imf import IMF, MULTIMODAL, ScoreBreakdown

N, R = 20, 3
WIDTHS = {"visual": 12, "text": 8}


def build(modalities=("structure", "visual", "text"), **kwargs) -> IMF:
    model = IMF(N, R, dim=8, modalities=modalities, feature_dims=WIDTHS, **kwargs)
    for modality, width in WIDTHS.items():
        if modality in modalities:
            mask = torch.ones(N, dtype=torch.bool)
            mask[::4] = False
            model.set_features(modality, torch.randn(N, width), mask)
    return model


def queries(batch=6):
    return torch.randint(0, N, (batch,)), torch.randint(0, 2 * R, (batch,)), torch.randint(0, N, (batch,))


SUBSETS = [
    ("structure",),
    ("visual",),
    ("structure", "text"),
    ("visual", "text"),
    ("structure", "visual", "text"),
]


@pytest.mark.parametrize("modalities", SUBSETS)
@pytest.mark.parametrize("feature_mode", ["finetune", "project"])
def test_one_to_n_scores_agree_with_single_triple_scores(modalities, feature_mode):
    model = build(modalities, feature_mode=feature_mode).eval()
    heads, relations, tails = queries()
    scores = model(heads, relations)
    expected_branches = modalities + ((MULTIMODAL,) if len(modalities) > 1 else ())
    assert isinstance(scores, ScoreBreakdown)
    assert scores.names == expected_branches
    assert all(s.shape == (6, N) for s in scores.branches.values()) and scores.fused.shape == (6, N)
    triples = model.score_triples(heads, relations, tails)
    for name in expected_branches:
        expected = scores.branches[name][torch.arange(6), tails]
        torch.testing.assert_close(triples.branches[name], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(triples.fused, scores.fused[torch.arange(6), tails], atol=1e-5, rtol=1e-5)


def test_training_forward_backward_reaches_every_parameter():
    model = build()
    heads, relations, _ = queries(8)
    scores = model(heads, relations)
    (scores.fused.sum() + sum(s.sum() for s in scores.branches.values())).backward()
    without_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert without_grad == []


@pytest.mark.parametrize("fusion", ["learned", "learned-per-relation"])
def test_fusion_weights_are_a_distribution_and_receive_gradients(fusion):
    model = build(fusion=fusion)
    with torch.no_grad():
        model.decision.logits.normal_()
    heads, relations, _ = queries(8)
    scores = model(heads, relations)
    expected_shape = (4,) if fusion == "learned" else (8, 4)
    assert scores.weights.shape == expected_shape
    assert (scores.weights >= 0).all()
    torch.testing.assert_close(scores.weights.sum(-1), torch.ones(expected_shape[:-1]))
    scores.fused.square().mean().backward()
    assert model.decision.logits.grad is not None and model.decision.logits.grad.abs().sum() > 0


def test_mean_fusion_is_the_plain_average():
    model = build(fusion="mean").eval()
    heads, relations, _ = queries()
    scores = model(heads, relations)
    torch.testing.assert_close(scores.fused, torch.stack(list(scores.branches.values())).mean(0))
    assert scores.weight_of("text").item() == pytest.approx(0.25)


def test_per_relation_weights_differ_by_relation():
    model = build(fusion="learned-per-relation").eval()
    with torch.no_grad():
        model.decision.logits[1, 0] = 5.0
    scores = model(torch.tensor([0, 0]), torch.tensor([0, 1]))
    assert scores.weight_of("structure")[1] > 0.9 > scores.weight_of("structure")[0]


def test_structure_init_sets_inverse_relations_to_the_negation():
    model = build()
    entities, relations = torch.randn(N, 8), torch.randn(R, 8)
    model.set_structure_init(entities, relations)
    table = model.relation_representations["structure"].weight.detach()
    torch.testing.assert_close(table[R:], -table[:R])
    torch.testing.assert_close(table[0] / table[0].norm(), relations[0] / relations[0].norm())


def test_constructor_checks_and_repr():
    with pytest.raises(ValueError, match="'visual'"):
        IMF(N, R, dim=8, feature_dims={"text": 8})
    with pytest.raises(KeyError, match="no feature modality 'audio'"):
        build().set_features("audio", torch.zeros(N, 2), torch.ones(N, dtype=torch.bool))
    assert repr(build()) == (
        "IMF(20, 3, dim=8, modalities=('structure', 'visual', 'text'), feature_mode='finetune', fusion='learned', decision_space='logit')"
    )
    assert build().inverse(torch.tensor([0, 2, 3, 5])).tolist() == [3, 5, 0, 2]


def test_reset_parameters_keeps_the_feature_initialisation():
    model = build().eval()
    heads, relations, _ = queries()
    torch.manual_seed(5)
    model.reset_parameters()
    first = model.encode()["visual"].entities.detach().clone()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    torch.manual_seed(5)
    model.reset_parameters()
    torch.testing.assert_close(model.encode()["visual"].entities, first)


@pytest.mark.parametrize("contrastive_weight", [0.0, 0.1])
def test_with_detached_fusion_inputs_only_the_contrastive_term_couples_the_branches(contrastive_weight):
    """With the fusion inputs detached and no fused loss (the presets' defaults), a modality branch gets
    from the joint objective exactly the gradient of its own BCE, unless the contrastive term is on.
    """
    from models.losses import Positives, imf_objective

    torch.manual_seed(0)
    model = build(("structure", "text"), detach_fusion_inputs=True).eval()
    heads, relations, tails = queries(8)
    targets = torch.zeros(8, N)
    targets[torch.arange(8), tails] = 1.0

    def structure_grads(loss_of) -> list[torch.Tensor]:
        model.zero_grad()
        encoded = model.encode()
        scores = model(heads, relations, encoded=encoded)
        views = {m: encoded[m].entities[heads] for m in model.modalities}
        loss_of(scores, views).backward()
        parts = [model.entity_representations["structure"], model.relation_representations["structure"],
                 model.scorers["structure"]]
        return [p.grad.clone() for part in parts for p in part.parameters()]

    joint = structure_grads(lambda s, v: imf_objective(s, Positives.from_dense(targets), v, fused_weight=0.0,
                                                       contrastive_weight=contrastive_weight).total)
    alone = structure_grads(lambda s, v: imf_objective(
        ScoreBreakdown({"structure": s.branches["structure"]}, s.weights, s.fused), Positives.from_dense(targets),
        v, fused_weight=0.0, contrastive_weight=0.0).total)
    same = all(torch.allclose(a, b, atol=1e-6) for a, b in zip(joint, alone))
    assert same is (contrastive_weight == 0.0)
