import pytest
import torch

from models import evaluation
from models.evaluation import (
    CATEGORIES,
    FUSED,
    MEAN_FUSION,
    FrozenScorer,
    RankResult,
    auto_chunk_size,
    build_filter,
    evaluate,
    evaluate_ranks,
    metrics_report,
    rank_bounds,
    rank_metrics,
    rank_queries,
    relation_categories,
    realistic_ranks,
)
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


def mean_probability(branch_scores) -> torch.Tensor:
    """The reference code's fusion written out by hand: the plain mean of the sigmoid probabilities."""
    branch_scores = list(branch_scores)
    return sum(torch.sigmoid(s.double()) for s in branch_scores) / len(branch_scores)


def brute_force_ranks(scores, targets, known):
    """Optimistic and pessimistic ranks, plainly: ``known`` is a set of (query, candidate) to leave out."""
    optimistic, pessimistic = [], []
    for b in range(scores.shape[0]):
        target = int(targets[b])
        higher = equal = 0
        for candidate in range(scores.shape[1]):
            if candidate != target and (b, candidate) in known:
                continue
            if scores[b, candidate] > scores[b, target]:
                higher += 1
            elif scores[b, candidate] == scores[b, target]:
                equal += 1  # the target itself included
        optimistic.append(higher + 1)
        pessimistic.append(higher + equal)
    return optimistic, pessimistic


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_filtered_realistic_ranks_equal_a_brute_force_reference_with_ties(seed):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 4, (12, 15), generator=generator).float()  # many ties
    targets = torch.randint(0, 15, (12,), generator=generator)
    rows = torch.randint(0, 12, (40,), generator=generator)
    tails = torch.randint(0, 15, (40,), generator=generator)
    # Add repeated pairs, and pairs that name the target.
    rows, tails = torch.cat([rows, rows[:5], torch.arange(4)]), torch.cat([tails, tails[:5], targets[:4]])
    known = set(zip(rows.tolist(), tails.tolist()))
    optimistic, pessimistic = rank_bounds(scores, targets, rows, tails)
    expected_optimistic, expected_pessimistic = brute_force_ranks(scores, targets, known)
    assert optimistic.tolist() == expected_optimistic
    assert pessimistic.tolist() == expected_pessimistic
    expected = [(o + p) / 2 for o, p in zip(expected_optimistic, expected_pessimistic)]
    assert realistic_ranks(scores, targets, rows, tails).tolist() == expected
    assert any(o != p for o, p in zip(expected_optimistic, expected_pessimistic))  # the case has ties


def build_model(modalities=("structure", "visual", "text"), fusion="learned-per-relation", n=25, r=3) -> IMF:
    """A random model whose batch norms and fusion weights are not at their initial values."""
    model = IMF(n, r, dim=6, modalities=modalities, feature_dims={"visual": 5, "text": 4}, fusion=fusion)
    for modality, width in (("visual", 5), ("text", 4)):
        if modality in modalities:
            model.set_features(modality, torch.randn(n, width), torch.rand(n) > 0.2)
    with torch.no_grad():
        for scorer in model.scorers.values():
            for bn in (scorer.bn0, scorer.bn1):
                bn.running_mean.normal_()
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.normal_()
                bn.bias.normal_()
        if fusion != "mean":
            model.decision.logits.normal_()
    return model


def random_triples(n, r, count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.stack(
        [
            torch.randint(0, n, (count,), generator=generator),
            torch.randint(0, r, (count,), generator=generator),
            torch.randint(0, n, (count,), generator=generator),
        ],
        dim=1,
    )


@pytest.mark.parametrize("fusion", ["learned", "learned-per-relation", "mean"])
def test_frozen_scorer_equals_the_model_in_eval_mode_and_keeps_its_mode(fusion):
    model = build_model(fusion=fusion).train()
    scorer = FrozenScorer(model, cache_relations=True)
    assert model.training
    heads, relations = torch.randint(0, 25, (30,)), torch.randint(0, 6, (30,))
    got = scorer.score(heads, relations)
    expected = model.eval()(heads, relations)
    for name in model.branch_names:
        torch.testing.assert_close(got.branches[name], expected.branches[name], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.fused, expected.fused, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.weights, expected.weights.expand_as(got.weights))
    assert "6 relations" in repr(scorer)  # every relation id was asked for, and each is cached once


def test_rank_queries_equal_brute_force_for_every_branch_and_both_fusions():
    n, r = 25, 3
    model = build_model().eval()
    test, known = random_triples(n, r, 20, seed=1), random_triples(n, r, 60, seed=2)
    index = build_filter([test, known], num_entities=n, num_relations=r)
    result = rank_queries(FrozenScorer(model), test, index, chunk_size=7)
    assert set(result.names) == {"structure", "visual", "text", "multimodal", FUSED, MEAN_FUSION}
    queries = with_inverses(test, r)
    everything = with_inverses(torch.cat([test, known]), r).tolist()
    scores = model(queries[:, 0], queries[:, 1])
    matrices = {**scores.branches, FUSED: scores.fused, MEAN_FUSION: mean_probability(scores.branches.values())}
    known_pairs = {
        (b, t) for b, (h, rel, _) in enumerate(queries.tolist()) for (h2, r2, t) in everything if (h2, r2) == (h, rel)
    }
    for name, matrix in matrices.items():
        optimistic, pessimistic = brute_force_ranks(matrix, queries[:, 2], known_pairs)
        assert result.optimistic[name].tolist() == optimistic, name
        assert result.pessimistic[name].tolist() == pessimistic, name
    assert result.relations.tolist() == queries[:, 1].tolist()


def test_chunk_size_does_not_change_the_ranks():
    model = build_model(("structure", "text"), fusion="learned")
    test = random_triples(25, 3, 30, seed=3)
    index = build_filter([test], num_entities=25, num_relations=3)
    reference = rank_queries(FrozenScorer(model), test, index, chunk_size=1)
    for chunk in (4, 1000, None):
        again = rank_queries(FrozenScorer(model), test, index, chunk_size=chunk)
        for name in reference.names:
            assert torch.equal(again.optimistic[name], reference.optimistic[name])
            assert torch.equal(again.pessimistic[name], reference.pessimistic[name])


def test_metrics_report_splits_heads_tails_and_relations():
    # Two triples of relation 0 and one of relation 1 (R = 2): tail queries first, then head queries.
    relations = torch.tensor([0, 0, 1, 2, 2, 3])
    optimistic = torch.tensor([1, 2, 4, 1, 1, 10])
    pessimistic = torch.tensor([1, 4, 4, 1, 3, 20])
    result = RankResult({FUSED: optimistic, MEAN_FUSION: optimistic, "structure": pessimistic},
                        {FUSED: pessimistic, MEAN_FUSION: optimistic, "structure": pessimistic}, relations, 2, 8)
    report = metrics_report(result, per_relation=True)
    realistic = [1.0, 3.0, 4.0, 1.0, 2.0, 15.0]
    fused = report[FUSED]
    assert fused["mrr"] == pytest.approx(sum(1 / x for x in realistic) / 6)
    assert fused["mr"] == pytest.approx(sum(realistic) / 6)
    assert (fused["hits@1"], fused["hits@3"], fused["hits@10"]) == pytest.approx((2 / 6, 4 / 6, 5 / 6))
    assert fused["optimistic_mrr"] == pytest.approx((1 + 1 / 2 + 1 / 4 + 1 + 1 + 1 / 10) / 6)
    assert fused["pessimistic_mrr"] == pytest.approx((1 + 1 / 4 + 1 / 4 + 1 + 1 / 3 + 1 / 20) / 6)
    assert fused["tails"]["mr"] == pytest.approx(8 / 3) and fused["heads"]["mr"] == pytest.approx(18 / 3)
    assert set(report["branches"]) == {"structure"}
    assert report[MEAN_FUSION]["mrr"] == pytest.approx(fused["optimistic_mrr"])
    per = report["per_relation"]
    assert sorted(per) == [0, 1] and (per[0]["triples"], per[1]["triples"]) == (2, 1)
    assert per[1][FUSED]["tails"]["mr"] == 4.0 and per[1][FUSED]["heads"]["mr"] == 15.0
    assert per[0][FUSED]["mr"] == pytest.approx((1 + 3 + 1 + 2) / 4)
    assert per[0]["branches"]["structure"]["mr"] == pytest.approx((1 + 4 + 1 + 3) / 4)
    assert metrics_report(result)["per_relation"] is None


def test_relation_categories_follow_answers_per_query():
    triples = torch.tensor([
        [0, 0, 1], [2, 0, 3],             # relation 0: 1-1
        [0, 1, 1], [0, 1, 2], [0, 1, 3],  # relation 1: one head, three tails: 1-N
        [1, 2, 0], [2, 2, 0], [3, 2, 0],  # relation 2: N-1
        [0, 3, 1], [0, 3, 2], [1, 3, 1], [1, 3, 2],  # relation 3: N-N
        [0, 4, 1], [0, 4, 2], [1, 4, 3],  # relation 4: 1.5 tails per head, not above the threshold: 1-1
    ])
    categories = relation_categories(triples, 6)
    # Relation 5 has no training triple: its vectors were never trained, and no category applies.
    assert [CATEGORIES[c] for c in categories.tolist()] == ["1-1", "1-N", "N-1", "N-N", "1-1", "unseen"]
    assert [CATEGORIES[c] for c in relation_categories(torch.zeros(0, 3, dtype=torch.long), 2)] == ["unseen"] * 2


def test_metrics_report_per_category():
    relations = torch.tensor([0, 0, 1, 2, 2, 3])  # R = 2: relation 0 twice, relation 1 once
    optimistic = torch.tensor([1, 2, 4, 1, 1, 10])
    pessimistic = torch.tensor([1, 4, 4, 1, 3, 20])
    result = RankResult({FUSED: optimistic, MEAN_FUSION: optimistic, "structure": pessimistic},
                        {FUSED: pessimistic, MEAN_FUSION: optimistic, "structure": pessimistic}, relations, 2, 8)
    report = metrics_report(result, categories=torch.tensor([1, 3]))
    per = report["per_category"]
    assert sorted(per) == ["1-N", "N-N"]
    assert (per["1-N"]["relations"], per["1-N"]["triples"], per["N-N"]["triples"]) == (1, 2, 1)
    assert per["N-N"][FUSED]["tails"]["mr"] == 4.0 and per["N-N"][FUSED]["heads"]["mr"] == 15.0
    assert per["1-N"][FUSED]["mr"] == pytest.approx((1 + 3 + 1 + 2) / 4)
    assert "per_category" not in metrics_report(result)
    with pytest.raises(ValueError, match="shape"):
        metrics_report(result, categories=torch.tensor([0]))


def test_evaluate_reports_every_branch_and_both_directions():
    n, r = 10, 2
    model = IMF(n, r, dim=4, modalities=("structure",))
    with torch.no_grad():
        model.scorers["structure"].core.zero_()  # every candidate gets the same score
    triples = torch.tensor([[0, 0, 1], [2, 1, 3]])
    known = torch.tensor([[0, 0, 5], [0, 0, 6], [4, 1, 3]])
    filter_index = build_filter([triples, known], num_entities=n, num_relations=r)
    ranks = evaluate_ranks(model, triples, filter_index, batch_size=1, num_relations=r)
    assert set(ranks) == {"structure", FUSED, MEAN_FUSION}
    # Tail queries: (0,0,?) has 2 other known tails -> (1+8)/2; (2,1,?) has none -> (1+10)/2.
    # Head queries: (1,2,?) none -> 5.5; (3,3,?) one other known head (4) -> 5.
    assert ranks["fused"].tolist() == [4.5, 5.5, 5.5, 5.0]
    metrics = evaluate(model, triples, filter_index, batch_size=3, num_relations=r)
    assert set(metrics) == {"structure", FUSED}  # what training reads
    assert metrics["structure"]["mr"] == pytest.approx(5.125)
    assert model.training  # the mode is restored


def test_chunk_size_follows_free_memory(monkeypatch):
    monkeypatch.setattr(evaluation, "free_memory_bytes", lambda device: 400_000_000)
    # 1M entities, 6 score matrices: 1e6 * (4 * 7 + 2) bytes per query; a quarter of 400 MB fits 3.
    assert auto_chunk_size(1_000_000, 6, "cpu") == 3
    assert auto_chunk_size(100, 6, "cpu") == evaluation.MAX_CHUNK["cpu"]
    monkeypatch.setattr(evaluation, "free_memory_bytes", lambda device: 64 << 30)
    assert auto_chunk_size(14_541, 3, "cpu") == (16 << 20) // (4 * 14_541)  # a score matrix stays within 16 MiB
    monkeypatch.setattr(evaluation, "free_memory_bytes", lambda device: 0)
    assert auto_chunk_size(100, 6, "cpu") == 1


def test_free_memory_is_read_from_the_system():
    assert evaluation.free_memory_bytes("cpu") > 0


def test_a_million_entities_evaluate_in_small_chunks(monkeypatch):
    monkeypatch.setattr(evaluation, "free_memory_bytes", lambda device: 200_000_000)
    n = 1_000_000
    model = IMF(n, 2, dim=2, modalities=("structure",))
    test = torch.tensor([[0, 0, 1], [5, 1, 999_999], [7, 0, 3]])
    train = torch.tensor([[0, 0, 2], [0, 0, 3]])
    result = rank_queries(FrozenScorer(model), test, build_filter([train, test], num_entities=n, num_relations=2))
    # Three score matrices (structure, fused, mean fusion): 1e6 * (4 * 4 + 2) bytes per query; 50 MB hold 2.
    assert result.chunk_size == 2
    assert all(1 <= rank <= n for rank in result.realistic(FUSED).tolist())


def test_our_metrics_equal_pykeens_rank_based_evaluator():
    pytest.importorskip("pykeen")
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.evaluation.evaluator import create_sparse_positive_filter_, filter_scores_

    n, r = 30, 3
    generator = torch.Generator().manual_seed(4)
    test = random_triples(n, r, 25, seed=5)
    known = torch.cat([test, random_triples(n, r, 120, seed=6)])
    # Hand-made scores with many ties: a tail-query row and a head-query row per test triple.
    tail_scores = torch.randint(0, 5, (25, n), generator=generator).float()
    head_scores = torch.randint(0, 5, (25, n), generator=generator).float()

    evaluator = RankBasedEvaluator(filtered=True)
    for target, column, scores in (("tail", 2, tail_scores), ("head", 0, head_scores)):
        positives, _ = create_sparse_positive_filter_(hrt_batch=test, all_pos_triples=known, filter_col=column)
        true_scores = scores[torch.arange(25), test[:, column]]
        filtered = filter_scores_(scores=scores.clone(), filter_batch=positives)
        filtered[torch.arange(25), test[:, column]] = true_scores
        evaluator.process_scores_(hrt_batch=test, target=target, scores=filtered, true_scores=true_scores[:, None])
    theirs = evaluator.finalize()

    index = build_filter([known], num_entities=n, num_relations=r)
    queries = with_inverses(test, r)
    rows, tails = index.lookup(queries[:, 0], queries[:, 1])
    optimistic, pessimistic = rank_bounds(torch.cat([tail_scores, head_scores]), queries[:, 2], rows, tails)
    result = RankResult({FUSED: optimistic, MEAN_FUSION: optimistic}, {FUSED: pessimistic, MEAN_FUSION: pessimistic},
                        queries[:, 1], r, 50)
    ours = metrics_report(result)[FUSED]
    for side, values in (("both", ours), ("head", ours["heads"]), ("tail", ours["tails"])):
        assert values["mrr"] == pytest.approx(theirs.get_metric(f"{side}.realistic.inverse_harmonic_mean_rank"))
        assert values["mr"] == pytest.approx(theirs.get_metric(f"{side}.realistic.arithmetic_mean_rank"))
        for k in (1, 3, 10):
            assert values[f"hits@{k}"] == pytest.approx(theirs.get_metric(f"{side}.realistic.hits_at_{k}"))
        for kind in ("optimistic", "pessimistic"):
            expected = theirs.get_metric(f"{side}.{kind}.inverse_harmonic_mean_rank")
            assert values[f"{kind}_mrr"] == pytest.approx(expected)
    assert ours["optimistic_mrr"] > ours["mrr"] > ours["pessimistic_mrr"]  # the ties matter here


@pytest.mark.parametrize("batch", [1, 7, 40])
def test_entities_with_equal_vectors_get_equal_scores_and_tie_in_the_ranks(batch):
    # Entities without visual features share one vector in the visual branch. A plain matmul may round
    # equal rows apart (it did at 7 × 16 × 25); the frozen scorer must score them bit-equal, so that
    # ranking sees ties and the realistic rank is the middle of the tied block.
    torch.manual_seed(0)
    n, r = 25, 3
    model = IMF(n, r, dim=16, modalities=("structure", "visual"), feature_dims={"visual": 5}).eval()
    missing = torch.zeros(n, dtype=torch.bool)
    missing[[0, 3, 8, 9, 14, 20, 24]] = True
    model.set_features("visual", torch.randn(n, 5), ~missing)
    scorer = FrozenScorer(model)
    heads, relations = torch.randint(0, n, (batch,)), torch.randint(0, 2 * r, (batch,))
    visual = scorer.score(heads, relations).branches["visual"]
    assert torch.equal(scorer.entities["visual"][missing], scorer.entities["visual"][0].expand(7, -1))
    tied = visual[:, missing]
    assert torch.equal(tied, tied[:, :1].expand_as(tied))
    assert len(set(visual[:, ~missing][0].tolist())) == int((~missing).sum())  # the others stay distinct
    test = torch.stack([heads[:1], relations[:1] % r, torch.tensor([3])], dim=1)
    result = rank_queries(scorer, test, build_filter([test], num_entities=n, num_relations=r), chunk_size=None)
    assert int(result.pessimistic["visual"][0] - result.optimistic["visual"][0]) == 6  # 7 tied, the answer among them
