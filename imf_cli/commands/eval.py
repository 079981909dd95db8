"""``imf eval``: filtered ranking metrics of a trained run, per branch and fused."""

from __future__ import annotations

from pathlib import Path

import typer

from imf_cli.output import console, handle_errors, print_json


@handle_errors
def eval_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by imf train."),
    split: str = typer.Option("test", "--split", help="valid | test."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best (chosen on valid) | last."),
    batch_size: int = typer.Option(512, "--batch-size", min=1, help="Queries scored at once."),
    json_output: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object."),
) -> None:
    """Evaluate a run: filtered MRR, MR and Hits@1/3/10 for each branch and the fused prediction.

    Both directions are ranked (tails, and heads through inverse relations), every other known
    triple of train/valid/test is filtered out, and ties get the realistic (mean) rank. The
    checkpoint was chosen on valid; report test once.

    Example: imf eval ~/.local/share/imf/runs/countries-mm-20261127-120000-000000 --split test
    """
    from rich.table import Table

    from imf_cli.pipeline import evaluate_run

    result = evaluate_run(run_dir, split=split, checkpoint=checkpoint, batch_size=batch_size)
    if json_output:
        print_json(result)
        return
    table = Table(
        "branch", "MRR", "MR", "Hits@1", "Hits@3", "Hits@10",
        title=f"{result['dataset']} {split} ({result['triples']:,} triples, both directions, filtered)",
    )
    for branch, metrics in result["metrics"].items():
        table.add_row(
            branch,
            f"{metrics['mrr']:.4f}",
            f"{metrics['mr']:.1f}",
            *(f"{metrics[f'hits@{k}']:.4f}" for k in (1, 3, 10)),
        )
    console.print(table)
