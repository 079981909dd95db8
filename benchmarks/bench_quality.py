"""Link-prediction quality on Countries-MM's test split: PyKEEN's TuckER and ComplEx against imf runs.

Prints figures (one markdown table, ready for ``docs/benchmarks.md``); it is not a test.

Protocol, the same as ``imf eval``: every test triple is ranked in both directions (tails of
``(h, r, ?)``, heads through the inverse relation), every other known triple of train, valid and test is
filtered out, and ties get the realistic rank (the mean of the optimistic and pessimistic ranks). The
ranks are computed by ``models.evaluation.realistic_ranks`` with the filter of ``build_filter``: the
code ``imf eval`` runs.

(a) PyKEEN (optional: skipped with a note when ``pykeen`` is not importable; ``pip install -e '.[bench]'``).
    TuckER and ComplEx are trained on exactly the store's train triples, with the store's entity and
    relation ids, with inverse triples and PyKEEN's LCWA loop (1-N scoring; BCE, label smoothing 0.1
    for TuckER as in its paper). Model selection as ``imf train`` does it: every ``--eval-every``
    epochs the filtered valid MRR (filter: train + valid) is computed, the best weights are kept, and
    training stops after ``--patience`` evaluations without improvement, at the model's epoch cap
    (``--tucker-epochs``, ``--complex-epochs``), or once ``--max-seconds`` have passed (a safety cap).
    The best weights are then ranked on test. PyKEEN's own evaluator
    (``both.realistic.inverse_harmonic_mean_rank``) is run on test too, as a cross-check of the MRR.
(b) imf runs (``--imf-run RUN_DIR``, repeatable): the rows of the run's ``metrics-test.json`` (written by
    ``imf eval RUN_DIR --split test``), else of ``imf_cli.run_eval.evaluate_run(RUN_DIR, split="test")``:
    the fused prediction, each branch and the mean fusion when present. Training seconds are summed
    from the run's ``trace.jsonl``.

    python benchmarks/bench_quality.py --threads 1
    python benchmarks/bench_quality.py --threads 2 --imf-run ~/.local/share/imf/runs/countries-mm-... --skip-pykeen
"""

from __future__ import annotations

import argparse
import importlib.metadata
import copy
import json
import logging
import os
import platform
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from imf_cli.runtime import keep_freed_memory
from models.evaluation import build_filter, rank_metrics, realistic_ranks

DATASET = "countries-mm"
METRICS = ("mrr", "mr", "hits@1", "hits@3", "hits@10")


# ----------------------------------------------------------------------------------------- data
def load_splits() -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """The bundled Countries-MM, imported into a temporary IMF_HOME: split tensors, entity and relation keys."""
    from kgdata.importing import import_dataset
    from kgdata.store import EntityStore

    with tempfile.TemporaryDirectory() as home:
        import_dataset(DATASET, home=home)
        with EntityStore.open(DATASET, home) as store:
            splits = {s: store.triples_tensor(s) for s in ("train", "valid", "test")}
            return splits, list(store.entity_keys), list(store.relation_keys)


# --------------------------------------------------------------------------------- ranking
@torch.inference_mode()
def pykeen_ranks(model, triples: torch.Tensor, index, num_relations: int, batch_size: int = 256) -> torch.Tensor:
    """Filtered realistic ranks of both directions of ``triples``, with the code ``imf eval`` uses.

    Scored as PyKEEN's ``predict_t`` / ``predict_h`` do for a model trained with inverse triples, without
    their sigmoid (which can tie saturated scores): tail queries ``(h, r, ?)`` by ``score_t`` and head
    queries through the inverse relation, ``(t, r_inv, ?)``, by ``score_h_inverse``. The filter rows are
    looked up as ``(h, r)`` and ``(t, r + R)``, as in :func:`models.evaluation.evaluate_ranks`.
    """
    model.eval()
    ranks = []
    for batch in triples.split(batch_size):
        heads, relations, tails = batch.unbind(1)
        heads, relations, tails = heads.long(), relations.long(), tails.long()
        for query, scores, answers in (
            ((heads, relations), model.score_t(model._prepare_batch(torch.stack([heads, relations], 1), 1)), tails),
            (
                (tails, relations + num_relations),
                model.score_h_inverse(rt_batch=model._prepare_batch(torch.stack([relations, tails], 1), 0)),
                heads,
            ),
        ):
            rows, candidates = index.lookup(*query)
            ranks.append(realistic_ranks(scores.float(), answers, rows, candidates))
    return torch.cat(ranks)


# --------------------------------------------------------------------------------- PyKEEN
def import_pykeen():
    logging.getLogger("torch_max_mem").setLevel(logging.ERROR)  # "tensors on cpu ... not considered safe": harmless
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pykeen.evaluation import RankBasedEvaluator
            from pykeen.models import ComplEx, TuckER
            from pykeen.training import LCWATrainingLoop
            from pykeen.training.callbacks import TrainingCallback
            from pykeen.triples import TriplesFactory
            from pykeen.utils import set_random_seed
    except ImportError:
        return None
    return {
        "version": importlib.metadata.version("pykeen"),
        "RankBasedEvaluator": RankBasedEvaluator,
        "TuckER": TuckER,
        "ComplEx": ComplEx,
        "LCWATrainingLoop": LCWATrainingLoop,
        "TrainingCallback": TrainingCallback,
        "TriplesFactory": TriplesFactory,
        "set_random_seed": set_random_seed,
    }


def pykeen_specs(args: argparse.Namespace) -> dict[str, dict]:
    """Name → model class name, model kwargs, learning rate, epoch cap, label smoothing, a description."""
    return {
        "TuckER": {
            "model": "TuckER",
            "kwargs": {"embedding_dim": args.dim, "relation_dim": args.tucker_relation_dim},  # dropouts 0.3/0.4/0.5, BN
            "lr": args.tucker_lr,
            "epochs": args.tucker_epochs,
            "label_smoothing": 0.1,
            "describe": f"d_e {args.dim}, d_r {args.tucker_relation_dim}, dropout 0.3/0.4/0.5, BN, BCE, "
            f"label smoothing 0.1, Adam lr {args.tucker_lr}",
        },
        "ComplEx": {
            "model": "ComplEx",
            "kwargs": {"embedding_dim": args.dim, "loss": "bcewithlogits"},  # PyKEEN's default L2 regulariser
            "lr": args.complex_lr,
            "epochs": args.complex_epochs,
            "label_smoothing": 0.0,
            "describe": f"d {args.dim} (complex), BCE, PyKEEN's default L2 regulariser, Adam lr {args.complex_lr}",
        },
    }


def run_pykeen(
    name: str, spec: dict, pk: dict, splits: dict[str, torch.Tensor], keys: tuple[list[str], list[str]], args
) -> dict:
    """Train one PyKEEN model with early stopping on valid MRR and return its test metrics and timings."""
    entity_keys, relation_keys = keys
    num_entities, num_relations = len(entity_keys), len(relation_keys)
    pk["set_random_seed"](args.seed)
    factory = pk["TriplesFactory"](
        mapped_triples=splits["train"],
        entity_to_id={key: i for i, key in enumerate(entity_keys)},
        relation_to_id={key: i for i, key in enumerate(relation_keys)},
        create_inverse_triples=True,
    )
    model = pk[spec["model"]](triples_factory=factory, random_seed=args.seed, **spec["kwargs"])
    valid_index = build_filter([splits["train"], splits["valid"]], num_entities=num_entities, num_relations=num_relations)

    max_epochs = spec["epochs"]
    state = {"best_mrr": -1.0, "best_epoch": 0, "best_weights": None, "bad": 0, "eval_s": 0.0, "epochs": 0}
    state["stop"] = f"epoch cap {max_epochs}"
    started = time.perf_counter()

    class EarlyStopping(pk["TrainingCallback"]):
        def post_epoch(self, epoch: int, epoch_loss: float, **kwargs) -> None:
            state["epochs"] = epoch
            out_of_time = time.perf_counter() - started > args.max_seconds
            if epoch % args.eval_every and not out_of_time and epoch != max_epochs:
                return
            eval_started = time.perf_counter()
            mrr = rank_metrics(pykeen_ranks(self.model, splits["valid"], valid_index, num_relations))["mrr"]
            self.model.train()
            state["eval_s"] += time.perf_counter() - eval_started
            if mrr > state["best_mrr"]:
                state.update(best_mrr=mrr, best_epoch=epoch, bad=0, best_weights=copy.deepcopy(self.model.state_dict()))
            else:
                state["bad"] += 1
            if args.verbose:
                print(f"  {name} epoch {epoch}: valid MRR {mrr:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
            if state["bad"] >= args.patience or out_of_time:
                state["stop"] = "early stopping" if state["bad"] >= args.patience else f"time cap {args.max_seconds:.0f} s"
                self.training_loop._should_stop = True  # how PyKEEN's own early stopper ends the loop

    loop = pk["LCWATrainingLoop"](
        model=model, triples_factory=factory, optimizer=torch.optim.Adam(model.parameters(), lr=spec["lr"])
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loop.train(
            triples_factory=factory,
            num_epochs=max_epochs,
            batch_size=args.batch_size,
            label_smoothing=spec["label_smoothing"],
            use_tqdm=False,
            callbacks=EarlyStopping(),
        )
    total_s = time.perf_counter() - started
    model.load_state_dict(state["best_weights"])

    test_index = build_filter(splits.values(), num_entities=num_entities, num_relations=num_relations)
    metrics = rank_metrics(pykeen_ranks(model, splits["test"], test_index, num_relations))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        own = pk["RankBasedEvaluator"](filtered=True).evaluate(
            model,
            splits["test"],
            additional_filter_triples=[splits["train"], splits["valid"]],
            use_tqdm=False,
            batch_size=256,
        )
    return {
        "metrics": metrics,
        "pykeen_mrr": float(own.get_metric("both.realistic.inverse_harmonic_mean_rank")),
        "train_s": total_s,
        "valid_eval_s": state["eval_s"],
        "epochs": state["epochs"],
        "best_epoch": state["best_epoch"],
        "best_valid_mrr": state["best_mrr"],
        "stop": state["stop"],
    }


# ------------------------------------------------------------------------------------ imf runs
def imf_rows(run_dir: Path) -> tuple[list[tuple[str, dict]], dict]:
    """``([(label, metrics)], info)`` of one run: fused, each branch, mean fusion."""
    path = run_dir / "metrics-test.json"
    if path.is_file():
        result, source = json.loads(path.read_text(encoding="utf-8")), path.name
    else:
        from imf_cli.run_eval import evaluate_run

        result, source = evaluate_run(run_dir, split="test"), "evaluate_run()"
    if "fused" in result:  # {"split", "checkpoint", "fused", "branches", "mean_fusion"}
        fused, branches, mean = result["fused"], dict(result.get("branches") or {}), result.get("mean_fusion")
    else:  # {"metrics": {branch: {...}, "fused": {...}}}
        branches = dict(result["metrics"])
        fused, mean = branches.pop("fused"), branches.pop("mean_fusion", None)
    rows = [("fused", fused), *((f"{branch} branch", values) for branch, values in branches.items())]
    if mean:
        rows.append(("mean fusion", mean))
    return rows, {"checkpoint": result.get("checkpoint", "best"), "source": source, **run_info(run_dir)}


def run_info(run_dir: Path) -> dict:
    """Training seconds, epochs and best epoch from ``trace.jsonl``; branches, dim and seed from ``config.yaml``."""
    info: dict = {}
    trace = run_dir / "trace.jsonl"
    if trace.is_file():
        records = [json.loads(line) for line in trace.read_text(encoding="utf-8").splitlines() if line.strip()]
        info["train_s"] = sum(sum(r.get("seconds", {}).values()) for r in records)
        info["epochs"] = max((r["epoch"] for r in records), default=0)
        if records and records[-1].get("best_epoch") is not None:
            info["best_epoch"] = records[-1]["best_epoch"]
    config = run_dir / "config.yaml"
    if config.is_file():
        import yaml

        values = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        model = values.get("model", values.get("config", {}).get("model", {})) or {}
        info["dim"], info["modalities"] = model.get("dim"), model.get("modalities")
        info["seed"] = values.get("seed", (values.get("config", {}).get("train") or {}).get("seed"))
    return info


# ------------------------------------------------------------------------------------ output
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, Python {platform.python_version()}"


def row(model: str, metrics: dict, train_s: float | None, notes: str) -> str:
    cells = [f"{metrics['mrr']:.4f}", f"{metrics['mr']:.1f}", *(f"{metrics[f'hits@{k}']:.4f}" for k in (1, 3, 10))]
    seconds = f"{train_s:.0f}" if train_s is not None else "–"
    return f"| {model} | " + " | ".join(cells) + f" | {seconds} | {notes} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--imf-run", type=Path, action="append", default=[], help="an imf run directory (repeatable)")
    parser.add_argument("--skip-pykeen", action="store_true", help="only the imf runs")
    parser.add_argument("--models", default="TuckER,ComplEx", help="PyKEEN models, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=200, help="entity embedding size (ComplEx: complex dims)")
    parser.add_argument("--tucker-relation-dim", type=int, default=30, help="TuckER relation embedding size")
    parser.add_argument("--tucker-lr", type=float, default=0.01)
    parser.add_argument("--complex-lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--eval-every", type=int, default=5, help="epochs between valid evaluations")
    parser.add_argument("--patience", type=int, default=4, help="valid evaluations without improvement before stopping")
    parser.add_argument("--tucker-epochs", type=int, default=50, help="TuckER: at most this many epochs")
    parser.add_argument("--complex-epochs", type=int, default=200, help="ComplEx: at most this many epochs")
    parser.add_argument("--max-seconds", type=float, default=330, help="per model: a safety cap on training time")
    parser.add_argument("--verbose", action="store_true", help="print each valid evaluation")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the imf command does; PyKEEN runs in this process too
    torch.manual_seed(args.seed)
    command = "python benchmarks/bench_quality.py " + shlex.join(sys.argv[1:])
    lines = [
        "| model | MRR | MR | Hits@1 | Hits@3 | Hits@10 | train s | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    notes: list[str] = []

    if not args.skip_pykeen:
        pk = import_pykeen()
        if pk is None:
            print("PyKEEN: skipped, pykeen is not importable (pip install -e '.[bench]')")
        else:
            splits, entity_keys, relation_keys = load_splits()
            print(
                f"{DATASET}: {len(entity_keys)} entities, {len(relation_keys)} relations, "
                + " / ".join(f"{len(splits[s]):,}" for s in splits)
                + f" train / valid / test; PyKEEN {pk['version']}, seed {args.seed}",
                flush=True,
            )
            specs = pykeen_specs(args)
            for name in [m.strip() for m in args.models.split(",") if m.strip()]:
                result = run_pykeen(name, specs[name], pk, splits, (entity_keys, relation_keys), args)
                m = result["metrics"]
                print(
                    f"PyKEEN {name}: {result['epochs']} epochs ({result['stop']}) in {result['train_s']:.1f} s "
                    f"({result['valid_eval_s']:.1f} s of it valid evaluation), best valid MRR "
                    f"{result['best_valid_mrr']:.4f} at epoch {result['best_epoch']}; test MRR {m['mrr']:.4f} "
                    f"(PyKEEN's own evaluator: {result['pykeen_mrr']:.4f})",
                    flush=True,
                )
                lines.append(
                    row(
                        f"PyKEEN {name} (LCWA)",
                        m,
                        result["train_s"],
                        f"{specs[name]['describe']}, batch {args.batch_size}; best epoch {result['best_epoch']} "
                        f"of {result['epochs']} ({result['stop']})",
                    )
                )

    for run_dir in args.imf_run:
        rows, info = imf_rows(run_dir)
        described = ", ".join(
            part
            for part in (
                "+".join(info["modalities"]) if info.get("modalities") else "",
                f"dim {info['dim']}" if info.get("dim") else "",
                f"seed {info['seed']}" if info.get("seed") is not None else "",
                f"{info['checkpoint']}.pt" + (f" (epoch {info['best_epoch']} of {info['epochs']})" if "best_epoch" in info else ""),
                f"from {info['source']}",
            )
            if part
        )
        notes.append(f"imf run `{run_dir.name}`: {described}")
        for index, (label, metrics) in enumerate(rows):
            lines.append(row(f"imf {run_dir.name}: {label}", metrics, info.get("train_s") if index == 0 else None, described if index == 0 else ""))

    print()
    print(f"Machine: {machine()}")
    print(f"Command: `{command}`")
    print(
        f"Test split, both directions, filtered with train + valid + test, realistic ranks; seed {args.seed}. "
        f"PyKEEN models selected on valid MRR (filter train + valid) every {args.eval_every} epochs, patience "
        f"{args.patience} evaluations; train s includes those valid evaluations."
    )
    for note in notes:
        print(note)
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
