"""Where one IMF training step's time goes, on a real dataset: host and device, operator by operator.

Prints figures; it is not a test. It starts `imf train` on an imported dataset (IMF_HOME as usual, the
run in a temporary directory that is removed), lets ``--warmup`` steps pass, profiles the next
``--steps`` with ``torch.profiler`` (CPU, and CUDA where the device is a GPU), and stops. On CUDA the
step is a CUDA-graph replay once the warm-up steps are past (``models.graphs``; ``--eager``: the eager
step). It prints the
wall time per profiled step, the operator events and (on CUDA) the kernel launches per step, and the
operators that take the most host time and the most device time. A step whose wall time is close to
its host time and far above its device time is bound by dispatch (issue 11: the DB15K structure +
text step took about 15 ms on an H200, alone or beside two other runs).

    IMF_HOME=.gpu/home python benchmarks/profile_step.py db15k --config imf_cli/presets/db15k.yaml --device cuda
    IMF_HOME=.gpu/home python benchmarks/profile_step.py db15k --config imf_cli/presets/db15k.yaml --device cpu \\
        --threads 2 --dim 16 --steps 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _Done(Exception):
    """Raised from the patched step once the profiled steps are done: ends the training."""


MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--config", type=Path, help="a preset or config file (as imf train --config)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dim", type=int, help="override model.dim")
    parser.add_argument("--modalities", help="comma-separated, as imf train --modalities")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=25, help="operators listed per table")
    parser.add_argument("--eager", action="store_true",
                        help="on CUDA, profile the eager step (train.cuda_graphs false): every operator's device "
                        "time, which the graph replays; without it the profiled steps are graph replays")
    parser.add_argument("--stack", action="store_true",
                        help="also list the most frequent operators by the Python line that called them")
    parser.add_argument("--shapes", action="store_true",
                        help="also list the matmuls (mm, addmm, bmm) by input shapes, slowest first")
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from imf_cli.pipeline import train_model
    from models import training

    torch.set_num_threads(args.threads)
    on_cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    profiler = profile(activities=activities, with_stack=args.stack, record_shapes=args.shapes)
    original = training._Trainer._step
    walls: list[float] = []
    count = 0

    def step(self, *a, **k):
        nonlocal count
        count += 1
        if count == args.warmup + 1:
            if on_cuda:
                torch.cuda.synchronize()
            profiler.__enter__()
        started = time.perf_counter()
        result = original(self, *a, **k)
        if count > args.warmup:
            walls.append(time.perf_counter() - started)
        if count == args.warmup + args.steps:
            if on_cuda:
                torch.cuda.synchronize()
            profiler.__exit__(None, None, None)
            raise _Done
        return result

    training._Trainer._step = step
    flags = {"train.device": args.device, "train.epochs": 1, "train.eval_every": 1, "train.cuda_graphs": not args.eager}
    if args.dim:
        flags["model.dim"] = args.dim
    modalities = tuple(m.strip() for m in args.modalities.split(",")) if args.modalities else None
    work = Path(tempfile.mkdtemp(prefix="imf-profile-"))
    began = time.perf_counter()
    try:
        train_model(args.dataset, config_file=args.config, flags=flags, modalities=modalities,
                    run_dir=work / "run", progress=False, place_unseen=False)
        print(f"the epoch ended after {count} steps, before {args.warmup + args.steps}: use fewer --warmup/--steps")
        return
    except _Done:
        pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
    events = profiler.key_averages()
    steps = args.steps
    print(f"{args.dataset}: {steps} steps profiled after {args.warmup} warm-up steps, device {'cuda' if on_cuda else 'cpu'}, "
          f"{args.threads} threads ({time.perf_counter() - began:.0f} s with start-up)")
    print(f"wall per step (each step timed under the profiler): median {1e3 * statistics.median(walls):.2f} ms, "
          f"min {1e3 * min(walls):.2f} ms")
    host = sum(e.self_cpu_time_total for e in events) / steps / 1e3
    print(f"operator events per step: {sum(e.count for e in events) / steps:.0f}; their self host time {host:.2f} ms")
    if on_cuda:
        device_ms = sum(getattr(e, "self_device_time_total", 0) for e in events) / steps / 1e3
        kernels = sum(e.count for e in profiler.events() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA)
        print(f"device kernels per step: {kernels / steps:.0f}; their device time {device_ms:.2f} ms")
    print()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))
    print(events.table(sort_by="count", row_limit=args.top))
    if args.shapes:
        matmuls = [e for e in profiler.key_averages(group_by_input_shape=True) if e.key in MATMULS]
        matmuls.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
        print("matmuls by input shapes, per step:")
        for e in matmuls[: args.top]:
            print(f"  {e.key:12s} {str(e.input_shapes):60s} x{e.count / steps:4.1f}  {e.self_cpu_time_total / steps / 1e3:8.2f} ms")
        print()
    if args.stack:
        print(profiler.key_averages(group_by_stack_n=4).table(sort_by="count", row_limit=args.top))
    if on_cuda:
        print(events.table(sort_by="self_device_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
