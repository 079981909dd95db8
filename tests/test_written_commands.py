"""The commands written in the docs, the presets and ``benchmarks/run_all.sh`` use options that exist.

A renamed option leaves a command in the docs that fails at once (``run_all.sh`` once passed
``--dataset-dir`` to ``bench_train.py`` after that option had become ``--datasets``). A benchmark
script's options are read from its ``add_argument`` calls with :mod:`ast`, so nothing heavy is
imported; an ``imf`` command's from the Click command behind it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"benchmarks/(bench_\w+)\.py((?:[ \t]+[^\s`|&;)]+)*)")
SOURCES = [
    ROOT / "README.md",
    ROOT / "benchmarks" / "run_all.sh",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "imf_cli" / "presets").glob("*.yaml")),
    *sorted((ROOT / "benchmarks" / "recipes").glob("*.yaml")),
]
IMF_COMMAND = re.compile(r"(?<![\w/-])imf ([a-z]+)((?:[ \t]+[^\s`|&;)]+)*)")


def script_options(path: Path) -> set[str]:
    """Every ``--option`` string passed to ``add_argument`` in ``path``."""
    options: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("--"):
                    options.add(arg.value)
    return options


def written_lines():
    """(source, line number, text) of every line of :data:`SOURCES`."""
    for source in SOURCES:
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
            yield source.relative_to(ROOT).as_posix(), number, line


def written_commands() -> list[tuple[str, int, str, list[str]]]:
    """(source, line, script, options used) for every benchmark command in the docs and scripts."""
    return [
        (source, number, match.group(1), [t.split("=", 1)[0] for t in match.group(2).split() if t.startswith("--")])
        for source, number, line in written_lines()
        for match in COMMAND.finditer(line)
    ]


def test_the_docs_name_benchmark_commands():
    scripts = {script for _, _, script, _ in written_commands()}
    assert {"bench_train", "bench_eval", "bench_import"} <= scripts


@pytest.mark.parametrize(("source", "line", "script", "used"), written_commands())
def test_every_written_option_exists(source, line, script, used):
    path = ROOT / "benchmarks" / f"{script}.py"
    assert path.is_file(), f"{source}:{line}: benchmarks/{script}.py does not exist"
    unknown = sorted(set(used) - script_options(path) - {"--help"})
    assert not unknown, f"{source}:{line}: benchmarks/{script}.py has no option {', '.join(unknown)}"


def test_an_unknown_option_is_caught(tmp_path):
    script = tmp_path / "bench_x.py"
    script.write_text("import argparse\np = argparse.ArgumentParser()\np.add_argument('--datasets')\n")
    assert script_options(script) == {"--datasets"}
    match = COMMAND.search("python benchmarks/bench_x.py --dataset-dir kgdata --datasets a`")
    used = [token for token in match.group(2).split() if token.startswith("--")]
    assert set(used) - script_options(script) == {"--dataset-dir"}


def imf_commands() -> list[tuple[str, int, str, list[str], set[str]]]:
    """(source, line, command path, options used, options it has) for every ``imf COMMAND ...`` written.

    An option cut by a line wrap (ending in ``-``) is left out.
    """
    import typer.main

    from imf_cli.main import app

    root = typer.main.get_command(app)
    found = []
    for source, number, line in written_lines():
        for match in IMF_COMMAND.finditer(line):
            command = root.commands.get(match.group(1))
            if command is None:
                continue
            tokens = match.group(2).split()
            path = match.group(1)
            if getattr(command, "commands", None) and tokens and tokens[0] in command.commands:
                command = command.commands[tokens[0]]
                path += f" {tokens[0]}"
            options = {"--help"}
            for param in command.params:
                options.update(param.opts)
                options.update(param.secondary_opts)
            used = [t.split("=", 1)[0] for t in tokens if t.startswith("--") and not t.endswith("-")]
            found.append((source, number, path, used, options))
    return found


def test_the_docs_name_imf_commands():
    paths = {path for _, _, path, _, _ in imf_commands()}
    assert {"import", "encode", "train", "eval", "explore"} <= paths


def test_every_written_imf_option_exists():
    wrong = [
        f"{source}:{line}: imf {path} has no option {', '.join(sorted(set(used) - options))}"
        for source, line, path, used, options in imf_commands()
        if set(used) - options
    ]
    assert not wrong, "\n".join(wrong)
