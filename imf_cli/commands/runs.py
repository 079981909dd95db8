"""``imf runs``: list the training runs, show one with its training curves, remove runs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from imf_cli.output import (
    console,
    fit_columns,
    handle_errors,
    left_out_note,
    minutes_seconds,
    natural_widths,
    print_json,
    reflow,
)
from kgdata.files import escape_controls


class ListByDefault(TyperGroup):
    """``imf runs [DATASET]`` lists: anything that is not a subcommand goes to ``list``."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["list", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=ListByDefault,
    help=reflow(
        """List the training runs; show one with its config and training curves; compare runs; remove runs.

        imf runs lists every run (imf runs DATASET: that dataset's), with its status: finished,
        stopped early, resumable (killed after a checkpoint; imf train --resume RUN continues it),
        running, failed (no checkpoint) or orphan (its dataset is gone or was re-imported).

        A RUN is a run directory, a run name or a unique prefix of one, latest, or DATASET@latest.

        Example: imf runs countries-mm
        """
    ),
    no_args_is_help=False,
    add_completion=False,
)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1000
    return f"{value:.1f} TB"


#: Branches in the runs table, by their first letter.
BRANCH_LETTERS = {"structure": "S", "visual": "V", "text": "T"}
BRANCH_LEGEND = (
    "branches: S structure, V visual, T text (two or more add a multimodal branch); valid, test: fused MRR "
    "of best.pt (valid as training measured it; test once imf eval --split test has run)"
)

STATUS_STYLES = {
    "finished": "green",
    "stopped early": "green",
    "resumable": "yellow",
    "running": "cyan",
    "failed": "red",
    "orphan": "red",
}


#: The columns of ``imf runs`` that a narrow terminal leaves out first, in that order (the run, its
#: status and valid MRR stay); the run name, what people copy into the next command, folds only where
#: even those three do not fit.
EXPENDABLE = ("size", "seed", "time", "test", "best", "epochs", "branches")


def runs_table(runs, *, title: str | None = None, width: int | None = None):
    """The runs as a rich table, oldest first (the layout of ``imf runs``).

    Every cell keeps its line. Where the columns do not fit ``width`` (the console's), the
    :data:`EXPENDABLE` ones are left out, in that order, and the caption names them.
    """
    from rich import box
    from rich.table import Table

    headers = ("run", "status", "branches", "seed", "epochs", "best", "valid", "test", "time", "size")
    # a name with a line feed (a directory made by hand) printed as two rows: controls are shown as %0A
    rows = [(escape_controls(run.name), *run_cells(run).values(), human_size(run.size)) for run in runs]
    natural = natural_widths(headers, rows)
    shown, left_out = fit_columns(natural, EXPENDABLE, console.width if width is None else width)
    caption = BRANCH_LEGEND
    if left_out:
        caption += ". " + left_out_note(left_out, "imf runs show RUN and --json have them")
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
        padding=(0, 1),
        title=title,
        caption=caption,
        caption_justify="left",
    )
    table.add_column("run", overflow="fold")  # folds only where even the shortest table does not fit
    for header in shown[1:]:
        table.add_column(header, justify="left" if header in ("status", "branches") else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(cell for header, cell in zip(headers, row) if header in shown))
    return table


def run_cells(run) -> dict:
    """A run's cells in ``imf runs`` and ``imf runs compare``, by label: status (a styled
    :class:`rich.text.Text`), branches, seed, epochs, best epoch, valid and test MRR, training time."""
    from rich.text import Text

    return {
        "status": Text(run.status, style=STATUS_STYLES.get(run.status, "")),
        "branches": "+".join(BRANCH_LETTERS.get(m, m) for m in run.modalities) or "?",
        "seed": "" if run.seed is None else str(run.seed),
        "epochs": f"{run.epochs}/{run.max_epochs}" if run.max_epochs else str(run.epochs),
        "best epoch": "" if run.best_epoch is None else str(run.best_epoch),
        "valid MRR": "" if run.valid_mrr is None else f"{run.valid_mrr:.4f}",
        "test MRR": "" if run.test_mrr is None else f"{run.test_mrr:.4f}",
        "training time": minutes_seconds(run.seconds) if run.seconds else "",
    }


@app.command("list", help=reflow(
    """List the runs, oldest first, with status, branches, seed, epochs, best epoch, valid MRR, test MRR
    (once imf eval --split test has run), training time and size on disk.

    valid MRR is the fused MRR of best.pt on valid as training measured it (filtered with train and
    valid). Runs that failed or are orphans say why below the table.

    Example: imf runs list countries-mm --json
    """
))
@handle_errors
def list_command(
    dataset: Optional[str] = typer.Argument(None, help="Only the runs of this dataset.", show_default="every dataset"),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    from imf_cli.runs import list_runs
    from kgdata import paths
    from kgdata.errors import ImfError
    from kgdata.store import list_datasets

    if dataset is not None:
        paths.check_dataset_name(dataset)  # "../x" is no dataset name
    runs = list_runs(dataset)
    if dataset is not None and not runs and not json_output and dataset not in list_datasets():
        # a person's typo (imf runs delete); --json keeps answering [] for scripts
        imported = ", ".join(list_datasets()) or "none"
        commands = ", ".join(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
        raise ImfError(
            f"no dataset and no runs named {dataset!r} (imported: {imported}); imf runs takes a dataset name or one "
            f"of its commands: {commands}"
        )
    if json_output:
        print_json([run.to_dict() for run in runs])
        return
    if not runs:
        of = f" of {dataset}" if dataset else ""
        console.print(f"No runs{of} in {paths.runs_dir()} yet. Try: imf train {dataset or 'countries-mm'}", soft_wrap=True)
        return
    console.print(runs_table(runs))
    for run in runs:
        if run.reason:
            console.print(f"{run.name}: {run.status}: {run.reason}", style="dim", highlight=False, soft_wrap=True)
    console.print(f"Runs are in {paths.runs_dir()}; imf runs show RUN plots a run's training curves.", style="dim",
                  highlight=False, soft_wrap=True)


@app.command("show", help=reflow(
    """Show a run: status, dataset, features, config, and its training curves from trace.jsonl: the
    loss per epoch, and the valid MRR of every branch and of the fused score at each evaluation.

    Example: imf runs show countries-mm@latest
    """
))
@handle_errors
def show_command(
    run: str = typer.Argument(..., help="A run: directory, name or unique prefix, latest, or DATASET@latest."),
    width: Optional[int] = typer.Option(
        None, "--width", min=30, help="Plot width in columns.", show_default="the terminal's"
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the run, its config and its curves as JSON."),
) -> None:
    from imf_cli.runs import read_trace, resolve_run, run_info, run_metadata, trace_series
    from imf_cli.plots import training_plots

    path = resolve_run(run)
    info = run_info(path)
    document = run_metadata(path)
    series = trace_series(read_trace(path, strict=True))  # one run asked for: a damaged line is named
    if json_output:
        print_json({**info.to_dict(), "config": document.get("config"), "metadata": document.get("metadata"),
                    "curves": series})
        return
    console.print(run_summary(info, document), highlight=False)
    if not series["epochs"]:
        console.print("No epoch has finished yet: nothing to plot.", style="dim")
        return
    for plot in training_plots(series, width=width or min(console.width, 120), colour=console.is_terminal,
                               best_epoch=info.best_epoch):
        console.print(plot)


def run_summary(info, document: dict):
    """Status, dataset, branches, features and the config of a run, as rich renderables."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    meta = document.get("metadata") or {}
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column(overflow="fold")
    status = info.status + (f" ({info.reason})" if info.reason else "")
    facts.add_row("run", str(info.path))
    facts.add_row("status", Text(status, style=STATUS_STYLES.get(info.status, "")))
    facts.add_row("dataset", str(info.dataset))
    facts.add_row("branches", ", ".join(info.branches) or "?")
    features = meta.get("features")
    for manifest in features if isinstance(features, list) else []:
        if isinstance(manifest, dict):
            facts.add_row(f"{manifest.get('modality')} features", f"{manifest.get('encoder')}, {manifest.get('dim')}-d")
    facts.add_row("seed", "?" if info.seed is None else str(info.seed))
    epochs = f"{info.epochs} of {info.max_epochs}" if info.max_epochs else str(info.epochs)
    if info.best_epoch is None:  # stopped before its first validation (or its first epoch)
        facts.add_row("epochs", f"{epochs}; not validated yet")
    else:
        facts.add_row("epochs", f"{epochs}; best {info.best_epoch} (valid MRR "
                      f"{'n/a' if info.valid_mrr is None else f'{info.valid_mrr:.4f}'})")
    if info.test_mrr is not None:
        facts.add_row("test MRR", f"{info.test_mrr:.4f} (fused, from metrics-test.json)")
    facts.add_row("training time", minutes_seconds(info.seconds))
    facts.add_row("created", info.created or "?")
    resumed = document.get("resumed")
    for entry in resumed if isinstance(resumed, list) else []:  # imf train --resume RUN --epochs N, …
        if isinstance(entry, dict) and isinstance(entry.get("set"), dict):
            changes = ", ".join(f"{key}={format_value(value)}" for key, value in entry["set"].items())
            facts.add_row("resumed", f"after epoch {entry.get('after_epoch', '?')} ({entry.get('at', '?')}): {changes}")
    config = Table.grid(padding=(0, 1))
    config.add_column(style="dim", no_wrap=True)
    config.add_column(overflow="fold")
    for section, values in (document.get("config") or {}).items():
        if isinstance(values, dict):
            shown = ", ".join(f"{key}={format_value(value)}" for key, value in values.items())
            config.add_row(section, shown)
    return Group(facts, "", Text("config", style="bold"), config, "")


def format_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


@app.command("compare", help=reflow(
    """Compare runs side by side: status, seed, epochs, best valid MRR, test MRR and seconds per epoch;
    the config keys whose values differ; and a valid metric at every evaluated epoch, each with the
    minutes of training it took to get there (so that runs with dearer or cheaper epochs compare by
    time too). The best value of each epoch is bold.

    With --by-seed, runs whose configs are the same but for the seed and the schedule (epochs, patience,
    evaluation and checkpoint intervals, time budget, device) form a group, A, B, …; each group's best
    valid value, test MRR and curve are given as mean ± sd over its runs, with a verdict on whether the
    groups differ by more than the seed spread.

    For instance: imf runs compare countries-mm-s1 countries-mm-s2 --metric hits@10
    """
))
@handle_errors
def compare_command(
    runs: List[str] = typer.Argument(..., help="Two or more runs: directories, names, unique prefixes, latest, DATASET@latest."),
    metric: str = typer.Option("mrr", "--metric", help="Valid metric of the curves: mrr, mr, hits@1, hits@3, hits@10."),
    score: str = typer.Option("fused", "--score", help="Whose score: fused, or a branch (structure, text, visual, multimodal)."),
    by_seed: bool = typer.Option(
        False,
        "--by-seed",
        help="Group runs whose configs differ only in seed and schedule; show mean ± sd per group.",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    from imf_cli.run_compare import compare_runs
    from imf_cli.runs import resolve_run

    comparison = compare_runs([resolve_run(ref) for ref in runs], metric=metric, score=score, by_seed=by_seed)
    if json_output:
        print_json(comparison.to_dict())
        return
    for renderable in comparison_tables(comparison):
        console.print(renderable, highlight=False)


def columns_table(title: str, columns: list[str]):
    """A titled table of ``imf runs compare``: a bold label column, then one right-aligned column each."""
    from rich import box
    from rich.table import Table

    grid = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1), title=title,
                 title_justify="left", title_style="bold")
    grid.add_column("", style="bold", no_wrap=True)
    for column in columns:
        grid.add_column(column, justify="right", overflow="fold")
    return grid


def distinct_names(paths: list[Path]) -> list[str]:
    """Column headings for runs: each directory's name, or where two share it, as many of its parent
    folders as tell them apart (``a/run``, ``b/run``)."""
    parts = [Path(path).parts for path in paths]
    depth = [1] * len(paths)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        clashes = {name for name in names if names.count(name) > 1}
        grown = False
        for index, name in enumerate(names):
            if name in clashes and depth[index] < len(parts[index]):
                depth[index] += 1
                grown = True
        if not clashes or not grown:
            return names


def comparison_tables(comparison) -> list:
    """The renderables of ``imf runs compare``: the runs, their config differences, their curves."""
    from imf_cli.run_compare import metric_label
    from rich.table import Table
    from rich.text import Text

    headings = distinct_names([info.path for info in comparison.runs])

    def table(title: str) -> Table:
        return columns_table(title, headings)

    runs = table("runs")
    cells = [run_cells(info) for info in comparison.runs]
    runs.add_row("dataset", *(str(info.dataset) for info in comparison.runs))
    for label in cells[0]:
        runs.add_row(label, *(run[label] for run in cells))
    runs.add_row("s per epoch", *("" if s is None else f"{s:.1f}" for s in comparison.epoch_seconds))
    if comparison.groups:
        group_of = {member: group.label for group in comparison.groups for member in group.members}
        runs.add_row("group", *(group_of[index] for index in range(len(comparison.runs))))
    out: list = [runs, ""]
    if len(comparison.datasets) > 1:
        out += [Text(f"These runs are on different datasets ({', '.join(comparison.datasets)}): "
                     "their metrics do not compare.", style="yellow"), ""]
    if comparison.groups:
        return out + seed_group_tables(comparison)

    if comparison.differences:
        differences = table("config differences")
        for key, values in comparison.differences.items():
            differences.add_row(key, *("–" if v is None else format_value(v) for v in values))
        out += [differences, ""]
    else:
        out += [Text("The configs are the same.", style="dim"), ""]

    label = metric_label(comparison.metric)
    curves = table(f"valid {label} ({comparison.score}) at each evaluated epoch, with the minutes of training to get there")
    decimals = 1 if comparison.metric == "mr" else 4
    for point in comparison.curve:
        present = [v for v in point.values if v is not None]
        best = (max if comparison.higher_is_better else min)(present) if len(present) > 1 else None
        cells = []
        for value, minutes in zip(point.values, point.minutes):
            if value is None:
                cells.append("")
                continue
            number = Text(f"{value:.{decimals}f}", style="bold" if best is not None and value == best else "")
            cells.append(Text.assemble(number, (f" {minutes:.0f} min", "dim")) if minutes is not None else number)
        curves.add_row(str(point.epoch), *cells)
    out.append(curves if comparison.curve else Text("No run has been evaluated on valid yet.", style="dim"))
    return out


def seed_group_tables(comparison) -> list:
    """The group part of ``imf runs compare --by-seed``: per group mean ± sd, the config keys that
    tell the groups apart, the mean curve, and the verdict."""
    from imf_cli.run_compare import metric_label
    from rich.table import Table
    from rich.text import Text

    decimals = 1 if comparison.metric == "mr" else 4
    label = metric_label(comparison.metric)

    def stat(value, size: int | None = None) -> str:
        if value is None:
            return ""
        text = f"{value.mean:.{decimals}f}" + ("" if value.sd is None else f" ± {value.sd:.{decimals}f}")
        return text + (f" (n {value.n})" if size is not None and value.n != size else "")

    def table(title: str) -> Table:
        return columns_table(title, [group.label for group in comparison.groups])

    groups = comparison.groups
    summary = table(f"groups (mean ± sd over seeds; valid {label}, {comparison.score})")
    headings = distinct_names([info.path for info in comparison.runs])
    summary.add_row("runs", *(", ".join(headings[i] for i in g.members) for g in groups))
    summary.add_row("seeds", *(", ".join(str(comparison.runs[i].seed) for i in g.members) for g in groups))
    summary.add_row(f"best valid {label}", *(stat(g.best) for g in groups))
    summary.add_row("test MRR (fused)", *(stat(g.test_mrr, len(g.members)) for g in groups))
    out: list = [summary, ""]
    if comparison.group_differences:
        differences = table("config differences between the groups")
        for key, values in comparison.group_differences.items():
            differences.add_row(key, *("–" if v is None else format_value(v) for v in values))
        out += [differences, ""]
    elif len(groups) == 1:
        out += [Text("All runs share one config (seed and schedule aside): one group.", style="dim"), ""]
    curve = table(f"valid {label} ({comparison.score}) at each evaluated epoch, mean ± sd (n where fewer runs)")
    for point, *stats in zip(comparison.curve, *(g.curve for g in groups)):
        curve.add_row(str(point.epoch), *(stat(value, len(g.members)) for value, g in zip(stats, groups)))
    out.append(curve if comparison.curve else Text("No run has been evaluated on valid yet.", style="dim"))
    verdict = comparison.verdict()
    if verdict:
        out += ["", Text(verdict[0].upper() + verdict[1:] + ".")]
    return out


@app.command("rm", help=reflow(
    """Remove runs and everything in their directories, after asking (--yes: without asking).

    A directory is removed only if it holds nothing but what a run writes (config.yaml, trace.jsonl,
    checkpoints, metrics); outside the runs directory its config.yaml must also be a run's. One run
    refused (or being trained) and none is removed.

    Example: imf runs rm countries-mm@latest
    """
))
@handle_errors
def rm_command(
    runs: List[str] = typer.Argument(..., help="Runs: directories, names or unique prefixes, latest, DATASET@latest."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    from imf_cli.runs import check_removable, remove_run, resolve_run, run_info

    chosen = []
    for ref in runs:
        path = resolve_run(ref)
        if path not in chosen:
            check_removable(path)  # every run checked before any is listed, asked for or removed
            chosen.append(path)
    infos = [run_info(path) for path in chosen]
    console.print(runs_table(infos, title="To remove"))
    total = human_size(sum(info.size for info in infos))
    if not yes and not _confirmed(f"Remove {len(infos)} run{'s' if len(infos) != 1 else ''} ({total})?"):
        console.print("Nothing removed (answer y, or add --yes to remove without asking).")
        raise typer.Exit(1)
    for info in infos:
        remove_run(info.path)
        console.print(f"Removed {info.path}", highlight=False, soft_wrap=True)


def _confirmed(question: str) -> bool:
    """Ask; no answer at all (stdin closed, Ctrl+C at the prompt) is a no, not the bare "Aborted."."""
    try:
        return typer.confirm(question)
    except typer.Abort:
        console.print()
        return False
