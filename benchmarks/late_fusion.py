"""Do two runs make different mistakes? Rank a split with the weighted mean of their probabilities.

Two runs trained apart on the same dataset (say structure only and text only on DB15K) are combined
after the fact, query by query: ``logit((1 - w)·σ(s_a) + w·σ(s_b))``, the reference's mean fusion at
``w = 0.5``. If the mixture ranks better than either run alone, their errors differ and a fused model
has something to gain. This is an analysis, not a model imf trains: IMF learns its branches together
and fuses them with learned decision weights.

Ranks are filtered (valid with train and valid, test with all three) and ties realistic, as ``imf
eval`` does. It prints the MRR of each ``w`` and, for each run and the best ``w`` on the split, the
MRR per relation category (from the training split; both query directions pooled)::

    .venv/bin/python benchmarks/late_fusion.py RUN_A RUN_B [--home DIR] [--home-b DIR]
        [--split valid] [--checkpoint best] [--weights 0 0.25 0.5 0.75 1] [--threads 2] [--json]

Each run's dataset must be imported in its workspace (``--home`` for A, ``--home-b`` for B, default
``--home``, else ``$IMF_HOME``), and both must be the same import (the same content hash).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load(run: str, home: Path | None, checkpoint: str) -> dict:
    """The frozen scorer of a one-branch run and what ranking needs from its dataset."""
    from imf_cli.run_loading import load_run
    from imf_cli.runs import run_metadata
    from models.evaluation import FrozenScorer, relation_categories

    if home is not None:
        os.environ["IMF_HOME"] = str(home)
    with load_run(run, checkpoint=checkpoint, device="cpu") as loaded:
        model = loaded.model
        if len(model.branch_names) != 1:
            raise SystemExit(f"{run}: has branches {model.branch_names}; give one-branch runs")
        splits = {name: loaded.store.triples_tensor(name).long() for name in ("train", "valid", "test")}
        return {
            "run": run,
            "branch": model.branch_names[0],
            "scorer": FrozenScorer(model),
            "splits": splits,
            "categories": relation_categories(splits["train"], model.num_relations),
            "hash": (run_metadata(Path(run)).get("metadata") or {}).get("dataset_hash"),
        }


def rank_mixtures(a: dict, b: dict, split: str, weights: list[float], chunk: int = 512):
    """``{w: (2n,) realistic ranks}`` of the mixtures, and the ``(2n,)`` base relation of each query."""
    import torch

    from models.decision import mixture_logit
    from models.evaluation import build_filter, filter_splits, rank_bounds, realistic_from_bounds
    from models.index import with_inverses

    num_relations = a["scorer"].num_relations
    splits = a["splits"]
    index = build_filter([splits[s] for s in filter_splits(split)],
                         num_entities=a["scorer"].num_entities, num_relations=num_relations)
    queries = with_inverses(splits[split], num_relations)
    ranks = {w: torch.empty(len(queries), dtype=torch.float64) for w in weights}
    with torch.inference_mode():
        for rows in torch.arange(len(queries)).split(chunk):
            heads, relations, answers = queries[rows].unbind(1)
            known_rows, known_tails = index.lookup(heads, relations)
            scores = []
            for run in (a, b):
                name = run["branch"]
                scores.append(run["scorer"].queries(heads, relations)[name] @ run["scorer"].entities[name].T)
            for w in weights:
                mixed = mixture_logit(scores, torch.tensor([1.0 - w, w]))
                ranks[w][rows] = realistic_from_bounds(*rank_bounds(mixed, answers, known_rows, known_tails))
    return ranks, queries[:, 1] % num_relations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--home", type=Path, help="Run A's workspace (default: $IMF_HOME).")
    parser.add_argument("--home-b", type=Path, help="Run B's workspace (default: --home).")
    parser.add_argument("--split", default="valid", choices=("valid", "test"))
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0],
                        help="Weights w of run B (0: run A alone, 1: run B alone).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import torch

    from models.evaluation import CATEGORIES, rank_metrics

    torch.set_num_threads(args.threads)
    a = load(args.run_a, args.home, args.checkpoint)
    b = load(args.run_b, args.home_b or args.home, args.checkpoint)
    if a["hash"] != b["hash"] or any(not torch.equal(a["splits"][s], b["splits"][s]) for s in a["splits"]):
        raise SystemExit("the two runs were trained on different imports of the data")
    started = time.perf_counter()
    weights = sorted(set(args.weights) | {0.0, 1.0})
    ranks, relations = rank_mixtures(a, b, args.split, weights)
    seconds = time.perf_counter() - started
    metrics = {w: rank_metrics(ranks[w]) for w in weights}
    best = max(weights, key=lambda w: metrics[w]["mrr"])
    query_categories = a["categories"][relations]
    by_category = {
        label: {
            f"{a['branch']} (w=0)": rank_metrics(ranks[0.0][query_categories == c])["mrr"],
            f"{b['branch']} (w=1)": rank_metrics(ranks[1.0][query_categories == c])["mrr"],
            f"mixture (w={best:g})": rank_metrics(ranks[best][query_categories == c])["mrr"],
            "queries": int((query_categories == c).sum()),
        }
        for c, label in enumerate(CATEGORIES)
        if (query_categories == c).any()
    }
    report = {"run_a": args.run_a, "run_b": args.run_b, "split": args.split, "checkpoint": args.checkpoint,
              "seconds": round(seconds, 1), "metrics": {str(w): m for w, m in metrics.items()}, "best_w": best,
              "per_category": by_category}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.split} ({args.checkpoint}.pt), filtered, realistic ranks; A = {a['branch']} ({args.run_a}), "
          f"B = {b['branch']} ({args.run_b}); {seconds:.1f} s")
    print(f"{'w of B':>7} {'MRR':>7} {'MR':>8} {'H@1':>7} {'H@3':>7} {'H@10':>7}")
    for w in weights:
        m = metrics[w]
        print(f"{w:7.2f} {m['mrr']:7.4f} {m['mr']:8.1f} {m['hits@1']:7.4f} {m['hits@3']:7.4f} {m['hits@10']:7.4f}"
              + ("  best" if w == best else ""))
    print("MRR per relation category (both directions):")
    for label, row in by_category.items():
        print(f"  {label}: " + ", ".join(f"{k} {v:.4f}" if k != "queries" else f"{v} queries" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
