"""``imf train``: train IMF on an imported dataset into a write-once run directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from imf_cli.output import console, handle_errors, print_json


@handle_errors
def train_command(
    name: Optional[str] = typer.Argument(None, help="Dataset name (not needed with --resume)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file with model/train/eval sections."),
    modalities: Optional[str] = typer.Option(
        None, "--modalities", help="Comma-separated branches: structure,visual,text [default: structure + encoded ones]."
    ),
    text_encoder: Optional[str] = typer.Option(None, "--text-encoder", help="Text features to use [default: latest]."),
    image_encoder: Optional[str] = typer.Option(None, "--image-encoder", help="Image features to use [default: latest]."),
    structure_init: Optional[str] = typer.Option(
        None, "--structure-init", help="Initialise the structure branch from these structure features (e.g. gat)."
    ),
    dim: Optional[int] = typer.Option(None, "--dim", help="Embedding size of every branch [256]."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Most epochs to train [1000]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="(head, relation) queries per step [256]."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate [5e-4]."),
    contrastive_weight: Optional[float] = typer.Option(None, "--contrastive-weight", help="λ of the InfoNCE term [0.1]."),
    fused_loss_weight: Optional[float] = typer.Option(
        None, "--fused-loss-weight", help="Weight of the fused score's BCE [0]."
    ),
    fusion: Optional[str] = typer.Option(None, "--fusion", help="learned | learned-per-relation | mean [learned]."),
    feature_mode: Optional[str] = typer.Option(None, "--feature-mode", help="finetune | project [finetune]."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Evaluate valid MRR every N epochs [10]."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Evaluations without improvement before stopping [5]."),
    checkpoint_every: Optional[int] = typer.Option(
        None,
        "--checkpoint-every",
        help="Also write last.pt every N epochs (0: only every train.checkpoint_minutes, on Ctrl-C, and at the end) [0].",
    ),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N [auto]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed [drawn and recorded]."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Where to write the run [$IMF_HOME/runs/<name>-<time>]."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the killed run in this directory."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Train the IMF model: four branches, Tucker fusion, contrastive loss and learned decision fusion.

    Config is merged from defaults ← --config FILE ← flags; an unknown key is an error. The run
    directory holds config.yaml, trace.jsonl, best.pt (best valid MRR) and last.pt. Under
    `torchrun --nproc_per_node=N -m imf_cli train ...` it trains with DistributedDataParallel.

    Example: imf train countries-mm --epochs 50 --seed 1
    """
    from kgdata.errors import ImfError
    from imf_cli.pipeline import resume_model, train_model
    from models.training import TrainingInterrupted

    main_process = int(os.environ.get("RANK", "0")) == 0
    show = progress and not json_output and main_process
    try:
        if resume is not None:
            result = resume_model(resume, progress=show)
        else:
            if name is None:
                raise ImfError("give a dataset name, or --resume RUN_DIR")
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
                "train.device": device,
                "train.seed": seed,
            }
            chosen = tuple(m.strip() for m in modalities.split(",") if m.strip()) if modalities else None
            result = train_model(
                name,
                config_file=config,
                flags=flags,
                modalities=chosen,
                text_encoder=text_encoder,
                image_encoder=image_encoder,
                structure_init=structure_init,
                run_dir=run_dir,
                progress=show,
            )
    except TrainingInterrupted as stopped:  # SIGINT/SIGTERM: last.pt holds the point reached
        if main_process:
            typer.echo(f"Interrupted: {stopped}.", err=True)
            typer.echo(f"Resume with: imf train --resume {stopped.run_dir}", err=True)
        raise typer.Exit(130) from None
    if not main_process:
        return
    summary = {
        "run_dir": str(result.run_dir),
        "seed": result.seed,
        "epochs": result.epochs_completed,
        "best_epoch": result.best_epoch,
        "best_valid_mrr": result.best_valid_mrr,
        "stopped_early": result.stopped_early,
    }
    if json_output:
        print_json(summary)
        return
    mrr = "n/a" if result.best_valid_mrr is None else f"{result.best_valid_mrr:.4f}"
    console.print(
        f"Trained {result.epochs_completed} epochs (seed {result.seed}); best valid MRR {mrr} at epoch "
        f"{result.best_epoch}{' (stopped early)' if result.stopped_early else ''}"
    )
    typer.echo(str(result.run_dir))
