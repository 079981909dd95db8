"""``imf predict``: the top-k answers of one link query, with every branch's score and known-fact flags."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imf_cli.output import console, count, handle_errors, print_json, threads_option
from kgdata.errors import ImfError

#: What the branch cells of a row that a branch did not score show.
NOT_SCORED = "n/a"


@handle_errors
def predict_command(
    run: str = typer.Argument(..., help="A run: directory, name or unique prefix, latest, or DATASET@latest."),
    head: Optional[str] = typer.Option(None, "--head", help="Predict tails of (HEAD, RELATION, ?)."),
    tail: Optional[str] = typer.Option(None, "--tail", help="Predict heads of (?, RELATION, TAIL)."),
    relation: str = typer.Option(..., "--relation", help="Relation key, name, or a unique part of one."),
    new_text: Optional[str] = typer.Option(
        None, "--new-text", help="Score an entity given by this text (not stored), as the head; with --new-image too."
    ),
    new_image: Optional[Path] = typer.Option(
        None, "--new-image", help="Score an entity given by this image file (not stored), as the head."
    ),
    k: int = typer.Option(10, "-k", "--top", min=1, help="Rows to show."),
    include_known: bool = typer.Option(
        False, "--include-known", help="Keep answers already known in train/valid/test (hidden by default)."
    ),
    include_new: bool = typer.Option(
        False, "--include-new", help="Also rank entities added after training (scored from their features)."
    ),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best | last."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
    threads: Optional[int] = threads_option(),
) -> None:
    """Predict the missing entity of (HEAD, RELATION, ?) or (?, RELATION, TAIL), best first.

    Entities may be given by key, exact name, a unique prefix, or words that find one entity; an
    ambiguous or unknown name lists the closest candidates. Each row shows the fused score, every
    branch's logit (one column where the run has one branch), and whether the triple is already a fact of train (T), valid (V) or test (E).

    An entity outside the training graph (added with imf entities add, or given inline with
    --new-text/--new-image) has no structure vector: the branches that have its features score it
    (text, visual, multimodal), with the fusion weights renormalised over them, and the others show
    n/a. Inline text and images are encoded with the encoders the run's features came from. A
    leading "<-" on the relation asks for heads: --relation "<- borders" ranks (?, borders, NEW).
    Added entities are candidates only with --include-new.

    Example: imf predict countries-mm@latest --head France --relation "shares border" -k 5
    """
    from imf_cli.runs import resolve_run
    from imf_cli.runtime import set_threads
    from imf_cli.service import PredictionService

    set_threads(threads)

    inline = new_text is not None or new_image is not None
    if inline and (head is not None or tail is not None):
        raise ImfError("--new-text/--new-image give the query's entity; drop --head and --tail")
    if inline and include_known:
        raise ImfError("an entity given inline has no known answers; drop --include-known")
    with PredictionService.from_run(resolve_run(run), checkpoint=checkpoint, device=device) as service:
        if inline:
            chosen = service.resolve_relation(relation)
            result = service.predict_new(chosen.id, text=new_text, image=new_image, k=k, include_new=include_new)
        else:
            result = service.query(
                relation=relation, head=head, tail=tail, k=k, include_known=include_known, include_new=include_new
            )
        branches = list(service.branch_names)
    if json_output:
        print_json(result.to_dict())
        return
    query = (
        f"({result.entity.name}, {result.relation.name}, ?)"
        if not result.relation.inverse
        else f"(?, {result.relation.name}, {result.entity.name})"
    )
    caption = (
        "fusion weights: " + ", ".join(f"{b} {w:.3f}" for b, w in result.weights.items())
        if len(branches) > 1
        else f"one branch: the {branches[0]} score ranks"
    )
    if not result.in_graph:
        caption += f"; {result.entity.name} is not in the training graph: scored by {', '.join(result.scored_by)}"
    if result.hidden_known:
        caption += f"; {count(result.hidden_known, 'known answer')} hidden (--include-known shows them)"
    console.print(prediction_table(result, branches, query, caption, console.width))


def prediction_table(result, branches: list[str], query: str, caption: str, width: int):
    """The rows of a prediction, laid out for a terminal ``width`` characters wide.

    No column rules, the scores never wrap, and the name (what people read) gets the room before the
    key: the key column comes last, whole, and only where the names still get up to 24 characters
    beside it; otherwise the caption says it was left out (``--json`` has the keys).
    """
    from rich import box
    from rich.cells import cell_len
    from rich.table import Table

    single = len(branches) == 1  # the fused score is the branch's: one column
    rows = [
        (
            str(p.rank),
            p.entity.name,
            *(() if single else (f"{p.fused:.3f}",)),
            *(f"{p.branches[b]:.3f}" if b in p.branches else NOT_SCORED for b in branches),
            "".join(flag if split in p.known else "·" for split, flag in FLAGS) if p.in_graph else "new",
            p.entity.key,
        )
        for p in result.predictions
    ]
    headers = ("rank", "name", *(() if single else ("fused",)), *branches, "known", "key")
    natural = [max([len(headers[i]), *(cell_len(row[i]) for row in rows)]) for i in range(len(headers))]
    gap = 2
    fixed = sum(natural[i] for i in range(len(headers) - 1) if i != 1) + gap * (len(headers) - 2)
    show_key = width >= fixed + min(natural[1], 24) + gap + natural[-1]
    room = width - fixed - (gap + natural[-1] if show_key else 0)
    name_width = max(8, min(natural[1], room))
    if not show_key and rows:
        caption += "; keys left out for the terminal's width (--json has them)"
    table = Table(title=query, caption=caption, box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, collapse_padding=True)
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("name", width=name_width, overflow="fold")
    for column in headers[2:-2]:
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("known", no_wrap=True)
    if show_key:
        table.add_column("key", no_wrap=True)
    for row in rows:
        table.add_row(*(row if show_key else row[:-1]))
    return table


#: The letters of the known-fact column.
FLAGS = (("train", "T"), ("valid", "V"), ("test", "E"))
