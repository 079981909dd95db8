"""The command line as a user sees it: help, exit codes, JSON output and import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from helpers import REPO
from imf_cli.main import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_help_is_fast_and_imports_neither_torch_nor_textual():
    code = (
        "import sys, time; t = time.perf_counter(); import imf_cli.main; "
        "print(time.perf_counter() - t, 'torch' in sys.modules, 'textual' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1:] == ["False", "False"]
    assert float(out[0]) < 1.5
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "imf_cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "import" in result.stdout
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_terminal_that_cannot_encode_unicode_gets_the_output_not_a_crash(encoding, tmp_path):
    import os

    env = {**os.environ, "PYTHONIOENCODING": encoding, "IMF_HOME": str(tmp_path), "COLUMNS": "100"}
    for args in (["--help"], ["explain", "--help"], ["import", "countries-mm"], ["search", "countries-mm", "São"]):
        result = subprocess.run([sys.executable, "-m", "imf_cli", *args], capture_output=True, env=env)
        assert result.returncode == 0, (args, result.stderr[-500:])
        assert b"Traceback" not in result.stderr and b"bug in imf" not in result.stderr
    assert b"o Tom" in result.stdout  # S?o Tom? in ASCII, S\xe3o Tom\xe9 in latin-1


def command_names() -> list[str]:
    import typer.main

    return sorted(typer.main.get_command(app).commands)


def test_every_command_has_help_with_example_and_readme_section():
    readme = (REPO / "README.md").read_text()
    for name in command_names():
        result = invoke(name, "--help")
        assert result.exit_code == 0, name
        assert "Example:" in result.output, f"{name} --help has no example"
        assert f"### `imf {name}`" in readme, f"README has no section on `imf {name}`"


def test_import_datasets_and_search_json(tiny_tsv, imf_home):
    result = invoke("import", str(tiny_tsv), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["entities"], report["train"]) == (7, 8)

    listed = json.loads(invoke("datasets", "--json").stdout)
    assert [d["name"] for d in listed] == ["tiny"] and listed[0]["relations"] == 3

    found = json.loads(invoke("search", "tiny", "west", "--json").stdout)
    assert [e["key"] for e in found] == ["france"]

    table = invoke("datasets").stdout
    assert "tiny" in table and "7" in table


def test_home_flag_overrides_env(tiny_tsv, tmp_path):
    other = tmp_path / "elsewhere"
    result = invoke("--home", str(other), "import", str(tiny_tsv))
    assert result.exit_code == 0, result.output
    assert (other / "datasets" / "tiny" / "store.db").is_file()


def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.txt").write_text("a\tr\tb\nonly-two\tfields\n")
    (bad / "valid.txt").write_text("")
    (bad / "test.txt").write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "imf_cli", "import", str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{bad / 'train.txt'}:2:" in lines[0].replace("\n", "")


def test_existing_dataset_and_unknown_dataset_errors(tiny_tsv):
    assert invoke("import", str(tiny_tsv)).exit_code == 0
    again = invoke("import", str(tiny_tsv))
    assert again.exit_code == 2 and "--replace" in again.output
    assert invoke("import", str(tiny_tsv), "--replace").exit_code == 0
    missing = invoke("search", "nope", "x")
    assert missing.exit_code == 2 and "no dataset named 'nope'" in missing.output


def test_version():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"imf {version('imf')}"
