"""Process-wide settings for imf's commands.

:func:`keep_freed_memory` is called once by the CLI before any command runs. It needs only the
standard library, so it costs nothing to ``imf --help``.
"""

from __future__ import annotations

import ctypes
import sys

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


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for torch's intra-op work (and one inter-op thread)."""
    import torch

    from kgdata.errors import ImfError

    if threads < 1:
        raise ImfError(f"--threads must be at least 1, not {threads}")
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before any inter-op work has started
        pass
