"""``imf search``: find entities by words in their name or description."""

from __future__ import annotations

import typer

from imf_cli.output import console, entity_table, handle_errors, print_json


@handle_errors
def search_command(
    name: str = typer.Argument(..., help="Dataset name."),
    query: str = typer.Argument(..., help="Words to find; the last one may be a prefix."),
    limit: int = typer.Option(10, "--limit", min=1, help="At most this many results."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """Search a dataset's entities by name and description (SQLite FTS5).

    Example: imf search countries-mm "west africa"
    """
    from dataclasses import asdict

    from kgdata.store import EntityStore

    with EntityStore.open(name) as store:
        found = store.search(query, limit=limit)
    if json_output:
        print_json([asdict(entity) for entity in found])
        return
    if not found:
        console.print(f"No entity matches {query!r}.")
        return
    table = entity_table("id", "key", "name", "description")
    for entity in found:
        description = entity.description or ""
        table.add_row(
            str(entity.id), entity.key, entity.name, description[:80] + ("…" if len(description) > 80 else "")
        )
    console.print(table)
