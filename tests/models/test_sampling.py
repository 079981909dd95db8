"""Relation-bucketed batches: every training query once per epoch, few relations per batch."""

from __future__ import annotations

import pytest
import torch

from models.sampling import epoch_batches, epoch_order


@pytest.mark.parametrize("relations_per_batch", [0, 1, 3, 8])
@pytest.mark.parametrize("batch_size", [2, 16, 128])
def test_every_query_is_seen_exactly_once_per_epoch(relations_per_batch, batch_size):
    relations = torch.randint(0, 37, (1000,), generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    for _ in range(3):  # consecutive epochs
        batches = epoch_batches(
            relations, batch_size=batch_size, relations_per_batch=relations_per_batch, generator=generator
        )
        seen = torch.cat(batches)
        assert torch.equal(seen.sort().values, torch.arange(1000))
        assert all(len(b) == batch_size for b in batches[:-1]) and 0 < len(batches[-1]) <= batch_size


def test_bucketed_batches_draw_on_few_relations_and_still_shuffle():
    relations = torch.randint(0, 200, (20_000,), generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    uniform = epoch_batches(relations, batch_size=128, relations_per_batch=0, generator=generator)
    bucketed = epoch_batches(relations, batch_size=128, relations_per_batch=8, generator=generator)

    def mean_distinct(batches):
        return sum(len(torch.unique(relations[b])) for b in batches) / len(batches)

    assert mean_distinct(uniform) > 90
    assert mean_distinct(bucketed) < 10
    # The relations still come in a random order: the first batches are not the lowest relation ids.
    firsts = [int(relations[b[0]]) for b in bucketed[:20]]
    assert len(set(firsts)) > 10 and firsts != sorted(firsts)


def test_the_order_depends_only_on_the_generator():
    relations = torch.randint(0, 9, (300,), generator=torch.Generator().manual_seed(1))
    first = epoch_order(relations, batch_size=32, relations_per_batch=4, generator=torch.Generator().manual_seed(7))
    second = epoch_order(relations, batch_size=32, relations_per_batch=4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)
    plain = epoch_order(relations, batch_size=32, relations_per_batch=0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(plain, torch.randperm(300, generator=torch.Generator().manual_seed(7)))
