"""Latency of ``imf explain`` (``PredictionService.explain``) on a model of FB15k-237's size, on the CPU.

Imports FB15k-237 from ``../shared/datasets/fb15k-237`` into a temporary IMF_HOME (skipped with a
message when absent), builds an untrained IMF model of its size (14,541 entities, 237 relations; by
default structure + visual + text at dim 256, with random stand-in features: only shapes matter for
latency) and a ``PredictionService`` on it. Then it explains random test triples, both directions.

Prints: the one-off costs (service load, the rule index built and cached in the dataset directory,
loading that cache again), and per explain call the median, p90 and max in ms, split into calls whose
relation the scorer has seen (its folded relation matrices are cached) and first calls of a relation.
The target is < 100 ms per call.

    .venv/bin/python benchmarks/bench_explain.py [--triples 100] [--threads 1] [--dim 256] [--modalities structure,visual,text]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "fb15k-237"
TARGET_MS = 100.0
WIDTHS = {"visual": 1280, "text": 384}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--triples", type=int, default=100, help="test triples explained (each both ways)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--modalities", default="structure,visual,text")
    args = parser.parse_args(argv)
    if not args.dataset.is_dir():
        print(f"skipped: {args.dataset} is absent")
        return 0
    sys.path.insert(0, str(REPO))

    import torch

    torch.set_num_threads(args.threads)
    from imf_cli.service import PredictionService
    from kgdata.importing import import_dataset
    from kgdata.rules import cache_path, cached_index
    from kgdata.store import EntityStore
    from models.imf import IMF

    with tempfile.TemporaryDirectory(prefix="bench-explain-") as home:
        os.environ["IMF_HOME"] = home
        started = time.perf_counter()
        import_dataset(args.dataset, name="fb15k-237", progress=False)
        imported = time.perf_counter() - started
        store = EntityStore.open("fb15k-237")
        modalities = tuple(args.modalities.split(","))
        torch.manual_seed(0)
        model = IMF(store.num_entities, store.num_relations, dim=args.dim, modalities=modalities,
                    feature_dims={m: WIDTHS[m] for m in modalities if m != "structure"})
        for modality in model.feature_dims:
            model.set_features(modality, torch.randn(store.num_entities, WIDTHS[modality]),
                               torch.ones(store.num_entities, dtype=torch.bool))
        model.eval()
        started = time.perf_counter()
        service = PredictionService(model, store)
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        service.rules()
        built = time.perf_counter() - started
        started = time.perf_counter()
        cached_index(store)
        reloaded = time.perf_counter() - started
        cache_size = cache_path(store).stat().st_size

        triples = service.splits["test"].tolist()
        random.Random(0).shuffle(triples)
        warm, cold = [], []
        seen: set[int] = set()
        r = service.num_relations
        for h, rel, t in triples[: args.triples]:
            for head, relation, tail in ((h, rel, t), (t, rel + r, h)):
                started = time.perf_counter()
                service.explain(head, relation, tail)
                elapsed = (time.perf_counter() - started) * 1000
                (warm if relation in seen else cold).append(elapsed)
                seen.add(relation)
        service.close()

    print(f"FB15k-237 ({store.num_entities:,} entities, {store.num_relations} relations), untrained IMF "
          f"{'+'.join(model.branch_names)} at dim {args.dim}, CPU, {args.threads} thread(s)")
    print(f"import {imported:.1f} s · service load {loaded:.2f} s · rule index built {built:.2f} s "
          f"(cached: {reloaded * 1000:.0f} ms to load, {cache_size / 1e6:.1f} MB)")
    for name, values in (("relation seen before", warm), ("first call of a relation", cold)):
        if values:
            print(f"explain, {name:>24}: n={len(values):3d}  median {statistics.median(values):6.1f} ms  "
                  f"p90 {percentile(values, 0.9):6.1f} ms  max {max(values):6.1f} ms")
    every = warm + cold
    verdict = "meets" if percentile(every, 0.9) < TARGET_MS else "MISSES"
    print(f"all calls: median {statistics.median(every):.1f} ms, p90 {percentile(every, 0.9):.1f} ms: "
          f"{verdict} the {TARGET_MS:.0f} ms target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
