"""Speed of filtered evaluation and of single top-k queries, against PyKEEN's evaluator.

Prints figures; it is not a test. On FB15k-237 (``../shared/datasets/fb15k-237``), for a structure-only
IMF at ``--dim`` (200), untrained unless ``--run-dir`` names a trained run (speed does not depend on
the weights):

  (a) a full filtered evaluation of the test split, both directions (``PredictionService.evaluate``,
      which is what ``imf eval`` runs): seconds and queries per second, median of ``--repeats``;
  (b) PyKEEN's ``RankBasedEvaluator`` on a PyKEEN ``TuckER`` of the same dims with inverse triples,
      filtered with train + valid + test, if pykeen is importable: the same figures, and the ratio of
      throughputs. ``--pykeen-triples`` evaluates only that many test triples to keep the run short
      (throughput is per query, so the ratio stays fair);
  (c) the latency of one ``PredictionService.top_k(k=10)`` call after load: the first call of a
      relation (which builds and caches its matrices) and later calls;
  (d) peak RSS of this process after (a) and (c), and again after (b).

The dataset is imported into a temporary ``IMF_HOME`` in a child process first, so the import's
memory does not count.

    python benchmarks/bench_eval.py --threads 1
    python benchmarks/bench_eval.py --device cuda --skip pykeen
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import yaml

from imf_cli.runtime import keep_freed_memory

DEFAULT_DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fb15k-237"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def import_in_child(source: Path, home: Path) -> None:
    code = "import sys; from kgdata.importing import import_dataset; import_dataset(sys.argv[1], home=sys.argv[2])"
    subprocess.run([sys.executable, "-c", code, str(source), str(home)], check=True)


def write_untrained_run(run_dir: Path, dataset: str, dim: int, seed: int) -> None:
    """A run directory with a randomly initialised structure-only model, as ``imf train`` would leave it."""
    from kgdata.store import EntityStore
    from models.checkpoint import save_checkpoint
    from models.config import resolve
    from models.imf import build_model

    with EntityStore.open(dataset) as store:
        sizes = {"num_entities": store.num_entities, "num_relations": store.num_relations, "feature_dims": {}}
        metadata = {"dataset": store.name, "dataset_hash": store.content_hash}
    config = resolve({"model": {"dim": dim, "modalities": ["structure"]}, "train": {"seed": seed}})
    torch.manual_seed(seed)
    model = build_model(config.model, **sizes).eval()
    run_dir.mkdir(parents=True)
    document = {"config": config.to_dict(), "seed": seed, "metadata": metadata}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    save_checkpoint(run_dir / "best.pt", {"model": model.state_dict(), "model_args": sizes, "config": config.to_dict()})


def time_ours(loaded, repeats: int, batch_size: int | None) -> tuple[list[float], dict]:
    """Seconds of ``imf eval``'s ranking (imf_cli.run_eval.evaluate_loaded) on a run already loaded."""
    from imf_cli.run_eval import evaluate_loaded

    device = next(loaded.model.parameters()).device
    seconds, report = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        report = evaluate_loaded(loaded, "test", batch_size=batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return seconds, report


def time_top_k(service, calls: int, seed: int) -> tuple[list[float], list[float]]:
    """Milliseconds of first calls of relations (building their matrices) and of later calls."""
    generator = torch.Generator().manual_seed(seed)
    relations = torch.randperm(2 * service.num_relations, generator=generator)[: min(calls, 2 * service.num_relations)]
    entities = torch.randint(0, service.num_entities, (calls,), generator=generator)

    def one(entity: int, relation: int) -> float:
        started = time.perf_counter()
        service.top_k(entity, relation, k=10)
        return (time.perf_counter() - started) * 1e3

    cold = [one(int(e), int(r)) for e, r in zip(entities, relations)]
    warm = [one(int(e), int(relations[i % len(relations)])) for i, e in enumerate(entities)]
    return cold, warm


def time_pykeen(service, args: argparse.Namespace) -> tuple[float, int, dict] | None:
    """Seconds, queries and metrics of PyKEEN's filtered evaluation of (a prefix of) the test split."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pykeen.evaluation import RankBasedEvaluator
            from pykeen.models import TuckER
            from pykeen.triples import TriplesFactory
    except ImportError:
        return None
    splits = service.splits
    factory = TriplesFactory(
        mapped_triples=splits["train"],
        entity_to_id={str(i): i for i in range(service.num_entities)},
        relation_to_id={str(i): i for i in range(service.num_relations)},
        create_inverse_triples=True,
    )
    model = TuckER(triples_factory=factory, embedding_dim=args.dim, relation_dim=args.dim, random_seed=args.seed)
    model = model.to(args.device).eval()
    test = splits["test"] if args.pykeen_triples is None else splits["test"][: args.pykeen_triples]
    evaluator = RankBasedEvaluator(filtered=True)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = evaluator.evaluate(
            model,
            test,
            batch_size=args.pykeen_batch_size,
            use_tqdm=False,
            additional_filter_triples=[splits["train"], splits["valid"]],
        )
    seconds = time.perf_counter() - started
    return seconds, 2 * len(test), {"mrr": results.get_metric("both.realistic.inverse_harmonic_mean_rank")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--dataset-dir", type=Path, default=DEFAULT_DATASET, help="a tsv dataset (default FB15k-237)")
    parser.add_argument("--run-dir", type=Path, help="a trained run of that dataset, instead of an untrained model")
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=3, help="full evaluations timed (the median is printed)")
    parser.add_argument("--batch-size", type=int, help="queries per chunk for ours [from free memory]")
    parser.add_argument("--pykeen-batch-size", type=int, default=256)
    parser.add_argument("--pykeen-triples", type=int, default=2000, help="test triples PyKEEN ranks (0: all)")
    parser.add_argument("--top-k-calls", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", nargs="*", default=[], choices=["pykeen"])
    args = parser.parse_args()
    args.pykeen_triples = args.pykeen_triples or None

    if not args.dataset_dir.is_dir():
        sys.exit(f"no dataset at {args.dataset_dir}")
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the imf command does; PyKEEN runs in this process too
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        os.environ["IMF_HOME"] = str(home)
        started = time.perf_counter()
        import_in_child(args.dataset_dir, home)
        imported = time.perf_counter() - started
        from imf_cli.service import PredictionService

        dataset = args.dataset_dir.name
        run_dir = args.run_dir
        if run_dir is None:
            run_dir = home / "runs" / "untrained"
            write_untrained_run(run_dir, dataset, args.dim, args.seed)
        started = time.perf_counter()
        service = PredictionService.from_run(run_dir, device=args.device)
        loaded = time.perf_counter() - started
        with service:
            print(
                f"{dataset}: {service.num_entities:,} entities, {service.num_relations} relations, "
                f"{len(service.splits['test']):,} test triples; structure-only IMF dim {args.dim}, "
                f"device {args.device}, {torch.get_num_threads()} thread(s)"
            )
            print(f"import {imported:.1f} s (child process), service load {loaded:.2f} s")

            from imf_cli.run_loading import LoadedRun

            # the service's model and store, as imf eval's ranking sees them after loading
            seconds, report = time_ours(
                LoadedRun(run_dir, "best", service.model, service.store, {}), args.repeats, args.batch_size
            )
            queries = 2 * report["triples"]
            ours = statistics.median(seconds)
            print(
                f"(a) IMF filtered test eval: {ours:.2f} s, {queries / ours:,.0f} queries/s "
                f"({queries:,} queries, chunk {report['chunk_size']}; runs: {', '.join(f'{s:.2f}' for s in seconds)}; "
                f"fused MRR {report['fused']['mrr']:.4f})"
            )
            cold, warm = time_top_k(service, args.top_k_calls, args.seed)
            print(
                f"(c) top_k(k=10) latency: first call of a relation median {statistics.median(cold):.2f} ms "
                f"(max {max(cold):.2f}); later calls median {statistics.median(warm):.2f} ms, "
                f"p95 {sorted(warm)[int(0.95 * (len(warm) - 1))]:.2f} ms (target < 50 ms)"
            )
            print(f"(d) peak RSS after (a) and (c): {peak_rss_mib():,.0f} MiB")

            if "pykeen" in args.skip:
                return
            timed = time_pykeen(service, args)
            if timed is None:
                print("(b) PyKEEN: skipped, pykeen is not importable (pip install -e '.[bench]')")
                return
            theirs, their_queries, their_metrics = timed
            ratio = (queries / ours) / (their_queries / theirs)
            print(
                f"(b) PyKEEN RankBasedEvaluator, TuckER dim {args.dim}: {theirs:.2f} s for {their_queries:,} queries, "
                f"{their_queries / theirs:,.0f} queries/s (batch {args.pykeen_batch_size}; "
                f"MRR {their_metrics['mrr']:.4f})"
            )
            print(f"throughput ratio IMF / PyKEEN: {ratio:.1f}x (target >= 10x)")
            print(f"(d) peak RSS after (b): {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
