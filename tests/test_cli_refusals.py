"""Bad settings and places refused in one line: a diverging GAT encoder, explore without a terminal, an
unusable --run-dir, and a --new-image that is not a regular file (never a traceback, a hang or a crash)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers import cli, cli_ok, error_line
from kgdata.errors import DataError, ImfError


@pytest.fixture
def tiny(tiny_tsv):
    cli_ok("import", str(tiny_tsv))
    return "tiny"


# ------------------------------------------------------------------------------ 1. GAT divergence, --lr, --margin
def gat_graph() -> torch.Tensor:
    return torch.tensor([[0, 0, 1], [1, 0, 2], [2, 1, 0]])


@pytest.mark.parametrize("lr", [1e30, 1e300])
def test_a_diverging_gat_says_so_and_names_lr(lr):
    from kgdata.encoders import train_gat

    with pytest.raises(ImfError, match=r"the GAT training diverged in epoch \d+: .* lower learning rate than --lr"):
        train_gat(gat_graph(), 3, 2, dim=4, epochs=1, lr=lr, seed=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lr": 0.0}, "--lr must be a positive finite number"),
        ({"lr": -1.0}, "--lr must be a positive finite number"),
        ({"lr": float("inf")}, "--lr must be a positive finite number"),
        ({"lr": float("nan")}, "--lr must be a positive finite number"),
        ({"margin": float("inf")}, "--margin must be a finite number"),
        ({"margin": float("nan")}, "--margin must be a finite number"),
        ({"margin": 1e300}, "--margin must be a finite number"),
    ],
)
def test_gat_lr_and_margin_must_be_finite(options, message):
    from kgdata.encoders import GATEncoder, train_gat

    with pytest.raises(ImfError, match=message):
        GATEncoder(dim=4, **options)
    with pytest.raises(ImfError, match=message):
        train_gat(gat_graph(), 3, 2, dim=4, epochs=1, **options)


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--lr", "1e300", "the GAT training diverged"),
    ("--lr", "1e30", "the GAT training diverged"),
    ("--lr", "0", "--lr must be a positive finite number"),
    ("--lr", "inf", "--lr must be a positive finite number"),
    ("--margin", "inf", "--margin must be a finite number"),
])
def test_imf_encode_with_a_bad_lr_or_margin_is_one_clear_line(tiny, flag, value, expected):
    result = cli("encode", tiny, "-m", "structure", "--epochs", "1", "--dim", "4", flag, value, "--threads", "1",
                 "--no-progress")
    line = error_line(result)
    assert expected in line and "a bug in imf" not in line and "features.safetensors" not in line


# ------------------------------------------------------------------------------ 2. explore needs a terminal
def test_check_terminal_names_the_redirected_streams(monkeypatch):
    from imf_cli.commands import explore as explore_cmd

    tty = SimpleNamespace(isatty=lambda: True)
    pipe = SimpleNamespace(isatty=lambda: False)
    for name in ("stdin", "stdout", "stderr"):
        monkeypatch.setattr(sys, name, tty)
    explore_cmd.check_terminal()  # all three are a terminal: no error
    monkeypatch.setattr(sys, "stdout", pipe)
    with pytest.raises(ImfError, match=r"imf explore needs a terminal .*but stdout is redirected"):
        explore_cmd.check_terminal()


def test_explore_without_a_terminal_refuses_before_loading_anything(monkeypatch):
    from imf_cli.commands import explore as explore_cmd

    def must_not_run(*args, **kwargs):
        raise AssertionError("explore went on without a terminal")

    monkeypatch.setattr(explore_cmd, "find_run", must_not_run)
    monkeypatch.setattr(explore_cmd, "build_service", must_not_run)
    line = error_line(cli("explore", "some-run", "--threads", "1"))
    assert "imf explore needs a terminal" in line and "must be a TTY" in line


def test_imf_explore_with_redirected_streams_exits_instead_of_hanging(tmp_path):
    out = tmp_path / "out.txt"
    with open(os.devnull) as stdin, open(out, "w") as sink:
        completed = subprocess.run(
            [sys.executable, "-m", "imf_cli", "explore", "nosuch", "--threads", "1"],
            stdin=stdin, stdout=sink, stderr=subprocess.STDOUT, timeout=120,
        )
    text = out.read_text()
    assert completed.returncode == 2 and "imf explore needs a terminal" in text and "\x1b[?" not in text


# ------------------------------------------------------------------------------ 3. an unusable --run-dir
@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_an_uncreatable_run_dir_names_the_flag_before_training(tiny):
    result = cli("train", tiny, "--modalities", "structure", "--dim", "4", "--epochs", "1", "--threads", "1",
                 "--no-progress", "--run-dir", "/proc/x")
    line = error_line(result, code=2)  # bad input, as other unusable paths given
    assert "cannot create the run directory /proc/x given by --run-dir" in line
    assert "--home" not in line and "Training branches" not in result.output


def test_the_run_dir_check_leaves_nothing_behind(tmp_path):
    from imf_cli.pipeline import _check_run_dir

    _check_run_dir(tmp_path / "new" / "a" / "run", given=True)
    assert not (tmp_path / "new").exists()


def test_a_run_dir_inside_another_run_is_refused(tmp_path):
    """`--run-dir RUN/sub` trained, and `imf runs rm RUN` then refused RUN ("files that no run writes")."""
    from imf_cli.pipeline import _check_run_dir

    run = tmp_path / "runs" / "a-run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("config: {}\n")
    (run / "trace.jsonl").write_text("")
    with pytest.raises(ImfError, match=f"run directory {run}/sub/x is inside the run {run}; put a run beside"):
        _check_run_dir(run / "sub" / "x", given=True)
    assert not (run / "sub").exists()
    _check_run_dir(tmp_path / "runs" / "b-run", given=True)  # beside it: fine


# ------------------------------------------------------------------------------ 4. --new-image not a regular file
def test_new_image_that_is_not_a_regular_file_says_what_it_is(tmp_path):
    from imf_cli.unseen import encode_inline

    sets = {"visual": SimpleNamespace(extra={"options": {"encoder": "tiny-cnn"}}, encoder="tiny-cnn", dim=4)}
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(DataError, match="image file is a directory"):
        encode_inline(sets, image=folder)
    if Path("/dev/zero").exists():
        with pytest.raises(DataError, match="image file is a device, not a regular file"):
            encode_inline(sets, image="/dev/zero")
    with pytest.raises(DataError, match="no such image file"):
        encode_inline(sets, image=tmp_path / "absent.png")


def test_imf_predict_new_image_directory_is_one_clear_line(places_run, monkeypatch, tmp_path):
    from helpers import tiny_cnn_class
    from kgdata.encoders import REGISTRY

    home, run_dir = places_run
    monkeypatch.setenv("IMF_HOME", str(home))
    monkeypatch.setitem(REGISTRY, "tiny-cnn", tiny_cnn_class())
    folder = tmp_path / "folder.png"
    folder.mkdir()
    line = error_line(cli("predict", str(run_dir), "--new-image", str(folder), "--relation", "borders",
                          "--threads", "1"))
    assert f"{folder}: image file is a directory" in line


def test_an_empty_home_or_dataset_path_is_refused_not_read_as_the_current_directory(tmp_path, monkeypatch):
    """`--home ""` wrote ./datasets/…, and `imf import ""` imported the current directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMF_HOME", str(tmp_path / "home"))
    home = cli("--home", "", "import", "countries-mm", "--name", "hx")
    assert "--home is empty" in error_line(home) and not (tmp_path / "datasets").exists()
    empty = cli("import", "", "--name", "hx")
    assert "no dataset given (an empty path)" in error_line(empty)
    for blank in ("", " "):  # IMF_HOME=$UNSET_VAR wrote to the user data directory; " " to a folder named " "
        monkeypatch.setenv("IMF_HOME", blank)
        line = error_line(cli("import", "countries-mm", "--name", "hx"))
        assert "$IMF_HOME is set but empty" in line and "unset it to use" in line
        assert not (tmp_path / " ").exists()


def test_a_branch_option_for_a_branch_not_trained_is_refused(tiny):
    """`--modalities text --structure-init gat` trained, and recorded structure_init: gat in the run."""
    for flag, value, branch in (("--structure-init", "gat", "structure"), ("--image-encoder", "nope", "visual")):
        result = cli("train", tiny, "--modalities", "text", "--dim", "4", "--epochs", "1", "--threads", "1",
                     "--no-progress", flag, value)
        line = error_line(result)
        assert f"{flag} {value} applies to the {branch} branch, which this run does not train" in line, line


def test_demo_refuses_a_bad_seed_before_importing_or_encoding(tmp_path, monkeypatch):
    monkeypatch.setenv("IMF_HOME", str(tmp_path / "home"))
    line = error_line(cli("demo", "--quick", "--seed", "-1", "--no-progress"))
    assert "train.seed must be an integer from 0" in line
    assert not (tmp_path / "home" / "datasets").exists()


def test_an_import_source_that_is_a_link_loop_or_the_root_is_named_as_such(tmp_path, monkeypatch):
    monkeypatch.setenv("IMF_HOME", str(tmp_path / "home"))
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert "is a symbolic link loop" in error_line(cli("import", str(loop)))
    assert "gives no dataset name; name it with --name" in error_line(cli("import", "/"))


def _path_options() -> list[tuple[list[str], str]]:
    """``(command words, option)`` for every option of every command that takes a path."""
    import typer.main

    from imf_cli.main import app

    found = []

    def walk(command, words: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, words + [name])
        for param in command.params:
            is_path = param.type_descriptor.annotation is Path or param.metavar == "<path>"
            if param.opts[0].startswith("--") and is_path and param.opts[0] != "--home":
                found.append((words, param.opts[0]))

    walk(typer.main.get_command(app), [])
    return found


def test_every_path_option_refuses_an_empty_value_rather_than_reading_the_current_directory():
    """`--run-dir ""` was read as "." and refused as "not empty"; `--config ""` as a directory, and so on."""
    options = _path_options()
    assert len(options) >= 10, options  # ablate --config/--markdown, encode ×3, entities add ×2, predict, train ×2
    for words, option in options:
        result = cli(*words, option, "")
        assert result.exit_code == 2, (words, option, result.output)
        assert f"Invalid value for '{option}': is empty; give a path" in " ".join(result.output.split()), result.output
