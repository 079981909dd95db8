"""Training speed: seconds per epoch, a FLOP cost model, and peers measured in the same run.

Prints figures; it is not a test. For each dataset it measures, each in a fresh subprocess (so peak
RSS belongs to one variant):

  imf structure       IMF's real loop (models.training.train), structure branch only;
  imf structure+text  IMF with the structure, text and multimodal branches (random 384-d text
                      features: speed does not depend on their values);
  pykeen              PyKEEN's TuckER with its LCWA loop (1-N, label smoothing), where practical
                      (small graphs, or --pykeen-everywhere) and pykeen is importable;
  reference           a plain-torch TuckER loop that builds W_r per query as the IMF reference
                      code does, timed on a few batches and scaled to an epoch.

All at the same dim and batch size. IMF's time is the training part of each epoch from the trace;
medians leave out the first (warm-up) epoch. The cost model counts the FLOPs of an epoch by
component (the core W_r = r ×1 W, the head products, the 1-N scoring, the Mutan fusion of every
entity, the elementwise loss and the Adam step) from the shapes and the batches the sampler really
draws, and reports the achieved GFLOP/s against a matmul peak measured in the same run. It also
counts the least memory traffic of each component and measures the memory bandwidth, and prints the
roofline floor of an epoch (each component bound by its FLOPs at the peak or its bytes at the
bandwidth, whichever is slower). After the timed epochs, torch's FLOP counter
(``torch.utils.flop_counter.FlopCounterMode``) counts the matmul FLOPs of the first steps of the same
loop, by operator, as a check on the model's matmul components.

With --contention a single-threaded CPU-bound process (a matmul loop) runs beside every
measurement, and the slowdown factors against the idle run are printed for imf and PyKEEN.

Datasets: countries-mm (bundled), umls (PyKEEN's wheel, when installed), db15k and fb15k-237
(../shared/datasets, skipped when absent).

    python benchmarks/bench_train.py --threads 2 --datasets countries-mm umls db15k fb15k-237
    python benchmarks/bench_train.py --threads 2 --datasets umls --contention
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
TEXT_DIM = 384
SMALL = ("countries-mm", "umls")


# ----------------------------------------------------------------------------------------- data
def dataset_source(name: str) -> Path | str | None:
    """Where to import ``name`` from, or None when it is not available here."""
    if name == "countries-mm":
        return "countries-mm"
    if name == "umls":
        try:
            import pykeen.datasets.umls as umls
        except ImportError:
            return None
        return Path(umls.__file__).parent
    path = SHARED / name
    return path if path.is_dir() else None


def load_kg(name: str, *, text: bool):
    """The dataset as ``KGTensors`` (imported into a scratch IMF_HOME), with random text features if asked."""
    import torch

    from kgdata.importing import import_dataset
    from kgdata.store import EntityStore
    from models.training import KGTensors

    with tempfile.TemporaryDirectory() as home:
        import_dataset(dataset_source(name), name=name.replace("_", "-"), home=home)
        with EntityStore.open(name.replace("_", "-"), home=home) as store:
            n, r = store.num_entities, store.num_relations
            splits = {s: store.triples_tensor(s) for s in ("train", "valid", "test")}
    features = {}
    if text:
        generator = torch.Generator().manual_seed(0)
        features["text"] = (torch.randn(n, TEXT_DIM, generator=generator), torch.ones(n, dtype=torch.bool))
    return KGTensors(n, r, splits["train"], splits["valid"], splits["test"], features=features)


# ------------------------------------------------------------------------------------ cost model
def cost_model(kg, *, dim: int, batch_size: int, relations_per_batch: int, branches: int, fusion_inputs: int) -> dict:
    """FLOPs of one epoch by component, from the shapes and the batches the sampler draws (mean of 3 epochs)."""
    import torch

    from models.index import TailIndex, with_inverses
    from models.sampling import epoch_batches

    index = TailIndex.from_triples(
        with_inverses(kg.train.long(), kg.num_relations), num_entities=kg.num_entities, num_relations=2 * kg.num_relations
    )
    heads, relations = index.pairs()
    generator = torch.Generator().manual_seed(0)
    distinct, squares, steps = [], [], 0
    for _ in range(3):
        batches = [b for b in epoch_batches(relations, batch_size=batch_size, relations_per_batch=relations_per_batch,
                                            generator=generator) if len(b) > 1]
        distinct.append(sum(len(torch.unique(relations[b])) for b in batches))
        squares.append(sum(len(torch.unique(heads[b])) ** 2 for b in batches))
        steps = len(batches)
    u_total = statistics.fmean(distinct)  # Σ over the epoch's batches of the distinct relations
    e2_total = statistics.fmean(squares)  # Σ over the batches of (distinct heads)²: the contrastive term's size
    queries = len(relations)
    d, n = dim, kg.num_entities
    params = branches * (d**3 + 2 * kg.num_relations * d) + (branches if fusion_inputs == 0 else fusion_inputs) * n * d
    flops = {
        # forward 2x, backward 4x (gradients of both operands) of each matmul
        "core W_r": branches * 6 * u_total * d**3,
        "head products": branches * 6 * queries * d**2,
        "1-N scoring": branches * 6 * queries * d * n,
        "loss (elementwise)": branches * 10 * queries * n,
        "optimizer (Adam)": steps * 12 * params,
    }
    # The least memory traffic of each component, in fp32 bytes (4 per number), counting each tensor a
    # kernel must read or write once: the core is read by the forward product W_r = r ×1 W and by the
    # backward one for r's gradient, and its (d³) gradient is written; the scoring reads the entity table
    # and writes the (B, N) logits forward, reads both backward and writes the table's gradient; the loss
    # makes about ten passes over the (B, N) logits; fused Adam reads parameter, gradient and both moments
    # and writes parameter and moments (7 numbers per parameter).
    fp32 = 4
    traffic = {
        "core W_r": branches * fp32 * (3 * steps * d**3 + 3 * u_total * d**2),
        "head products": branches * fp32 * (3 * u_total * d**2 + 6 * queries * d),
        "1-N scoring": branches * fp32 * (3 * steps * n * d + 3 * queries * n),
        "loss (elementwise)": branches * fp32 * 10 * queries * n,
        "optimizer (Adam)": steps * fp32 * 7 * params,
    }
    if fusion_inputs:
        rank = 2
        rows = n + 2 * kg.num_relations  # the entity fusion, and the relation fusion of every relation and inverse
        forward = fusion_inputs * 2 * rows * d * rank * d + 2 * rows * d * d  # projections, then the output map
        # Backward: every weight's gradient (as many FLOPs as the forward) and the output map's input
        # gradient; the inputs are detached, so the projections' input gradients are not computed.
        flops["Mutan fusion of every entity"] = steps * (2 * forward + 2 * rows * d * d)
        # InfoNCE between each pair of modality views of a batch's distinct heads: one (E, E) similarity
        # product forward, two backward (both views' gradients).
        pairs = fusion_inputs * (fusion_inputs - 1) // 2
        flops["contrastive (InfoNCE)"] = pairs * 6 * e2_total * d
        traffic["contrastive (InfoNCE)"] = pairs * fp32 * 6 * e2_total
        # forward: read each input, write its (N, K·h) projection, the product, the sum and the output;
        # backward reads them again and writes their gradients
        per_step = fusion_inputs * (rows * d + rows * rank * d) + rows * rank * d + 2 * rows * d
        traffic["Mutan fusion of every entity"] = steps * fp32 * 3 * per_step
    return {"flops": flops, "bytes": traffic, "steps": steps, "queries": queries,
            "distinct_per_batch": u_total / steps, "params": params}


def counted_matmul_flops(kg, config, *, steps: int = 8) -> dict:
    """Matmul FLOPs per training step as torch counts them (``torch.utils.flop_counter``), by operator,
    over the first ``steps`` steps of IMF's real loop: the check on :func:`cost_model`'s matmul parts.

    Returns ``{"per_step": total / steps, "by_operator": {name: per step}, "steps": steps}``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from models import training

    class _Counted(Exception):
        pass

    original = training._Trainer._step
    totals: dict[str, float] = {}
    seen = 0

    def counted_step(self, *args, **kwargs):
        nonlocal seen
        counter = FlopCounterMode(display=False)  # one per step: entering a counter clears its counts
        with counter:
            result = original(self, *args, **kwargs)
        for op, count in counter.get_flop_counts()["Global"].items():
            totals[str(op)] = totals.get(str(op), 0) + count
        seen += 1
        if seen == steps:
            raise _Counted
        return result

    training._Trainer._step = counted_step
    try:
        with tempfile.TemporaryDirectory() as scratch:
            training.train(kg, config, Path(scratch) / "run", progress=False)
    except _Counted:
        pass
    finally:
        training._Trainer._step = original
    by_operator = {op: count / seen for op, count in totals.items()}
    return {"per_step": sum(by_operator.values()), "by_operator": by_operator, "steps": seen}


def model_matmul_flops(cost: dict) -> float:
    """The matmul FLOPs of :func:`cost_model` per step (all but the loss and the optimizer)."""
    matmul = sum(v for k, v in cost["flops"].items() if k not in ("loss (elementwise)", "optimizer (Adam)"))
    return matmul / cost["steps"]


def roofline_floor(cost: dict, fp32_peak: float, bandwidth: float) -> tuple[float, float, float]:
    """Seconds per epoch at best: each component bound by its FLOPs at the matmul peak or its bytes at the
    memory bandwidth, whichever is slower (GFLOP/s, GB/s); also the compute-only and memory-only sums."""
    compute = {k: v / (fp32_peak * 1e9) for k, v in cost["flops"].items()}
    memory = {k: cost["bytes"].get(k, 0) / (bandwidth * 1e9) for k in cost["flops"]}
    return sum(max(compute[k], memory[k]) for k in compute), sum(compute.values()), sum(memory.values())


# ----------------------------------------------------------------------------------- workers
def worker_imf(name: str, args) -> dict:
    import torch

    from models.config import resolve
    from models.training import train

    text = args.variant == "structure+text"
    kg = load_kg(name, text=text)
    modalities = ["structure", "text"] if text else ["structure"]
    config = resolve(
        {
            "model": {"dim": args.dim, "modalities": modalities},
            "train": {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "eval_every": args.epochs,
                "patience": 0,
                "seed": 0,
                "device": "cpu",
                "checkpoint_minutes": 1e6,
                **({"relations_per_batch": args.relations_per_batch} if args.relations_per_batch is not None else {}),
                **({"precision": args.precision} if args.precision else {}),
            },
        }
    )
    records: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        train(kg, config, Path(scratch) / "run", progress=False, on_epoch_end=records.append)
    model = cost_model(
        kg, dim=args.dim, batch_size=args.batch_size, relations_per_batch=config.train.relations_per_batch,
        branches=3 if text else 1, fusion_inputs=2 if text else 0,
    )
    counted = counted_matmul_flops(kg, config)  # after the timed epochs: the counter slows the steps it counts
    return {
        "counted": counted,
        "epochs": [r["seconds"]["train"] for r in records],
        "valid_seconds": records[-1]["seconds"].get("valid"),
        "cost": model,
        "relations_per_batch": config.train.relations_per_batch,
        "threads": torch.get_num_threads(),
    }


def worker_pykeen(name: str, args) -> dict | None:
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pykeen.models import TuckER
            from pykeen.training import LCWATrainingLoop
            from pykeen.training.callbacks import TrainingCallback
            from pykeen.triples import TriplesFactory
    except ImportError:
        return None
    kg = load_kg(name, text=False)

    class EpochTimer(TrainingCallback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self.started = time.perf_counter()

        def post_epoch(self, epoch: int, epoch_loss: float, **kwargs) -> None:
            now = time.perf_counter()
            self.seconds.append(now - self.started)
            self.started = now

    factory = TriplesFactory(
        mapped_triples=kg.train,
        entity_to_id={str(i): i for i in range(kg.num_entities)},
        relation_to_id={str(i): i for i in range(kg.num_relations)},
        create_inverse_triples=True,
    )
    model = TuckER(triples_factory=factory, embedding_dim=args.dim, relation_dim=args.dim, random_seed=0)
    loop = LCWATrainingLoop(model=model, triples_factory=factory, optimizer=torch.optim.Adam(model.parameters(), lr=5e-4))
    timer = EpochTimer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loop.train(triples_factory=factory, num_epochs=args.epochs, batch_size=args.batch_size, label_smoothing=0.1,
                   use_tqdm=False, callbacks=timer)
    return {"epochs": timer.seconds}


def worker_reference(name: str, args) -> dict:
    """The IMF reference's TuckER step (W_r built per query, a (B, d, d) batched matmul), scaled to an epoch."""
    import torch
    import torch.nn.functional as F

    from models.index import TailIndex, with_inverses

    kg = load_kg(name, text=False)
    n, d = kg.num_entities, args.dim
    index = TailIndex.from_triples(
        with_inverses(kg.train.long(), kg.num_relations), num_entities=n, num_relations=2 * kg.num_relations
    )
    heads, relations = index.pairs()
    entity = torch.nn.Parameter(torch.randn(n, d) * 0.01)
    relation = torch.nn.Parameter(torch.randn(2 * kg.num_relations, d) * 0.01)
    core = torch.nn.Parameter(torch.empty(d, d, d).uniform_(-1, 1))
    bn0, bn1 = torch.nn.BatchNorm1d(d), torch.nn.BatchNorm1d(d)
    optimizer = torch.optim.Adam([entity, relation, core, *bn0.parameters(), *bn1.parameters()], lr=5e-4)
    order = torch.randperm(len(heads))
    batches = order.split(args.batch_size)
    timed = min(len(batches), 12)
    times = []
    for batch in batches[:timed]:
        started = time.perf_counter()
        h, r = heads[batch], relations[batch]
        x = F.dropout(bn0(entity[h]), 0.3)
        w = F.dropout((relation[r] @ core.view(d, -1)).view(-1, d, d), 0.4)
        q = F.dropout(bn1(torch.bmm(x.unsqueeze(1), w).squeeze(1)), 0.5)
        targets = index.multi_hot(h, r) * 0.9 + 1.0 / n
        loss = F.binary_cross_entropy_with_logits(q @ entity.T, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    per_batch = statistics.median(times[2:] or times)
    return {"per_batch": per_batch, "epoch": per_batch * len(batches), "batches": len(batches)}


def worker_peak(args) -> dict:
    """fp32 and bf16 matmul GFLOP/s on the scoring's shape (batch × d × N, the faster order) and on 2048³."""
    import torch

    def rate(dtype, m, k, n, repeats):
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        out = torch.empty(m, n, dtype=dtype)
        for _ in range(3):
            torch.mm(a, b, out=out)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(a, b, out=out)
            times.append(time.perf_counter() - started)
        return 2 * m * k * n / statistics.median(times) / 1e9

    def bandwidth(repeats=10):
        """GB/s moved over 64 M-number (256 MB) fp32 vectors: the better of an in-place scale
        (``a *= s``: read and write, 2 × 256 MB) and a triad (``c = a + s·b``: 3 × 256 MB)."""
        a, b, c = torch.rand(1 << 26), torch.rand(1 << 26), torch.empty(1 << 26)
        size = a.numel() * a.element_size()
        best = 0.0
        for streams, kernel in ((2, lambda: a.mul_(0.999)), (3, lambda: torch.add(a, b, alpha=0.5, out=c))):
            for _ in range(2):
                kernel()
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                kernel()
                times.append(time.perf_counter() - started)
            best = max(best, streams * size / statistics.median(times) / 1e9)
        return best

    def best_order(dtype, m, k, n, repeats):
        """The better of ``(m × k)·(k × n)`` and its transpose ``(n × k)·(k × m)``: the same FLOPs, and
        the training step computes the 1-N scores in whichever order is faster on the device."""
        return max(rate(dtype, m, k, n, repeats), rate(dtype, n, k, m, repeats))

    shapes = (("2048", (2048, 2048, 2048), 5), ("scoring", (args.batch_size, args.dim, 14541), 30))
    rates = {f"float32-{shape}": best_order(torch.float32, *dims, repeats) for shape, dims, repeats in shapes}
    # Without native bf16 matmuls (no AVX512-BF16 or AMX) bf16 runs near 1 GFLOP/s, and the shapes above
    # would take minutes: a 512³ probe decides whether to measure them.
    probe = rate(torch.bfloat16, 512, 512, 512, 3)
    if probe < 0.5 * rate(torch.float32, 512, 512, 512, 3):
        rates["bfloat16-512 (not native here)"] = probe
    else:
        rates.update({f"bfloat16-{shape}": best_order(torch.bfloat16, *dims, repeats) for shape, dims, repeats in shapes})
    return {**rates, "bandwidth": bandwidth()}


# -------------------------------------------------------------------------------------- driver
def run_worker(kind: str, dataset: str, args, extra: list[str]) -> dict | None:
    """Run one measurement in a fresh process; its result and peak RSS (MiB)."""
    command = [sys.executable, __file__, "--worker", kind, "--dataset", dataset, "--threads", str(args.threads),
               "--dim", str(args.dim), "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), *extra]
    if args.relations_per_batch is not None:
        command += ["--relations-per-batch", str(args.relations_per_batch)]
    if args.precision:
        command += ["--precision", args.precision]
    output = subprocess.run(command, capture_output=True, text=True, env=worker_env(args))
    if output.returncode != 0:
        print(f"  {kind} on {dataset} failed:\n{output.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(output.stdout.strip().splitlines()[-1])


def worker_env(args) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Contention:
    """A single-threaded CPU-bound process beside the measurement (a matmul loop), or nothing."""

    def __init__(self, enabled: bool):
        self.enabled, self.process = enabled, None

    def __enter__(self) -> "Contention":
        if self.enabled:
            code = "import torch\ntorch.set_num_threads(1)\na=torch.randn(512,512)\nwhile True:\n    a=(a@a).tanh()\n"
            self.process = subprocess.Popen([sys.executable, "-c", code])
            time.sleep(1.0)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["countries-mm", "umls", "db15k", "fb15k-237"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per imf/pykeen run, the first a warm-up")
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--relations-per-batch", type=int, help="override train.relations_per_batch")
    parser.add_argument("--precision", help="override train.precision")
    parser.add_argument("--variants", nargs="+", default=["structure", "structure+text", "pykeen", "reference"])
    parser.add_argument("--pykeen-everywhere", action="store_true", help="also run PyKEEN on the large graphs")
    parser.add_argument("--contention", action="store_true", help="also measure beside one CPU-bound process")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        import resource

        if args.worker != "pykeen":  # imf's command sets this before torch loads; PyKEEN runs as its users run it
            from imf_cli.runtime import yield_idle_threads

            yield_idle_threads()
        import torch

        from imf_cli.runtime import keep_freed_memory

        torch.set_num_threads(args.threads)
        keep_freed_memory()
        result = {
            "imf": lambda: worker_imf(args.dataset, args),
            "pykeen": lambda: worker_pykeen(args.dataset, args),
            "reference": lambda: worker_reference(args.dataset, args),
            "peak": lambda: worker_peak(args),
        }[args.worker]()
        if result is not None:
            result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    print(f"dim {args.dim}, batch {args.batch_size}, {args.threads} thread(s), {args.epochs} epochs per run "
          f"(first one a warm-up); machine: {os.cpu_count()} CPUs")
    peak = run_worker("peak", "none", args, [])
    peak.pop("peak_rss_mib", None)
    bandwidth = peak.pop("bandwidth")
    print("matmul peak (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()))
    print(f"memory bandwidth (the better of a *= s and c = a + s·b on 256 MB vectors): {bandwidth:.1f} GB/s")
    fp32_peak = peak["float32-2048"]
    conditions = [False, True] if args.contention else [False]
    for name in args.datasets:
        if dataset_source(name) is None:
            print(f"\n{name}: not available here, skipped")
            continue
        print(f"\n== {name}")
        medians: dict[tuple[str, bool], float] = {}
        for contended in conditions:
            label = "beside one CPU-bound process" if contended else "idle"
            with Contention(contended):
                for variant in args.variants:
                    if variant == "pykeen" and name not in SMALL and not args.pykeen_everywhere:
                        continue
                    if variant == "reference" and contended:
                        continue
                    kind = "imf" if variant.startswith("structure") else variant
                    extra = ["--variant", variant] if kind == "imf" else []
                    result = run_worker(kind, name, args, extra)
                    if result is None:
                        continue
                    report(name, variant, label, result, fp32_peak, bandwidth, medians, contended)
        for contended in conditions:
            if ("pykeen", contended) in medians and ("structure", contended) in medians:
                ratio = medians[("structure", contended)] / medians[("pykeen", contended)]
                print(f"  imf structure / PyKEEN TuckER ({'contended' if contended else 'idle'}): {ratio:.2f}x")
        if args.contention:
            for variant in ("structure", "pykeen"):
                if (variant, False) in medians and (variant, True) in medians:
                    print(f"  slowdown under contention, {variant}: {medians[(variant, True)] / medians[(variant, False)]:.2f}x")


def report(name, variant, label, result, fp32_peak, bandwidth, medians, contended) -> None:
    rss = f"peak RSS {result['peak_rss_mib']:.0f} MiB"
    if variant == "reference":
        print(f"  reference TuckER loop ({label}): {result['per_batch'] * 1e3:.0f} ms per batch, "
              f"{result['epoch']:.1f} s per epoch of {result['batches']} batches ({rss})")
        return
    epochs = result["epochs"]
    median = statistics.median(epochs[1:] or epochs)
    medians[(variant, contended)] = median
    if variant == "pykeen":
        print(f"  PyKEEN TuckER LCWA ({label}): {median:.2f} s/epoch (epochs {', '.join(f'{s:.2f}' for s in epochs)}; {rss})")
        return
    cost = result["cost"]
    total = sum(cost["flops"].values())
    matmul = sum(v for k, v in cost["flops"].items() if k not in ("loss (elementwise)", "optimizer (Adam)"))
    print(f"  imf {variant} ({label}, relations_per_batch {result['relations_per_batch']}): {median:.2f} s/epoch "
          f"(epochs {', '.join(f'{s:.2f}' for s in epochs)}), valid {result['valid_seconds']:.2f} s; {rss}")
    if contended:
        return
    print(f"    {cost['steps']} steps, {cost['queries']:,} queries, {cost['distinct_per_batch']:.1f} distinct relations "
          f"per batch; {total / 1e12:.2f} TFLOP per epoch:")
    for component, flops in cost["flops"].items():
        moved = cost["bytes"].get(component, 0)
        print(f"      {component:<30} {flops / 1e12:7.3f} TFLOP  {flops / total:5.1%}   {moved / 1e9:7.1f} GB moved "
              f"({flops / moved if moved else float('inf'):5.1f} FLOP/byte)")
    counted = result.get("counted")
    if counted:
        modelled = model_matmul_flops(cost)
        top = sorted(counted["by_operator"].items(), key=lambda item: -item[1])
        print(f"    torch's FLOP counter over the first {counted['steps']} steps: {counted['per_step'] / 1e9:.2f} GFLOP of "
              f"matmuls per step ({', '.join(f'{op} {v / 1e9:.2f}' for op, v in top)}) against the model's "
              f"{modelled / 1e9:.2f} (mean over an epoch's batches): {counted['per_step'] / modelled:.2f}x")
    floor, compute, memory = roofline_floor(cost, fp32_peak, bandwidth)
    print(f"    achieved {total / median / 1e9:.0f} GFLOP/s, matmul FLOPs at {matmul / median / 1e9:.0f} GFLOP/s = "
          f"{matmul / median / 1e9 / fp32_peak:.0%} of the fp32 matmul peak; floor at that peak {matmul / fp32_peak / 1e9:.1f} s")
    print(f"    roofline floor {floor:.1f} s/epoch (compute alone {compute:.1f} s, memory traffic alone {memory:.1f} s at "
          f"{bandwidth:.1f} GB/s): the epoch takes {median / floor:.1f}x its floor, and at the floor the matmul FLOPs "
          f"would run at {matmul / floor / 1e9 / fp32_peak:.0%} of the matmul peak")


if __name__ == "__main__":
    main()
