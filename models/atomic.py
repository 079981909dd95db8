"""One way to write a file that nothing may see half-written: checkpoints, feature files, placements,
metrics reports, rewritten run configs and traces, rule indexes, copied images.

The bytes go to a temporary file beside the target, which is renamed over it only once complete, and
removed if anything fails. Libraries report a short write (a full disk, a file-size limit) in their own
types: torch's writer as a ``RuntimeError`` ("unexpected pos …"), safetensors as a ``SafetensorError``.
Both become an ``OSError`` naming the target, which the CLI reports as a fault of the machine, not as
a bug. safetensors creates its file 0600; the file gets the mode of its directory (which the umask
set) less the execute bits, as the other files of the workspace have.

This module imports neither torch nor numpy.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path


def torch_short_write(error: BaseException) -> bool:
    """How torch's writer reports a short write: a ``RuntimeError``."""
    return isinstance(error, RuntimeError)


def safetensors_short_write(error: BaseException) -> bool:
    """How safetensors reports an I/O failure: a ``SafetensorError`` (named, so as not to import it)."""
    return type(error).__name__ == "SafetensorError"


def write_atomically(
    final: Path,
    temporary: Path,
    write: Callable[[Path], None],
    *,
    what: str,
    short_write: Callable[[BaseException], bool],
    durable: bool = False,
) -> None:
    """Write ``final`` by ``write(temporary)`` and a rename (see the module docstring).

    Args:
        final: The file to write.
        temporary: Where ``write`` puts the bytes first, in ``final``'s directory.
        write: Writes the whole file to the path it is given.
        what: The file, in words, for the error (``"the checkpoint"``).
        short_write: Whether an exception of ``write`` is its library's report of a failed write
            (:func:`torch_short_write`, :func:`safetensors_short_write`).
        durable: Also ``fsync`` the file before the rename.
    """
    try:
        write(temporary)
        os.chmod(temporary, final.parent.stat().st_mode & 0o666)
        if durable:
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, final)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if short_write(error):
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
            if "Permission denied" in first or "Read-only file system" in first:  # not a full disk
                raise PermissionError(
                    errno.EACCES, f"could not write {what}: {final.parent} is not writable", str(final)
                ) from error
            raise OSError(
                errno.EIO, f"could not write {what} ({first}); the disk may be full or a file-size limit reached", str(final)
            ) from error
        raise


def never_short(error: BaseException) -> bool:
    """For writers that report a failed write as an ``OSError`` themselves (Python's own file objects)."""
    return False


def write_text_atomically(final: Path, text: str, *, what: str) -> None:
    """Write ``text`` (UTF-8) to ``final`` through ``.<name>.<pid>.tmp`` beside it (see the module docstring)."""
    temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    write_atomically(final, temporary, lambda to: to.write_text(text, encoding="utf-8"), what=what, short_write=never_short)
