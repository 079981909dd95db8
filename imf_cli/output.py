"""Shared CLI plumbing: consoles, JSON output and turning library errors into clean exits."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from kgdata.errors import ImfError

F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True)

#: Exit status for errors the user can fix (bad input, unknown names), as click uses for usage errors.
USER_ERROR = 2


def handle_errors(command: F) -> F:
    """Print an :class:`ImfError` as one line on stderr and exit with status 2, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ImfError as exc:
            err_console.print(f"[bold red]Error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(USER_ERROR) from None

    return wrapper  # type: ignore[return-value]


def print_json(value: Any) -> None:
    """Print ``value`` as one JSON document on stdout (plain, never re-wrapped by rich)."""
    typer.echo(json.dumps(value, indent=2, default=str))


def warn(message: str) -> None:
    err_console.print(f"[yellow]Warning:[/] {escape(message)}", soft_wrap=True)


# ----------------------------------------------------------------- flags shared by the long commands
# train, eval, encode and demo take the same three: --progress/--no-progress, --json and --threads.


def progress_option() -> Any:
    return typer.Option(
        True,
        "--progress/--no-progress",
        help="Show progress: a bar on a terminal; when stdout is not a terminal, one line per finished "
        "epoch or step.",
    )


def json_option(what: str = "the result") -> Any:
    return typer.Option(False, "--json", help=f"Print {what} as one JSON object (progress lines go to stderr).")


def threads_option() -> Any:
    return typer.Option(
        None,
        "--threads",
        min=1,
        help="Torch threads (intra- and inter-op) for this process.",
        show_default="torch's choice",
    )


def progress_mode(progress: bool, json_output: bool = False) -> tuple[bool, Callable[[str], None] | None]:
    """``(show a bar, line printer)`` for ``--progress`` and ``--json``.

    A bar when stdout is a terminal (and not ``--json``); otherwise, one line per finished step printed
    at once (flushed) on stdout, or on stderr with ``--json`` so stdout stays one JSON document.
    """
    if not progress:
        return False, None
    if sys.stdout.isatty() and not json_output:
        return True, None
    stream = sys.stderr if json_output else sys.stdout

    def line(text: str) -> None:
        print(text, file=stream, flush=True)

    return False, line


def minutes_seconds(seconds: float) -> str:
    """``"1 min 05 s"``, or ``"42 s"`` under a minute."""
    whole = round(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def reflow(doc: str | None) -> str:
    """A docstring as help text that rich wraps to the terminal: the lines of each paragraph joined.

    Paragraphs are separated by blank lines; a line that starts with ``-`` (a list item) or with
    indentation keeps its line break.
    """
    import inspect

    paragraphs = []
    for paragraph in inspect.cleandoc(doc or "").split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not line.startswith(("-", " ")):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line.rstrip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)
