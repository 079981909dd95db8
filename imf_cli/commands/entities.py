"""``imf entities``: add entities to an imported dataset after import, and list them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imf_cli.output import console, entity_table, handle_errors, path_option, print_json, waiting, warn
from kgdata.wording import truncate
from kgdata.errors import ImfError

app = typer.Typer(
    help=(
        "Add entities the graph has never seen (a key, a name, a description, an image; no triples) and "
        "list them.\n\nExample: imf entities list countries-mm"
    ),
    no_args_is_help=True,
)


@app.command("add")
@handle_errors
def add_command(
    dataset: str = typer.Argument(..., help="Dataset name (see imf datasets)."),
    key: Optional[str] = typer.Argument(None, help="The new entity's key (not with --from).", show_default=False),
    name: Optional[str] = typer.Option(None, "--name", help="Its name (required with KEY).", show_default=False),
    description: Optional[str] = typer.Option(
        None, "--description", help="Its description, the text that text features encode.", show_default=False
    ),
    image: Optional[Path] = path_option(
        "--image", help="An image file; it is copied into the dataset.", show_default=False
    ),
    from_file: Optional[Path] = path_option(
        "--from",
        help="Add every entity of a file in the entities.tsv layout (header: id, name, description, image; "
        "image paths relative to the file).",
        show_default=False,
    ),
    json_output: bool = typer.Option(False, "--json", help="Print what was added as one JSON object."),
) -> None:
    """Add entities to a dataset, outside the training graph, in one transaction.

    Added entities get the ids after the graph's, carry a "not in training graph" flag and have no
    triples: training and evaluation never see them, and existing runs keep loading. Encode them with
    imf encode (only new entities are encoded), then score them with the run's text and image branches.

    Example: imf entities add countries-mm atlantis --name Atlantis --description "A sunken island"
    """
    from kgdata.entities import NewEntity, add_entities, read_entities_file

    if from_file is not None:
        given = [flag for flag, value in (("KEY", key), ("--name", name), ("--description", description),
                                          ("--image", image)) if value is not None]
        if given:
            raise ImfError(f"{', '.join(given)} cannot be combined with --from (the file gives every field)")
        entities = read_entities_file(from_file)
    else:
        if key is None:
            raise ImfError("give the new entity's KEY and --name, or --from FILE")
        if name is None or not name.strip():
            raise ImfError(f"give the name of {key!r} with --name" + (" (it is blank)" if name is not None else ""))
        entities = [NewEntity(key=key, name=name, description=description, image=image)]
    report = add_entities(dataset, entities, on_wait=waiting)
    if json_output:
        print_json(report.to_dict())
        return
    for row in report.added:
        # a 100,000-character name filled the terminal: its start is enough here (imf entities shows it)
        console.print(f"Added {truncate(row['key'], 200)} (id {row['id']}): {truncate(row['name'], 200)}",
                      highlight=False, soft_wrap=True)
    for message in report.warnings:
        warn(message)
    # Text always (a name is text); images too when a new entity has one: advised text alone, an image
    # given here stayed unused, and the entity was scored by its name only.
    modalities = ["text", *(["image"] if any(row.get("image") for row in report.added) else [])]
    commands = " and ".join(f"imf encode {report.dataset} --modality {m}" for m in modalities)
    console.print(
        f"Dataset {report.dataset}: {report.graph_entities:,} graph entities and "
        f"{report.entities - report.graph_entities:,} added. Encode the new ones with: {commands}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("list")
@handle_errors
def list_command(
    dataset: str = typer.Argument(..., help="Dataset name (see imf datasets)."),
    added: bool = typer.Option(False, "--added", help="Only the entities added after import."),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many rows."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """List a dataset's entities (or only the added ones) with their ids and flags.

    Example: imf entities list countries-mm --added
    """
    from kgdata.store import EntityStore

    with EntityStore.open(dataset) as store:
        ids = store.added_entity_ids() if added else range(store.num_entities)
        shown = store.entities(list(ids)[:limit])
        total = len(ids)
    if json_output:
        print_json([entity.to_dict() for entity in shown])
        return
    if not shown:
        console.print(f"No {'added ' if added else ''}entities in {dataset}.")
        return
    table = entity_table("id", "key", "name", "in graph", "description")
    for entity in shown:
        description = entity.description or ""
        table.add_row(
            str(entity.id),
            entity.key,
            entity.name,
            "no (added)" if entity.added else "yes",
            description[:60] + ("…" if len(description) > 60 else ""),
        )
    console.print(table)
    if total > len(shown):
        console.print(f"{len(shown)} of {total:,} shown (--limit).", style="dim")
