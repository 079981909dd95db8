"""Which triples of a split are leaks: also in a split before it.

A valid triple that is also in train, or a test triple also in train or valid, is a fact the model
trained (or was selected) on; ranked, it flatters the metrics. ``imf import`` counts them, ``imf eval
--drop-overlap`` ranks without them, and ``eval.valid_drop_overlap`` selects without them in training.

This module imports numpy only (``imf import`` uses it without torch).
"""

from __future__ import annotations

import numpy as np

#: The splits before each one.
EARLIER_SPLITS = {"valid": ("train",), "test": ("train", "valid")}


def also_in(triples: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """``(n,)`` bool: which rows of ``triples`` ``(n, 3)`` occur in any of ``others`` (each ``(m, 3)``).

    Takes numpy arrays or CPU tensors (anything ``np.asarray`` reads).
    """
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    pool = np.concatenate([np.asarray(o, dtype=np.int64).reshape(-1, 3) for o in others] or [np.zeros((0, 3), np.int64)])
    every = np.concatenate([triples, pool])
    sizes = every.max(axis=0) + 1 if len(every) else np.ones(3, dtype=np.int64)

    def codes(rows: np.ndarray) -> np.ndarray:  # one int per (head, relation, tail)
        return (rows[:, 0] * sizes[1] + rows[:, 1]) * sizes[2] + rows[:, 2]

    return np.isin(codes(triples), codes(pool))
