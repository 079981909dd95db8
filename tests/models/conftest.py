"""Fixtures for the models tests: single-threaded torch, and tiny synthetic KGs built in memory."""

from __future__ import annotations

import pytest
import torch

from models.training import KGTensors


@pytest.fixture(autouse=True)
def single_thread():
    """Single-threaded, seeded torch: fast on a small CI machine, and deterministic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def make_kg(clusters: int = 4, size: int = 8, *, missing: float = 0.2, seed: int = 0) -> KGTensors:
    """A KG of ``clusters × size`` entities whose held-out triples can be inferred.

    Relation 0 links every member of a cluster to every other member. Relation 1 links each member to
    its cluster's hub (the first member). Relation 2 links it to the next cluster's hub. Every tenth
    triple goes to valid and every tenth to test. The visual features are the cluster's centre plus
    noise, with about ``missing`` of them masked out. The text features are random per entity.
    """
    generator = torch.Generator().manual_seed(seed)
    n = clusters * size
    rows = []
    for cluster in range(clusters):
        members = range(cluster * size, (cluster + 1) * size)
        for i in members:
            rows += [(i, 0, j) for j in members if j != i]
            rows.append((i, 1, cluster * size))
            rows.append((i, 2, (cluster + 1) % clusters * size))
    triples = torch.tensor(rows)[torch.randperm(len(rows), generator=generator)]
    split = torch.arange(len(triples)) % 10
    centres = torch.randn(clusters, 12, generator=generator).repeat_interleave(size, dim=0)
    visual = centres + 0.3 * torch.randn(n, 12, generator=generator)
    features = {
        "visual": (visual, torch.rand(n, generator=generator) >= missing),
        "text": (torch.randn(n, 8, generator=generator), torch.ones(n, dtype=torch.bool)),
    }
    return KGTensors(
        num_entities=n,
        num_relations=3,
        train=triples[split < 8],
        valid=triples[split == 8],
        test=triples[split == 9],
        features=features,
    )


@pytest.fixture
def kg() -> KGTensors:
    return make_kg()


@pytest.fixture
def kg_factory():
    """``make_kg`` itself, for tests that need a KG of another shape."""
    return make_kg
