"""Process-wide settings for imf's commands.

:func:`yield_idle_threads` and :func:`keep_freed_memory` are called once by the CLI before any
command runs. They need only the standard library, so they cost nothing to ``imf --help``.
"""

from __future__ import annotations

import ctypes
import os
import sys


def yield_idle_threads() -> None:
    """Make torch's OpenMP threads sleep, not spin, while they wait for work (``OMP_WAIT_POLICY=PASSIVE``).

    By default an idle OpenMP thread spins for a while before it sleeps. A training step runs many
    short parallel regions, so on a machine where another process also wants the cores the spinning
    threads take the CPU from the threads that have work: on the 2-core machine, with other jobs
    keeping the load average near 8, a DB15K step with 2 threads took 6.1 s spinning and 1.1 s
    passive (1.4 s with 1 thread). Must run before torch is imported; a value the user set wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap and go back to it when freed.
KEEP_UP_TO = 1 << 30


def keep_freed_memory() -> bool:
    """Let glibc reuse freed large blocks instead of handing them back to the OS at once.

    By default glibc serves every allocation above a threshold (at most 32 MiB) with its own ``mmap``
    and unmaps it on free, so a tensor of that size allocated anew at every step costs a fresh set of
    page faults each time. Full-graph GAT steps and 1-N scores on large graphs allocate many such
    tensors: on DB15K, three GAT epochs took 45 s (35 s of it system time) and 25 s (2 s) with these
    settings. Memory freed this way stays with the process (its RSS keeps its peak) until it exits.

    Returns:
        True if the settings took effect; False off Linux or without glibc's ``mallopt``.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_UP_TO)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_UP_TO))


def set_threads(count: int | None) -> None:
    """Use ``count`` threads for torch's intra-op and inter-op work in this process (None: torch's default).

    It imports torch, so commands call it only when ``--threads`` is given. The inter-op count can be
    set once per process, before any inter-op work; a later call keeps the first value.
    """
    if count is None:
        return
    if count < 1:
        from kgdata.errors import ImfError

        raise ImfError(f"--threads must be at least 1, not {count}")
    import torch

    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(count)
    except RuntimeError:  # already set, or inter-op work has started
        pass
