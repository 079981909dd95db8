"""Known tails per ``(head, relation)``, as a CSR structure of sorted keys and offsets.

Training uses one over the training triples to build 1-N targets. Evaluation uses one over the known
triples as its filter. Every lookup runs on the index's device with ``searchsorted``, with no Python loop
over queries.
"""

from __future__ import annotations

import torch
from torch import Tensor


def with_inverses(triples: Tensor, num_relations: int) -> Tensor:
    """``triples`` ``(n, 3)`` followed by their inverses ``(t, r + R, h)``: ``(2n, 3)``."""
    inverse = torch.stack([triples[:, 2], triples[:, 1] + num_relations, triples[:, 0]], dim=1)
    return torch.cat([triples, inverse])


class TailIndex:
    """The set of known tails of each ``(head, relation)`` pair.

    The key of a pair is ``head * num_relations + relation``. ``keys`` ``(G,)`` holds the distinct keys
    in sorted order. The tails of ``keys[g]`` are ``tails[offsets[g]:offsets[g + 1]]``, sorted.

    Args:
        keys: ``(G,)`` sorted distinct pair keys.
        offsets: ``(G + 1,)`` start of each pair's tails in ``tails``.
        tails: ``(T,)`` tail ids.
        num_entities: ``N``.
        num_relations: The number of relation ids (``2R`` when inverses are included).
    """

    def __init__(self, keys: Tensor, offsets: Tensor, tails: Tensor, *, num_entities: int, num_relations: int):
        self.keys = keys
        self.offsets = offsets
        self.tails = tails
        self.num_entities = num_entities
        self.num_relations = num_relations

    @classmethod
    def from_triples(cls, triples: Tensor, *, num_entities: int, num_relations: int) -> TailIndex:
        """Index ``triples`` ``(n, 3)``; duplicates are merged. ``num_relations`` counts every relation id used."""
        triples = triples.long()
        pair = triples[:, 0] * num_relations + triples[:, 1]
        combined = torch.unique(pair * num_entities + triples[:, 2])  # sorted by pair, then tail
        pairs, tails = combined // num_entities, combined % num_entities
        keys, counts = torch.unique_consecutive(pairs, return_counts=True)
        offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return cls(keys, offsets, tails, num_entities=num_entities, num_relations=num_relations)

    def to(self, device: torch.device | str) -> TailIndex:
        return TailIndex(
            self.keys.to(device),
            self.offsets.to(device),
            self.tails.to(device),
            num_entities=self.num_entities,
            num_relations=self.num_relations,
        )

    def __len__(self) -> int:
        """The number of distinct ``(head, relation)`` pairs."""
        return self.keys.numel()

    def pairs(self) -> tuple[Tensor, Tensor]:
        """Heads ``(G,)`` and relations ``(G,)`` of every indexed pair, in key order."""
        return self.keys // self.num_relations, self.keys % self.num_relations

    def tail_counts(self) -> Tensor:
        """How many known tails each indexed pair has, ``(G,)``, in the order of :meth:`pairs`."""
        return self.offsets[1:] - self.offsets[:-1]

    def lookup(self, heads: Tensor, relations: Tensor) -> tuple[Tensor, Tensor]:
        """Every known tail of each query, flattened.

        Args:
            heads: ``(B,)``.
            relations: ``(B,)``.

        Returns:
            ``rows`` ``(M,)`` (the query) and ``tails`` ``(M,)``, such that the known tails of query ``b``
            are ``tails[rows == b]``.
        """
        query = heads.long() * self.num_relations + relations.long()
        if len(self) == 0:
            return query.new_empty(0), query.new_empty(0)
        position = torch.searchsorted(self.keys, query).clamp_(max=len(self) - 1)
        found = self.keys[position] == query
        starts = self.offsets[position]
        counts = torch.where(found, self.offsets[position + 1] - starts, torch.zeros_like(starts))
        rows = torch.repeat_interleave(torch.arange(query.numel(), device=query.device), counts)
        first_of_row = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        within = torch.arange(rows.numel(), device=query.device) - first_of_row
        return rows, self.tails[torch.repeat_interleave(starts, counts) + within]

    def multi_hot(self, heads: Tensor, relations: Tensor) -> Tensor:
        """``(B, N)`` float targets: 1 at every known tail of each query."""
        rows, tails = self.lookup(heads, relations)
        targets = torch.zeros(heads.numel(), self.num_entities, device=heads.device)
        targets[rows, tails] = 1.0
        return targets

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({len(self)} pairs, {self.tails.numel()} tails, "
            f"num_entities={self.num_entities}, num_relations={self.num_relations})"
        )
