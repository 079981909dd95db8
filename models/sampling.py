"""The order in which an epoch visits the training queries, and the batches it cuts them into.

A training query is a distinct ``(head, relation)`` pair of the training graph, inverses included.
Every epoch visits every query exactly once.

With ``relations_per_batch = 0`` the queries are shuffled uniformly and cut into batches. With ``K > 0``
(relation-bucketed batches) each relation's queries are shuffled and cut into *pieces* of at most
``batch_size // K`` queries; the pieces are shuffled, laid end to end and cut into batches of
``batch_size``. A batch then draws on about ``K`` relations (``K + 1`` where a cut falls inside a
piece, more where a relation's last piece is short), so it builds that many relation matrices
``W_r`` instead of one per distinct relation of a uniform batch. The relations still arrive in
random order and mix within each batch, so the batch norms see several relations at a time.
"""

from __future__ import annotations

import torch
from torch import Tensor


def epoch_order(
    relations: Tensor, *, batch_size: int, relations_per_batch: int, generator: torch.Generator
) -> Tensor:
    """A permutation ``(G,)`` of the query indices for one epoch (see the module docstring).

    Args:
        relations: ``(G,)`` the relation id of each query, on the CPU.
        batch_size: Queries per batch.
        relations_per_batch: ``K``; 0 for a uniform shuffle.
        generator: The CPU generator that shuffles, advanced by exactly two draws when ``K > 0``.
    """
    permutation = torch.randperm(relations.numel(), generator=generator)
    if relations_per_batch <= 0 or relations.numel() == 0:
        return permutation
    piece = max(1, batch_size // relations_per_batch)
    # Shuffled within each relation: a stable sort by relation keeps the random order inside each run.
    shuffled = permutation[torch.argsort(relations[permutation], stable=True)]
    run_relations, run_lengths = torch.unique_consecutive(relations[shuffled], return_counts=True)
    run_starts = torch.cumsum(run_lengths, 0) - run_lengths
    position = torch.arange(shuffled.numel()) - torch.repeat_interleave(run_starts, run_lengths)
    piece_within = position // piece
    run_of = torch.repeat_interleave(torch.arange(run_relations.numel()), run_lengths)
    # Pieces are numbered in order (runs are consecutive, pieces within a run are consecutive).
    _, piece_of = torch.unique_consecutive(run_of * (shuffled.numel() + 1) + piece_within, return_inverse=True)
    num_pieces = int(piece_of.max()) + 1
    rank = torch.empty(num_pieces, dtype=torch.long)
    rank[torch.randperm(num_pieces, generator=generator)] = torch.arange(num_pieces)
    return shuffled[torch.argsort(rank[piece_of], stable=True)]


def epoch_batches(
    relations: Tensor, *, batch_size: int, relations_per_batch: int, generator: torch.Generator
) -> list[Tensor]:
    """The batches of one epoch: :func:`epoch_order` cut into ``batch_size`` pieces (the last may be shorter)."""
    order = epoch_order(relations, batch_size=batch_size, relations_per_batch=relations_per_batch, generator=generator)
    return list(order.split(batch_size))
