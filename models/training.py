"""The training loop: 1-N over ``(head, relation)`` groups, early stopping on valid MRR, resumable runs, DDP.

:func:`train` writes a *write-once* run directory::

    config.yaml    resolved config (seed included), data sizes and fingerprint, caller metadata, environment
    trace.jsonl    one JSON line per epoch: lr, loss terms, valid metrics when evaluated, seconds spent on each
    best.pt        checkpoint of the epoch with the best valid fused MRR
    last.pt        checkpoint of the last finished epoch, which :func:`resume` continues from

Model selection uses only the valid split: it is ranked with a filter of train + valid triples, and
the test split is never read during training. On CPU, a run killed after any epoch and resumed ends
with the same trace metrics and weights as an uninterrupted run, because the checkpoint holds every
RNG state, including the ``torch.Generator`` that shuffles the batches.

Under ``torchrun`` each process trains on its shard of each epoch's batches (so the effective batch
is ``world_size × batch_size``). Only rank 0 evaluates and writes files; its decisions are broadcast.
"""

from __future__ import annotations

import hashlib
import json
import platform
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from models import distributed
from models.calibration import fit_decision_weights
from models.checkpoint import capture_rng_state, read_checkpoint, restore_rng_state, save_checkpoint
from models.config import RunConfig
from models.evaluation import FUSED, build_filter, evaluate
from models.imf import IMF, STRUCTURE, build_model
from models.index import TailIndex, with_inverses
from models.losses import imf_objective

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class KGTensors:
    """A knowledge graph as tensors, everything training needs. Relation ids are in ``[0, R)``, without inverses.

    Attributes:
        num_entities: ``N``.
        num_relations: ``R``.
        train, valid, test: ``(n, 3)`` int64 ``(head, relation, tail)`` triples.
        features: Modality → ``(matrix (N, D_m) float32, mask (N,) bool)``; True marks a real feature.
        structure_entity_init: Optional ``(N, d)`` GAT entity vectors for the structure branch.
        structure_relation_init: Optional ``(R, d)`` GAT relation vectors.
    """

    num_entities: int
    num_relations: int
    train: Tensor
    valid: Tensor
    test: Tensor
    features: Mapping[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    structure_entity_init: Tensor | None = None
    structure_relation_init: Tensor | None = None

    def __post_init__(self) -> None:
        for split in ("train", "valid", "test"):
            triples = getattr(self, split)
            if triples.dim() != 2 or triples.shape[1] != 3:
                raise ValueError(f"{split} triples must have shape (n, 3), got {tuple(triples.shape)}")
            if triples.numel() and (
                triples[:, [0, 2]].min() < 0
                or triples[:, [0, 2]].max() >= self.num_entities
                or triples[:, 1].min() < 0
                or triples[:, 1].max() >= self.num_relations
            ):
                raise ValueError(
                    f"{split} triples hold ids outside {self.num_entities} entities and {self.num_relations} relations"
                )
        for modality, (matrix, mask) in self.features.items():
            if matrix.dim() != 2 or matrix.shape[0] != self.num_entities or mask.shape != (self.num_entities,):
                raise ValueError(
                    f"features of {modality!r} must be ({self.num_entities}, D) with a ({self.num_entities},) mask"
                )

    @property
    def feature_dims(self) -> dict[str, int]:
        return {modality: matrix.shape[1] for modality, (matrix, _) in self.features.items()}

    def fingerprint(self) -> str:
        """A hash of the sizes and triples, to check that a resumed run sees the same data."""
        sizes = f"{self.num_entities}/{self.num_relations}/{sorted(self.feature_dims.items())}"
        digest = hashlib.sha256(sizes.encode())
        for triples in (self.train, self.valid, self.test):
            digest.update(triples.long().contiguous().cpu().numpy().tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class TrainResult:
    """How a run ended. ``best_valid_mrr`` is the valid fused MRR of ``best.pt`` (None if never evaluated)."""

    run_dir: Path
    seed: int
    epochs_completed: int
    best_epoch: int
    best_valid_mrr: float | None
    stopped_early: bool


def train(
    data: KGTensors,
    config: RunConfig,
    run_dir: str | Path,
    *,
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train IMF on ``data`` into a new run directory.

    Args:
        data: The KG, features and optional structure initialisation.
        config: The resolved config. If ``config.train.seed`` is None, a seed is drawn and recorded.
        run_dir: A directory that does not exist yet or is empty; runs are write-once.
        metadata: JSON-serialisable facts to record in ``config.yaml`` and the checkpoints
            (dataset name and hash, feature manifests, git commit, …).
        progress: Show a rich progress bar (rank 0 only).
        on_epoch_end: Called on rank 0 with each epoch's trace record, after ``last.pt`` is written.

    Raises:
        FileExistsError: If ``run_dir`` holds files.
        ValueError: If the data lack a split or a modality the config needs.
    """
    run_dir = Path(run_dir)
    metadata = json.loads(json.dumps(dict(metadata or {})))  # fail early on values YAML/torch.load can't hold
    if not len(data.train) or not len(data.valid):
        raise ValueError("training needs non-empty train and valid splits (valid selects the model)")
    fingerprint = data.fingerprint()
    context, device = distributed.setup(config.train.device)
    try:
        seed = config.train.seed if config.train.seed is not None else context.broadcast(secrets.randbits(31))
        config = config.with_seed(seed)
        if context.is_main:
            _create_run_dir(run_dir, config, data, fingerprint, metadata, device, context)
        context.barrier()
        _seed_everything(seed, context.rank)
        trainer = _Trainer(data, fingerprint, config, run_dir, context, device, metadata=metadata)
        trainer.initialise()
        return trainer.run(progress=progress, on_epoch_end=on_epoch_end)
    finally:
        distributed.teardown(context)


def resume(
    run_dir: str | Path,
    data: KGTensors,
    *,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Continue the run in ``run_dir`` from its ``last.pt`` with the same ``data``.

    A run that already finished returns at once. Trace lines written after ``last.pt`` are dropped,
    since the resumed run writes them again.

    Raises:
        CheckpointError: If ``last.pt`` is missing or unreadable.
        ValueError: If ``data`` is not the data the run was started with.
    """
    run_dir = Path(run_dir)
    payload = read_checkpoint(run_dir / "last.pt")
    fingerprint = data.fingerprint()
    if payload["data_fingerprint"] != fingerprint:
        raise ValueError(f"the data differ from the data run {run_dir} was trained on")
    config = RunConfig.from_dict(payload["config"])
    context, device = distributed.setup(config.train.device)
    try:
        trainer = _Trainer(data, fingerprint, config, run_dir, context, device, metadata=payload["metadata"])
        trainer.restore(payload)
        if context.is_main:
            _truncate_trace(run_dir / "trace.jsonl", trainer.epoch)
        context.barrier()
        return trainer.run(progress=progress, on_epoch_end=on_epoch_end)
    finally:
        distributed.teardown(context)


class _Objective(nn.Module):
    """The model and its loss as one module, so that DDP sees every parameter used inside ``forward``."""

    def __init__(
        self,
        model: IMF,
        *,
        label_smoothing: float,
        contrastive_weight: float,
        fused_weight: float,
        temperature: float,
    ):
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing
        self.contrastive_weight = contrastive_weight
        self.fused_weight = fused_weight
        self.temperature = temperature

    def forward(self, heads: Tensor, relations: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of queries ``(B,)`` with multi-hot ``targets`` ``(B, N)``, and its detached terms."""
        encoded = self.model.encode()
        scores = self.model(heads, relations, encoded=encoded)
        entities = torch.unique(heads)
        views = {m: encoded[m].entities[entities] for m in self.model.modalities}
        masks = {m: mask[entities] for m in self.model.modalities if (mask := self.model.feature_mask(m)) is not None}
        terms = imf_objective(
            scores,
            targets,
            views,
            masks=masks,
            label_smoothing=self.label_smoothing,
            contrastive_weight=self.contrastive_weight,
            fused_weight=self.fused_weight,
            temperature=self.temperature,
        )
        return terms.total, terms.detached()


class _Trainer:
    """The state of one run (model, optimizer, counters, RNG) and the epoch loop."""

    def __init__(
        self,
        data: KGTensors,
        fingerprint: str,
        config: RunConfig,
        run_dir: Path,
        context: distributed.Distributed,
        device: torch.device,
        *,
        metadata: dict[str, Any],
    ):
        """``fingerprint`` is ``data.fingerprint()``, which the caller has already computed."""
        self.data = data
        self.config = config
        self.run_dir = run_dir
        self.context = context
        self.device = device
        self.metadata = metadata
        missing = [m for m in config.model.modalities if m != STRUCTURE and m not in data.features]
        if missing:
            raise ValueError(f"the config uses modality {missing[0]!r} but the data have no features for it")
        self.fingerprint = fingerprint
        self.model_args = {
            "num_entities": data.num_entities,
            "num_relations": data.num_relations,
            "feature_dims": {m: data.feature_dims[m] for m in config.model.modalities if m != STRUCTURE},
        }
        self.model = build_model(config.model, **self.model_args).to(device)
        settings = config.train
        # Fitted on valid at each evaluation (models.calibration), not by gradient; one branch has nothing to fit.
        self.fit_fusion = (
            settings.fit_fusion_on_valid and config.model.fusion == "learned" and len(self.model.branch_names) > 1
        )
        if self.fit_fusion:
            self.model.decision.logits.requires_grad_(False)
        self.objective = _Objective(
            self.model,
            label_smoothing=settings.label_smoothing,
            contrastive_weight=settings.contrastive_weight,
            fused_weight=settings.fused_loss_weight,
            temperature=settings.temperature,
        )
        # The fused kernel updates parameters in place; the default foreach path allocates
        # parameter-sized temporaries each step (four d³ cores), which cost more in page faults than
        # in arithmetic on the CPU (4.9 vs 7.8 s per Countries-MM epoch at dim 256).
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, fused=True
        )
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=settings.lr_decay)
        self.shuffle = torch.Generator().manual_seed(settings.seed)

        relation_ids = 2 * data.num_relations
        self.train_index = TailIndex.from_triples(
            with_inverses(data.train.long(), data.num_relations),
            num_entities=data.num_entities,
            num_relations=relation_ids,
        ).to(device)
        self.group_heads, self.group_relations = self.train_index.pairs()
        self.valid_filter = build_filter(
            [data.train, data.valid], num_entities=data.num_entities, num_relations=data.num_relations
        )

        self.epoch = 0
        self.best_epoch = 0
        self.best_valid_mrr: float | None = None
        self.bad_evaluations = 0
        self.finished = False
        self.stopped_early = False

    # -- state ---------------------------------------------------------------------------------------

    def initialise(self) -> None:
        """Load the frozen features and the optional structure initialisation into a fresh model."""
        for modality in self.model.feature_dims:
            matrix, mask = self.data.features[modality]
            self.model.set_features(modality, matrix, mask)
        if STRUCTURE in self.model.modalities:
            self.model.set_structure_init(self.data.structure_entity_init, self.data.structure_relation_init)

    def restore(self, payload: dict[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`_checkpoint`."""
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.epoch = payload["epoch"]
        self.best_epoch = payload["best_epoch"]
        self.best_valid_mrr = payload["best_valid_mrr"]
        self.bad_evaluations = payload["bad_evaluations"]
        self.finished = payload["finished"]
        self.stopped_early = payload["stopped_early"]
        states = payload["rng"]
        restore_rng_state(states[self.context.rank % len(states)], self.shuffle)

    def _checkpoint(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "model_args": self.model_args,
            "config": self.config.to_dict(),
            "metadata": self.metadata,
            "data_fingerprint": self.fingerprint,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "best_epoch": self.best_epoch,
            "best_valid_mrr": self.best_valid_mrr,
            "bad_evaluations": self.bad_evaluations,
            "finished": self.finished,
            "stopped_early": self.stopped_early,
            "rng": rng,
            "world_size": self.context.world_size,
        }

    def result(self) -> TrainResult:
        return TrainResult(
            run_dir=self.run_dir,
            seed=self.config.train.seed,
            epochs_completed=self.epoch,
            best_epoch=self.best_epoch,
            best_valid_mrr=self.best_valid_mrr,
            stopped_early=self.stopped_early,
        )

    # -- loop ----------------------------------------------------------------------------------------

    def run(self, *, progress: bool, on_epoch_end: EpochCallback | None) -> TrainResult:
        settings = self.config.train
        # Wrapped only now, after initialise() or restore(): DDP copies rank 0's weights to every rank here.
        step = self.objective
        if self.context.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            step = DistributedDataParallel(self.objective, device_ids=device_ids)
        with _Progress(progress and self.context.is_main, settings.epochs, self.epoch) as bar:
            while not self.finished:
                self.epoch += 1
                started = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                losses = self._train_epoch(step, bar)
                seconds = {"train": time.perf_counter() - started}
                record: dict[str, Any] = {"epoch": self.epoch, "lr": lr, "loss": losses, "seconds": seconds}
                improved = False
                if self.epoch % settings.eval_every == 0 or self.epoch == settings.epochs:
                    record["valid"], weights = self._validate()
                    if weights is not None:
                        record["fusion_weights"] = weights
                    seconds["valid"] = time.perf_counter() - started - seconds["train"]
                    improved = self._update_best(record["valid"])
                self.stopped_early = settings.patience > 0 and self.bad_evaluations >= settings.patience
                self.finished = self.stopped_early or self.epoch >= settings.epochs
                record.update(best_epoch=self.best_epoch, best_valid_mrr=self.best_valid_mrr)
                self._write(record, improved, last=self.finished or self.epoch % settings.checkpoint_every == 0)
                bar.epoch_done(self.epoch, losses["total"], record.get("valid"))
                if on_epoch_end is not None and self.context.is_main:
                    on_epoch_end(record)
        return self.result()

    def _train_epoch(self, step: nn.Module, bar: _Progress) -> dict[str, float]:
        self.model.train()
        settings = self.config.train
        order = self.context.shard(torch.randperm(len(self.train_index), generator=self.shuffle))
        on_cuda = self.device.type == "cuda"
        batches = order.split(settings.batch_size)
        sums: dict[str, Tensor] = {}
        rows = 0
        for batch in batches:
            if len(batch) < 2:  # batch norm cannot train on one row; every rank skips the same batch
                continue
            batch = batch.to(self.device)
            heads, relations = self.group_heads[batch], self.group_relations[batch]
            targets = self.train_index.multi_hot(heads, relations)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=on_cuda):
                total, terms = step(heads, relations, targets)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value * len(batch)
            rows += len(batch)
            bar.advance(1 / len(batches))
        self.scheduler.step()
        return {name: self.context.mean(value / rows).item() for name, value in sums.items()}

    def _validate(self) -> tuple[dict[str, dict[str, float]], dict[str, float] | None]:
        """Valid metrics, after refitting the decision weights on valid when configured; and those weights."""
        result = None
        if self.context.is_main:
            weights = None
            if self.fit_fusion:
                fitted = fit_decision_weights(
                    self.model,
                    self.data.valid,
                    self.valid_filter,
                    num_relations=self.data.num_relations,
                    batch_size=self.config.eval.batch_size,
                    seed=self.config.train.seed,
                )
                weights = dict(zip(self.model.branch_names, fitted.tolist()))
            metrics = evaluate(
                self.model,
                self.data.valid,
                self.valid_filter,
                batch_size=self.config.eval.batch_size,
                num_relations=self.data.num_relations,
            )
            result = (metrics, weights)
        metrics, weights = self.context.broadcast(result)
        if weights is not None and not self.context.is_main:
            with torch.no_grad():
                logits = torch.tensor(list(weights.values()), device=self.device).log()
                self.model.decision.logits.copy_(logits - logits.mean())
        return metrics, weights

    def _update_best(self, metrics: dict[str, dict[str, float]]) -> bool:
        mrr = metrics[FUSED]["mrr"]
        if self.best_valid_mrr is None or mrr > self.best_valid_mrr:
            self.best_valid_mrr, self.best_epoch, self.bad_evaluations = mrr, self.epoch, 0
            return True
        self.bad_evaluations += 1
        return False

    def _write(self, record: dict[str, Any], improved: bool, *, last: bool) -> None:
        """Write ``best.pt`` (if improved), the trace line, then ``last.pt`` (if ``last``).

        No checkpoint is ever ahead of the trace; trace lines after ``last.pt`` are dropped on resume.
        """
        payload = None
        if improved or last:  # the same on every rank: the gather is a collective
            rng = self.context.gather(capture_rng_state(self.shuffle))
            payload = self._checkpoint(rng) if self.context.is_main else None
        if self.context.is_main:
            if improved:
                save_checkpoint(self.run_dir / "best.pt", payload)
            with open(self.run_dir / "trace.jsonl", "a", encoding="utf-8") as trace:
                trace.write(json.dumps(record) + "\n")
            if last:
                save_checkpoint(self.run_dir / "last.pt", payload)
        self.context.barrier()


class _Progress:
    """A rich progress bar over the run's epochs with the last epoch's loss and the last valid fused MRR, or nothing."""

    def __init__(self, enabled: bool, epochs: int, completed_epochs: int):
        self.enabled = enabled
        self.epochs = epochs
        self.completed_epochs = completed_epochs
        self.bar = None
        self.task = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.total:.0f}"),
                BarColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("valid MRR {task.fields[mrr]}"),
                TimeElapsedColumn(),
            )
            self.bar.start()
            done = self.completed_epochs
            self.task = self.bar.add_task("train", total=self.epochs, completed=done, epoch=done, loss="–", mrr="–")
        return self

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.stop()

    def advance(self, fraction: float) -> None:
        """A batch is done: move by ``fraction`` of an epoch."""
        if self.bar is not None:
            self.bar.advance(self.task, fraction)

    def epoch_done(self, epoch: int, loss: float, valid: dict[str, dict[str, float]] | None) -> None:
        """An epoch is done, with its mean loss and, if it was evaluated, its valid metrics."""
        if self.bar is None:
            return
        fields = {"epoch": epoch, "loss": f"{loss:.4f}"}
        if valid is not None:
            fields["mrr"] = f"{valid[FUSED]['mrr']:.4f}"
        self.bar.update(self.task, completed=epoch, **fields)


def _seed_everything(seed: int, rank: int) -> None:
    """Seed Python, numpy and torch; torch's per-rank offset gives the ranks different dropout masks."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed + rank)


def _create_run_dir(
    run_dir: Path,
    config: RunConfig,
    data: KGTensors,
    fingerprint: str,
    metadata: dict[str, Any],
    device: torch.device,
    context: distributed.Distributed,
) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"run directory {run_dir} is not empty; runs are write-once (use resume to continue one)")
    run_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "config": config.to_dict(),
        "seed": config.train.seed,
        "data": {
            "num_entities": data.num_entities,
            "num_relations": data.num_relations,
            "feature_dims": data.feature_dims,
            "triples": {split: len(getattr(data, split)) for split in ("train", "valid", "test")},
            "fingerprint": fingerprint,
        },
        "metadata": metadata,
        "environment": {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "device": str(device),
            "world_size": context.world_size,
        },
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def _truncate_trace(path: Path, epoch: int) -> None:
    """Keep the trace lines of epochs up to ``epoch``.

    A torn last line (the run was killed while writing it) is dropped. Any other line that is not a
    JSON record with an ``epoch`` raises ``ValueError`` naming ``path`` and the line.
    """
    if not path.exists():
        return
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines(keepends=True)
    kept = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            line_epoch = record["epoch"] if isinstance(record, dict) else None
        except (json.JSONDecodeError, KeyError):
            line_epoch = None
        if not isinstance(line_epoch, int):
            if number == len(lines) and not line.endswith("\n"):
                break  # torn by a kill mid-write; the resumed run writes its epoch again
            raise ValueError(f"{path}:{number}: not a trace record (a JSON object with an integer 'epoch')")
        if line_epoch <= epoch:
            kept.append(line if line.endswith("\n") else line + "\n")
    path.write_text("".join(kept), encoding="utf-8")

