"""The Typer root. It imports neither torch nor textual, so ``imf --help`` stays fast.

Each command lives in ``imf_cli/commands/<name>.py`` and imports heavy libraries inside its body.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from imf_cli.commands import ablate as ablate_cmd
from imf_cli.commands import datasets as datasets_cmd
from imf_cli.commands import demo as demo_cmd
from imf_cli.commands import eval as eval_cmd
from imf_cli.commands import explain as explain_cmd
from imf_cli.commands import explore as explore_cmd
from imf_cli.commands import encode as encode_cmd
from imf_cli.commands import entities as entities_cmd
from imf_cli.commands import features as features_cmd
from imf_cli.commands import import_ as import_cmd
from imf_cli.commands import predict as predict_cmd
from imf_cli.commands import runs as runs_cmd
from imf_cli.commands import search as search_cmd
from imf_cli.commands import train as train_cmd
from imf_cli.output import ImfGroup, reflow
from imf_cli.runtime import keep_freed_memory, yield_idle_threads
from kgdata.errors import ImfError

yield_idle_threads()  # before anything imports torch: its OpenMP runtime reads the setting once

app = typer.Typer(
    name="imf",
    cls=ImfGroup,
    help="Multimodal knowledge-graph link prediction with IMF (Interactive Multimodal Fusion).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("imf")
        except PackageNotFoundError:  # run from a source tree that was not installed
            number = "unknown (not installed)"
        typer.echo(f"imf {number}")
        raise typer.Exit()


@app.callback()
def root(
    home: Optional[str] = typer.Option(  # str: a Path option reads "" as the current directory
        None,
        "--home",
        help="Workspace directory for datasets, features and runs (default: $IMF_HOME, else the user data directory).",
        metavar="<path>",
        show_default=False,
    ),
    version: bool = typer.Option(
        False, "--version", help="Print imf's version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    """Multimodal knowledge-graph link prediction with IMF (Interactive Multimodal Fusion).

    Example: imf import countries-mm && imf datasets
    """
    from kgdata import locking, paths

    if home is not None:
        if not home.strip():
            raise ImfError("--home is empty; give the workspace directory (it is created if missing)")
        os.environ[paths.ENV_VAR] = str(Path(home).expanduser().resolve())
    elif paths.ENV_VAR in os.environ and not os.environ[paths.ENV_VAR].strip():
        # IMF_HOME=$UNSET_VAR wrote into the user data directory, and IMF_HOME=" " into a folder named " "
        raise ImfError(
            f"${paths.ENV_VAR} is set but empty; give the workspace directory, or unset it to use "
            f"{paths.default_home()}"
        )
    workspace = paths.imf_home()
    if workspace.exists() and not workspace.is_dir():
        given = "--home" if home is not None else f"${paths.ENV_VAR}"
        raise ImfError(f"{given} {workspace} is not a directory; point it at a directory (it is created if missing)")
    locking.clean_stale_temporaries()
    keep_freed_memory()


# The one-command tour first, then the data flow: import → encode → train → eval → predict → explain → explore.
# Help texts are reflowed so that rich wraps them to the terminal.
for name, command in (
    ("demo", demo_cmd.demo_command),
    ("import", import_cmd.import_command),
    ("datasets", datasets_cmd.datasets_command),
    ("search", search_cmd.search_command),
    ("entities", entities_cmd.app),
    ("encode", encode_cmd.encode_command),
    ("features", features_cmd.features_command),
    ("train", train_cmd.train_command),
    ("runs", runs_cmd.app),
    ("eval", eval_cmd.eval_command),
    ("predict", predict_cmd.predict_command),
    ("explain", explain_cmd.explain_command),
    ("explore", explore_cmd.explore_command),
    ("ablate", ablate_cmd.ablate_command),
):
    if isinstance(command, typer.Typer):
        for info in command.registered_commands:  # the group's commands (imf runs list, imf entities add)
            info.help = reflow(info.help or info.callback.__doc__)
        app.add_typer(command, name=name)
    else:
        app.command(name, help=reflow(command.__doc__))(command)


def main() -> None:
    _tolerate_narrow_encodings()
    app()


def _tolerate_narrow_encodings() -> None:
    """Where stdout or stderr cannot encode every character (``PYTHONIOENCODING=ascii``, a latin-1
    terminal), print what cannot be encoded as ``?`` rather than fail: names, bars and rules are
    Unicode, and an error while printing must not cost the user the command's result."""
    import codecs

    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            utf = codecs.lookup(encoding).name.startswith("utf")
        except LookupError:
            utf = False
        if not utf and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
