"""``imf explore``: the terminal UI for browsing ranked answers with each modality's part in the score."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from imf_cli.output import handle_errors, threads_option

if TYPE_CHECKING:
    from imf_cli.service import Service


class Checkpoint(str, Enum):
    best = "best"
    last = "last"


class ImageMode(str, Enum):
    auto = "auto"
    tgp = "tgp"
    sixel = "sixel"
    halfcell = "halfcell"
    unicode = "unicode"
    none = "none"


def _is_tty(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # a closed or detached stream
        return False


def check_terminal() -> None:
    """Refuse to start the terminal UI without a terminal: Textual reads keys from stdin and draws on
    stderr, so with any of them redirected it would wait for keys forever or write escape codes into a
    file. Tests that drive the command through Typer's ``CliRunner`` replace this function."""
    from kgdata.errors import ImfError

    redirected = [name for name in ("stdin", "stdout", "stderr") if not _is_tty(getattr(sys, name))]
    if redirected:
        names = ", ".join(redirected[:-1]) + " and " + redirected[-1] if len(redirected) > 1 else redirected[0]
        raise ImfError(
            "imf explore needs a terminal (stdin, stdout and stderr, where it draws, must be a TTY), but "
            f"{names} {'is' if len(redirected) == 1 else 'are'} redirected; run it in a terminal, or use "
            "imf predict for scripted queries"
        )


def find_run(run: str | None, dataset: str | None = None) -> tuple[Path, str | None]:
    """The run to open and why: ``run`` resolved as a reference, or, without one, the newest finished
    run with the most branches (of ``dataset``); an :class:`ImfError` when there is none."""
    from imf_cli.runs import default_run, resolve_run

    if run is not None:
        return resolve_run(run), None
    return default_run(dataset)


def build_service(run_dir: Path, checkpoint: str = "best", device: str = "auto") -> "Service":
    """The factory of the real service: a run's model and its dataset's store, loaded once."""
    from imf_cli.service import PredictionService

    return PredictionService.from_run(run_dir, checkpoint=checkpoint, device=device)


@handle_errors
def explore_command(
    run: Optional[str] = typer.Argument(
        None,
        help="A run: directory, name or unique prefix, latest, or DATASET@latest.",
        show_default="the newest finished run with the most branches",
    ),
    checkpoint: Checkpoint = typer.Option(Checkpoint.best, "--checkpoint", help="best (chosen on valid) | last."),
    dataset: Optional[str] = typer.Option(
        None, "--dataset", help="Without RUN: choose among the runs of this dataset.", show_default=False
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    image: ImageMode = typer.Option(
        ImageMode.auto,
        "--image",
        help="How to draw entity images: auto (the terminal's graphics protocol, Kitty or Sixel, else half "
        "blocks), tgp, sixel, halfcell, unicode, or none.",
    ),
    threads: Optional[int] = threads_option(),
) -> None:
    """Browse a run's ranked answers in a terminal UI, with each modality's part in every score.

    Type a head entity (live, typo-tolerant search over names and descriptions), pick a relation
    (<- relation asks for heads), press Enter. Each row shows the fused score, every branch's share of
    the fused decision as a bar, and whether the triple is already known; the detail pane shows the
    description, the image, the fusion weights and supporting facts. Without RUN it opens the newest
    finished run with the most branches and says which and why. Keys: F1 help, Ctrl+Q quit, Escape
    leaves an input; outside the inputs: / search, f known facts, n new entities, k rows, b back, d
    detail pane, r runs, ? help, q quit.

    Example: imf explore countries-mm@latest
    """
    check_terminal()  # before anything is loaded
    from imf_cli.output import err_console
    from imf_cli.runtime import set_threads
    from imf_cli.tui.run_picker import RunCatalog

    set_threads(threads)

    path, reason = find_run(run, dataset)
    why = f": {reason}" if reason else ""
    err_console.print(f"Opening {path.name}{why} …", highlight=False, soft_wrap=True)
    service = build_service(path, checkpoint.value, device)
    if image is not ImageMode.none:
        import textual_image.widget  # noqa: F401  (asks the terminal what it can draw, before Textual starts)

    from imf_cli.tui.app import ExploreApp
    from imf_cli.tui.render import run_label

    ExploreApp(
        service,
        subtitle=run_label(str(service.dataset), path.name),
        image=image.value,
        runs=RunCatalog(checkpoint.value, device),
        run_path=path,
        opened_because=f"{path.name}, {reason}" if reason else None,
    ).run()
