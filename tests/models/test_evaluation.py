import pytest
import torch

from models.evaluation import build_filter, evaluate, evaluate_ranks, rank_metrics, realistic_ranks
from models.imf import IMF
from models.index import TailIndex, with_inverses


def test_all_equal_scores_give_the_middle_rank():
    scores = torch.zeros(2, 9)
    assert realistic_ranks(scores, torch.tensor([0, 4])).tolist() == [5.0, 5.0]  # (1 + 9) / 2


def test_ties_average_the_optimistic_and_pessimistic_rank():
    scores = torch.tensor([[5.0, 3.0, 3.0, 3.0, 1.0]])
    # One candidate is higher; the target ties with two others: optimistic 2, pessimistic 4.
    assert realistic_ranks(scores, torch.tensor([2])).item() == 3.0
    assert realistic_ranks(scores, torch.tensor([0])).item() == 1.0
    assert realistic_ranks(scores, torch.tensor([4])).item() == 5.0


def test_filtering_removes_other_known_tails_but_never_the_target():
    scores = torch.tensor([[9.0, 8.0, 7.0, 1.0], [9.0, 8.0, 7.0, 1.0]])
    rows, tails = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 2, 0, 1])
    ranks = realistic_ranks(scores, torch.tensor([2, 1]), rows, tails)
    # Query 0: known tail 0 is removed, and tail 2 (the target) is kept, so only 1 beats it.
    # Query 1: tail 0 is removed and the target 1 is the top.
    assert ranks.tolist() == [2.0, 1.0]
    # Filtered ties: all-equal scores over N' = N - (removed) candidates.
    ranks = realistic_ranks(torch.zeros(1, 6), torch.tensor([3]), torch.tensor([0, 0, 0]), torch.tensor([0, 1, 3]))
    assert ranks.item() == 2.5  # (1 + 4) / 2 with 4 candidates left
    assert torch.equal(scores[0], torch.tensor([9.0, 8.0, 7.0, 1.0]))  # the input is not modified


def test_rank_metrics():
    metrics = rank_metrics(torch.tensor([1.0, 2.0, 4.0, 20.0]))
    assert metrics["mrr"] == pytest.approx((1 + 0.5 + 0.25 + 0.05) / 4)
    assert metrics["mr"] == pytest.approx(6.75)
    assert (metrics["hits@1"], metrics["hits@3"], metrics["hits@10"]) == (0.25, 0.5, 0.75)


def test_tail_index_lookup_and_multi_hot():
    triples = torch.tensor([[0, 1, 2], [0, 1, 3], [0, 1, 2], [2, 0, 1], [4, 1, 0]])
    index = TailIndex.from_triples(triples, num_entities=5, num_relations=2)
    assert len(index) == 3
    rows, tails = index.lookup(torch.tensor([4, 0, 1, 2]), torch.tensor([1, 1, 1, 0]))
    assert sorted(zip(rows.tolist(), tails.tolist())) == [(0, 0), (1, 2), (1, 3), (3, 1)]
    targets = index.multi_hot(torch.tensor([0, 1]), torch.tensor([1, 0]))
    assert targets.tolist() == [[0, 0, 1, 1, 0], [0, 0, 0, 0, 0]]
    heads, relations = index.pairs()
    assert list(zip(heads.tolist(), relations.tolist())) == [(0, 1), (2, 0), (4, 1)]
    empty = TailIndex.from_triples(torch.zeros(0, 3, dtype=torch.long), num_entities=5, num_relations=2)
    assert empty.lookup(torch.tensor([0]), torch.tensor([0]))[0].numel() == 0


def test_with_inverses_appends_inverse_triples():
    assert with_inverses(torch.tensor([[0, 1, 2]]), 3).tolist() == [[0, 1, 2], [2, 4, 0]]


class ConstantModel(IMF):
    """An IMF whose every branch gives every candidate the same score."""

    def forward(self, heads, relations, *, encoded=None):
        scores = super().forward(heads, relations, encoded=encoded)
        flat = {name: torch.zeros_like(s) for name, s in scores.branches.items()}
        return type(scores)(flat, scores.weights, torch.zeros_like(scores.fused))


def test_evaluate_reports_every_branch_and_both_directions():
    n, r = 10, 2
    model = ConstantModel(n, r, dim=4, modalities=("structure",))
    triples = torch.tensor([[0, 0, 1], [2, 1, 3]])
    known = torch.tensor([[0, 0, 5], [0, 0, 6], [4, 1, 3]])
    filter_index = build_filter([triples, known], num_entities=n, num_relations=r)
    ranks = evaluate_ranks(model, triples, filter_index, batch_size=1, num_relations=r)
    assert set(ranks) == {"structure", "fused"}
    # Tail queries: (0,0,?) has 2 other known tails -> (1+8)/2; (2,1,?) has none -> (1+10)/2.
    # Head queries: (1,2,?) none -> 5.5; (3,3,?) one other known head (4) -> 5.
    assert ranks["fused"].tolist() == [4.5, 5.5, 5.5, 5.0]
    metrics = evaluate(model, triples, filter_index, batch_size=3, num_relations=r)
    assert metrics["structure"]["mr"] == pytest.approx(5.125)
    assert model.training  # the mode is restored
