"""``imf explore``: the terminal UI for browsing ranked answers with each modality's part in the score."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from imf_cli.output import err_console, handle_errors

if TYPE_CHECKING:
    from imf_cli.service import Service


class Checkpoint(str, Enum):
    best = "best"
    last = "last"


def find_run(run_dir: Path | None, dataset: str | None = None, checkpoint: str = "best") -> Path:
    """``run_dir``, or the latest run (of ``dataset``) that has ``checkpoint``; an :class:`ImfError` when there is none."""
    from kgdata import paths
    from kgdata.errors import ImfError

    if run_dir is not None:
        if not (run_dir / "config.yaml").is_file():
            raise ImfError(f"{run_dir} is not a run directory (no config.yaml); runs are in {paths.runs_dir()}")
        return run_dir
    latest = paths.latest_run(dataset, checkpoint=checkpoint)
    if latest is None:
        of = f" of {dataset}" if dataset else ""
        raise ImfError(
            f"no runs{of} in {paths.runs_dir()} yet (runs without a {checkpoint}.pt are skipped); "
            f"train one first: imf train {dataset or 'countries-mm'}"
        )
    return latest


def build_service(run_dir: Path, checkpoint: str = "best", device: str = "auto") -> "Service":
    """The factory of the real service: a run's model and its dataset's store, loaded once."""
    from imf_cli.service import PredictionService

    return PredictionService.from_run(run_dir, checkpoint=checkpoint, device=device)


@handle_errors
def explore_command(
    run_dir: Optional[Path] = typer.Argument(
        None, help="A run directory written by imf train (default: the latest run).", show_default=False
    ),
    checkpoint: Checkpoint = typer.Option(Checkpoint.best, "--checkpoint", help="best (chosen on valid) | last."),
    dataset: Optional[str] = typer.Option(
        None, "--dataset", help="Without RUN_DIR: the latest run of this dataset.", show_default=False
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
) -> None:
    """Browse a run's ranked answers in a terminal UI, with each modality's part in every score.

    Type a head entity (live search over names and descriptions), pick a relation (← relation asks
    for heads), press Enter. Each row shows the fused score, every branch's score with a bar, and
    whether the triple is already known; the detail pane shows the description, the image, the
    fusion weights and supporting facts. Keys: / search, f known facts, k rows, ? help, q quit.

    Example: imf explore --dataset countries-mm
    """
    run = find_run(run_dir, dataset, checkpoint.value)
    err_console.print(f"Loading {run} …", highlight=False, soft_wrap=True)
    service = build_service(run, checkpoint.value, device)

    from imf_cli.tui.app import ExploreApp

    ExploreApp(service, subtitle=f"{service.dataset} · {run.name}").run()
