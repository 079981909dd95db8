"""``imf ablate``: the paper's ablation study (or imf's departures from the paper), over several seeds."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from imf_cli.output import (
    INTERRUPTED,
    console,
    count,
    handle_errors,
    path_option,
    print_json,
    report_interrupted,
    threads_option,
)
from kgdata.errors import ImfError
from kgdata.files import check_writable_file


@handle_errors
def ablate_command(
    name: str = typer.Argument(..., help="Dataset name (see imf datasets)."),
    config: Optional[Path] = path_option(
        "--config", help="Base YAML config of every variant, or a preset's name [the defaults]."
    ),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per variant (1, 2, …)."),
    budget: Optional[int] = typer.Option(None, "--budget", help="Epochs per run [the config's train.epochs]."),
    study: Optional[str] = typer.Option(
        None,
        "--study",
        help="ablation (the paper's rows), departures (each of imf's defaults set back to the paper's) or grid.",
        show_default="ablation; grid with --grid",
    ),
    variant: Optional[list[str]] = typer.Option(None, "--variant", help="Run only this variant (repeatable)."),
    grid: Optional[list[str]] = typer.Option(
        None, "--grid", help="The grid study: SECTION.KEY=V1,V2 (repeatable); every combination is a variant."
    ),
    markdown: Optional[Path] = path_option("--markdown", help="Also write the table to this Markdown file."),
    threads: Optional[int] = threads_option(),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar over the runs."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Train every variant of an ablation study with every seed and report mean ± sd.

    The ablation study: the full model, without the contrastive term, without interactive fusion (no
    multimodal branch), without decision fusion (the reference's probability mean), and each modality
    alone. Valid metrics are those of the epoch each run selected on valid; test is read once per
    finished run, in its own columns. Finished runs are reused and killed ones resumed, so running the
    same command again continues the study.

    Example: imf ablate countries-mm --config countries-mm-quick --seeds 2 --variant full --variant mean-fusion
    """
    from imf_cli.ablation import choose_study, markdown_table, parse_grid, run_study, verdicts
    from imf_cli.runtime import set_threads

    set_threads(threads)

    def log(cell) -> None:
        if not json_output and not progress:
            console.print(
                f"{cell.variant} seed {cell.seed}: valid MRR {cell.valid['mrr']:.4f} (epoch {cell.best_epoch}), "
                f"test MRR {cell.test['mrr']:.4f}",
                highlight=False,
            )

    from models.training import TrainingInterrupted

    axes = parse_grid(grid or [])
    study = choose_study(study, axes)
    if markdown is not None:  # before hours of training, not after
        check_writable_file(markdown, "--markdown")
    try:
        root, summaries = run_study(
            name,
            study=study,
            config_file=config,
            seeds=seeds,
            budget=budget,
            variants=variant,
            grid=axes,
            progress=progress and not json_output,
            on_cell=log,
        )
    except TrainingInterrupted as stopped:  # SIGINT/SIGTERM in one run: rerunning the study resumes it there
        again = shlex.join(["imf", *sys.argv[1:]]) if sys.argv[1:2] == ["ablate"] else "the same imf ablate command"
        report_interrupted(stopped, f"{again} (finished runs are reused, this one goes on)")
        raise typer.Exit(INTERRUPTED) from None
    table = markdown_table(summaries, title=f"{name}: {study} ({count(seeds, 'seed')})")
    if json_output:
        print_json({"dataset": name, "study": study, "dir": str(root), "variants": [s.to_dict() for s in summaries],
                    "verdicts": verdicts(summaries)})
    else:
        what = f"mean±sd over {count(seeds, 'seed')}" if seeds > 1 else "one seed (no sd)"
        for view in summary_tables(summaries, f"{name}: {study}, {what}", console.width):
            console.print(view)
        for line in verdicts(summaries):  # each variant against the first, on valid: more than the seed spread?
            console.print(line[0].upper() + line[1:] + ".", highlight=False, soft_wrap=True)
        console.print(f"Runs: {root}", highlight=False, soft_wrap=True)
    if markdown is not None:  # last: the tables are shown even if the file cannot be written now
        from models.atomic import write_text_atomically

        try:
            write_text_atomically(markdown, table, what="the Markdown table")
        except OSError as error:
            raise ImfError(f"cannot write {markdown}: {error.strerror or error}") from None


def summary_tables(summaries, title: str, width: int) -> list:
    """The study's mean±sd per variant: one table of valid and test where it fits ``width``, else one
    for valid and one for test, so that no variant name or figure is cut in a narrow terminal."""
    from rich import box
    from rich.cells import cell_len
    from rich.table import Table

    metrics = (("mrr", "MRR"), ("hits@1", "H@1"), ("hits@10", "H@10"))
    cells = {
        (summary.variant.name, split): [_short(*summary.stat(split, m)) for m, _ in metrics]
        for summary in summaries for split in ("valid", "test")
    }
    names = [summary.variant.name for summary in summaries]
    cell_width = max([11, *(len(c) for row in cells.values() for c in row)])
    variant_width = max([7, *map(cell_len, names)])
    one_table = variant_width + 6 * (cell_width + 2) <= width
    groups = [("valid", "test")] if one_table else [("valid",), ("test",)]
    notes = {("valid", "test"): "valid selects; test read once per run", ("valid",): "valid selects",
             ("test",): "test, read once per run"}
    tables = []
    for splits in groups:
        table = Table(title=f"{title} ({notes[splits]})", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                      collapse_padding=True)
        table.add_column("variant", overflow="fold")
        for split in splits:
            for _, label in metrics:
                table.add_column(f"{split} {label}", justify="right", no_wrap=True)
        for name in names:
            table.add_row(name, *(cell for split in splits for cell in cells[(name, split)]))
        tables.append(table)
    return tables


def _short(mean: float, sd: float | None) -> str:
    if mean != mean:
        return "n/a"
    return f"{mean:.3f}" if sd is None else f"{mean:.3f}±{sd:.3f}"  # one seed: no spread to show
