"""``imf predict``: the top-k answers of one link query, with every branch's score and known-fact flags."""

from __future__ import annotations

from typing import Optional

import typer

from imf_cli.output import console, handle_errors, print_json


@handle_errors
def predict_command(
    run: str = typer.Argument(..., help="A run: directory, name or unique prefix, latest, or DATASET@latest."),
    head: Optional[str] = typer.Option(None, "--head", help="Predict tails of (HEAD, RELATION, ?)."),
    tail: Optional[str] = typer.Option(None, "--tail", help="Predict heads of (?, RELATION, TAIL)."),
    relation: str = typer.Option(..., "--relation", help="Relation key, name, or a unique part of one."),
    k: int = typer.Option(10, "-k", "--top", min=1, help="Rows to show."),
    include_known: bool = typer.Option(
        False, "--include-known", help="Keep answers already known in train/valid/test (hidden by default)."
    ),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best | last."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Predict the missing entity of (HEAD, RELATION, ?) or (?, RELATION, TAIL), best first.

    Entities may be given by key, exact name, a unique prefix, or words that find one entity; an
    ambiguous or unknown name lists the closest candidates. Each row shows the fused score, every
    branch's logit, and whether the triple is already a fact of train (T), valid (V) or test (E).

    Example: imf predict countries-mm@latest --head France --relation "shares border" -k 5
    """
    from rich.markup import escape
    from rich.table import Table

    from imf_cli.runs import resolve_run
    from imf_cli.service import PredictionService

    with PredictionService.from_run(resolve_run(run), checkpoint=checkpoint, device=device) as service:
        result = service.query(relation=relation, head=head, tail=tail, k=k, include_known=include_known)
    if json_output:
        print_json(result.to_dict())
        return
    query = (
        f"({result.entity.name}, {result.relation.name}, ?)"
        if not result.relation.inverse
        else f"(?, {result.relation.name}, {result.entity.name})"
    )
    branches = list(result.weights)
    caption = "fusion weights: " + ", ".join(f"{b} {w:.3f}" for b, w in result.weights.items())
    if result.hidden_known:
        caption += f"; {result.hidden_known} known answers hidden (--include-known shows them)"
    table = Table("rank", "key", "name", "fused", *branches, "known", title=escape(query), caption=caption)
    for prediction in result.predictions:
        table.add_row(
            str(prediction.rank),
            escape(prediction.entity.key),
            escape(prediction.entity.name),
            f"{prediction.fused:.3f}",
            *(f"{prediction.branches[b]:.3f}" for b in branches),
            "".join(flag if split in prediction.known else "·" for split, flag in FLAGS),
        )
    console.print(table)


#: The letters of the known-fact column.
FLAGS = (("train", "T"), ("valid", "V"), ("test", "E"))
