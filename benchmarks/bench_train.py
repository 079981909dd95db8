"""Seconds per training epoch of IMF against PyKEEN's TuckER, and the scorer's achieved GFLOP/s.

Prints figures; it is not a test. Variants, at the same dim and batch size:

  (a) IMF, structure branch only;
  (b) IMF, all four branches (structure, visual, text, multimodal);
  (c) PyKEEN's TuckER with its LCWA training loop (1-N with label smoothing), if pykeen is importable.

(a) and (b) run the real loop (``models.training.train``). The time is the training part of each
epoch, taken from the trace, and the medians leave out the first (warm-up) epoch. The default KG is a
synthetic one of Countries-MM's size: 500 entities, 10 relations, 5,600 training triples, with random
384-d text and 1280-d image features. ``--dataset-dir`` reads a real ``train.txt`` (tab-separated
head / relation / tail strings) instead, still with random features.

    python benchmarks/bench_train.py --threads 1 --epochs 3
    python benchmarks/bench_train.py --dataset-dir ../shared/datasets/FB15k-237 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from imf_cli.runtime import keep_freed_memory
from models.config import resolve
from models.scorer import TuckERScorer, apply_relation_matrices
from models.training import KGTensors, train

FEATURE_DIMS = {"text": 384, "visual": 1280}


def synthetic_kg(num_entities: int = 500, num_relations: int = 10, num_train: int = 5600, seed: int = 0) -> KGTensors:
    """Random distinct triples, split into train and 100 each for valid and test, with random features."""
    generator = torch.Generator().manual_seed(seed)
    total = num_train + 200
    keys = torch.randperm(num_entities * num_relations * num_entities, generator=generator)[:total]
    triples = torch.stack(
        [keys // (num_relations * num_entities), keys // num_entities % num_relations, keys % num_entities], dim=1
    )
    return KGTensors(
        num_entities,
        num_relations,
        triples[:num_train],
        triples[num_train : num_train + 100],
        triples[num_train + 100 :],
        features=random_features(num_entities, generator),
    )


def load_dataset(directory: Path, seed: int = 0) -> KGTensors:
    """``train.txt`` (and ``valid.txt`` / ``test.txt`` when present) of tab-separated strings, with random features."""
    entities: dict[str, int] = {}
    relations: dict[str, int] = {}

    def read(name: str) -> torch.Tensor:
        path = directory / name
        rows = []
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    head, relation, tail = line.split("\t")[:3]
                    rows.append(
                        (
                            entities.setdefault(head, len(entities)),
                            relations.setdefault(relation, len(relations)),
                            entities.setdefault(tail, len(entities)),
                        )
                    )
        return torch.tensor(rows, dtype=torch.long).view(-1, 3)

    train_triples = read("train.txt")
    valid = read("valid.txt")
    test = read("test.txt")
    if not len(valid):  # the loop needs a valid split; borrow a few training triples
        valid = train_triples[:100]
    valid = valid[:2000]  # the final epoch evaluates it; keep that short
    generator = torch.Generator().manual_seed(seed)
    return KGTensors(
        len(entities), len(relations), train_triples, valid, test, features=random_features(len(entities), generator)
    )


def random_features(num_entities: int, generator: torch.Generator) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {
        name: (torch.randn(num_entities, width, generator=generator), torch.ones(num_entities, dtype=torch.bool))
        for name, width in FEATURE_DIMS.items()
    }


def time_imf(data: KGTensors, modalities: tuple[str, ...], args: argparse.Namespace) -> list[float]:
    """Training seconds of each epoch of a real run (warm-up epoch first)."""
    config = resolve(
        {
            "model": {"dim": args.dim, "modalities": list(modalities)},
            "train": {
                "epochs": args.epochs + 1,
                "batch_size": args.batch_size,
                "eval_every": args.epochs + 1,
                "seed": 0,
                "device": args.device,
            },
        }
    )
    seconds: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        train(
            data,
            config,
            Path(scratch) / "run",
            progress=False,
            on_epoch_end=lambda record: seconds.append(record["seconds"]["train"]),
        )
    return seconds


def time_pykeen(data: KGTensors, args: argparse.Namespace) -> list[float] | None:
    """Seconds of each epoch of PyKEEN's TuckER in the LCWA loop, or None if pykeen is not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pykeen.models import TuckER
            from pykeen.training import LCWATrainingLoop
            from pykeen.training.callbacks import TrainingCallback
            from pykeen.triples import TriplesFactory
    except ImportError:
        return None

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
        mapped_triples=data.train,
        entity_to_id={str(i): i for i in range(data.num_entities)},
        relation_to_id={str(i): i for i in range(data.num_relations)},
        create_inverse_triples=True,
    )
    model = TuckER(triples_factory=factory, embedding_dim=args.dim, relation_dim=args.dim, random_seed=0)
    model = model.to(args.device)
    loop = LCWATrainingLoop(
        model=model, triples_factory=factory, optimizer=torch.optim.Adam(model.parameters(), lr=5e-4)
    )
    timer = EpochTimer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loop.train(
            triples_factory=factory,
            num_epochs=args.epochs + 1,
            batch_size=args.batch_size,
            label_smoothing=0.1,
            use_tqdm=False,
            callbacks=timer,
        )
    return timer.seconds


def scorer_gflops(data: KGTensors, args: argparse.Namespace) -> tuple[float, float, int]:
    """GFLOP/s of one TuckER scorer's forward pass on a training-sized batch, and of a plain matmul of the same FLOPs.

    FLOPs counted: building ``W_r`` for the ``U`` distinct relations (``2·U·d³``), the head products
    (``2·B·d²``) and the 1-N scores (``2·B·d·N``). On CUDA both run under bf16 autocast, as training does.
    """
    device = torch.device(args.device)
    d, batch, n = args.dim, args.batch_size, data.num_entities
    scorer = TuckERScorer(d, d).to(device).eval()
    heads, entities = torch.randn(batch, d, device=device), torch.randn(n, d, device=device)
    table = torch.randn(2 * data.num_relations, d, device=device)
    relations = torch.randint(0, 2 * data.num_relations, (batch,), device=device)
    distinct = relations.unique().numel()
    flops = 2 * distinct * d**3 + 2 * batch * d**2 + 2 * batch * d * n
    width = max(1, flops // (2 * batch * d))
    left, right = torch.randn(batch, d, device=device), torch.randn(d, width, device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        scorer_seconds = best_time(lambda: scorer(heads, table, relations, entities), device)
        matmul_seconds = best_time(lambda: left @ right, device)
    return flops / scorer_seconds / 1e9, 2 * batch * d * width / matmul_seconds / 1e9, distinct


def relation_product_seconds(data: KGTensors, args: argparse.Namespace) -> dict[str, float]:
    """Forward + backward seconds of the per-query relation products, grouped vs batched (see ``models.scorer``)."""
    device = torch.device(args.device)
    d, batch = args.dim, args.batch_size
    relations = torch.randint(0, 2 * data.num_relations, (batch,), device=device)
    _, inverse, counts = torch.unique(relations, return_inverse=True, return_counts=True)
    x = torch.randn(batch, d, device=device, requires_grad=True)
    matrices = torch.randn(counts.numel(), d, d, device=device, requires_grad=True)

    def step(grouped: bool) -> None:
        apply_relation_matrices(x, matrices, inverse, counts, grouped=grouped).sum().backward()

    return {name: best_time(lambda: step(name == "grouped"), device) for name in ("grouped", "batched")}


def best_time(function, device: torch.device, repeats: int = 10) -> float:
    function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--epochs", type=int, default=3, help="measured epochs per variant, after one warm-up")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (IMF trains with bf16 autocast on cuda)")
    parser.add_argument("--dataset-dir", type=Path, help="a directory with train.txt instead of the synthetic KG")
    parser.add_argument("--skip", nargs="*", default=[], choices=["structure", "full", "pykeen"])
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the imf command does; PyKEEN runs in this process too
    data = load_dataset(args.dataset_dir) if args.dataset_dir else synthetic_kg()
    print(
        f"KG: {data.num_entities} entities, {data.num_relations} relations, {len(data.train)} train triples; "
        f"dim {args.dim}, batch {args.batch_size}, device {args.device}, {torch.get_num_threads()} thread(s)"
    )

    variants = {
        "structure": lambda: time_imf(data, ("structure",), args),
        "full": lambda: time_imf(data, ("structure", "visual", "text"), args),
        "pykeen": lambda: time_pykeen(data, args),
    }
    labels = {
        "structure": "(a) IMF structure only",
        "full": "(b) IMF 4 branches",
        "pykeen": "(c) PyKEEN TuckER LCWA",
    }
    medians: dict[str, float] = {}
    for name, run in variants.items():
        if name in args.skip:
            continue
        seconds = run()
        if seconds is None:
            print(f"{labels[name]:<26} skipped: pykeen is not importable")
            continue
        medians[name] = statistics.median(seconds[1:] or seconds)
        print(f"{labels[name]:<26} {medians[name]:8.3f} s/epoch  (epochs: {', '.join(f'{s:.3f}' for s in seconds)})")
    for name in ("full", "structure"):
        if name in medians and "pykeen" in medians:
            print(f"ratio {name}/pykeen: {medians[name] / medians['pykeen']:.2f}")

    scorer, matmul, distinct = scorer_gflops(data, args)
    print(
        f"scorer forward: {scorer:.1f} GFLOP/s ({distinct} distinct relations in a batch of {args.batch_size}); "
        f"plain matmul of the same FLOPs: {matmul:.1f} GFLOP/s ({scorer / matmul:.0%})"
    )
    products = relation_product_seconds(data, args)
    print(
        "relation products, forward + backward: "
        + ", ".join(f"{name} {seconds * 1e3:.2f} ms" for name, seconds in products.items())
    )


if __name__ == "__main__":
    main()
