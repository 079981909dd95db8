"""``imf explore`` as a command: help, import hygiene, finding the latest run, clean errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from imf_cli.commands import explore as explore_cmd
from imf_cli.main import app
from kgdata.paths import latest_run

runner = CliRunner()


@pytest.fixture(autouse=True)
def _a_terminal(monkeypatch):
    """CliRunner's streams are no terminal: let the command past its terminal check."""
    monkeypatch.setattr(explore_cmd, "check_terminal", lambda: None)


def test_explore_help_works():
    result = runner.invoke(app, ["explore", "--help"])
    assert result.exit_code == 0
    assert "[RUN]" in result.output.upper() and "--checkpoint" in result.output and "--image" in result.output
    assert "Example: imf explore" in result.output


def test_importing_imf_cli_does_not_import_textual():
    code = (
        "import sys; import imf_cli, imf_cli.main, imf_cli.service, imf_cli.commands.explore; "
        "print('textual' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
    result = subprocess.run([sys.executable, "-m", "imf_cli", "explore", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "Example:" in result.stdout


def test_no_run_is_a_clear_message(imf_home):
    result = runner.invoke(app, ["explore"])
    assert result.exit_code == 2
    assert "no runs in" in result.output and "imf train" in result.output
    result = runner.invoke(app, ["explore", "--dataset", "tiny"])  # not imported: "imf train tiny" would fail too
    assert result.exit_code == 2 and "no dataset 'tiny' in" in result.output and "imf import SOURCE --name tiny" in result.output


def test_a_directory_that_is_not_a_run_is_an_error(tmp_path):
    result = runner.invoke(app, ["explore", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory" in result.output


def write_run(home, name: str, dataset: str, mtime: float, checkpoints=("best.pt", "last.pt")) -> None:
    run = home / "runs" / name
    run.mkdir(parents=True)
    config = run / "config.yaml"
    config.write_text(f"seed: 1\nmetadata:\n  dataset: {dataset}\n")
    os.utime(config, (mtime, mtime))
    for checkpoint in checkpoints:
        (run / checkpoint).write_bytes(b"")


def test_latest_run_is_the_newest_config_optionally_of_one_dataset(imf_home):
    assert latest_run() is None
    write_run(imf_home, "a", "countries-mm", 1_000)
    write_run(imf_home, "b", "tiny", 3_000)
    write_run(imf_home, "c", "countries-mm", 2_000)
    (imf_home / "runs" / "started-but-no-config").mkdir()
    assert latest_run() == imf_home / "runs" / "b"
    assert latest_run("countries-mm") == imf_home / "runs" / "c"
    assert latest_run("fb15k-237") is None


def test_latest_run_skips_runs_without_a_checkpoint(imf_home):
    write_run(imf_home, "done", "tiny", 1_000)
    write_run(imf_home, "orphan", "tiny", 5_000, checkpoints=())  # a failed start: config.yaml only
    write_run(imf_home, "killed-early", "tiny", 4_000, checkpoints=("last.pt",))
    assert latest_run() == imf_home / "runs" / "killed-early"
    assert latest_run("tiny", checkpoint="best") == imf_home / "runs" / "done"
    assert latest_run(checkpoint="last") == imf_home / "runs" / "killed-early"
