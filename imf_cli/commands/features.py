"""``imf features``: list the feature files stored for a dataset, with coverage and input hashes."""

from __future__ import annotations

import typer

from imf_cli.output import console, handle_errors, print_json, warn


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
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("modality", no_wrap=True)
    table.add_column("encoder", overflow="fold", min_width=12)
    table.add_column("dim", justify="right", no_wrap=True)
    table.add_column("covered", justify="right", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("input hash", no_wrap=True)
    problems = []
    for entry in entries:
        covered = "?" if entry["covered"] is None else f"{entry['covered']:,}/{entry['rows']:,}"
        table.add_row(
            entry["modality"],
            entry["encoder"],
            str(entry["dim"]),
            covered,
            (entry["created_at"] or "?")[:16].replace("T", " "),
            (entry["input_hash"] or "?")[:10],
        )
        if entry["status"] != "ok":
            problems.append(f"{entry['modality']}/{entry['encoder']}: {entry['status']} ({entry['path']})")
    console.print(table)
    for problem in problems:
        warn(problem)
