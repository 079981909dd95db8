"""The README Quickstart, run as written, in order, on a fresh IMF_HOME (training cut to 2 epochs)."""

from __future__ import annotations

import re
import shlex

import pytest
from typer.testing import CliRunner

from helpers import REPO
from imf_cli.main import app
from imf_cli.commands import explore as explore_cmd
from imf_cli.tui.app import ExploreApp

runner = CliRunner()


def quickstart_commands() -> list[list[str]]:
    """The commands between the quickstart markers of README.md, comments dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- quickstart:start -->\s*```bash\n(.*?)```\s*<!-- quickstart:end -->", text, re.S)
    assert block, "README.md has no quickstart block"
    commands = []
    for line in block.group(1).splitlines():
        words = shlex.split(line, comments=True)
        if words:
            assert words[0] == "imf", line
            commands.append(words[1:])
    return commands


def test_the_quickstart_names_runs_by_reference_not_by_ls():
    commands = quickstart_commands()
    assert [c[0] for c in commands[:5]] == ["import", "search", "encode", "encode", "train"]
    assert not any("ls" in c or "$RUN" in " ".join(c) for c in commands)
    assert any(c[:1] == ["explore"] for c in commands) and any(c[:1] == ["runs"] for c in commands)


@pytest.mark.slow
def test_the_quickstart_runs_in_order_on_a_fresh_home(imf_home, monkeypatch):
    monkeypatch.chdir(REPO)  # the preset path is relative to the repository
    opened = []
    monkeypatch.setattr(ExploreApp, "run", lambda self: opened.append(self))
    monkeypatch.setattr(explore_cmd, "check_terminal", lambda: None)  # CliRunner's streams are no terminal
    for command in quickstart_commands():
        if command[0] == "train":
            command = [*command, "--epochs", "2", "--no-progress"]
        result = runner.invoke(app, command)
        assert result.exit_code == 0, f"imf {shlex.join(command)}\n{result.output}"
        if command[:2] == ["eval", "countries-mm@latest"] and "test" in command:
            assert "held-out" in result.output
    (explorer,) = opened
    assert explorer.service.wrapped.branch_names == ("structure", "visual", "text", "multimodal")
    explorer.service.wrapped.close()
    # imported twice in a row (as after imf demo) is a no-op that says so
    again = runner.invoke(app, ["import", "countries-mm"])
    assert again.exit_code == 0 and "already imported, unchanged" in again.output
