"""Every example in every ``--help`` runs, in the order a user would meet them, on the bundled dataset;
and the help shows real defaults and lets rich wrap its text."""

from __future__ import annotations

import inspect
import re
import shlex

import pytest
import typer.main
from typer.testing import CliRunner

from imf_cli.main import app
from imf_cli.commands import explore as explore_cmd
from imf_cli.tui.app import ExploreApp

runner = CliRunner()
#: Examples that must run after others: the demo first (it imports, encodes and trains), removal last.
FIRST, LAST = ("demo",), ("runs rm",)


def help_examples() -> dict[str, str]:
    """Command path (``"eval"``, ``"runs show"``) → the example line of its ``--help``."""
    root = typer.main.get_command(app)
    examples = {}

    def walk(command, path: tuple[str, ...]) -> None:
        match = re.search(r"^\s*Example: (imf .+)$", command.help or "", re.MULTILINE)
        if match and path:
            examples[" ".join(path)] = match.group(1).strip()
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(root, ())
    return examples


def ordered(examples: dict[str, str]) -> list[tuple[str, str]]:
    rank = {name: index for index, name in enumerate(FIRST)}
    last = {name: index for index, name in enumerate(LAST)}
    return sorted(examples.items(), key=lambda item: (last.get(item[0], -1), rank.get(item[0], len(FIRST))))


def test_every_command_and_subcommand_has_an_example():
    examples = help_examples()
    root = typer.main.get_command(app)
    expected = {name for name in root.commands if name != "runs"} | {"runs list", "runs show", "runs rm"}
    assert expected <= set(examples), expected - set(examples)


@pytest.mark.slow
def test_every_help_example_runs_on_the_bundled_dataset(monkeypatch):
    opened = []
    monkeypatch.setattr(ExploreApp, "run", lambda self: opened.append(self))
    monkeypatch.setattr(explore_cmd, "check_terminal", lambda: None)  # CliRunner's streams are no terminal
    for name, line in ordered(help_examples()):
        args = shlex.split(line)[1:]
        result = runner.invoke(app, args, input="y\n")
        assert result.exit_code == 0, f"{line}\n{result.output}"
    assert len(opened) == 1 and opened[0].service.wrapped.dataset == "countries-mm"
    opened[0].service.wrapped.close()


def test_help_is_not_pre_wrapped_and_shows_real_defaults():
    from kgdata.encoders.structure import train_gat
    from models.config import ModelConfig, TrainConfig

    wide = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "200"}).output
    # a paragraph of the docstring is one line on a wide terminal
    assert any(len(line) > 120 and "Both directions are ranked" in line for line in wide.splitlines())
    narrow = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "80"}).output
    assert all(len(line) <= 80 for line in narrow.splitlines())
    train = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert not re.search(r"[a-z] \.(\s|$)", train)  # "Text features to use ." was a default eaten as markup
    for flag, value in (("--dim", ModelConfig.dim), ("--epochs", TrainConfig.epochs), ("--lr", TrainConfig.lr),
                        ("--fusion", ModelConfig.fusion), ("--patience", TrainConfig.patience)):
        line = next(line for line in train.splitlines() if line.strip("│ ").startswith(flag + " "))
        assert f"[default: ({value})]" in line, line
    assert "the latest encoded" in train
    encode = runner.invoke(app, ["encode", "--help"], env={"COLUMNS": "200"}).output
    defaults = inspect.signature(train_gat).parameters
    for flag in ("dim", "epochs", "lr", "margin", "negatives"):
        line = next(line for line in encode.splitlines() if line.strip("│ ").startswith(f"--{flag} "))
        assert f"[default: ({defaults[flag].default})" in line, line
    imported = runner.invoke(app, ["import", "--help"], env={"COLUMNS": "200"}).output
    assert "the directory's name" in imported


def test_no_help_text_keeps_the_docstrings_line_breaks():
    """Every command and subcommand: a paragraph's lines are joined so rich wraps them (imf entities
    add broke mid-sentence at 80 columns, and 'Without' ended a line before '--modalities')."""
    root = typer.main.get_command(app)

    def walk(command, path):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, (*path, name))

    for path, command in walk(root, ()):
        for paragraph in (command.help or "").split("\n\n"):
            for line in paragraph.splitlines()[1:]:
                assert line.startswith(("- ", "* ", " ")), (" ".join(path), line)
