"""Do a run's batch norms carry the way it was batched? Re-estimate their statistics and re-evaluate.

A model trained on relation-bucketed batches (``train.relations_per_batch: K``) normalises each
batch over about K relations, while evaluation normalises with running statistics gathered over
those batches. If that mismatch cost accuracy, re-estimating the statistics would raise valid MRR.

For each batching asked for, the script resets every batch norm's running statistics, passes
``--passes`` epochs of training queries through the model in training mode with dropout off and no
gradient (cumulative averages, not momentum), and evaluates valid as ``imf eval`` does (filtered,
realistic ties). It prints the valid MRR of the run as trained and after each re-estimation::

    .venv/bin/python benchmarks/bn_recalibration.py RUN_DIR [--checkpoint best|last]
        [--relations-per-batch 0 8] [--batch-size 128] [--threads 1] [--seed 0] [--home DIR] [--json]

The run's dataset must be imported in the workspace (``--home``, else ``$IMF_HOME``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def recalibrate(model, heads, relations, *, batch_size: int, relations_per_batch: int, seed: int) -> float:
    """Re-estimate every batch norm's statistics from one epoch of ``(heads, relations)`` queries; seconds taken."""
    import torch
    from torch import nn

    from models.sampling import epoch_batches

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch
    model.eval()  # dropout off
    for norm in norms:
        norm.train()
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        encoded = model.encode()
        batches = epoch_batches(
            relations, batch_size=batch_size, relations_per_batch=relations_per_batch, generator=generator
        )
        for batch in batches:
            if len(batch) > 1:
                model(heads[batch], relations[batch], encoded=encoded)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.eval()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="The run directory.")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--relations-per-batch", type=int, nargs="+", default=[0, 8],
                        help="The batchings to re-estimate with (0: uniform batches).")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--home", type=Path, help="The imf workspace (default: $IMF_HOME).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args(argv)
    if args.home is not None:
        os.environ["IMF_HOME"] = str(args.home)
    sys.path.insert(0, str(REPO))
    import torch

    from imf_cli.run_eval import evaluate_loaded
    from imf_cli.run_loading import load_run
    from models.index import TailIndex, with_inverses

    torch.set_num_threads(args.threads)
    rows = []

    def evaluate(loaded, label: str, seconds: float | None = None) -> None:
        report = evaluate_loaded(loaded, "valid")
        row = {
            "statistics": label,
            "seconds": None if seconds is None else round(seconds, 1),
            "fused": round(report["fused"]["mrr"], 4),
            "branches": {name: round(values["mrr"], 4) for name, values in report["branches"].items()},
        }
        rows.append(row)
        if not args.json:
            print(f"{label:<40} valid MRR fused {row['fused']:.4f}  branches {row['branches']}", flush=True)

    with load_run(args.run, checkpoint=args.checkpoint, device="cpu") as loaded:
        model = loaded.model
        trained = copy.deepcopy(model.state_dict())
        evaluate(loaded, "as trained")
        train = loaded.store.triples_tensor("train").long()
        index = TailIndex.from_triples(
            with_inverses(train, model.num_relations),
            num_entities=model.num_entities,
            num_relations=2 * model.num_relations,
        )
        heads, relations = index.pairs()
        for k in args.relations_per_batch:
            model.load_state_dict(trained)
            seconds = recalibrate(
                model, heads, relations, batch_size=args.batch_size, relations_per_batch=k, seed=args.seed
            )
            evaluate(loaded, f"re-estimated, relations_per_batch {k}", seconds)
    if args.json:
        print(json.dumps({"run": str(args.run), "checkpoint": args.checkpoint, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
