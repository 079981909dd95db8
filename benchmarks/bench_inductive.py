"""Cold-start link prediction: entities the model never trained on, ranked from their features alone.

1. Import the dataset into a workspace (``--home``, else a temporary one) and encode its text (minilm)
   and images (efficientnet-lite0), as ``imf demo`` does; DB15K has no images here, so text only.
2. Hold out ``--holdout`` (10 %) of the entities, drawn (seeded) among those with a text feature, so
   that every method below has something to go on. Every triple that touches one leaves train, valid
   and test; the held-out entities are re-numbered after the seen ones, as added entities are.
3. Train IMF on the seen graph (Countries-MM: the ``imf demo`` preset; else imf's defaults, or
   ``--config``), fit the placement of unseen entities (:mod:`models.inductive`), place the held-out
   entities from their features.
4. Rank the held-out entities' test triples, both directions, filtered with every known triple,
   realistic ranks, against *all* entities (the seen ones and the placed held-out ones):

   - **IMF cold-start**: the fused score, weights renormalised over the branches a held-out entity has;
     per branch too; and the same model with only the closed-form start of the placement (the ridge
     fit to the learned rows; the projection in project mode), to show what fitting the placement to
     the model's scores adds;
   - **random ranking**: the expected MRR of a uniformly random order of the filtered candidates;
   - **text nearest neighbour**: each held-out entity is replaced by the seen entity with the most
     similar text feature (cosine), and a candidate scores 1 when the triple with the replacements is
     a training fact, else 0 ("copy the tails of the most similar seen entity");
   - **IMF on seen entities**: the same model on the test triples between seen entities, ranked as
     ``imf eval`` does (among the seen entities), and again with the placed held-out entities as extra
     candidates: well-placed new entities also compete with the right answers of other queries,
     which is why ``imf predict`` ranks added entities only when asked (``--include-new``).

Targets on Countries-MM: cold-start MRR ≥ 50 % of the seen-entity MRR and ≥ 2× the nearest neighbour.

    .venv/bin/python benchmarks/bench_inductive.py [--dataset countries-mm|db15k|DIR] [--holdout 0.1]
        [--seed 0] [--epochs N] [--dim D] [--threads 1] [--device cpu] [--feature-mode finetune|project]
        [--home DIR] [--json]

On DB15K (``../shared/datasets/db15k``, 12,842 entities) it imports, encodes 12,303 texts and trains
with imf's defaults (dim 256, up to 1000 epochs with early stopping): meant for a GPU
(``--device cuda``); on a CPU cap it with ``--epochs`` and ``--dim`` and report that budget.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
ENCODERS = {"text": "minilm", "image": "efficientnet-lite0"}
BRANCH_OF = {"text": "text", "image": "visual"}


def import_and_encode(dataset: str, *, device: str) -> tuple[str, dict]:
    """Import ``dataset`` (if needed) and encode its features (a no-op when current); modality → FeatureSet."""
    from kgdata.encoders import encode_dataset
    from kgdata.features import load_features
    from kgdata.importing import import_dataset
    from kgdata.store import EntityStore, list_datasets

    if dataset == "countries-mm":
        name, source = dataset, dataset
    else:
        source = Path(dataset) if Path(dataset).is_dir() else SHARED / dataset
        if not source.is_dir():
            raise SystemExit(f"skipped: no dataset {dataset!r} (looked for {source})")
        name = Path(source).name
    if name not in list_datasets():
        import_dataset(source, name=name, progress=True)
    sets = {}
    with EntityStore.open(name) as store:
        entities = store.entities()
        for modality, encoder in ENCODERS.items():
            wanted = any(e.image for e in entities) if modality == "image" else True
            if not wanted:
                continue
            encode_dataset(store, modality, encoder, device=device, progress=True)
            sets[modality] = load_features(store, modality, encoder)
    return name, sets


def mrr_block(ranks) -> dict:
    from models.evaluation import rank_metrics

    metrics = rank_metrics(ranks)
    return {"mrr": metrics["mrr"], "hits@1": metrics["hits@1"], "hits@10": metrics["hits@10"], "queries": len(ranks)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="countries-mm", help="countries-mm, db15k (from ../shared), or a directory")
    parser.add_argument("--holdout", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="draws the held-out entities and seeds training")
    parser.add_argument("--config", type=Path, help="a config file (default: the demo preset on Countries-MM)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--dim", type=int)
    parser.add_argument("--feature-mode", choices=["finetune", "project"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--home", type=Path, help="workspace to import and encode into (reused when current)")
    parser.add_argument("--run-dir", type=Path, help="train into this directory, or reuse the run it holds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-inductive-") as scratch:
        os.environ["IMF_HOME"] = str(args.home or scratch)
        report = run(args, Path(scratch))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


def run(args, scratch: Path) -> dict:
    import numpy as np
    import torch

    from imf_cli.demo import preset_path
    from imf_cli.pipeline import read_config_file, resolve_config
    from kgdata.store import EntityStore
    from models.checkpoint import load_checkpoint, read_checkpoint
    from models.config import RunConfig
    from models.evaluation import FrozenScorer
    from models.index import TailIndex, with_inverses
    from models.inductive import InductiveScorer, PlacedEntities
    from models.placement import fit_placement, initial_placement
    from models.training import KGTensors, train

    started = time.perf_counter()
    name, sets = import_and_encode(args.dataset, device=args.device)
    prepared = time.perf_counter() - started
    with EntityStore.open(name) as store:
        n, r = store.num_entities, store.num_relations
        splits = {split: store.triples(split) for split in ("train", "valid", "test")}

    # Hold out entities with text; number the seen ones first.
    rng = np.random.default_rng(args.seed)
    with_text = np.flatnonzero(sets["text"].mask)
    held = np.sort(rng.choice(with_text, size=max(1, round(args.holdout * n)), replace=False))
    is_held = np.zeros(n, dtype=bool)
    is_held[held] = True
    order = np.concatenate([np.flatnonzero(~is_held), held])
    renumber = np.empty(n, dtype=np.int64)
    renumber[order] = np.arange(n)
    graph = n - len(held)
    remapped = {s: np.stack([renumber[t[:, 0]], t[:, 1], renumber[t[:, 2]]], axis=1) for s, t in splits.items()}
    touches = {s: (t[:, 0] >= graph) | (t[:, 2] >= graph) for s, t in remapped.items()}
    seen = {s: torch.from_numpy(t[~touches[s]]) for s, t in remapped.items()}
    features = {
        BRANCH_OF[m]: (torch.from_numpy(s.matrix[order]), torch.from_numpy(s.mask[order])) for m, s in sets.items()
    }

    config_file = args.config or (preset_path() if name == "countries-mm" else None)
    flags = {"model.modalities": ["structure", *features], "train.seed": args.seed, "train.device": args.device,
             "train.epochs": args.epochs, "model.dim": args.dim, "model.feature_mode": args.feature_mode}
    config = resolve_config(read_config_file(config_file), flags)
    data = KGTensors(
        num_entities=graph, num_relations=r, train=seen["train"], valid=seen["valid"], test=seen["test"],
        features={b: (m[:graph], k[:graph]) for b, (m, k) in features.items()},
    )
    run_dir = args.run_dir or scratch / "run"
    held_file = run_dir / "held-out.json"
    started = time.perf_counter()
    reused = (run_dir / "best.pt").is_file()
    if reused:  # a run of the same split
        if json.loads(held_file.read_text()) != held.tolist():
            raise SystemExit(f"{run_dir} was trained with other held-out entities; use another --run-dir")
        best_epoch = read_checkpoint(run_dir / "best.pt")["epoch"]
        config = RunConfig.from_dict(read_checkpoint(run_dir / "best.pt")["config"])
    else:
        best_epoch = train(data, config, run_dir, progress=not args.json).best_epoch
        held_file.write_text(json.dumps(held.tolist()))
    trained = time.perf_counter() - started

    model, _ = load_checkpoint(run_dir / "best.pt", map_location=args.device)
    scorer = FrozenScorer(model)
    graph_features = {b: (m[:graph], k[:graph]) for b, (m, k) in features.items()}
    unseen_features = {b: (m[graph:], k[graph:]) for b, (m, k) in features.items()}
    started = time.perf_counter()
    facts = torch.cat([seen["train"], seen["valid"]])
    placements = {"fitted": fit_placement(model, graph_features, triples=facts, seed=args.seed)}
    fitting = time.perf_counter() - started
    placements["start"] = initial_placement(model, graph_features, seed=args.seed)

    everything = torch.from_numpy(np.concatenate(list(remapped.values())))
    known = TailIndex.from_triples(with_inverses(everything, r), num_entities=n, num_relations=2 * r)
    cold_test = torch.from_numpy(remapped["test"][touches["test"]])
    seen_test = seen["test"]

    def queries(triples):
        return with_inverses(triples.long(), r)

    def ranks(triples, score) -> torch.Tensor:
        from models.evaluation import realistic_ranks

        q = queries(triples)
        found = torch.empty(len(q), dtype=torch.float64)
        for chunk in torch.arange(len(q)).split(256):
            heads, relations, targets = q[chunk].unbind(1)
            rows, tails = known.lookup(heads, relations)
            found[chunk] = realistic_ranks(score(heads, relations), targets, rows, tails)
        return found

    def imf_scores(inductive, placed, branch=None, *, unseen_candidates=True):
        def score(heads, relations):
            fused = torch.full((len(heads), n), float("-inf"))  # without unseen candidates they stay last
            unseen = heads >= graph
            for mask, given in ((~unseen, None), (unseen, True)):
                if not mask.any():
                    continue
                if given is None:
                    head_input = heads[mask]
                else:
                    rows = heads[mask] - graph
                    head_input = PlacedEntities({k: v[rows] for k, v in placed.vectors.items()}, placed.present[rows],
                                                placed.branch_names)
                s = inductive.score(relations[mask], heads=head_input, candidates=placed if unseen_candidates else None)
                values = torch.nan_to_num((s.fused if branch is None else s.branches[branch]).float().cpu(), nan=-math.inf)
                fused[mask, : values.shape[1]] = values
            return fused

        return score

    report = {"dataset": name, "entities": n, "held_out": len(held), "holdout": args.holdout, "seed": args.seed,
              "cold_test_triples": len(cold_test), "seen_test_triples": len(seen_test),
              "train_triples": {"seen": len(seen["train"]), "removed": int(touches["train"].sum())},
              "config": config.to_dict(), "best_epoch": best_epoch, "seconds": {"import+encode": round(prepared, 1),
              "train": None if reused else round(trained, 1), "placement": round(fitting, 1)}, "threads": args.threads, "device": args.device, "rows": {}}
    rows = report["rows"]
    for label, maps in placements.items():
        inductive = InductiveScorer(model, scorer, maps)
        placed = inductive.place(unseen_features)
        start = "projection only (no fit)" if model.feature_mode == "project" else "ridge only (no score fit)"
        key = {"fitted": "IMF cold-start", "start": f"IMF cold-start, {start}"}[label]
        rows[key] = mrr_block(ranks(cold_test, imf_scores(inductive, placed)))
        if label == "fitted":
            for branch in inductive.placeable:
                rows[f"  {branch} branch alone"] = mrr_block(ranks(cold_test, imf_scores(inductive, placed, branch)))
            rows["IMF seen entities"] = mrr_block(ranks(seen_test, imf_scores(inductive, placed, unseen_candidates=False)))
            rows["  with the unseen as candidates too"] = mrr_block(ranks(seen_test, imf_scores(inductive, placed)))
            report["placement"] = {b: m.describe() for b, m in maps.items()}

    # Text nearest neighbour: replace each held-out entity by its most similar seen entity with text.
    text, mask = features["text"]
    unit = torch.nn.functional.normalize(text.float(), dim=1)
    similarity = unit[graph:] @ unit[:graph].T
    similarity[:, ~mask[:graph]] = float("-inf")
    stand_in = torch.cat([torch.arange(graph), similarity.argmax(1)])  # (n,) each entity's seen stand-in
    train_index = TailIndex.from_triples(with_inverses(seen["train"], r), num_entities=graph, num_relations=2 * r)

    def neighbour_scores(heads, relations):
        return train_index.multi_hot(stand_in[heads], relations)[:, stand_in]

    rows["text nearest neighbour"] = mrr_block(ranks(cold_test, neighbour_scores))
    q = queries(cold_test)
    query_rows, answers = known.lookup(q[:, 0], q[:, 1])
    others = torch.bincount(query_rows[answers != q[query_rows, 2]], minlength=len(q))
    counts = n - others  # the candidates each query ranks after the filter
    harmonic = torch.cumsum(1.0 / torch.arange(1, n + 1, dtype=torch.float64), 0)[counts - 1] / counts
    rows["random ranking"] = {"mrr": float(harmonic.mean()), "hits@1": float((1.0 / counts).mean()),
                              "hits@10": float(torch.clamp(10.0 / counts, max=1.0).mean()), "queries": len(q)}
    cold, seen_mrr, nearest = (rows[k]["mrr"] for k in ("IMF cold-start", "IMF seen entities", "text nearest neighbour"))
    report["targets"] = {"cold_over_seen": cold / seen_mrr, "cold_over_nearest_neighbour": cold / nearest,
                         "met": cold >= 0.5 * seen_mrr and cold >= 2 * nearest}
    return report


def print_report(report: dict) -> None:
    print(f"{report['dataset']}: {report['held_out']} of {report['entities']} entities held out "
          f"({report['holdout']:.0%}, seed {report['seed']}, drawn among those with text); "
          f"{report['train_triples']['removed']} train triples removed, {report['train_triples']['seen']} kept")
    model = report["config"]["model"]
    print(f"IMF {'+'.join(model['modalities'])}, dim {model['dim']}, {model['feature_mode']}, "
          f"{report['config']['train']['epochs']} epochs (best {report['best_epoch']}), {report['device']}, "
          f"{report['threads']} thread(s); import+encode {report['seconds']['import+encode']} s, "
          f"train {'(reused run)' if report['seconds']['train'] is None else str(report['seconds']['train']) + ' s'}, "
          f"placement fit {report['seconds']['placement']} s")
    for branch, info in report.get("placement", {}).items():
        r2 = "n/a" if info["heldout_r2"] is None else f"{info['heldout_r2']:.2f}"
        print(f"placement {branch}: {info['method']} ({info['rows']} entities); its ridge start: alpha {info['alpha']}, "
              f"held-out R² {r2}")
    print(f"\n{report['cold_test_triples']} test triples touch a held-out entity "
          f"({2 * report['cold_test_triples']} queries); {report['seen_test_triples']} are between seen entities")
    print(f"{'':42} {'MRR':>7} {'H@1':>7} {'H@10':>7} {'queries':>8}")
    for label, block in report["rows"].items():
        print(f"{label:42} {block['mrr']:7.4f} {block['hits@1']:7.4f} {block['hits@10']:7.4f} {block['queries']:8d}")
    targets = report["targets"]
    print(f"\ncold-start / seen = {targets['cold_over_seen']:.0%} (target ≥ 50 %); "
          f"cold-start / nearest neighbour = {targets['cold_over_nearest_neighbour']:.2f}× (target ≥ 2×): "
          f"{'met' if targets['met'] else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
