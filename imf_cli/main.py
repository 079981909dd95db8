"""The Typer root. It imports neither torch nor textual, so ``imf --help`` stays fast.

Each command lives in ``imf_cli/commands/<name>.py`` and imports heavy libraries inside its body.
"""

from __future__ import annotations

import os
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
from imf_cli.commands import features as features_cmd
from imf_cli.commands import import_ as import_cmd
from imf_cli.commands import predict as predict_cmd
from imf_cli.commands import search as search_cmd
from imf_cli.commands import train as train_cmd
from imf_cli.runtime import keep_freed_memory

app = typer.Typer(
    name="imf",
    help="Multimodal knowledge-graph link prediction with IMF (Interactive Multimodal Fusion).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def root(
    home: Optional[Path] = typer.Option(
        None,
        "--home",
        help="Workspace directory for datasets, features and runs (default: $IMF_HOME, else the user data directory).",
        show_default=False,
    ),
) -> None:
    """Multimodal knowledge-graph link prediction with IMF (Interactive Multimodal Fusion).

    Example: imf import countries-mm && imf datasets
    """
    if home is not None:
        os.environ["IMF_HOME"] = str(home.expanduser().resolve())
    keep_freed_memory()


# The one-command tour first, then the data flow: import → encode → train → eval → predict → explain → explore.
app.command("demo")(demo_cmd.demo_command)
app.command("import")(import_cmd.import_command)
app.command("datasets")(datasets_cmd.datasets_command)
app.command("search")(search_cmd.search_command)
app.command("encode")(encode_cmd.encode_command)
app.command("features")(features_cmd.features_command)
app.command("train")(train_cmd.train_command)
app.command("eval")(eval_cmd.eval_command)
app.command("predict")(predict_cmd.predict_command)
app.command("explain")(explain_cmd.explain_command)
app.command("explore")(explore_cmd.explore_command)
app.command("ablate")(ablate_cmd.ablate_command)


def main() -> None:
    app()
