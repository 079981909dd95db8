"""``imf predict``: the top-k answers of one link query, with every branch's score and known-fact flags."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imf_cli.output import console, count, handle_errors, path_option, print_json, threads_option
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
    new_image: Optional[Path] = path_option(
        "--new-image", help="Score an entity given by this image file (not stored), as the head."
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

    Entities may be given by key, exact name, a unique prefix, or the words of one name in any order; an
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
    beside it; otherwise the caption says it was left out (``--json`` has the keys). Where even the
    scores do not fit beside an 8-character name, the branch columns go, the last first (the fused
    score stays), then the known flags, and the caption names them.
    """
    from rich import box
    from rich.cells import cell_len
    from rich.table import Table

    single = len(branches) == 1  # the fused score is the branch's: one column
    predictions = result.predictions
    columns = {"rank": [str(p.rank) for p in predictions], "name": [p.entity.name for p in predictions]}
    if not single:
        columns["fused"] = [f"{p.fused:.3f}" for p in predictions]
    for b in branches:
        columns[b] = [f"{p.branches[b]:.3f}" if b in p.branches else NOT_SCORED for p in predictions]
    columns["known"] = [
        "".join(flag if split in p.known else "·" for split, flag in FLAGS) if p.in_graph else "new"
        for p in predictions
    ]
    keys = [p.entity.key for p in predictions]
    natural = {h: max([cell_len(h), *map(cell_len, cells)]) for h, cells in columns.items()}
    key_width = max([3, *map(cell_len, keys)])
    gap, least_name = 2, 8

    def fixed() -> int:  # every column but the name and the key, with the gaps between all shown
        return sum(w for h, w in natural.items() if h != "name") + gap * (len(natural) - 1)

    dropped = []
    for branch in reversed(branches if not single else []):
        if fixed() + least_name <= width:
            break
        del columns[branch], natural[branch]
        dropped.append(branch)
    dropped.reverse()
    if fixed() + least_name > width:  # narrower still: the known flags go too
        del columns["known"], natural["known"]
        dropped.append("known")
    show_key = width >= fixed() + min(natural["name"], 24) + gap + key_width
    room = width - fixed() - (gap + key_width if show_key else 0)
    name_width = min(natural["name"], max(least_name, room))  # never wider than the names need
    left_out = [*dropped, *(["keys"] if not show_key and predictions else [])]
    if left_out:
        caption += f"; {', '.join(left_out)} left out for the terminal's width (--json has them)"
    table = Table(title=query, caption=caption, box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, collapse_padding=True)
    for header in columns:
        if header == "name":
            table.add_column("name", width=name_width, overflow="fold")
        else:
            table.add_column(header, justify="left" if header == "known" else "right", no_wrap=True)
    if show_key:
        table.add_column("key", no_wrap=True)
        columns["key"] = keys
    for index in range(len(predictions)):
        table.add_row(*(cells[index] for cells in columns.values()))
    return table


#: The letters of the known-fact column.
FLAGS = (("train", "T"), ("valid", "V"), ("test", "E"))
