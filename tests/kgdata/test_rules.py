"""The rule index: one- and two-hop confidences against brute-force counts, its cache, and its lookups."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from kgdata import rules
from kgdata.rules import Edges, RelationPairIndex, cache_path, cached_index

N, R = 12, 3


def random_triples(seed: int, count: int = 45) -> np.ndarray:
    rng = np.random.default_rng(seed)
    triples = np.stack([rng.integers(0, N, count), rng.integers(0, R, count), rng.integers(0, N, count)], axis=1)
    return np.concatenate([triples, triples[:3]])  # duplicates, and maybe self-loops, must not count twice


def brute_force(triples: np.ndarray) -> tuple[Counter, Counter, Counter, Counter]:
    """One-hop supports and bodies by (h, t) pairs; two-hop supports and path counts by walking every path."""
    edges = {(h, r, t) for h, r, t in triples.tolist() if h != t} | {
        (t, r + R, h) for h, r, t in triples.tolist() if h != t
    }
    facts = {(h, r, t) for h, r, t in edges if r < R}
    hop_support, hop_body = Counter(), Counter()
    for h, r1, t in edges:
        hop_body[r1] += 1
        for head in range(R):
            if (h, head, t) in facts:
                hop_support[r1, head] += 1
    pair_support, pair_paths = Counter(), Counter()
    for (h, r1, x), (x2, r2, t) in itertools.product(edges, edges):
        if x2 != x or h == t:
            continue
        pair_paths[r1, r2] += 1
        for head in range(R):
            if (h, head, t) in facts:
                pair_support[r1, r2, head] += 1
    return hop_support, hop_body, pair_support, pair_paths


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confidences_match_brute_force_counts(seed, monkeypatch):
    monkeypatch.setattr(rules, "CHUNK_EDGES", 7)  # many chunks: their sums must add up
    triples = random_triples(seed)
    index = RelationPairIndex.build(Edges.from_triples(triples, N, R))
    hop_support, hop_body, pair_support, pair_paths = brute_force(triples)
    for r1, head in itertools.product(range(2 * R), range(R)):
        confidence, support = index.hop(np.array([r1]), head)
        assert support[0] == hop_support[r1, head]
        assert confidence[0] == pytest.approx(hop_support[r1, head] / max(hop_body[r1], 1))
    assert len(index.pair_keys) == len(pair_support)
    for r1, r2, head in itertools.product(range(2 * R), range(2 * R), range(R)):
        confidence, support = index.pair(np.array([r1]), np.array([r2]), head)
        assert support[0] == pair_support[r1, r2, head]
        expected = pair_support[r1, r2, head] / pair_paths[r1, r2] if pair_paths[r1, r2] else 0.0
        assert confidence[0] == pytest.approx(expected, rel=1e-6)


def test_a_chain_rule_is_found_with_full_confidence():
    # grandparent(h, t) whenever parent(h, x) and parent(x, t): relation 1 is the composition of relation 0.
    parent, grandparent = 0, 1
    triples = [(0, parent, 1), (1, parent, 2), (0, grandparent, 2), (3, parent, 4), (4, parent, 5), (3, grandparent, 5)]
    index = RelationPairIndex.build(Edges.from_triples(np.array(triples), 6, 2))
    confidence, support = index.pair(np.array([parent]), np.array([parent]), grandparent)
    assert confidence.tolist() == [1.0] and support.tolist() == [2]
    # Read backwards, grandparent⁻¹(t, h) = parent⁻¹ ∘ parent⁻¹: the inverse ids are r + R.
    confidence, _ = index.pair(np.array([grandparent + 2]), np.array([parent]), parent)
    assert confidence.tolist() == [0.0]
    assert "2 relations" in repr(index)


def test_edges_are_deduplicated_and_indexed_by_source():
    edges = Edges.from_triples(np.array([(0, 0, 1), (0, 0, 1), (2, 1, 2), (1, 1, 2)]), 3, 2)
    assert len(edges.sources) == 4  # (0,0,1), (1,1,2) and their inverses; the self-loop is dropped
    relations, targets = edges.out(1)
    assert sorted(zip(relations.tolist(), targets.tolist())) == [(1, 2), (2, 0)]


def test_the_index_is_cached_per_content_hash(imf_home, tmp_path, monkeypatch):
    from helpers import TINY_TEST, TINY_TRAIN, TINY_VALID, write_tsv_dataset
    from kgdata.importing import import_dataset
    from kgdata.store import EntityStore

    import_dataset(write_tsv_dataset(tmp_path / "tiny", train=TINY_TRAIN, valid=TINY_VALID, test=TINY_TEST))
    with EntityStore.open("tiny") as store:
        built = cached_index(store)
        assert cache_path(store).is_file() and built.content_hash == store.content_hash
        calls = []
        original = RelationPairIndex.build
        monkeypatch.setattr(RelationPairIndex, "build", lambda *a, **k: calls.append(1) or original(*a, **k))
        again = cached_index(store)
        assert calls == [] and np.array_equal(again.pair_keys, built.pair_keys)
        cache_path(store).write_bytes(b"garbage")
        cached_index(store)
        assert calls == [1]  # an unreadable cache is rebuilt, never trusted
