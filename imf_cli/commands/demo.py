"""``imf demo``: import, encode, train, evaluate on the bundled Countries-MM, then point at ``imf explore``."""

from __future__ import annotations

import typer

from typing import Optional

from imf_cli.output import (
    console,
    fit_columns,
    handle_errors,
    json_option,
    left_out_note,
    natural_widths,
    minutes_seconds,
    print_json,
    progress_mode,
    progress_option,
    threads_option,
)


@handle_errors
def demo_command(
    quick: bool = typer.Option(False, "--quick", help="A sub-minute smoke run with a tiny budget."),
    seed: int = typer.Option(1, "--seed", help="Seed of both training runs."),
    progress: bool = progress_option(),
    json_output: bool = json_option("the results"),
    threads: Optional[int] = threads_option(),
) -> None:
    """Run the whole pipeline on the bundled Countries-MM, offline, in about two minutes on a CPU.

    Imports the dataset (once), encodes text and flags with the packaged encoders, trains IMF and a
    structure-only baseline with the same preset (imf_cli/presets/countries-mm.yaml) and seed,
    evaluates both once on the test split, and prints every branch, the learned and the mean
    fusion, and the baseline. Models are chosen on valid.

    Example: imf demo --quick
    """

    from imf_cli.demo import run_demo
    from imf_cli.runtime import set_threads

    set_threads(threads)
    bar, lines = progress_mode(progress, json_output)

    def log(message: str) -> None:
        if not json_output:
            console.print(message, highlight=False)
        elif lines is not None:
            lines(message)

    result = run_demo(quick=quick, seed=seed, progress=bar, log=log, lines=lines, threads=threads)
    if json_output:
        print_json(
            {
                "run_dir": str(result.run_dir),
                "baseline_dir": str(result.baseline_dir),
                "seed": result.seed,
                "split": "test",
                "rows": {row.name: {"kind": row.kind, **row.metrics} for row in result.rows},
                "weights": result.weights,
                "seconds": result.seconds,
            }
        )
        return
    table = results_table(result, console.width)
    console.print(table)
    fused = result.row("IMF (learned fusion)").metrics["mrr"]
    others = {row.name: row.metrics["mrr"] for row in result.rows if row.kind in ("branch", "baseline")}
    beaten = [name for name, mrr in others.items() if mrr >= fused]
    if beaten:
        console.print(f"The learned fusion ({fused:.3f}) does not beat: {', '.join(beaten)}.")
    else:
        console.print(f"The learned fusion ({fused:.3f}) beats every branch and the structure-only baseline.")
    total = sum(result.seconds.values())
    console.print(f"Took {minutes_seconds(total)}. Browse the predictions with:", highlight=False)
    console.print(f"  {result.explore_command}", highlight=False, soft_wrap=True)


#: The demo table's columns that a narrow terminal leaves out, first to last (never the model or MRR).
EXPENDABLE = ("MR", "Hits@3", "weight", "Hits@1", "Hits@10")


def results_table(result, width: int):
    """The demo's test table for a terminal ``width`` cells wide: no figure is ever cut; where the
    table does not fit, whole columns go (:data:`EXPENDABLE`, in that order), named in the caption."""
    from rich.table import Table

    headers = ("model", "weight", "MRR", "MR", "Hits@1", "Hits@3", "Hits@10")
    rows = []
    for row in result.rows:
        weight = result.weights.get(row.name)
        metrics = row.metrics
        rows.append((
            row.name if row.kind != "branch" else f"IMF {row.name} branch",
            "" if weight is None else f"{weight:.2f}",
            f"{metrics['mrr']:.3f}",
            f"{metrics['mr']:.1f}",
            *(f"{metrics[f'hits@{k}']:.3f}" for k in (1, 3, 10)),
        ))
    natural = natural_widths(headers, rows)
    # The heavy box draws "│ " before, " │ " between and " │" after the cells.
    shown, left_out = fit_columns(natural, EXPENDABLE, width - 4, gap=3)
    table = Table(
        title="Countries-MM test split (filtered, realistic ranks, both directions)",
        caption=left_out_note(left_out, "imf demo --json has them"),
    )
    for header in shown:  # a model name folds where even its column alone does not fit
        table.add_column(header, overflow="fold") if header == "model" else table.add_column(header, no_wrap=True)
    for row, cells in zip(result.rows, rows):
        table.add_row(
            *(cell for header, cell in zip(headers, cells) if header in shown),
            style="bold" if row.kind == "fusion" and "learned" in row.name else None,
            end_section=row.kind != "branch" or row is result.rows[-1],
        )
    return table
