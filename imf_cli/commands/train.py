"""``imf train``: train IMF on an imported dataset into a write-once run directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from imf_cli.output import (
    INTERRUPTED,
    console,
    count,
    err_console,
    handle_errors,
    json_option,
    path_option,
    print_json,
    progress_mode,
    progress_option,
    report_interrupted,
    threads_option,
)
from models.config import ModelConfig, TrainConfig

MODEL, TRAIN = ModelConfig(), TrainConfig()  # the defaults the help shows (models/config.py holds them)


def default(value) -> str:
    return str(value)


@handle_errors
def train_command(
    name: Optional[str] = typer.Argument(None, help="Dataset name (not needed with --resume).", show_default=False),
    config: Optional[Path] = path_option(
        "--config",
        help="YAML file with model/train/eval sections, or a preset's name (db15k, countries-mm-quick, …).",
        show_default="none",
    ),
    modalities: Optional[str] = typer.Option(
        None,
        "--modalities",
        help="Comma-separated branches: structure,visual,text.",
        show_default="structure + every encoded modality",
    ),
    text_encoder: Optional[str] = typer.Option(
        None, "--text-encoder", help="Which text features to use.", show_default="the latest encoded"
    ),
    image_encoder: Optional[str] = typer.Option(
        None, "--image-encoder", help="Which image features to use.", show_default="the latest encoded"
    ),
    structure_init: Optional[str] = typer.Option(
        None,
        "--structure-init",
        help="Initialise the structure branch from these structure features (e.g. gat).",
        show_default="random",
    ),
    dim: Optional[int] = typer.Option(None, "--dim", help="Embedding size of every branch.", show_default=default(MODEL.dim)),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Most epochs to train.", show_default=default(TRAIN.epochs)),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="(head, relation) queries per step.", show_default=default(TRAIN.batch_size)
    ),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate.", show_default=default(TRAIN.lr)),
    contrastive_weight: Optional[float] = typer.Option(
        None, "--contrastive-weight", help="λ of the InfoNCE term.", show_default=default(TRAIN.contrastive_weight)
    ),
    fused_loss_weight: Optional[float] = typer.Option(
        None,
        "--fused-loss-weight",
        help="Weight of the fused score's BCE (learned fusion without fitting on valid needs > 0).",
        show_default=default(TRAIN.fused_loss_weight),
    ),
    fusion: Optional[str] = typer.Option(
        None, "--fusion", help="learned | learned-per-relation | mean.", show_default=MODEL.fusion
    ),
    feature_mode: Optional[str] = typer.Option(
        None, "--feature-mode", help="finetune | project.", show_default=MODEL.feature_mode
    ),
    eval_every: Optional[int] = typer.Option(
        None, "--eval-every", help="Evaluate valid MRR every N epochs.", show_default=default(TRAIN.eval_every)
    ),
    patience: Optional[int] = typer.Option(
        None,
        "--patience",
        help="Evaluations without improvement before stopping; 0 never stops early.",
        show_default=default(TRAIN.patience),
    ),
    checkpoint_every: Optional[int] = typer.Option(
        None,
        "--checkpoint-every",
        help="Also write last.pt every N epochs; 0: only every train.checkpoint_minutes, on Ctrl-C and at the end.",
        show_default=default(TRAIN.checkpoint_every),
    ),
    max_minutes: Optional[float] = typer.Option(
        None,
        "--max-minutes",
        help=(
            "Time budget of this invocation: after the epoch that ends past it, evaluate valid, write "
            "last.pt and stop (resumable; with --resume, a new budget); 0: none."
        ),
        show_default=default(TRAIN.max_minutes),
    ),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N.", show_default=TRAIN.device),
    precision: Optional[str] = typer.Option(
        None,
        "--precision",
        help="auto (bf16 on CUDA, fp32 on the CPU) | bf16 | fp32: the training step's autocast. On a CPU with "
        "AVX512-BF16, bf16 trains DB15K about 30 % faster (docs/benchmarks.md).",
        show_default=TRAIN.precision,
    ),
    place_unseen: bool = typer.Option(
        True,
        "--place-unseen/--no-place-unseen",
        help="After training, fit how entities outside the graph are placed (text or image branches); "
        "without, imf predict --new-text fits it on first use.",
    ),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed.", show_default="drawn and recorded"),
    run_dir: Optional[Path] = path_option(
        "--run-dir", help="Where to write the run.", show_default="$IMF_HOME/runs/<name>-<time>"
    ),
    resume: Optional[str] = typer.Option(
        None,
        "--resume",
        help="Continue a killed run (its directory, name or unique prefix, latest, or DATASET@latest), or train "
        "a finished one further with a larger --epochs or --patience.",
        show_default=False,
    ),
    progress: bool = progress_option(),
    json_output: bool = json_option(),
    threads: Optional[int] = threads_option(),
) -> None:
    """Train the IMF model: four branches, Tucker fusion, contrastive loss and learned decision fusion.

    Config is merged from defaults ← --config FILE ← flags; an unknown key is an error. Without
    --modalities or a config that sets them, the branches are structure plus every modality that
    imf encode has stored; the command says which it trains and which it skipped. The run directory
    holds config.yaml, trace.jsonl, best.pt (best valid MRR) and last.pt; imf runs lists the runs.
    With text or image branches, a last step fits how entities added later (imf entities add) are
    placed in each branch, into inductive-best.safetensors (see imf predict --new-text).
    Under `torchrun --nproc_per_node=N -m imf_cli train ...` it trains with DistributedDataParallel.

    Example: imf train countries-mm --epochs 5 --dim 64 --seed 1
    """
    from imf_cli.pipeline import resume_model, train_model
    from imf_cli.runs import resolve_run
    from imf_cli.runtime import set_threads
    from kgdata.errors import ImfError
    from models.training import TrainingInterrupted

    main_rank = int(os.environ.get("RANK", "0")) == 0
    set_threads(threads)
    bar, lines = progress_mode(progress, json_output)
    if not main_rank:
        bar, lines = False, None
    notes = (lambda text: err_console.print(text, highlight=False, soft_wrap=True)) if json_output else _note
    try:
        if resume is not None:
            if max_minutes is not None and not 0 <= max_minutes < float("inf"):  # NaN fails too
                raise ImfError(f"--max-minutes must be a finite number ≥ 0 (0: no budget), got {max_minutes:g}")
            fixed = {
                "--config": config,
                "--modalities": modalities,
                "--text-encoder": text_encoder,
                "--image-encoder": image_encoder,
                "--structure-init": structure_init,
                "--dim": dim,
                "--batch-size": batch_size,
                "--lr": lr,
                "--contrastive-weight": contrastive_weight,
                "--fused-loss-weight": fused_loss_weight,
                "--fusion": fusion,
                "--feature-mode": feature_mode,
                "--seed": seed,
                "--precision": precision,
                "--run-dir": run_dir,
            }
            refused = [flag for flag, value in fixed.items() if value is not None]
            if refused:
                raise ImfError(
                    f"{', '.join(refused)} cannot change when a run is resumed: a run keeps the model, data and "
                    "training settings it started with. With --resume, --epochs, --patience, --eval-every, "
                    "--checkpoint-every, --max-minutes and --device may change; for anything else train a new run"
                )
            result = resume_model(
                resolve_run(resume),
                progress=bar,
                on_epoch=lines,
                max_minutes=max_minutes,
                changes={
                    "train.epochs": epochs,
                    "train.patience": patience,
                    "train.eval_every": eval_every,
                    "train.checkpoint_every": checkpoint_every,
                    "train.device": device,
                },
                dataset=name,
                place_unseen=place_unseen,
                log=notes if main_rank else None,
            )
        else:
            if name is None:
                raise ImfError("give a dataset name, or --resume RUN")
            flags = {
                "model.dim": dim,
                "model.fusion": fusion,
                "model.feature_mode": feature_mode,
                "train.epochs": epochs,
                "train.batch_size": batch_size,
                "train.lr": lr,
                "train.contrastive_weight": contrastive_weight,
                "train.fused_loss_weight": fused_loss_weight,
                "train.eval_every": eval_every,
                "train.patience": patience,
                "train.checkpoint_every": checkpoint_every,
                "train.max_minutes": max_minutes,
                "train.device": device,
                "train.precision": precision,
                "train.seed": seed,
            }
            chosen = tuple(m.strip() for m in modalities.split(",") if m.strip()) if modalities is not None else None
            if chosen == ():  # --modalities '' (an unset shell variable, say) is no choice, not the default
                raise ImfError("--modalities is empty; name the branches (e.g. structure,text) or leave the flag out")
            result = train_model(
                name,
                config_file=config,
                flags=flags,
                modalities=chosen,
                text_encoder=text_encoder,
                image_encoder=image_encoder,
                structure_init=structure_init,
                run_dir=run_dir,
                progress=bar,
                on_epoch=lines,
                place_unseen=place_unseen,
                log=notes if main_rank else None,
                typed_flags=True,
            )
    except TrainingInterrupted as stopped:  # SIGINT/SIGTERM: last.pt holds the point reached
        if main_rank:
            report_interrupted(stopped, f"imf train --resume {stopped.run_dir}")
        raise typer.Exit(INTERRUPTED) from None
    if not main_rank:
        return
    summary = {
        "run_dir": str(result.run_dir),
        "seed": result.seed,
        "epochs": result.epochs_completed,
        "best_epoch": result.best_epoch,
        "best_valid_mrr": result.best_valid_mrr,
        "stopped_early": result.stopped_early,
        "stopped_at_time_limit": result.stopped_at_time_limit,
    }
    if json_output:
        print_json(summary)
        return
    mrr = "n/a" if result.best_valid_mrr is None else f"{result.best_valid_mrr:.4f}"
    console.print(
        f"Trained {count(result.epochs_completed, 'epoch')} (seed {result.seed}); best valid MRR {mrr} at epoch "
        f"{result.best_epoch}{' (stopped early)' if result.stopped_early else ''}"
    )
    if resume is not None and result.epochs_completed == result.start_epoch and not result.stopped_at_time_limit:
        more = [f"--epochs N (N > {result.epochs_completed})"] if result.epochs_completed >= result.max_epochs else []
        if result.stopped_early:
            more.insert(0, "--patience N (more evaluations than before; 0: no early stopping)")
        more = " ".join(more)
        console.print(
            f"The run had already finished{' (stopped early)' if result.stopped_early else ''}: nothing was trained. "
            f"Train it further with: imf train --resume {result.run_dir} {more}",
            highlight=False,
            soft_wrap=True,
        )
        _note_short_trace(result)
    if result.stopped_at_time_limit:
        console.print(
            f"Stopped at the --max-minutes budget, not finished; continue with: imf train --resume {result.run_dir}",
            highlight=False,
            soft_wrap=True,
        )
    typer.echo(str(result.run_dir))


def _note_short_trace(result) -> None:
    """Say so when trace.jsonl records fewer epochs than the checkpoint holds (cut or emptied by hand): the
    run is listed by its trace, as "resumable" forever, though there is nothing left to train."""
    from imf_cli.runs import read_trace

    try:
        recorded = max((int(r.get("epoch", 0)) for r in read_trace(result.run_dir)), default=0)
    except Exception:  # a damaged trace was named when the run was read; this note is only a hint
        return
    if recorded < result.epochs_completed:
        _note(
            f"Note: {Path(result.run_dir) / 'trace.jsonl'} records {recorded} of the {result.epochs_completed} "
            "epochs that last.pt holds (it was cut or emptied): the curves of the rest are lost, and imf runs, "
            "which lists runs by their trace, shows it as unfinished. imf eval reads the checkpoints as they are."
        )


def _note(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True)
