"""Reading the files people hand to imf: regular files only, UTF-8 with ``file:line`` errors, no control characters.

Every reader of user input goes through these checks, so that a FIFO (which would block a reader
forever), a symbolic-link loop, a directory or a file in another encoding is refused with one line
that names the file, and the line where it matters.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import unicodedata
from pathlib import Path
from urllib.parse import quote

from kgdata.errors import DataError

#: Control characters (Unicode category Cc) other than tab, which separates fields.
CONTROL_CHARACTERS = "\x00-\x08\x0a-\x1f\x7f-\x9f"
#: Line and paragraph separators (U+2028, U+2029): Python's ``splitlines`` and rich break lines at them,
#: so a name holding one prints as two rows.
LINE_SEPARATORS = "\u2028\u2029"
#: Bidirectional embeddings, overrides and isolates: they reorder the characters after them on screen,
#: so that a name shows as something it is not. The marks U+200E and U+200F stay allowed.
BIDI_CONTROLS = "\u202a-\u202e\u2066-\u2069"
#: What no field of a data file may hold.
_CONTROL_RE = re.compile(f"[{CONTROL_CHARACTERS}{LINE_SEPARATORS}{BIDI_CONTROLS}]")


def file_problem(path: str | Path) -> str | None:
    """None when ``path`` is a regular file (after following symbolic links); else what it is instead.

    The answer is a phrase to put after the path: ``"does not exist"``, ``"is a FIFO (named pipe), not a
    regular file"``, ``"is a symbolic link loop"``, ``"is a directory"``, ...
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "is a symbolic link to a missing file" if os.path.islink(path) else "does not exist"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "is a symbolic link loop"
        return f"cannot be read ({error.strerror or error})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    return "is a device, not a regular file"


def exists(path: str | Path) -> bool:
    """True when anything at all is at ``path``: a file, a directory, a FIFO, a dangling or looping link."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


def check_regular_file(path: str | Path, what: str = "") -> Path:
    """``path`` if it is a regular file; else a :class:`DataError` naming it and saying what it is."""
    problem = file_problem(path)
    if problem is not None:
        raise DataError(f"{what + ' ' if what else ''}{problem}", path)
    return Path(path)


def check_writable_file(path: str | Path, what: str) -> Path:
    """``path`` if a file can be written there: a regular file or nothing yet, in a writable folder.

    Raises:
        DataError: naming ``path`` and ``what`` asked for it (``--markdown``), before any long work.
    """
    path = Path(path)
    if exists(path) and not path.is_file():
        raise DataError(f"{what} needs a file to write, and this {file_problem(path) or 'is not a regular file'}", path)
    folder = path.parent
    if not folder.is_dir():
        raise DataError(f"{what}: the folder {folder} does not exist", path)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"{what}: the folder {folder} is not writable", path)
    return path


def optional_file(path: str | Path) -> Path | None:
    """``path`` if it is a regular file, None if nothing is there; a :class:`DataError` for anything else.

    For optional inputs such as ``entities.tsv``: a FIFO or a link loop in its place is refused, never
    silently skipped.
    """
    if not exists(path):
        return None
    return check_regular_file(path)


def control_character(text: str) -> tuple[int, str] | None:
    """The 1-based column and a readable name of the first control character in ``text`` (tab allowed),
    counting line separators and bidirectional controls as control characters."""
    found = _CONTROL_RE.search(text)
    if found is None:
        return None
    char = found.group()
    name = unicodedata.name(char, None) or {
        "\x00": "NUL", "\r": "carriage return", "\n": "line feed", "\x1b": "escape", "\x7f": "delete"
    }.get(char, "control character")
    return found.start() + 1, f"U+{ord(char):04X} ({name})"


def escape_controls(text: str) -> str:
    """``text`` with each control character (as :func:`control_character` counts them) percent-encoded,
    for text decoded from somewhere else (a URI's ``%1B``): it is shown, never obeyed by a terminal."""
    return _CONTROL_RE.sub(lambda found: quote(found.group(), safe=""), text)


def check_text(text: str, path: str | Path | None = None, line: int | None = None, what: str = "the line") -> str:
    """``text`` unchanged, or a :class:`DataError` (at ``path:line``) if it holds a control character."""
    found = control_character(text)
    if found is not None:
        column, name = found
        between = "; only tab may appear between fields" if what == "the line" else ""  # a whole line of a file
        raise DataError(f"{what} holds the control character {name} at column {column}{between}", path, line)
    return text


def decode_utf8(data: bytes, path: str | Path) -> str:
    """``data`` decoded as UTF-8, or a :class:`DataError` naming ``path`` and the line of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(f"not valid UTF-8 ({error.reason} at byte {error.start})", path, line) from None


def read_text(path: str | Path, what: str = "") -> str:
    """The whole of a regular UTF-8 text file; a :class:`DataError` naming the file otherwise."""
    check_regular_file(path, what)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {what + ' ' if what else ''}file: {error.strerror or error}", path) from None
    return decode_utf8(data, path)
