"""Shared CLI plumbing: consoles, JSON output and turning library errors into clean exits."""

from __future__ import annotations

import functools
import json
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
