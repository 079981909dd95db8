"""The long commands' shared flags (--progress/--no-progress, --json, --threads), progress lines when
stdout is not a terminal, eval's default split, train's branch plan, and the import no-op."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from imf_cli.main import app
from imf_cli.output import minutes_seconds, progress_mode
from kgdata.importing import import_dataset

runner = CliRunner()
SMALL = ["--dim", "8", "--batch-size", "4", "--eval-every", "1", "--seed", "3", "--device", "cpu"]
LONG = ("train", "eval", "encode", "demo")


@pytest.fixture
def tiny(tiny_tsv):
    import_dataset(tiny_tsv)
    return "tiny"


def test_long_commands_share_progress_json_and_threads():
    root = typer.main.get_command(app)
    for name in LONG:
        options = {opt for param in root.commands[name].params for opt in (*param.opts, *param.secondary_opts)}
        assert {"--progress", "--no-progress", "--json", "--threads"} <= options, name


def test_without_a_terminal_each_epoch_prints_one_line(tiny, imf_home):
    result = subprocess.run(
        [sys.executable, "-m", "imf_cli", "train", "tiny", "--epochs", "3", *SMALL, "--threads", "1"],
        capture_output=True, text=True, env={**__import__("os").environ, "IMF_HOME": str(imf_home)},
    )
    assert result.returncode == 0, result.stderr
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    assert all("loss" in line and "valid MRR" in line for line in epochs)
    # --no-progress: no lines; --json: lines on stderr, one JSON document on stdout
    quiet = runner.invoke(app, ["train", "tiny", "--epochs", "2", *SMALL, "--no-progress"])
    assert "epoch 1/2" not in quiet.output
    logged = subprocess.run(
        [sys.executable, "-m", "imf_cli", "train", "tiny", "--epochs", "2", *SMALL, "--json"],
        capture_output=True, text=True, env={**__import__("os").environ, "IMF_HOME": str(imf_home)},
    )
    assert json.loads(logged.stdout)["epochs"] == 2 and "epoch 2/2" in logged.stderr


def test_progress_mode():
    # pytest's stdout is not a terminal: lines, on stdout, or on stderr with --json
    bar, lines = progress_mode(True)
    assert bar is False and lines is not None
    assert progress_mode(False) == (False, None)


def test_threads_sets_torchs_thread_counts(tiny):
    import torch

    before = torch.get_num_threads()
    try:
        result = runner.invoke(app, ["train", "tiny", "--epochs", "1", *SMALL, "--no-progress", "--threads", "1"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert runner.invoke(app, ["eval", "latest", "--threads", "0"]).exit_code == 2


def test_train_before_encode_says_which_branches_it_skipped(tiny):
    result = runner.invoke(app, ["train", "tiny", "--epochs", "1", *SMALL, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Training branches: structure." in result.output
    assert "Skipped visual: no image features; add them with: imf encode tiny --modality image" in result.output
    assert "Skipped text: no text features; add them with: imf encode tiny --modality text" in result.output
    chosen = runner.invoke(app, ["train", "tiny", "--epochs", "1", *SMALL, "--no-progress",
                                 "--modalities", "structure"])
    assert "(as chosen)" in chosen.output and "Skipped" not in chosen.output


def test_eval_defaults_to_valid_and_labels_test_as_held_out(tiny):
    assert runner.invoke(app, ["train", "tiny", "--epochs", "1", *SMALL, "--no-progress"]).exit_code == 0
    valid = runner.invoke(app, ["eval", "latest", "--no-progress"], env={"COLUMNS": "160"})
    assert valid.exit_code == 0, valid.output
    assert "tiny valid, best.pt" in valid.output and "held-out" not in valid.output
    test = runner.invoke(app, ["eval", "latest", "--split", "test", "--no-progress"], env={"COLUMNS": "160"})
    assert "tiny test (held-out), best.pt" in test.output and "held-out test split" in test.output
    assert runner.invoke(app, ["eval", "latest", "--split", "train"]).exit_code == 2


def test_importing_the_bundled_dataset_again_is_a_no_op_that_says_so(imf_home):
    first = runner.invoke(app, ["import", "countries-mm"])
    assert first.exit_code == 0, first.output
    store = imf_home / "datasets" / "countries-mm" / "store.db"
    stamp = store.stat().st_mtime_ns
    again = runner.invoke(app, ["import", "countries-mm"])
    assert again.exit_code == 0 and "already imported, unchanged" in again.output
    assert store.stat().st_mtime_ns == stamp
    report = json.loads(runner.invoke(app, ["import", "countries-mm", "--json"]).stdout)
    assert report["status"] == "unchanged" and report["entities"] == 492


def test_another_existing_dataset_still_needs_replace(tiny_tsv):
    import_dataset(tiny_tsv)
    again = runner.invoke(app, ["import", str(tiny_tsv)])
    assert again.exit_code == 2 and "--replace" in again.output


def test_times_read_as_minutes_and_seconds():
    assert minutes_seconds(42.4) == "42 s"
    assert minutes_seconds(0.2) == "< 1 s" and minutes_seconds(0) == "0 s"
    assert minutes_seconds(115) == "1 min 55 s"
    assert minutes_seconds(3605) == "60 min 05 s"
