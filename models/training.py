"""The training loop: 1-N over ``(head, relation)`` groups, early stopping on valid MRR, resumable runs, DDP.

:func:`train` writes a *write-once* run directory::

    config.yaml    resolved config (seed included), data sizes and fingerprint, caller metadata, environment
    trace.jsonl    one strict-JSON line per epoch: lr, loss terms, valid metrics when evaluated, seconds
    best.pt        checkpoint of the epoch with the best valid fused MRR
    last.pt        checkpoint to continue from (see ``train.checkpoint_minutes``), which :func:`resume` reads

Model selection uses only the valid split: it is ranked with a filter of train + valid triples, and
the test split is never read during training. With decision weights fitted on valid, the MRR that
selects the epoch is cross-fitted (:func:`models.calibration.crossfit_valid`). On CPU, a run killed
after any checkpoint and resumed ends with the same trace metrics and weights as an uninterrupted
run, because the checkpoint holds every RNG state, including the ``torch.Generator`` that shuffles
the batches, and, for a checkpoint written mid-epoch on SIGINT or SIGTERM, the position in the epoch.

A loss that stops being finite ends the run with :class:`NonFiniteLossError`; no checkpoint of that
epoch is written, so ``best.pt`` and ``last.pt`` always hold finite weights.

Checkpoints hold no tensor that the feature files rebuild: the frozen feature matrices are left out of
the model's ``state_dict`` and the checkpoint records their hashes (``feature_hashes``), which a
resumed run checks.

Under ``torchrun`` each process trains on its shard of each epoch's batches (so the effective batch
is ``world_size × batch_size``). Only rank 0 evaluates and writes files; its decisions are broadcast.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from models import distributed
from models.calibration import crossfit_valid
from models.checkpoint import (
    CheckpointError,
    capture_rng_state,
    read_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from models.config import ConfigError, RunConfig
from models.evaluation import FUSED, MEAN_FUSION, FrozenScorer, build_filter, filter_splits, rank_metrics, rank_queries
from models.graphs import (
    GraphCaptureFailed,
    GraphedStep,
    StaticInputs,
    epoch_shape,
    hold_learning_rates,
    pack_batch,
    plain_learning_rates,
)
from models.imf import STRUCTURE, build_model
from models.index import TailIndex, with_inverses
from models.losses import Objective, Positives
from models.run_files import append_trace, read_config_document, record_resume_changes, truncate_trace, write_config
from models.kg import KGTensors
from models.loop import EpochProgress, StopSignals
from models.sampling import epoch_batches
from models.scorer import RelationGroups
from models.splits import also_in

EpochCallback = Callable[[dict[str, Any]], None]


class NonFiniteLossError(ValueError):
    """The training loss became nan or infinite: the run diverged."""

    def __init__(self, epoch: int, lr: float, run_dir: Path, terms: list[str] | None = None,
                 weights: dict[str, float] | None = None):
        """``terms``: the loss terms that are not finite; ``weights``: loss weights (``train.*``), of which
        the large ones (over 10) are named as a likelier cause than the learning rate."""
        loss = f"the {', '.join(terms)} loss" if terms else "the loss"
        large = {key: value for key, value in (weights or {}).items() if not math.isfinite(value) or abs(value) > 10}
        advice = f"a lower learning rate than train.lr = {lr:g} (e.g. --lr {lr / 10:g})"
        if large:
            advice = f"smaller loss weights ({', '.join(f'train.{k} = {v:g}' for k, v in large.items())}), or {advice}"
        super().__init__(
            f"training diverged in epoch {epoch}: {loss} is not finite (nan or inf). Nothing of that epoch "
            f"was saved. Train again with {advice}"
        )
        self.epoch = epoch
        self.run_dir = run_dir


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM stopped the run after a finished step; ``last.pt`` holds that point."""

    def __init__(self, run_dir: Path, epoch: int, batch: int, batches: int, signal_name: str):
        super().__init__(
            f"{signal_name}: stopped in epoch {epoch} after batch {batch}/{batches}; {run_dir / 'last.pt'} "
            "holds that point"
        )
        self.run_dir = run_dir
        self.epoch = epoch
        self.batch = batch


@dataclass(frozen=True)
class TrainResult:
    """How a run ended. ``best_valid_mrr`` is the valid fused MRR of ``best.pt`` (None if never evaluated)."""

    run_dir: Path
    seed: int
    epochs_completed: int
    best_epoch: int
    best_valid_mrr: float | None
    stopped_early: bool
    #: Stopped by ``train.max_minutes`` before it finished: ``imf train --resume`` continues it.
    stopped_at_time_limit: bool = False
    #: The epochs the run had completed when this invocation began (0 for a new run); equal to
    #: ``epochs_completed`` when it trained nothing. Not part of the outcome: results compare without it.
    start_epoch: int = field(default=0, compare=False)
    #: ``train.epochs`` of the run as it ended.
    max_epochs: int = field(default=0, compare=False)


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
    max_minutes: float | None = None,
    changes: Mapping[str, Any] | None = None,
    expected: RunConfig | None = None,
) -> TrainResult:
    """Continue the run in ``run_dir`` from its ``last.pt`` with the same ``data``.

    A run that already finished returns at once, unless ``changes`` give it more to do. Trace lines
    written after ``last.pt`` are dropped, since the resumed run writes them again. ``max_minutes``
    replaces the recorded ``train.max_minutes`` (the time budget of this invocation); None keeps it.
    ``changes`` sets schedule keys of :data:`models.config.RESUME_KEYS` (``{"train.epochs": 300}``
    extends a finished run, a larger ``train.patience`` continues one that stopped early); they are
    recorded in ``config.yaml`` and the checkpoints. ``expected`` is the config the run records
    elsewhere (its ``config.yaml``): a ``last.pt`` whose config differs from it beyond the schedule is
    another run's, and is refused.

    Raises:
        CheckpointError: If ``last.pt`` is missing or unreadable, or (with ``expected``) another run's.
        ConfigError: If ``changes`` touch a key outside the schedule, or a value is out of range.
            So is a ``train.epochs`` below the epochs already trained.
        ValueError: If ``data`` is not the data the run was started with.
    """
    run_dir = Path(run_dir)
    payload = read_checkpoint(run_dir / "last.pt")
    fingerprint = data.fingerprint()
    if payload["data_fingerprint"] != fingerprint:
        raise ValueError(f"the data differ from the data run {run_dir} was trained on")
    recorded = payload.get("feature_hashes")
    if recorded is not None and recorded != data.feature_hashes():
        changed = sorted(set(recorded) ^ set(data.feature_hashes()) | {
            name for name in recorded if data.feature_hashes().get(name) != recorded[name]
        })
        raise ValueError(
            f"the features of {', '.join(changed)} differ from those run {run_dir} was trained with; "
            "re-encode them as they were, or train a new run"
        )
    stored = RunConfig.from_dict(payload["config"])
    if expected is not None:
        differ = expected.differences_beyond_schedule(stored)
        if differ:
            raise CheckpointError(
                run_dir / "last.pt",
                f"its {', '.join(differ[:3])}{' …' if len(differ) > 3 else ''} differ from the run's config.yaml: "
                "it is another run's checkpoint",
            )
    config = stored.resumed_with(changes).with_max_minutes(max_minutes)
    trained, epochs = payload["epoch"], config.train.epochs
    if epochs < trained:
        raise ConfigError(
            f"train.epochs {epochs} is below the {trained} epochs run {run_dir} has already trained", key="train.epochs"
        )
    if payload.get("progress") and epochs <= trained:
        raise ConfigError(
            f"train.epochs {epochs} would end run {run_dir} inside epoch {trained + 1}, which its last.pt holds "
            f"part-way; give at least {trained + 1}",
            key="train.epochs",
        )
    changed = _schedule_changes(stored, config)
    context, device = distributed.setup(config.train.device)
    try:
        trainer = _Trainer(data, fingerprint, config, run_dir, context, device, metadata=payload["metadata"])
        trainer.restore(payload)
        if context.is_main:
            truncate_trace(run_dir / "trace.jsonl", trainer.epoch)
            if changed:
                # last.pt first: the next resume reads its config, and config.yaml must never be ahead of it
                # (a run that trains nothing now, or is killed before its next checkpoint, keeps both in step).
                state = {"config": config.to_dict(), "finished": trainer.finished, "stopped_early": trainer.stopped_early}
                save_checkpoint(run_dir / "last.pt", {**payload, **state})
                record_resume_changes(run_dir, config=config.to_dict(), epoch=trainer.epoch, changes=changed)
        del payload  # its tensors are in the model and optimizer now; hundreds of MB on the large graphs
        context.barrier()
        return trainer.run(progress=progress, on_epoch_end=on_epoch_end)
    finally:
        distributed.teardown(context)


def restart(
    run_dir: str | Path,
    data: KGTensors,
    config: RunConfig,
    *,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Start the run in ``run_dir`` again from epoch 0: it was killed before writing any ``last.pt``.

    ``config`` is the run's recorded config, seed included, so the run is the one it would have been.
    The trace and any ``best.pt`` of the killed attempt are removed first.
    """
    run_dir = Path(run_dir)
    if config.train.seed is None:
        raise ValueError(f"run {run_dir} recorded no seed; it cannot be restarted as the same run")
    context, device = distributed.setup(config.train.device)
    try:
        if context.is_main:
            for name in ("trace.jsonl", "best.pt"):
                (run_dir / name).unlink(missing_ok=True)
            recorded = read_config_document(run_dir).get("config")
            changed = _schedule_changes(RunConfig.from_dict(recorded), config) if isinstance(recorded, dict) else {}
            if changed:
                record_resume_changes(run_dir, config=config.to_dict(), epoch=0, changes=changed)
        context.barrier()
        _seed_everything(config.train.seed, context.rank)
        metadata = dict(read_config_document(run_dir).get("metadata") or {})
        trainer = _Trainer(data, data.fingerprint(), config, run_dir, context, device, metadata=metadata)
        trainer.initialise()
        return trainer.run(progress=progress, on_epoch_end=on_epoch_end)
    finally:
        distributed.teardown(context)


def _schedule_changes(stored: RunConfig, config: RunConfig) -> dict[str, Any]:
    """The dotted keys whose values a resume changed, with their new values (the time budget of one
    invocation aside: it is not a change of the run)."""
    return {key: value for key, value in config.changed_from(stored).items() if key != "train.max_minutes"}


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
        self.fit_fusion = config.fits_fusion_on_valid(len(self.model.branch_names))
        # Weights fitted on valid are held out of the optimizer; one branch has no weights to learn at all
        # (its fused score is its own), and under DDP a parameter without a gradient is an error.
        single = len(self.model.branch_names) == 1
        if (self.fit_fusion or single) and self.model.decision.mode != "mean":
            self.model.decision.logits.requires_grad_(False)
        self.objective = Objective(
            self.model,
            label_smoothing=settings.label_smoothing,
            smoothing_mode=settings.label_smoothing_mode,
            contrastive_weight=settings.contrastive_weight,
            fused_weight=settings.fused_loss_weight,
            temperature=settings.temperature,
            pairs=settings.contrastive_pairs,
        )
        # The fused kernel updates parameters in place; the default foreach path allocates
        # parameter-sized temporaries each step (four d³ cores), which cost more in page faults than
        # in arithmetic on the CPU (4.9 vs 7.8 s per Countries-MM epoch at dim 256).
        # The CUDA-graph step (models.graphs) replays the optimizer too: it needs the capturable kernel and
        # a learning rate held in a device tensor that the schedule writes into.
        self.graphed = device.type == "cuda" and settings.cuda_graphs and not context.enabled
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            fused=True,
            capturable=self.graphed,
        )
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=settings.lr_decay)
        self.lr_tensors = hold_learning_rates(self.optimizer, self.graphed, device)
        self.bf16 = settings.precision == "bf16" or (settings.precision == "auto" and device.type == "cuda")
        self.graph_step = (
            GraphedStep(self._run_static_step, lambda: self.optimizer.zero_grad(set_to_none=True), device)
            if self.graphed
            else None
        )
        self.step_shape = None
        self.shuffle = torch.Generator().manual_seed(settings.seed)

        relation_ids = 2 * data.num_relations
        # Kept on the CPU: each batch's queries, targets and relation groups are built there and sent
        # over, so the step never waits on the device.
        self.train_index = TailIndex.from_triples(
            with_inverses(data.train.long(), data.num_relations),
            num_entities=data.num_entities,
            num_relations=relation_ids,
        )
        self.group_heads, self.group_relations = self.train_index.pairs()
        self.tail_counts = self.train_index.tail_counts()
        splits = {"train": data.train, "valid": data.valid, "test": data.test}
        self.valid_triples = _selection_triples(data, settings.valid_drop_overlap)
        self.valid_filter = build_filter(
            [splits[name] for name in filter_splits("valid")],
            num_entities=data.num_entities,
            num_relations=data.num_relations,
        )
        self.feature_hashes = data.feature_hashes()

        self.epoch = 0
        self.start_epoch = 0  # the epoch this invocation began from (restore sets it)
        self.best_epoch = 0
        self.best_valid_mrr: float | None = None
        self.bad_evaluations = 0
        self.finished = False
        self.stopped_early = False
        self.stopped_at_time_limit = False  # this invocation only: not in the checkpoint
        # An epoch stopped part-way by a signal: where it stopped, to continue from there on resume.
        self.progress: dict[str, Any] | None = None
        self.last_checkpoint = time.monotonic()
        self.unreported_checkpoint_seconds = 0.0

    # -- state ---------------------------------------------------------------------------------------

    def initialise(self) -> None:
        """Load the frozen features and the optional structure initialisation into a fresh model."""
        for modality in self.model.feature_dims:
            matrix, mask = self.data.features[modality]
            self.model.set_features(modality, matrix, mask)
        if STRUCTURE in self.model.modalities:
            self.model.set_structure_init(self.data.structure_entity_init, self.data.structure_relation_init)

    def restore(self, payload: dict[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`_checkpoint`.

        The frozen features are not in the checkpoint: :meth:`initialise` attaches them first, and the
        stored weights then replace everything it initialised.
        """
        self.initialise()
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.scheduler.load_state_dict(payload["scheduler"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as error:
            raise CheckpointError(
                self.run_dir / "last.pt", f"damaged: its model, optimizer or scheduler state does not load ({error})"
            ) from None
        hold_learning_rates(self.optimizer, self.graphed, self.device, self.lr_tensors)
        self.epoch = payload["epoch"]
        self.best_epoch = payload["best_epoch"]
        self.best_valid_mrr = payload["best_valid_mrr"]
        self.bad_evaluations = payload["bad_evaluations"]
        # Decided again from the config, which a resume may have changed (more epochs, more patience);
        # with the stored config this gives the stored flags.
        settings = self.config.train
        self.stopped_early = settings.patience > 0 and self.bad_evaluations >= settings.patience
        self.finished = self.stopped_early or self.epoch >= settings.epochs
        self.start_epoch = self.epoch
        self.progress = payload.get("progress")
        states = payload["rng"]
        try:
            restore_rng_state(states[self.context.rank % len(states)], self.shuffle)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(self.run_dir / "last.pt", f"damaged: its random states do not load ({error})") from None

    def _checkpoint(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "model_args": self.model_args,
            "config": self.config.to_dict(),
            "metadata": self.metadata,
            "data_fingerprint": self.fingerprint,
            "feature_hashes": self.feature_hashes,
            "optimizer": plain_learning_rates(self.optimizer.state_dict(), "param_groups"),
            "scheduler": plain_learning_rates(self.scheduler.state_dict(), None),
            "epoch": self.epoch,
            "best_epoch": self.best_epoch,
            "best_valid_mrr": self.best_valid_mrr,
            "bad_evaluations": self.bad_evaluations,
            "finished": self.finished,
            "stopped_early": self.stopped_early,
            "progress": self.progress,
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
            stopped_at_time_limit=self.stopped_at_time_limit,
            start_epoch=self.start_epoch,
            max_epochs=self.config.train.epochs,
        )

    # -- loop ----------------------------------------------------------------------------------------

    def run(self, *, progress: bool, on_epoch_end: EpochCallback | None) -> TrainResult:
        settings = self.config.train
        # Wrapped only now, after initialise() or restore(): DDP copies rank 0's weights to every rank here.
        # The frozen feature buffers are identical on every rank and never change: no broadcast per step.
        step = self.objective
        if self.context.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            step = DistributedDataParallel(self.objective, device_ids=device_ids, broadcast_buffers=False)
        budget = 60.0 * settings.max_minutes  # seconds of this invocation; 0: none
        began = time.monotonic()
        with EpochProgress(progress and self.context.is_main, settings.epochs, self.epoch) as bar, StopSignals() as stop:
            while not self.finished:
                started = time.perf_counter()
                lr = float(self.optimizer.param_groups[0]["lr"])
                losses = self._train_epoch(step, bar, stop)
                if losses is None:  # a signal: last.pt now holds the point reached in this epoch
                    progress_state = self.progress or {}
                    raise TrainingInterrupted(
                        self.run_dir,
                        self.epoch + 1,
                        progress_state.get("batch", 0),
                        progress_state.get("batches", 0),
                        stop.name or "signal",
                    )
                self.epoch += 1
                if not all(math.isfinite(value) for value in losses.values()):
                    settings = self.config.train
                    raise NonFiniteLossError(
                        self.epoch, lr, self.run_dir, [name for name, value in losses.items() if not math.isfinite(value)],
                        {"contrastive_weight": settings.contrastive_weight, "fused_loss_weight": settings.fused_loss_weight},
                    )
                seconds = {"train": time.perf_counter() - started}
                record: dict[str, Any] = {"epoch": self.epoch, "lr": lr, "loss": losses, "seconds": seconds}
                if self.device.type == "cuda":
                    record["cuda_graph"] = self.graph_step is not None and self.graph_step.captures > 0
                improved = False
                # The same decision on every rank; an epoch that ends past the budget is evaluated, so
                # that best.pt has seen the last weights before the run stops.
                out_of_time = budget > 0 and self.context.any(time.monotonic() - began >= budget, self.device)
                if self.epoch % settings.eval_every == 0 or self.epoch == settings.epochs or out_of_time:
                    record["valid"], weights = self._validate()
                    record["valid_filter"] = list(filter_splits("valid"))
                    if settings.valid_drop_overlap:  # selected on these only (the others are in train)
                        record["valid_triples"] = len(self.valid_triples)
                    if weights is not None:
                        record["fusion_weights"] = weights
                    seconds["valid"] = time.perf_counter() - started - seconds["train"]
                    improved = self._update_best(record["valid"])
                self.stopped_early = settings.patience > 0 and self.bad_evaluations >= settings.patience
                self.finished = self.stopped_early or self.epoch >= settings.epochs
                self.stopped_at_time_limit = out_of_time and not self.finished
                if self.stopped_at_time_limit:
                    record["stopped"] = "max_minutes"
                record.update(best_epoch=self.best_epoch, best_valid_mrr=self.best_valid_mrr)
                self._write(record, improved, last=self._checkpoint_due() or self.stopped_at_time_limit)
                bar.epoch_done(self.epoch, losses["total"], record.get("valid"))
                if on_epoch_end is not None and self.context.is_main:
                    on_epoch_end(record)
                if self.stopped_at_time_limit:
                    break
        return self.result()

    def _checkpoint_due(self) -> bool:
        """Whether this epoch's end writes ``last.pt``: at the end, every N epochs, or after enough minutes."""
        settings = self.config.train
        if self.finished:
            return True
        if settings.checkpoint_every and self.epoch % settings.checkpoint_every == 0:
            return True
        due = time.monotonic() - self.last_checkpoint >= 60.0 * settings.checkpoint_minutes
        return self.context.any(due, self.device)  # the same decision on every rank: saving gathers RNG states

    def _train_epoch(self, step: nn.Module, bar: EpochProgress, stop: StopSignals) -> dict[str, float] | None:
        """One epoch, or the rest of one that a signal interrupted; the mean loss terms.

        Returns None when a signal stopped it: ``last.pt`` then holds the model after the last
        finished step, with the position in the epoch.
        """
        self.model.train()
        settings = self.config.train
        on_cuda = self.device.type == "cuda"
        resumed = self.progress
        if resumed is not None:  # the same batches as the interrupted epoch: regenerate from its start state
            self.shuffle.set_state(resumed["shuffle"].cpu())
        epoch_start_state = self.shuffle.get_state()
        order = epoch_batches(
            self.group_relations,
            batch_size=settings.batch_size * self.context.world_size,
            relations_per_batch=settings.relations_per_batch,
            generator=self.shuffle,
        )
        batches = [self.context.shard(batch) for batch in order]
        if self.graph_step is not None:  # capacities that fit every full batch, never lowered (one capture)
            shape = epoch_shape(batches, self.group_relations, self.tail_counts,
                                batch_size=settings.batch_size, relation_ids=2 * self.data.num_relations)
            if shape is not None:
                self.step_shape = shape.covering(self.step_shape)
        first = 0
        sums: dict[str, Tensor] = {}
        rows = 0
        if resumed is not None:
            first, rows = resumed["batch"], resumed["rows"]
            sums = {name: torch.tensor(value, device=self.device) for name, value in resumed["sums"].items()}
            bar.advance(first / len(batches))
            self.progress = None
        check_every_step = not on_cuda  # reading the loss on the host is free on the CPU, a sync on CUDA
        for position in range(first, len(batches)):
            batch = batches[position]
            if len(batch) < 2:  # batch norm cannot train on one row; every rank skips the same batch
                continue
            total, terms = self._step(step, batch)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value * len(batch)
            rows += len(batch)
            bar.advance(1 / len(batches))
            if check_every_step and not torch.isfinite(total):
                break  # the epoch is lost; the caller raises NonFiniteLossError
            if self.context.any(stop.requested, self.device):
                self.progress = {
                    "shuffle": epoch_start_state,
                    "batch": position + 1,
                    "batches": len(batches),
                    "rows": rows,
                    "sums": {name: float(value) for name, value in sums.items()},
                }
                self._write(None, False, last=True)
                return None
        self.scheduler.step()
        hold_learning_rates(self.optimizer, self.graphed, self.device, self.lr_tensors)
        rows = max(rows, 1)
        return {name: self.context.mean(value / rows).item() for name, value in sums.items()}

    def _step(self, step: nn.Module, batch: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """One optimisation step on the queries ``batch`` (CPU indices); the loss and its detached terms.

        Everything that depends on the batch's contents (targets, relation groups, the entities the
        contrastive term aligns) is computed on the CPU and sent over, so on CUDA the step never
        waits for the device.
        """
        heads, relations = self.group_heads[batch], self.group_relations[batch]
        positive_rows, positive_tails = self.train_index.lookup(heads, relations)
        shape = self.step_shape
        if self.graph_step is not None and shape is not None and len(batch) == shape.batch:
            packed = pack_batch(
                heads, relations, positive_rows, positive_tails, shape, num_entities=self.data.num_entities
            ).pin_memory()
            try:
                return self.graph_step(packed, shape)
            except GraphCaptureFailed:
                self.graph_step = None  # warned; this batch and the rest take the eager step
        groups = RelationGroups.of(relations, self.device)
        entities = torch.unique(heads)
        tensors = (heads, relations, positive_rows, positive_tails, entities)
        if self.device.type == "cuda":
            tensors = tuple(t.pin_memory() for t in tensors)
        heads, relations, positive_rows, positive_tails, entities = (
            t.to(self.device, non_blocking=True) for t in tensors
        )
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            total, terms = step(heads, relations, Positives(positive_rows, positive_tails), groups, entities)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        # Detached: a loss kept alive would keep this step's autograd nodes (and the stream they were
        # made on) into the next step, which a CUDA graph capture warns about.
        return total.detach(), terms

    def _run_static_step(self, inputs: StaticInputs) -> tuple[Tensor, dict[str, Tensor]]:
        """The whole step on a padded batch, as :class:`GraphedStep` warms it up and captures it."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False):
            total, terms = self.objective(*inputs)
        total.backward()
        self.optimizer.step()
        return total.detach(), terms

    def _validate(self) -> tuple[dict[str, dict[str, float]], dict[str, float] | None]:
        """Valid metrics, after refitting the decision weights on valid when configured; and those weights.

        With fitted weights the fused (and nothing else) is cross-fitted: each half of valid is ranked
        with weights fitted on the other half. The weights the model keeps are fitted on all of valid.
        """
        result = None
        if self.context.is_main:
            self._check_finite_parameters()
            scorer = FrozenScorer(self.model)
            batch_size = self.config.eval.batch_size
            weights = None
            if self.fit_fusion:
                crossfit = crossfit_valid(
                    scorer,
                    self.valid_triples,
                    self.valid_filter,
                    batch_size=batch_size,
                    seed=self.config.train.seed,
                    per_relation=self.model.decision.mode == "learned-per-relation",
                )
                ranks = crossfit.ranks
                with torch.no_grad():
                    self.model.decision.logits.copy_(crossfit.logits)
                fitted = torch.softmax(crossfit.logits, -1)
                if fitted.dim() == 2:  # per relation: the trace keeps the mean over relation ids
                    fitted = fitted.mean(dim=0)
                weights = dict(zip(self.model.branch_names, fitted.tolist()))
            else:
                ranks = rank_queries(scorer, self.valid_triples, self.valid_filter, chunk_size=batch_size)
            names = (*self.model.branch_names, FUSED) + ((MEAN_FUSION,) if len(self.model.branch_names) > 1 else ())
            metrics = {name: rank_metrics(ranks.realistic(name)) for name in names}
            result = (metrics, weights)
        if self.fit_fusion:  # every rank keeps the same fitted weights
            logits = self.context.broadcast(self.model.decision.logits.detach().cpu() if self.context.is_main else None)
            with torch.no_grad():
                self.model.decision.logits.copy_(logits.to(self.device))
        metrics, weights = self.context.broadcast(result)
        return metrics, weights

    def _check_finite_parameters(self) -> None:
        """Raise :class:`NonFiniteLossError` if any weight is nan or infinite (nothing of it may be saved)."""
        for parameter in self.model.parameters():
            if not torch.isfinite(parameter).all():
                raise NonFiniteLossError(self.epoch, float(self.optimizer.param_groups[0]["lr"]), self.run_dir)

    def _update_best(self, metrics: dict[str, dict[str, float]]) -> bool:
        mrr = metrics[FUSED]["mrr"]
        if not math.isfinite(mrr):
            self.bad_evaluations += 1
            return False
        if self.best_valid_mrr is None or mrr > self.best_valid_mrr:
            self.best_valid_mrr, self.best_epoch, self.bad_evaluations = mrr, self.epoch, 0
            return True
        self.bad_evaluations += 1
        return False

    def _write(self, record: dict[str, Any] | None, improved: bool, *, last: bool) -> None:
        """Write ``best.pt`` (if improved), the trace line (if any), then ``last.pt`` (if ``last``).

        No checkpoint is ever ahead of the trace; trace lines after ``last.pt`` are dropped on resume.
        """
        started = time.perf_counter()
        payload = None
        if improved or last:  # the same on every rank: the gather is a collective
            rng = self.context.gather(capture_rng_state(self.shuffle))
            payload = self._checkpoint(rng) if self.context.is_main else None
        if self.context.is_main:
            if improved:
                save_checkpoint(self.run_dir / "best.pt", {**payload, "progress": None})
            if record is not None:
                # Seconds spent writing checkpoints since the last trace line: this best.pt and the
                # previous epoch's last.pt (this epoch's last.pt is written after its line).
                record["seconds"]["checkpoint"] = self.unreported_checkpoint_seconds + time.perf_counter() - started
                self.unreported_checkpoint_seconds = 0.0
                append_trace(self.run_dir / "trace.jsonl", record)
            if last:
                written = time.perf_counter()
                save_checkpoint(self.run_dir / "last.pt", payload)
                self.unreported_checkpoint_seconds += time.perf_counter() - written
        if last:
            self.last_checkpoint = time.monotonic()
        self.context.barrier()


def _selection_triples(data: KGTensors, drop_overlap: bool) -> Tensor:
    """The valid triples that select the model: all, or with ``drop_overlap`` those not also in train."""
    if not drop_overlap:
        return data.valid
    leaked = torch.from_numpy(also_in(data.valid.cpu(), [data.train.cpu()]))
    if bool(leaked.all()):
        raise ConfigError("train.valid_drop_overlap: every valid triple is also in train; nothing is left to select on")
    return data.valid[~leaked.to(data.valid.device)]


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
    write_config(
        run_dir,
        config=config.to_dict(),
        seed=config.train.seed,
        data={
            "num_entities": data.num_entities,
            "num_relations": data.num_relations,
            "feature_dims": data.feature_dims,
            "triples": {split: len(getattr(data, split)) for split in ("train", "valid", "test")},
            "fingerprint": fingerprint,
            "feature_hashes": data.feature_hashes(),
        },
        metadata=metadata,
        device=device,
        world_size=context.world_size,
    )
