"""Helpers shared by tests: tiny datasets written to disk, and access to ../shared datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """Path of a shared benchmark dataset, skipping the test cleanly when it is absent."""
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {name} not available at {path}")
    return path


def write_tsv_dataset(
    root: Path,
    *,
    train: list[tuple[str, str, str]],
    valid: list[tuple[str, str, str]] = (),
    test: list[tuple[str, str, str]] = (),
    entities: list[dict] | None = None,
) -> Path:
    """Write a dataset in the ``tsv`` layout and return its directory."""
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("valid", valid), ("test", test)):
        (root / f"{split}.txt").write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
    if entities is not None:
        columns = ["id", "name", "description", "image"]
        lines = ["\t".join(columns)]
        lines += ["\t".join(str(e.get(c) or "") for c in columns) for e in entities]
        (root / "entities.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


TINY_TRAIN = [
    ("paris", "capital_of", "france"),
    ("berlin", "capital_of", "germany"),
    ("france", "borders", "germany"),
    ("germany", "borders", "france"),
    ("france", "in", "europe"),
    ("germany", "in", "europe"),
    ("madrid", "capital_of", "spain"),
    ("spain", "borders", "france"),
]
TINY_VALID = [("spain", "in", "europe")]
TINY_TEST = [("france", "borders", "spain")]


def cli(*args: str):
    """Run ``imf ARGS`` in-process (Typer's CliRunner); the result has ``exit_code``, ``output`` and ``stdout``."""
    from typer.testing import CliRunner

    from imf_cli.main import app

    return CliRunner().invoke(app, list(args))


def cli_ok(*args: str):
    """``cli(*args)``, asserting that it succeeded."""
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result


#: What ``imf train`` says before it starts (the branches it trains and skips): information, not an error.
PLAN_LINES = ("Training branches: ", "Skipped ")


def _is_context(line: str) -> bool:
    """A line that is not part of an error: the branch plan, or a progress line (``Ranking … …``)."""
    return line.startswith(PLAN_LINES) or line.rstrip().endswith(" …")


def error_line(result, code: int = 2) -> str:
    """The one line a failed command printed (asserting its exit code, and that there is no traceback).

    ``imf train``'s branch plan and the progress lines printed without a terminal are not part of it.
    """
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not _is_context(line)]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]
