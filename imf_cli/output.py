"""Shared CLI plumbing: consoles, JSON output, and the one handler that turns every failure into one line.

:class:`ImfGroup` is the Typer root's group class. Everything a command raises passes through
:func:`report_failure` there:

- an :class:`~kgdata.errors.ImfError` prints its message and exits with its ``exit_code`` (2 for bad
  input, 1 for a fault of the environment);
- an ``OSError`` (a full disk, a permission, a path that is a file) or an SQLite error prints what
  failed and where, and exits 1;
- running out of memory says so and exits 1;
- SIGINT or SIGTERM during training (``models.training.TrainingInterrupted``, in any command that
  trains) says where the run stopped and how to resume it, and exits 130 as a shell does;
- anything else is a bug: one line, and the traceback goes to a log file whose path the line names.

Python warnings raised while a command runs are printed as one ``Warning:`` line each, without the
source line that Python shows by default.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import signal
import sqlite3
import sys
import tempfile
import threading
import traceback
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup
from typer.exceptions import TyperException

from kgdata.errors import ImfError, is_out_of_memory
from kgdata.wording import count, gist, truncate  # noqa: F401  (imf_cli.output.count: the commands import it from here)

F = TypeVar("F", bound=Callable[..., Any])

# No console markup: names, keys, descriptions, paths and messages come from users' files, and a
# "[/]" or "[bold]" in one of them must print as written, not style the output or raise MarkupError.
# Styling is explicit (``style=``, :class:`rich.text.Text`).
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)

#: Exit status for errors the user can fix (bad input, unknown names), as click uses for usage errors.
USER_ERROR = 2
#: Exit status for faults of the environment (disk, permissions, memory) and for bugs.
ENVIRONMENT_ERROR = 1
#: Exit status after SIGINT or SIGTERM stopped a command, as a shell reports 128 + SIGINT.
INTERRUPTED = 130
#: Errors of a full disk or a file-size limit (``ulimit -f``).
_NO_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


#: A word of an error line longer than this (a 10 MB field quoted from a data file, a pasted document)
#: is shown by its start and end.
LONGEST_WORD = 200


def _elide(word: str) -> str:
    if len(word) <= LONGEST_WORD:
        return word
    return f"{word[:120]}…[{len(word) - 160:,} characters]…{word[-40:]}"


def error_line(message: str) -> None:
    """Print ``Error: message`` on stderr as one line (never re-wrapped); a very long word in it is
    shortened to its start and end (:data:`LONGEST_WORD`), so that the line stays readable."""
    first = " ".join(_elide(word) for word in str(message).split()) or "unknown error"
    err_console.print(Text.assemble(("Error:", "bold red"), " ", first), soft_wrap=True, highlight=False)


def describe_os_error(error: OSError) -> str:
    """What an ``OSError`` means, with the path(s) it names, in one line."""
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno in _NO_SPACE:
        reason += " (the disk is full or a file-size limit was reached)"
    paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
    return f"{reason}: {' -> '.join(paths)}" if paths else reason


def _log_directory() -> Path:
    from kgdata.paths import imf_home

    for directory in (imf_home() / "logs", Path(tempfile.gettempdir()) / "imf-logs"):
        with contextlib.suppress(OSError):
            directory.mkdir(parents=True, exist_ok=True)
            if os.access(directory, os.W_OK):
                return directory
    return Path(tempfile.gettempdir())


def write_crash_log(error: BaseException) -> Path | None:
    """Write ``error``'s traceback to a new log file; return its path (None if nothing could be written)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        path = _log_directory() / f"imf-crash-{stamp}-{os.getpid()}.log"
        path.write_text("".join(traceback.format_exception(error)), encoding="utf-8")
    except OSError:
        return None
    return path


def report_failure(error: Exception) -> int:
    """Print ``error`` as one line on stderr (see the module docstring) and return the exit status."""
    if isinstance(error, ImfError):
        error_line(str(error))
        return getattr(error, "exit_code", USER_ERROR)
    if isinstance(error, OSError):
        error_line(describe_os_error(error))
        return ENVIRONMENT_ERROR
    if isinstance(error, sqlite3.Error):
        full = "full" in str(error)
        error_line(f"SQLite: {error}" + (" (the disk is full or a file-size limit was reached)" if full else ""))
        return ENVIRONMENT_ERROR
    if type(error).__name__ == "TrainingInterrupted":  # by name: this module does not import torch
        report_interrupted(error, f"imf train --resume {getattr(error, 'run_dir', 'RUN')}")
        return INTERRUPTED
    if is_out_of_memory(error):
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        first = first.split("DefaultCPUAllocator: ", 1)[-1]  # drop torch's "[enforce fail at …]" prefix
        error_line(f"out of memory{': ' + first if first else ''}; try smaller sizes (--dim, --batch-size)")
        return ENVIRONMENT_ERROR
    log = write_crash_log(error)
    first = gist(str(error))
    where = f"the traceback is in {log}" if log else "no log file could be written"
    error_line(f"unexpected {type(error).__name__}{': ' + first if first else ''} (a bug in imf; {where})")
    return ENVIRONMENT_ERROR


def report_interrupted(error: Exception, resume: str) -> None:
    """Say on stderr that a signal stopped training (``error``: a ``TrainingInterrupted``, which names
    the point reached and the checkpoint holding it) and how to go on (``resume``: a command line)."""
    err_console.print(f"Interrupted: {error}.", highlight=False, soft_wrap=True)
    err_console.print(f"Resume with: {resume}", highlight=False, soft_wrap=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    warn(" ".join(str(message).split()))


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Within the block, Python warnings print as one ``Warning:`` line, without a source line."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        yield


def _terminated(number: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM: the same clean stop as Ctrl+C (transactions roll back, temp files go)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`KeyboardInterrupt` as SIGINT does, so that ``kill`` (a job
    scheduler, a container stop) gets the rollback, the message and exit 130 that Ctrl+C gets, not a
    silent exit 143. Training installs its own handler for both (finish the step, save) and restores this one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_reporting_failures(call: Callable[[], Any]) -> Any:
    """``call()``, with every failure reported by :func:`report_failure` as a :class:`typer.Exit`."""
    with one_line_warnings(), sigterm_as_interrupt():
        try:
            return call()
        except (typer.Exit, typer.Abort, TyperException):
            raise  # already a clean exit, a usage error or an interrupt that Typer reports itself
        except KeyboardInterrupt:  # Ctrl+C outside training (which saves and says how to resume)
            err_console.print("Interrupted.", highlight=False)
            raise typer.Exit(INTERRUPTED) from None
        except Exception as error:
            raise typer.Exit(report_failure(error)) from None


def check_arguments_are_text(args: list[str]) -> None:
    """Raise a usage error (exit 2) for an argument that is not UTF-8: Python hands such bytes over as
    lone surrogates (``\\udcff``), which no name, text or path of imf's can hold or print."""
    for position, arg in enumerate(args, start=1):
        if isinstance(arg, str) and any("\udc80" <= char <= "\udcff" for char in arg):
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise typer.BadParameter(
                f"argument {position} ('{truncate(shown, 40)}') is not UTF-8 text; imf takes names, text and "
                "paths in UTF-8"
            )


class ImfGroup(TyperGroup):
    """The root command group: the single place where failures become one line (see the module docstring)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        check_arguments_are_text(args)  # every subcommand's arguments pass through here first
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        return run_reporting_failures(lambda: super(ImfGroup, self).invoke(ctx))


def handle_errors(command: F) -> F:
    """Report a command's failures as :class:`ImfGroup` does, for a command run outside the group."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return run_reporting_failures(lambda: command(*args, **kwargs))

    return wrapper  # type: ignore[return-value]


def print_json(value: Any) -> None:
    """Print ``value`` as one JSON document on stdout (plain, never re-wrapped by rich)."""
    typer.echo(json.dumps(value, indent=2, default=str))


def warn(message: str) -> None:
    err_console.print(Text.assemble(("Warning:", "yellow"), " ", message), soft_wrap=True)


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


#: ``--threads`` may ask for at most this many threads per CPU the process may run on: beyond the CPUs
#: torch only slows down (1,024 threads on 2 CPUs did not finish a Countries-MM epoch in 2 minutes),
#: and from about 16,000 OpenMP fails to create them or crashes the process.
THREADS_PER_CPU = 4


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_threads(count: int | None) -> int | None:
    if count is not None and count > THREADS_PER_CPU * usable_cpus():
        cpus = usable_cpus()
        raise typer.BadParameter(
            f"{count} is more than {THREADS_PER_CPU} per CPU: this process may use {cpus} CPU{'s' * (cpus != 1)}, "
            f"so at most {THREADS_PER_CPU * cpus} threads (the CPU count is usually fastest)"
        )
    return count


def threads_option() -> Any:
    return typer.Option(
        None,
        "--threads",
        min=1,
        callback=_check_threads,
        help="Torch threads (intra- and inter-op) for this process.",
        show_default="torch's choice",
    )


def _given_path(value: str | Path) -> Path:
    """A path option's value; "" or blanks are refused (``Path("")`` would silently mean the current directory)."""
    if isinstance(value, Path):
        return value
    if not value.strip():
        raise typer.BadParameter("is empty; give a path")
    return Path(value)


def path_option(*declarations: str, help: str, show_default: bool | str = False) -> Any:
    """A ``Path | None`` option that refuses an empty value instead of reading it as ".". """
    return typer.Option(
        None, *declarations, parser=_given_path, metavar="<path>", help=help, show_default=show_default
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
    """``"1 min 05 s"``, or ``"42 s"`` under a minute, ``"< 1 s"`` for a moment (a run picker read "0 s")."""
    if 0 < seconds < 0.5:
        return "< 1 s"
    whole = round(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def natural_widths(headers: tuple[str, ...] | list[str], rows) -> dict[str, int]:
    """Each column's natural width in terminal cells, for :func:`fit_columns`: its widest cell or header
    (``rows`` hold one cell per header, strings or :class:`~rich.text.Text`)."""
    from rich.cells import cell_len

    return {h: max([cell_len(h), *(cell_len(str(row[i])) for row in rows)]) for i, h in enumerate(headers)}


def fit_columns(natural: dict[str, int], expendable: tuple[str, ...], width: int, gap: int = 2) -> tuple[list[str], list[str]]:
    """``(shown, left out)``: the columns of a table whose cells never wrap or get cut, given each
    column's ``natural`` width (its widest cell or header), after leaving out the ``expendable`` ones,
    in that order, until the rest fit ``width`` with ``gap`` between columns (or none is left to go)."""
    shown = list(natural)
    left_out = []
    for header in expendable:
        if sum(natural[h] for h in shown) + gap * (len(shown) - 1) <= width:
            break
        if header not in shown:  # a column this table does not have (a one-branch run has no "mean")
            continue
        shown.remove(header)
        left_out.append(header)
    return shown, left_out


def entity_table(*headers: str) -> Any:
    """A table of entities (``imf search``, ``imf entities list``) whose cells fold and are never cut:
    a URI key cut to ``<http://dbpedia.org/resou…`` or a name to ``Commiss…`` names nothing. Only the
    ``id`` column never wraps."""
    from rich.table import Table

    table = Table()
    for header in headers:
        table.add_column(header, no_wrap=True) if header == "id" else table.add_column(header, overflow="fold")
    return table


def left_out_note(left_out: list[str], where: str = "--json has them") -> str | None:
    """The caption that names the columns :func:`fit_columns` left out (None when none was)."""
    return f"Left out for the terminal's width: {', '.join(left_out)} ({where})" if left_out else None


def reflow(doc: str | None) -> str:
    """A docstring as help text that rich wraps to the terminal: the lines of each paragraph joined.

    Paragraphs are separated by blank lines; a line that starts with ``- `` (a list item) or with
    indentation keeps its line break. A line that starts with an option (``--modalities``) is prose.
    """
    import inspect

    paragraphs = []
    for paragraph in inspect.cleandoc(doc or "").split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not line.startswith(("- ", "* ", " ")):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line.rstrip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def waiting(message: str) -> None:
    """Tell the user that a command waits for another one (a dataset lock)."""
    err_console.print(message, style="dim", soft_wrap=True, highlight=False)
