"""``imf datasets``: list the imported datasets with their counts."""

from __future__ import annotations

import typer

from imf_cli.output import console, handle_errors, print_json, warn


@handle_errors
def datasets_command(
    json_output: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """List the imported datasets with their counts.

    Example: imf datasets --json
    """
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
    table = Table("name", "format", "entities", "relations", "train", "valid", "test")
    broken = [row for row in summaries if "error" in row]
    for row in summaries:
        if "error" in row:
            table.add_row(row["name"], Text("unreadable", style="red"), *[""] * 5)
            continue
        table.add_row(
            row["name"],
            row["format"],
            *(f"{row[k]:,}" for k in ("entities", "relations", "train", "valid", "test")),
        )
    console.print(table)
    for row in broken:
        hint = "" if "re-import" in row["error"] else f" (imf import SOURCE --name {row['name']} --replace imports it again)"
        warn(row["error"] + hint)
