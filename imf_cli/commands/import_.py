"""``imf import``: read a dataset directory (or a bundled dataset) into the entity store."""

from __future__ import annotations

from enum import Enum
from typing import Optional

import typer
from rich.text import Text

from imf_cli.output import console, count, handle_errors, print_json, waiting, warn


class Format(str, Enum):
    auto = "auto"
    tsv = "tsv"
    imf = "imf"
    ids = "ids"


@handle_errors
def import_command(
    source: str = typer.Argument(..., help="A dataset directory, or a bundled dataset name (countries-mm)."),
    name: Optional[str] = typer.Option(
        None, "--name", help="Dataset name.", show_default="the directory's name, or the bundled dataset's"
    ),
    format: Format = typer.Option(Format.auto, "--format", help="Input layout; auto detects it."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite an existing dataset of that name."),
    json_output: bool = typer.Option(False, "--json", help="Print the counts as one JSON object."),
) -> None:
    """Import a dataset into the entity store.

    Importing a bundled dataset that is already imported, unchanged, does nothing and says so; any
    other existing dataset needs --replace.

    Layouts: tsv (train/valid/test files of head<TAB>relation<TAB>tail, optional entities.tsv),
    imf (IMF reference / MMKB: N-Triples-style files with entity2id.txt and relation2id.txt),
    ids (integer triples with entity2id.txt, as MyGO / MMRNS).

    Example: imf import countries-mm
    """
    from kgdata.importing import import_dataset

    report = import_dataset(
        source, name=name, format=format.value, replace=replace, progress=not json_output, on_wait=waiting
    )
    if replace and report.status != "unchanged":
        report.warnings += _orphaned_runs(report.name) + _stale_features(report.name)
    for message in report.warnings:
        warn(message)
    if json_output:
        print_json(report.to_dict())
        return
    if report.status == "unchanged":
        console.print(
            Text.assemble(
                (report.name, "bold"),
                f" is already imported, unchanged ({count(report.entities, 'entity', 'entities')}, "
                f"{report.train:,} / {report.valid:,} / {report.test:,} train / valid / test triples); nothing to do. "
                f"--replace imports it again.",
            ),
            soft_wrap=True,
        )
        console.print(f"Store: {report.path}", soft_wrap=True)
        return
    console.print(
        Text.assemble(
            "Imported ",
            (report.name, "bold"),
            f" ({report.format}): {count(report.entities, 'entity', 'entities')}, {count(report.relations, 'relation')}, "
            f"{report.train:,} / {report.valid:,} / {report.test:,} train / valid / test triples",
        )
    )
    console.print(f"Store: {report.path}", soft_wrap=True)


def _orphaned_runs(dataset: str) -> list[str]:
    """A warning when the replaced store's runs no longer match it: they were trained on other content
    (their metrics and predictions are of that), and ``imf runs`` lists them as orphans."""
    from imf_cli.runs import ORPHAN, list_runs

    orphans = [run for run in list_runs(dataset) if run.status == ORPHAN]
    if not orphans:
        return []
    return [
        f"{count(len(orphans), 'run')} of {dataset} {'was' if len(orphans) == 1 else 'were'} trained on the "
        f"replaced content and {'is' if len(orphans) == 1 else 'are'} now an orphan (imf runs {dataset}; "
        f"import the old source again to use {'it' if len(orphans) == 1 else 'them'}, or train anew)"
    ]



def _stale_features(dataset: str) -> list[str]:
    """A warning naming the feature files that the replaced store made stale: training and encoding
    refuse them until they are made again."""
    from kgdata.features import list_features
    from kgdata.store import EntityStore

    with EntityStore.open(dataset) as store:
        stale = [f"{entry['modality']}/{entry['encoder']}" for entry in list_features(store)
                 if entry["status"].startswith(("stale", "partial"))]
    if not stale:
        return []
    return [
        f"{count(len(stale), 'feature file')} of {dataset} {'was' if len(stale) == 1 else 'were'} computed from "
        f"the replaced content and {'is' if len(stale) == 1 else 'are'} stale now ({', '.join(stale)}); "
        f"imf features {dataset} says how to make {'it' if len(stale) == 1 else 'them'} again"
    ]
