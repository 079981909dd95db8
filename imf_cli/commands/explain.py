"""``imf explain``: why a run ranks a tail where it does for one query."""

from __future__ import annotations

from typing import Optional

import typer

from imf_cli.output import console, handle_errors, print_json, threads_option


@handle_errors
def explain_command(
    run: str = typer.Argument(..., help="A run: directory, name or unique prefix, latest, or DATASET@latest."),
    head: str = typer.Option(..., "--head", help="The query's head: key, name, or a unique part of one."),
    relation: str = typer.Option(..., "--relation", help="Relation key or name; a leading '<-' reads it backwards."),
    tail: str = typer.Option(..., "--tail", help="The candidate answer to explain."),
    include_new: bool = typer.Option(
        False, "--include-new", help="Rank TAIL among the entities added after training too, as predict --include-new."
    ),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best | last."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    json_output: bool = typer.Option(False, "--json", help="Print the explanation as one JSON object."),
    threads: Optional[int] = threads_option(),
) -> None:
    """Explain why TAIL answers (HEAD, RELATION, ?): branch contributions, graph evidence, neighbours, rank.

    Branch contributions: each branch's fusion weight × its probability, and its share of their sum
    (the share the explore TUI shows). Evidence: the training facts between HEAD and TAIL and the
    two-hop paths HEAD → x → TAIL, ranked by how reliably their relations imply RELATION in train
    (a rule-mining confidence). Nearest neighbours: the entities closest to HEAD and to TAIL in each
    branch's space (cosine), with their own RELATION facts. Rank: TAIL's filtered rank among all
    candidates, and the known answers the filter left out. Entities added after training are
    explained from the branches that have their features; an added TAIL is ranked among the graph's
    entities, and with --include-new every added entity is a candidate too.

    Example: imf explain countries-mm@latest --head France --relation "shares border" --tail Germany
    """
    from imf_cli.runs import resolve_run
    from imf_cli.runtime import set_threads
    from imf_cli.service import PredictionService

    set_threads(threads)
    with PredictionService.from_run(resolve_run(run), checkpoint=checkpoint, device=device) as service:
        chosen = service.resolve_relation(relation)
        explanation = service.explain(
            service.resolve_entity(head).id, chosen.id, service.resolve_entity(tail).id, include_new=include_new
        )
    if json_output:
        print_json(explanation.to_dict())
        return
    from imf_cli.explain_view import explanation_renderable

    console.print(explanation_renderable(explanation))
