"""How the CUDA-graph step's padded positives cost in the loss's backward, by where the padding lies.

Prints figures; it is not a test. The backward of the sparse-target BCE (``models.losses``) adds
``-a`` at every positive with an accumulating ``index_put_`` over the ``(B, N)`` scores. The graphed
step pads the positives to a fixed count with weight 0 (``models.graphs.pack_batch``). This times
that ``index_put_`` for a DB15K-sized batch (B 128, N 12,842, about 255 real positives, capacity
16,384) three ways: no padding (the eager step), the padding all on one cell (the first graphed runs
on the H200, 2026-12-04), and the padding on distinct cells (now). Medians over ``--repeat`` runs,
timed with CUDA events on a GPU and the host clock on the CPU.

    python benchmarks/bench_padding.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed(function, device: torch.device, repeat: int) -> float:
    """Median milliseconds of ``function()`` after three warm-up calls."""
    for _ in range(3):
        function()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            function()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            function()
            times.append(1e3 * (time.perf_counter() - began))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--entities", type=int, default=12842)
    parser.add_argument("--positives", type=int, default=255)
    parser.add_argument("--capacity", type=int, default=16384)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    cells = torch.randperm(args.batch * args.entities, generator=generator)[: args.positives]
    rows, cols = cells // args.entities, cells % args.entities
    pad = args.capacity - args.positives
    spread = torch.arange(pad)
    layouts = {
        "no padding (eager step)": (rows, cols, torch.ones(args.positives)),
        "padding on one cell": (torch.cat([rows, torch.zeros(pad, dtype=torch.long)]),
                                torch.cat([cols, torch.zeros(pad, dtype=torch.long)]),
                                torch.cat([torch.ones(args.positives), torch.zeros(pad)])),
        "padding on distinct cells": (torch.cat([rows, (spread // args.entities) % args.batch]),
                                      torch.cat([cols, spread % args.entities]),
                                      torch.cat([torch.ones(args.positives), torch.zeros(pad)])),
    }
    grad = torch.zeros(args.batch, args.entities, device=device)
    print(f"index_put_(accumulate=True) on ({args.batch}, {args.entities}) float32, {args.positives} positives, "
          f"capacity {args.capacity}, device {device}, median of {args.repeat}")
    for name, (r, c, w) in layouts.items():
        r, c, values = r.to(device), c.to(device), (w * -0.9).to(device)
        milliseconds = timed(lambda: grad.index_put_((r, c), values, accumulate=True), device, args.repeat)
        print(f"  {name:28s} {milliseconds:8.3f} ms")


if __name__ == "__main__":
    main()
