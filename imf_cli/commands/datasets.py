"""``imf datasets``: list the imported datasets with their counts."""

from __future__ import annotations

import typer

from imf_cli.output import console, fit_columns, handle_errors, left_out_note, natural_widths, print_json, warn


@handle_errors
def datasets_command(
    json_output: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """List the imported datasets with their counts.

    Example: imf datasets --json
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from kgdata.store import dataset_summaries

    summaries = dataset_summaries()
    if json_output:
        print_json(summaries)
        return
    if not summaries:
        console.print("No datasets yet. Try: imf import countries-mm")
        return
    headers = ("name", "format", "entities", "relations", "train", "valid", "test")
    rows = [
        (row["name"], Text("unreadable", style="red"), *[""] * 5)
        if "error" in row
        else (row["name"], row["format"], *(f"{row[k]:,}" for k in headers[2:]))
        for row in summaries
    ]
    natural = natural_widths(headers, rows)
    shown, left_out = fit_columns(natural, ("format", "relations", "test", "valid", "train", "entities"), console.width)
    # No column rules; the name (what people type next) is never cut, the numbers right-aligned.
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
        caption=left_out_note(left_out),
    )
    for header in shown:
        table.add_column(header, no_wrap=True, justify="left" if header in ("name", "format") else "right")
    for row in rows:
        table.add_row(*(cell for header, cell in zip(headers, row) if header in shown))
    console.print(table)
    for row in (row for row in summaries if "error" in row):
        hint = "" if "re-import" in row["error"] else f" (imf import SOURCE --name {row['name']} --replace imports it again)"
        warn(row["error"] + hint)
