import pytest
import torch

from models.scorer import TuckERScorer, apply_relation_matrices


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


@pytest.mark.parametrize("grouped", [True, False])
def test_grouped_and_batched_relation_products_agree_with_gradients(grouped):
    x = torch.randn(12, 5, requires_grad=True)
    matrices = torch.randn(4, 5, 3, requires_grad=True)
    relations = torch.tensor([3, 0, 3, 1, 1, 1, 0, 3, 2, 2, 0, 3])
    _, inverse, counts = torch.unique(relations, return_inverse=True, return_counts=True)
    out = apply_relation_matrices(x, matrices, inverse, counts, grouped=grouped)
    expected = torch.einsum("bi,bij->bj", x, matrices[inverse])
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


def test_scorer_repr():
    assert repr(TuckERScorer(8, 6)) == (
        "TuckERScorer(8, 6, input_dropout=0.3, relation_dropout=0.4, hidden_dropout=0.5)"
    )
