"""How well one relation, or a chain of two, predicts another in the training graph: rule confidences.

Edges run both ways: relation ``r`` in ``[0, R)`` is read forwards and ``r + R`` is its inverse, so
``(t, r + R, h)`` is the edge ``(h, r, t)`` read backwards. Two kinds of rule are counted, as rule
miners (AMIE) do:

one hop, ``r1(h, t) ⇒ R(h, t)``
    ``support`` is the number of pairs ``(h, t)`` linked by both ``r1`` and ``R``; ``confidence`` is
    support over the number of pairs linked by ``r1``.
two hops, ``r1(h, x) ∧ r2(x, t) ⇒ R(h, t)``
    ``support`` is the number of paths ``h –r1→ x –r2→ t`` (``h ≠ t``) whose ends are an ``R`` fact;
    ``confidence`` is support over the number of such paths in the whole graph (with multiplicity,
    as the path counts come from degree products).

:meth:`RelationPairIndex.build` computes every non-zero rule once, with numpy. The path counts are
``Cᵀ·C`` for the ``(N, 2R)`` matrix ``C`` of per-relation out-degrees, less the paths that return to
their start; the supports enumerate, for each fact, the neighbours of its lower-degree end and look
them up among the other end's edges. On FB15k-237 this takes a few seconds, so the index is cached in
the dataset directory (:func:`cached_index`), tagged with the store's content hash, and lookups at
explain time never touch the graph. Self-loops are left out of the paths.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.atomic import never_short, write_atomically

if TYPE_CHECKING:
    from kgdata.store import EntityStore

VERSION = 1
CACHE_DIR = "cache"
#: Facts whose neighbourhoods are joined at once while counting supports (bounds memory).
CHUNK_EDGES = 4_000_000


def join_sorted(left: np.ndarray, right_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ``(i, j)`` with ``left[i] == right_sorted[j]``; ``right_sorted`` is sorted."""
    lo = np.searchsorted(right_sorted, left, side="left")
    hi = np.searchsorted(right_sorted, left, side="right")
    counts = hi - lo
    i = np.repeat(np.arange(len(left)), counts)
    starts = np.repeat(lo, counts)
    within = np.arange(len(i)) - np.repeat(np.cumsum(counts) - counts, counts)
    return i, starts + within


@dataclass(frozen=True)
class Edges:
    """The training edges in both directions, sorted by ``(source, target)``; relation ids in ``[0, 2R)``."""

    sources: np.ndarray
    relations: np.ndarray
    targets: np.ndarray
    offsets: np.ndarray  # (N + 1,) CSR offsets by source
    num_entities: int
    num_relations: int  # R, without inverses

    @classmethod
    def from_triples(cls, triples: np.ndarray, num_entities: int, num_relations: int) -> Edges:
        """Edges of ``triples`` ``(n, 3)`` and their inverses; duplicates merged, self-loops dropped."""
        triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        h, r, t = triples.T
        sources = np.concatenate([h, t])
        relations = np.concatenate([r, r + num_relations])
        targets = np.concatenate([t, h])
        keep = sources != targets
        sources, relations, targets = sources[keep], relations[keep], targets[keep]
        key = np.unique((sources * num_entities + targets) * (2 * num_relations) + relations)
        pair, relations = np.divmod(key, 2 * num_relations)
        sources, targets = np.divmod(pair, num_entities)
        offsets = np.concatenate([[0], np.cumsum(np.bincount(sources, minlength=num_entities))])
        return cls(sources, relations, targets, offsets, num_entities, num_relations)

    @property
    def pair_keys(self) -> np.ndarray:
        """``source · N + target`` of each edge, sorted."""
        return self.sources * self.num_entities + self.targets

    def out(self, entity: int) -> tuple[np.ndarray, np.ndarray]:
        """Relations and targets of the edges leaving ``entity``."""
        start, end = self.offsets[entity], self.offsets[entity + 1]
        return self.relations[start:end], self.targets[start:end]

    def inverse(self, relations: np.ndarray) -> np.ndarray:
        return (relations + self.num_relations) % (2 * self.num_relations)


@dataclass(frozen=True)
class RelationPairIndex:
    """Rule supports and confidences for every head relation ``R`` in ``[0, R)`` (see the module docstring).

    Attributes:
        num_relations: ``R``.
        hop_support, hop_confidence: ``(2R, R)``: the one-hop rule ``r1 ⇒ R``.
        pair_keys: ``(K,)`` sorted ``(r1 · 2R + r2) · R + R_head`` of every two-hop rule with support.
        pair_support: ``(K,)`` paths.
        pair_confidence: ``(K,)`` in ``[0, 1]``.
        content_hash: The store content hash the index was built from ("" when built from triples).
    """

    num_relations: int
    hop_support: np.ndarray
    hop_confidence: np.ndarray
    pair_keys: np.ndarray
    pair_support: np.ndarray
    pair_confidence: np.ndarray
    content_hash: str = ""

    # ------------------------------------------------------------------------------------------ build
    @classmethod
    def build(cls, edges: Edges, *, content_hash: str = "") -> RelationPairIndex:
        """Count every rule of the training graph ``edges``."""
        n, r = edges.num_entities, edges.num_relations
        ids = 2 * r
        forward = edges.relations < r
        # One hop: pairs (h, t) linked by r1 and by the forward relation R.
        pair_keys = edges.pair_keys
        facts = np.flatnonzero(forward)
        i, j = join_sorted(pair_keys[facts], pair_keys)
        heads, bodies = edges.relations[facts[i]], edges.relations[j]
        hop_support = np.zeros((ids, r), dtype=np.int64)
        np.add.at(hop_support, (bodies, heads), 1)
        body_counts = np.bincount(edges.relations, minlength=ids)
        hop_confidence = hop_support / np.maximum(body_counts, 1)[:, None]

        # Two hops: paths per relation pair from out-degree products, less those that come back.
        degrees = np.zeros((n, ids), dtype=np.float64)
        np.add.at(degrees, (edges.sources, edges.relations), 1.0)
        paths = degrees.T @ degrees  # [r, r2] = Σ_x C[x, r] C[x, r2]; r1 = inverse(r) reaches x
        paths = paths[edges.inverse(np.arange(ids))]
        back_i, back_j = join_sorted(edges.targets * n + edges.sources, pair_keys)  # (h, r1, x) and (x, r2, h)
        returning = np.zeros((ids, ids), dtype=np.float64)
        np.add.at(returning, (edges.relations[back_i], edges.relations[back_j]), 1.0)
        paths -= returning

        keys, support = cls._path_supports(edges, facts)
        first, rest = np.divmod(keys, ids * r)
        second = rest // r
        confidence = support / np.maximum(paths[first, second], 1.0)
        return cls(r, hop_support, hop_confidence.astype(np.float32), keys, support,
                   np.minimum(confidence, 1.0).astype(np.float32), content_hash)

    @staticmethod
    def _path_supports(edges: Edges, facts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sorted rule keys and their path counts, over the forward ``facts`` (edge indices)."""
        n, r = edges.num_entities, edges.num_relations
        ids = 2 * r
        degree = np.diff(edges.offsets)
        heads, tails = edges.sources[facts], edges.targets[facts]
        head_relations = edges.relations[facts]
        # Walk from the end with fewer edges; look each neighbour up among the other end's edges.
        from_head = degree[heads] <= degree[tails]
        near = np.where(from_head, heads, tails)
        far = np.where(from_head, tails, heads)
        pair_keys = edges.pair_keys
        sizes = degree[near]
        cumulative = np.cumsum(sizes)
        cuts = np.searchsorted(cumulative, np.arange(CHUNK_EDGES, cumulative[-1] if len(facts) else 0, CHUNK_EDGES))
        found_keys, found_counts = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for chunk in np.split(np.arange(len(facts)), cuts):
            counts = sizes[chunk]
            if not counts.sum():
                continue
            fact = np.repeat(chunk, counts)
            first = np.repeat(edges.offsets[near[chunk]], counts)
            edge = first + np.arange(len(fact)) - np.repeat(np.cumsum(counts) - counts, counts)
            middle = edges.targets[edge]
            keep = middle != far[fact]
            fact, edge, middle = fact[keep], edge[keep], middle[keep]
            a, b = join_sorted(far[fact] * n + middle, pair_keys)  # the far end's edges to the same neighbour
            fact, near_relation, far_relation = fact[a], edges.relations[edge[a]], edges.relations[b]
            # near –near_relation→ x ←far_relation– far, read as a path from the head to the tail:
            forwards = from_head[fact]
            r1 = np.where(forwards, near_relation, far_relation)
            r2 = edges.inverse(np.where(forwards, far_relation, near_relation))
            unique, count = np.unique((r1 * ids + r2) * r + head_relations[fact], return_counts=True)
            found_keys.append(unique)
            found_counts.append(count)
        keys, inverse = np.unique(np.concatenate(found_keys), return_inverse=True)
        return keys, np.bincount(inverse, weights=np.concatenate(found_counts), minlength=len(keys)).astype(np.int64)

    # ----------------------------------------------------------------------------------------- lookup
    def pair(self, first: np.ndarray, second: np.ndarray, head: int) -> tuple[np.ndarray, np.ndarray]:
        """Confidence and support of the rules ``first ∧ second ⇒ head`` (arrays of relation ids in ``[0, 2R)``)."""
        ids = 2 * self.num_relations
        key = (np.asarray(first, dtype=np.int64) * ids + np.asarray(second, dtype=np.int64)) * self.num_relations + head
        if not len(self.pair_keys):
            return np.zeros(key.shape, np.float32), np.zeros(key.shape, np.int64)
        position = np.clip(np.searchsorted(self.pair_keys, key), 0, len(self.pair_keys) - 1)
        found = self.pair_keys[position] == key
        return (np.where(found, self.pair_confidence[position], 0.0).astype(np.float32),
                np.where(found, self.pair_support[position], 0))

    def hop(self, body: np.ndarray, head: int) -> tuple[np.ndarray, np.ndarray]:
        """Confidence and support of the one-hop rules ``body ⇒ head``."""
        body = np.asarray(body, dtype=np.int64)
        return self.hop_confidence[body, head], self.hop_support[body, head]

    # ---------------------------------------------------------------------------------------- storage
    def save(self, path: str | Path) -> None:
        """Write the index to ``path`` (``.npz``) atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")  # np.savez adds .npz to other names

        def write(to: Path) -> None:
            np.savez(
                to, version=VERSION, num_relations=self.num_relations, content_hash=self.content_hash,
                hop_support=self.hop_support, hop_confidence=self.hop_confidence, pair_keys=self.pair_keys,
                pair_support=self.pair_support, pair_confidence=self.pair_confidence,
            )

        write_atomically(path, temporary, write, what="the rule index", short_write=never_short)

    @classmethod
    def load(cls, path: str | Path) -> RelationPairIndex | None:
        """The index saved at ``path``, or None when it is absent, unreadable or of another version."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["version"]) != VERSION:
                    return None
                return cls(
                    int(data["num_relations"]), data["hop_support"], data["hop_confidence"], data["pair_keys"],
                    data["pair_support"], data["pair_confidence"], str(data["content_hash"]),
                )
        except (OSError, ValueError, KeyError, EOFError):
            return None

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.num_relations} relations, {len(self.pair_keys)} two-hop rules)"


def cache_path(store: "EntityStore") -> Path:
    """Where :func:`cached_index` keeps the index of ``store``'s training graph."""
    digest = hashlib.sha256(store.content_hash.encode()).hexdigest()[:16]
    return store.dataset_dir / CACHE_DIR / f"relation-pairs-{digest}.npz"


def cached_index(store: "EntityStore", edges: Edges | None = None) -> RelationPairIndex:
    """The rule index of ``store``'s training graph: read from the dataset's cache, else built and cached.

    The cache is keyed by the store's content hash, which adding entities leaves alone; a cache that
    cannot be written (a read-only dataset directory) is skipped.
    """
    path = cache_path(store)
    index = RelationPairIndex.load(path)
    if index is not None and index.content_hash == store.content_hash and index.num_relations == store.num_relations:
        return index
    if edges is None:
        edges = Edges.from_triples(store.triples("train"), store.num_graph_entities, store.num_relations)
    index = RelationPairIndex.build(edges, content_hash=store.content_hash)
    try:
        index.save(path)
    except OSError:
        pass
    return index

