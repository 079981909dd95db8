"""The CPU kernels imf writes around ATen's scalar ``log1p``, timed against the plain ATen forms.

Prints figures; it is not a test. ATen's CPU ``softplus``, ``logsigmoid`` and ``logaddexp`` go through
``log1p``, which is not vectorised, so imf computes two things in other, exact forms on the CPU:

  (a) the loss's ``Σ softplus(s)`` over a batch's ``B × N`` logits (:func:`models.losses.softplus_sum`);
  (b) the probability-space decision fusion, ``logit(Σ_b w_b σ(s_b))`` over the branches' scores
      (:func:`models.decision.mixture_logit`): the paper's scheme (``model.decision_space:
      probability``) in training, and the "mean fusion" row of every evaluation.

Each is timed against the ATen form it replaces, interleaved (ATen, imf, ATen, imf, …) so that a
change in the machine's load hits both alike; the median of ``--repeats`` runs is printed, with
the largest difference between the two forms' values. Shapes default to DB15K's (12,842 entities):
``--batch`` queries for training, ``--eval-batch`` for evaluation.

    python benchmarks/bench_kernels.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from models.decision import mixture_logit
from models.losses import softplus_sum


def aten_mixture_logit(scores: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """The same mixture through ATen's ``logsigmoid`` and ``logaddexp`` (what imf's CUDA path runs)."""
    positive = negative = None
    for index, branch in enumerate(scores):
        log_weight = weights[index].log()
        up = F.logsigmoid(branch) + log_weight
        down = F.logsigmoid(-branch) + log_weight
        positive = up if positive is None else torch.logaddexp(positive, up)
        negative = down if negative is None else torch.logaddexp(negative, down)
    return positive - negative


def timed(run, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return times


def compare(label: str, aten, ours, repeats: int) -> None:
    aten_times, our_times = [], []
    for _ in range(repeats):  # interleaved
        aten_times += timed(aten, 1)
        our_times += timed(ours, 1)
    a, b = statistics.median(aten_times) * 1e3, statistics.median(our_times) * 1e3
    print(f"{label:<58} ATen {a:8.2f} ms   imf {b:8.2f} ms   {a / b:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--entities", type=int, default=12_842)
    parser.add_argument("--batch", type=int, default=128, help="training queries per batch")
    parser.add_argument("--eval-batch", type=int, default=512, help="evaluation queries per chunk")
    parser.add_argument("--branches", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.entities:,} entities, {args.branches} branches")

    logits = torch.randn(args.batch, args.entities, generator=generator) * 6
    exact = F.softplus(logits.double()).sum().item()
    print(f"softplus sum: |ATen − float64| {abs(F.softplus(logits).sum().item() - exact):.3g}, "
          f"|imf − float64| {abs(softplus_sum(logits).item() - exact):.3g}")
    compare(f"(a) Σ softplus over {args.batch} × {args.entities:,}", lambda: F.softplus(logits).sum(),
            lambda: softplus_sum(logits), args.repeats)

    weights = torch.softmax(torch.randn(args.branches, generator=generator), dim=0)
    for rows, grad, what in ((args.eval_batch, False, "evaluation, forward"), (args.batch, True, "training, forward + backward")):
        scores = [(torch.randn(rows, args.entities, generator=generator) * 6).requires_grad_(grad) for _ in range(args.branches)]
        weight = weights.clone().requires_grad_(grad)
        with torch.no_grad():
            gap = (aten_mixture_logit([s.double() for s in scores], weight.double()) - mixture_logit(scores, weight)).abs().max()
        print(f"mixture logit, {what}: largest |imf − float64 ATen| {gap.item():.3g}")

        def step(function):
            def run():
                if grad:
                    function(scores, weight).sum().backward()
                else:
                    with torch.no_grad():
                        function(scores, weight)
            return run

        compare(f"(b) mixture over {rows} × {args.entities:,}, {what}", step(aten_mixture_logit), step(mixture_logit), args.repeats)


if __name__ == "__main__":
    main()
