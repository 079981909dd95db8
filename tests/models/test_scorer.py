import pytest
import torch

from models.dropout import MaskDropout
from models.scorer import RelationGroups, TuckERScorer, apply_relation_matrices, tail_scores


def naive_query(scorer: TuckERScorer, heads, relation_table, relations):
    """TuckER as the reference computes it: a (B, d_r, d, d) contraction per query."""
    x = scorer.bn0(heads)
    w = torch.einsum("br,rij->bij", relation_table[relations], scorer.core)
    return scorer.bn1(torch.einsum("bi,bij->bj", x, w))


@pytest.mark.parametrize("batch", [1, 5, 32])
def test_precomputed_scorer_equals_the_naive_einsum(batch):
    scorer = TuckERScorer(8, 6).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        scorer.bn0.running_mean.normal_()
        scorer.bn1.running_var.uniform_(0.5, 2.0)
    heads, table = torch.randn(batch, 8), torch.randn(10, 6)
    relations = torch.randint(0, 10, (batch,))
    entities = torch.randn(13, 8)
    expected = naive_query(scorer, heads, table, relations) @ entities.T
    scores = scorer(heads, table, relations, entities)
    assert scores.shape == (batch, 13)
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("how", ["padded", "grouped", "gathered"])
@pytest.mark.parametrize(
    "relations",
    [[3, 0, 3, 1, 1, 1, 0, 3, 2, 2, 0, 3], [0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3], [2] * 12],
    ids=["mixed", "contiguous", "one-relation"],
)
def test_every_relation_product_agrees_with_gradients(how, relations):
    x = torch.randn(12, 5, requires_grad=True)
    relations = torch.tensor(relations)
    groups = RelationGroups.of(relations)
    matrices = torch.randn(len(groups.counts), 5, 3, requires_grad=True)
    assert groups.contiguous == bool((relations[1:] >= relations[:-1]).all())
    out = apply_relation_matrices(x, matrices, groups, how=how)
    expected = torch.einsum("bi,bij->bj", x, matrices[groups.inverse])
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    grad_x, grad_m = x.grad.clone(), matrices.grad.clone()
    x.grad = matrices.grad = None
    expected.sum().backward()
    torch.testing.assert_close(grad_x, x.grad)
    torch.testing.assert_close(grad_m, matrices.grad)


def test_training_mode_scores_and_gradients_reach_the_core():
    scorer = TuckERScorer(8, 6, input_dropout=0.0, relation_dropout=0.0, hidden_dropout=0.0)
    heads, table = torch.randn(16, 8), torch.randn(4, 6, requires_grad=True)
    relations = torch.randint(0, 4, (16,))
    expected = naive_query(scorer, heads, table, relations)
    torch.testing.assert_close(scorer.query(heads, table, relations), expected, atol=1e-4, rtol=1e-4)
    scorer(heads, table, relations, torch.randn(9, 8)).sum().backward()
    assert scorer.core.grad.abs().sum() > 0 and table.grad.abs().sum() > 0


def test_per_query_relation_dropout_draws_a_mask_per_query():
    torch.manual_seed(0)
    scorer = TuckERScorer(6, 4, input_dropout=0.0, relation_dropout=0.5, hidden_dropout=0.0, relation_dropout_per_query=True)
    heads = torch.randn(1, 6).expand(8, 6).contiguous()  # eight identical queries of one relation
    table, relations = torch.randn(2, 4), torch.zeros(8, dtype=torch.long)
    per_query = scorer.query(heads, table, relations)
    shared = TuckERScorer(6, 4, input_dropout=0.0, relation_dropout=0.5, hidden_dropout=0.0)
    shared.load_state_dict(scorer.state_dict())
    same = shared.query(heads, table, relations)
    # One shared mask gives eight equal rows (before batch norm's per-column centring they are equal too);
    # per-query masks make them differ.
    assert torch.allclose(same, same[:1].expand_as(same))
    assert not torch.allclose(per_query, per_query[:1].expand_as(per_query))
    scorer.eval()  # no dropout in eval mode: both agree
    shared.eval()
    torch.testing.assert_close(scorer.query(heads, table, relations), shared.query(heads, table, relations))


@pytest.mark.parametrize(("init", "low", "high"), [("xavier", 0.0, 0.05), ("uniform", 0.5, 0.7)])
def test_core_initialisation(init, low, high):
    core = TuckERScorer(40, 30, core_init=init).core
    assert low < float(core.detach().std()) < high  # U(-1, 1) has std 0.577; Xavier is tiny at this size
    with pytest.raises(ValueError, match="core_init"):
        TuckERScorer(4, 4, core_init="normal")


def test_scorer_repr():
    assert repr(TuckERScorer(8, 6)) == (
        "TuckERScorer(8, 6, input_dropout=0.3, relation_dropout=0.4, hidden_dropout=0.5, "
        "relation_dropout_per_query=False, core_init='xavier')"
    )


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_mask_dropout_keeps_the_right_share_and_stays_unbiased(p):
    torch.manual_seed(0)
    layer = MaskDropout(p).train()
    x = torch.ones(400, 250)
    y = layer(x)
    kept = (y != 0).float().mean().item()
    assert kept == pytest.approx(1 - p, abs=0.005)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    values = torch.unique(y)
    assert values.tolist()[0] == 0.0 and len(values) == 2
    assert values[1].item() == pytest.approx(1 / (1 - round(p * 32768) / 32768))


def test_mask_dropout_draws_fresh_masks_and_passes_through_in_eval():
    torch.manual_seed(0)
    layer = MaskDropout(0.3).train()
    x = torch.randn(7, 13)  # an odd count: the last draw is partly used
    assert not torch.equal(layer(x) != 0, layer(x) != 0)
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(MaskDropout(1.0).train()(x), torch.zeros_like(x))
    assert torch.equal(MaskDropout(0.0).train()(x), x)


def test_mask_dropout_passes_gradients_through_the_kept_values():
    torch.manual_seed(0)
    x = torch.randn(50, 20, requires_grad=True)
    y = MaskDropout(0.4).train()(x)
    y.sum().backward()
    assert torch.equal(x.grad != 0, y.detach() != 0)


def test_tail_scores_equal_the_plain_product_with_gradients():
    queries = torch.randn(16, 8, requires_grad=True)
    entities = torch.randn(300, 8, requires_grad=True)
    scores = tail_scores(queries, entities)
    expected = queries @ entities.T
    assert scores.shape == (16, 300)
    torch.testing.assert_close(scores, expected)
    weights = torch.randn(16, 300)
    grads = torch.autograd.grad((scores * weights).sum(), (queries, entities))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (queries, entities))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)
