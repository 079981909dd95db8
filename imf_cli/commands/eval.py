"""``imf eval``: filtered ranking metrics of a trained run, per branch, fused, mean fusion, per relation."""

from __future__ import annotations

import contextlib
from enum import Enum
from typing import Optional

import typer

from imf_cli.output import (
    console,
    count,
    fit_columns,
    handle_errors,
    json_option,
    left_out_note,
    natural_widths,
    print_json,
    progress_mode,
    progress_option,
    threads_option,
)

HITS = (1, 3, 10)


class Split(str, Enum):
    valid = "valid"
    test = "test"


@handle_errors
def eval_command(
    run: str = typer.Argument(..., help="A run: directory, name or unique prefix, latest, or DATASET@latest."),
    split: Split = typer.Option(
        Split.valid, "--split", help="valid to compare runs and settings; test, the held-out split, once at the end."
    ),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best (chosen on valid) | last."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", min=1, help="Queries scored at once.", show_default="picked from free memory"
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    per_relation: bool = typer.Option(
        False,
        "--per-relation",
        help="Also report every relation, and each category: 1-1, 1-N, N-1, N-N (from train), unseen (no "
        "training triple).",
    ),
    drop_overlap: bool = typer.Option(
        False,
        "--drop-overlap",
        help="Rank only the split's triples that are in no earlier split (valid: not in train; test: in neither "
        "train nor valid). Such overlaps are leaks that flatter the metrics; imf import counts them.",
    ),
    progress: bool = progress_option(),
    json_output: bool = json_option("the metrics"),
    threads: Optional[int] = threads_option(),
) -> None:
    """Evaluate a run: filtered MRR, MR and Hits@1/3/10 per branch, fused, and mean fusion.

    Both directions are ranked (tails, and heads through inverse relations), every other known
    triple is filtered out (test: of train, valid and test; valid: of train and valid, as in
    training), and ties get the realistic (mean) rank. The "mean fusion" row is the reference code's
    fusion, the mean of the branches' sigmoid probabilities, as a baseline.
    The metrics are also written to RUN/metrics-<split>.json. The default split is valid: compare
    runs and settings on it. Test is the held-out split: read it once, for the run you chose.

    Example: imf eval countries-mm@latest --split valid
    """
    from imf_cli.run_eval import evaluate_run
    from imf_cli.run_loading import pick_device
    from imf_cli.runs import metrics_path, resolve_run, run_metadata
    from imf_cli.runtime import set_threads

    set_threads(threads)
    run_dir = resolve_run(run)
    run_metadata(run_dir)  # a damaged config.yaml or an unknown device: one error line, before any progress line
    pick_device(device)
    metrics_path(run_dir, split.value, checkpoint=checkpoint)  # an unknown --checkpoint, before "Ranking …" too
    bar, lines = progress_mode(progress, json_output)
    what = f"Ranking the {split.value} split with {run_dir.name}/{checkpoint}.pt"
    if lines is not None:
        lines(what + " …")
    with console.status(what + " …") if bar else contextlib.nullcontext():
        result = evaluate_run(
            run_dir,
            split=split.value,
            checkpoint=checkpoint,
            batch_size=batch_size,
            device=device,
            per_relation=per_relation,
            drop_overlap=drop_overlap,
        )
    if lines is not None:
        lines(f"Ranked {2 * result['triples']:,} queries in {result['seconds']:.2f} s")
    if json_output:
        print_json(result)
        _refuse_unwritten(result)
        return
    console.print(summary_table(result, console.width))
    fused = result["fused"]
    console.print(
        f"{'Fused MRR' if len(result['branches']) > 1 else 'MRR'} with optimistic / pessimistic ranks: {fused['optimistic_mrr']:.4f} / "
        f"{fused['pessimistic_mrr']:.4f}. {result['seconds']:.2f} s on {result['device']}, "
        f"{result['chunk_size']} queries per chunk.",
        style="dim",
    )
    if result["per_relation"]:
        console.print(relation_table(result, console.width))
    if result.get("per_category"):
        console.print(category_table(result, console.width))
    if drop_overlap:
        earlier = "train" if split is Split.valid else "train or valid"
        console.print(
            f"Left out {count(result['overlap_left_out'], f'{split.value} triple')} also in {earlier}; "
            f"ranked the other {result['triples']:,}.",
            style="dim",
        )
    if split is Split.test:
        reads = result["test_reads"]
        console.print(
            "This is the held-out test split: report it once, for a run chosen on valid."
            + (
                f" This run's test split has now been read {reads} times (the first on "
                f"{result['first_test_read_at']}): report the first, not the best of them."
                if reads > 1
                else ""
            ),
            style="yellow",
        )
    _refuse_unwritten(result)
    console.print(f"Wrote {metrics_path(run_dir, split.value, no_overlap=drop_overlap, checkpoint=checkpoint)}", style="dim")


def _refuse_unwritten(result: dict) -> None:
    """The figures were shown; that their report could not be written (a read-only run directory) is a
    fault of the place, said last, with exit status 1."""
    if "not_written" in result:
        from kgdata.errors import EnvironmentFault

        raise EnvironmentFault(f"{result['not_written']}; the figures above were not recorded")


#: How each split is named in the tables.
SPLIT_LABELS = {"valid": "valid", "test": "test (held-out)"}


#: The note under a valid table whose fused row is cross-fitted (the decision weights were fitted on valid).
CROSS_FITTED = (
    "Fused: cross-fitted, as training selected with (each half of valid ranked with weights fitted on the "
    "other half); the run keeps weights fitted on all of valid."
)
#: The note under a one-branch model's tables, which show the branch alone.
ONE_BRANCH = "One branch: the fused and mean-fusion scores are the branch's own (--json has them too)."


def score_rows(block: dict) -> list[tuple[str, dict]]:
    """(name, metrics) of each score in ``block`` (a result, a relation or a category): each branch,
    then fused and mean fusion, which a one-branch model leaves out (they would repeat its row)."""
    rows = list(block["branches"].items())
    if len(rows) > 1:
        rows += [("fused", block["fused"]), ("mean fusion", block["mean_fusion"])]
    return rows


#: The columns of the summary that a narrow terminal leaves out first, in that order.
SUMMARY_EXPENDABLE = ("tails", "heads", "Hits@3", "MR", "Hits@1", "Hits@10")


def summary_table(result: dict, width: int = 80):
    """One row per score: each branch, then fused and mean fusion (a one-branch model: its row alone).

    No column rules and no number is ever cut: where the columns do not fit ``width``, the
    :data:`SUMMARY_EXPENDABLE` ones are left out, in that order, and the caption says so.
    """
    from rich import box
    from rich.table import Table

    rows = score_rows(result)
    headers = ("score", "MRR", "MR", "Hits@1", "Hits@3", "Hits@10", "heads", "tails")
    cells = [
        (
            name,
            f"{metrics['mrr']:.4f}",
            f"{metrics['mr']:.1f}",
            *(f"{metrics[f'hits@{k}']:.4f}" for k in HITS),
            f"{metrics['heads']['mrr']:.4f}",
            f"{metrics['tails']['mrr']:.4f}",
        )
        for name, metrics in rows
    ]
    natural = natural_widths(headers, cells)
    shown, left_out = fit_columns(natural, SUMMARY_EXPENDABLE, width)
    notes = [ONE_BRANCH] if len(result["branches"]) == 1 else []
    if result.get("fused_cross_fitted"):
        notes.append(CROSS_FITTED)
    if left_out:
        notes.append(left_out_note(left_out) + ".")
    table = Table(
        title=(
            f"{result['dataset']} {SPLIT_LABELS.get(result['split'], result['split'])}, {result['checkpoint']}.pt: {count(result['triples'], 'triple')}, "
            f"filtered, realistic ranks; heads and tails give the MRR of each direction"
        ),
        caption=" ".join(notes) or None,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
    )
    for header in shown:
        table.add_column(header, no_wrap=True, justify="left" if header == "score" else "right")
    for index, row in enumerate(cells):
        table.add_row(
            *(cell for header, cell in zip(headers, row) if header in shown),
            end_section=index == len(result["branches"]) - 1 and len(rows) > 1,
        )
    return table


def relation_labels(per_relation: dict) -> dict[str, str]:
    """Relation key → the label its row shows: the name, with the key only where the name does not
    tell the relation apart (two relations share it, or it is empty). Keys such as DBpedia's URIs
    would otherwise fill the column and fold every name over several lines."""
    from collections import Counter

    names = Counter(values["name"] for values in per_relation.values())
    return {
        key: values["name"] if values["name"] and names[values["name"]] == 1 else f"{values['name']} ({key})".lstrip()
        for key, values in per_relation.items()
    }


#: The columns of the per-relation table that a narrow terminal leaves out first, in that order.
RELATION_EXPENDABLE = ("best branch", "mean", "heads", "tails", "kind", "triples")
#: Those of the per-category table.
CATEGORY_EXPENDABLE = ("relations", "triples", "heads", "tails")


def relation_table(result: dict, width: int = 80):
    """One row per relation, most triples first: fused MRR (both, heads, tails), mean fusion, best
    branch; a one-branch model's MRR (both, heads, tails) alone. Names fold (to no less than 16
    characters); where the figures do not fit ``width`` beside them, the
    :data:`RELATION_EXPENDABLE` columns go, in that order, and the caption says so."""
    from rich import box
    from rich.table import Table

    branches = {name for values in result["per_relation"].values() for name in values["branches"]}
    single = len(branches) == 1
    what = (
        f"{next(iter(branches))} (both directions, heads, tails)"
        if single
        else "fused (both directions, heads, tails), mean fusion, the best branch"
    )
    labels = relation_labels(result["per_relation"])
    ordered = sorted(result["per_relation"].items(), key=lambda item: -item[1]["triples"])
    headers = ("relation", "kind", "triples", "MRR" if single else "fused", "heads", "tails",
               *(() if single else ("mean", "best branch")))
    rows = []
    for key, values in ordered:
        fused = values["fused"]
        best, best_metrics = max(values["branches"].items(), key=lambda item: item[1]["mrr"])
        rows.append((
            labels[key],
            values.get("category", ""),
            f"{values['triples']:,}",
            f"{fused['mrr']:.3f}",
            f"{fused['heads']['mrr']:.3f}",
            f"{fused['tails']['mrr']:.3f}",
            *(() if single else (f"{values['mean_fusion']['mrr']:.3f}", f"{best} {best_metrics['mrr']:.3f}")),
        ))
    natural = natural_widths(headers, rows)
    natural["relation"] = 16  # it folds down to this
    shown, left_out = fit_columns(natural, RELATION_EXPENDABLE, width)
    table = Table(
        title=f"MRR per relation: {what}; kind from the training split",
        caption=left_out_note(left_out),
        box=box.SIMPLE_HEAD,  # no column rules
        collapse_padding=True,
        pad_edge=False,
        show_edge=False,
    )
    for header in shown:
        if header == "relation":
            table.add_column(header, overflow="fold", min_width=16)
        else:
            table.add_column(header, no_wrap=True, justify="left" if header in ("kind", "best branch") else "right")
    for row in rows:
        table.add_row(*(cell for header, cell in zip(headers, row) if header in shown))
    return table


def category_table(result: dict, width: int = 80):
    """Per relation category (1-1, 1-N, N-1, N-N, unseen): the MRR of every score, both directions, heads and
    tails; where they do not fit ``width``, the :data:`CATEGORY_EXPENDABLE` columns go, in that order."""
    from rich import box
    from rich.table import Table

    headers = ("kind", "relations", "triples", "score", "MRR", "heads", "tails")
    rows = []
    for category, values in result["per_category"].items():
        scores = score_rows(values)
        for index, (name, block) in enumerate(scores):
            first = index == 0
            cells = (
                category if first else "",
                f"{values['relations']:,}" if first else "",
                f"{values['triples']:,}" if first else "",
                name,
                f"{block['mrr']:.3f}",
                f"{block['heads']['mrr']:.3f}",
                f"{block['tails']['mrr']:.3f}",
            )
            rows.append((cells, index == len(scores) - 1))
    natural = natural_widths(headers, [cells for cells, _ in rows])
    shown, left_out = fit_columns(natural, CATEGORY_EXPENDABLE, width)
    table = Table(
        title=(
            "MRR per relation category (from the training split; 1-N: several tails per head; "
            "unseen: no training triple). "
            "tails: predicting t in (h, r, ?); heads: h in (?, r, t)"
        ),
        caption=left_out_note(left_out),
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
        show_edge=False,
    )
    for header in shown:
        table.add_column(header, no_wrap=True, justify="left" if header in ("kind", "score") else "right")
    for cells, last in rows:
        table.add_row(*(cell for header, cell in zip(headers, cells) if header in shown), end_section=last)
    return table

