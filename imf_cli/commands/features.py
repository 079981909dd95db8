"""``imf features``: list the feature files stored for a dataset, with coverage and input hashes."""

from __future__ import annotations

import typer

from imf_cli.output import console, fit_columns, handle_errors, left_out_note, natural_widths, print_json, warn


@handle_errors
def features_command(
    name: str = typer.Argument(..., help="Dataset name (see imf datasets)."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """List the stored features of a dataset: modality, encoder, dim, coverage, time and input hash.

    Example: imf features countries-mm --json
    """
    from rich import box
    from rich.table import Table

    from kgdata.features import list_features
    from kgdata.store import EntityStore

    with EntityStore.open(name) as store:
        entries = list_features(store)
    if json_output:
        print_json(entries)
        return
    if not entries:
        console.print(f"No features for {name} yet. Try: imf encode {name} --modality text")
        return
    headers = ("modality", "encoder", "dim", "covered", "created (UTC)", "input hash")
    rows = []
    problems = []
    for entry in entries:
        covered = "?" if entry["covered"] is None else f"{entry['covered']:,}/{entry['rows']:,}"
        rows.append((
            entry["modality"],
            entry["encoder"],
            str(entry["dim"]),
            covered,
            (entry["created_at"] or "?")[:16].replace("T", " "),
            (entry["input_hash"] or "?")[:10],
        ))
        if entry["status"] != "ok":
            problems.append(f"{entry['modality']}/{entry['encoder']}: {entry['status']} ({entry['path']})")
    # No figure is ever cut: where the terminal is narrow, whole columns go, named in the caption.
    natural = natural_widths(headers, rows)
    natural["encoder"] = min(natural["encoder"], 24)  # a model path folds down to this
    shown, left_out = fit_columns(natural, ("input hash", "created (UTC)", "dim", "covered"), console.width)
    table = Table(
        box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True, caption=left_out_note(left_out)
    )
    for header in shown:
        if header == "encoder":
            table.add_column(header, overflow="fold")
        else:
            table.add_column(header, no_wrap=True, justify="right" if header in ("dim", "covered") else "left")
    for row in rows:
        table.add_row(*(cell for header, cell in zip(headers, row) if header in shown))
    console.print(table)
    for problem in problems:
        warn(problem)
