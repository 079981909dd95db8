"""Per-dataset locks: one writer at a time, and no store replaced while anyone reads it.

Each dataset has two lock files in ``$IMF_HOME/datasets/.locks/``, beside the dataset directories (so a
failed first import can remove its directory while another command waits on the lock):
``<name>.write`` and ``<name>.store``. They are taken with ``fcntl.flock``, which the kernel releases
when a process ends, however it ends: a killed command never leaves a dataset locked.

=========  ==============================================  =====================================
mode       taken by                                        holds
=========  ==============================================  =====================================
``read``   train (while it reads the store and features),  ``store`` shared
           eval, predict, explore (while open)
``write``  encode, entities add                            ``write`` exclusive, ``store`` shared
``replace``  import (of a new name, or ``--replace``)      ``write`` exclusive, ``store`` exclusive
=========  ==============================================  =====================================

Waiting: a command waits for the writer ahead of it (another import, encode or entities add) up to
``$IMF_LOCK_TIMEOUT`` seconds (default 600), then fails with one line. ``replace`` does not wait for
readers, which may hold the store for hours (a TUI): it fails at once, saying the dataset is in use.

:func:`clean_stale_temporaries` removes the temporary files of killed writers, of any dataset whose
write lock no process holds.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from kgdata import paths
from kgdata.errors import EnvironmentFault, ImfError

LOCKS_DIR = ".locks"
TIMEOUT_ENV = "IMF_LOCK_TIMEOUT"
DEFAULT_TIMEOUT = 600.0
MODES = ("read", "write", "replace")
#: Temporary files of interrupted writers, relative to a dataset directory: a store being imported
#: (and its journal) and feature files being written.
TEMPORARY_PATTERNS = (".store.db.*.tmp*", "features/.*.tmp")
_POLL_SECONDS = 0.05


class DatasetBusyError(EnvironmentFault):
    """Another imf process holds the dataset in a way that excludes this command."""


def workspace_fault(error: OSError, home: str | Path | None = None) -> EnvironmentFault:
    """An :class:`EnvironmentFault` for an OSError met while writing the workspace, naming the path."""
    where = error.filename or paths.imf_home(home)
    reason = error.strerror or error
    if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO):  # the place is right, the room is not
        return EnvironmentFault(f"cannot write {where}: {reason}")
    return EnvironmentFault(
        f"cannot write to the imf workspace at {where}: {reason}; choose a writable one with --home or ${paths.ENV_VAR}"
    )


def lock_timeout() -> float:
    """Seconds to wait for another writer: ``$IMF_LOCK_TIMEOUT``, else 600."""
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        raise ImfError(f"${TIMEOUT_ENV} must be a number of seconds, not {value!r}") from None
    if not seconds >= 0:
        raise ImfError(f"${TIMEOUT_ENV} must be zero or more seconds, not {value!r}")
    return seconds


def _try_flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class DatasetLock:
    """One command's hold on a dataset, in one of :data:`MODES` (see the module docstring).

    Use as a context manager, or call :meth:`acquire` and :meth:`release`.

    Args:
        name: The dataset name.
        mode: ``"read"``, ``"write"`` or ``"replace"``.
        home: The workspace (default: ``$IMF_HOME``).
        timeout: Seconds to wait for a writer ahead of this one (default: :func:`lock_timeout`); 0 tries once.
        on_wait: Called once with a message when this command has to wait.
    """

    def __init__(
        self,
        name: str,
        mode: str,
        home: str | Path | None = None,
        *,
        timeout: float | None = None,
        on_wait: Callable[[str], None] | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown lock mode {mode!r}; expected one of {MODES}")
        self.name = paths.check_dataset_name(name)
        self.mode = mode
        self.home = home
        self.timeout = lock_timeout() if timeout is None else timeout
        self.on_wait = on_wait
        self._fds: list[int] = []

    def __repr__(self) -> str:
        return f"DatasetLock({self.name!r}, {self.mode!r}, held={bool(self._fds)})"

    @property
    def directory(self) -> Path:
        return paths.datasets_dir(self.home) / LOCKS_DIR

    def _open(self, kind: str) -> int | None:
        """A descriptor of lock file ``kind``; None when a reader finds the workspace read-only."""
        path = self.directory / f"{self.name}.{kind}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as error:
            if self.mode != "read":
                raise workspace_fault(error, self.home) from None
        try:  # a read-only workspace: nobody can write it, so reading unlocked is safe
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def _wait(self, fd: int, operation: int, holder: str, deadline: float) -> None:
        told = False
        while not _try_flock(fd, operation):
            if time.monotonic() >= deadline:
                raise DatasetBusyError(
                    f"dataset {self.name!r} is busy: {holder} still holds it after {self.timeout:g} s; "
                    f"try again when it has finished (${TIMEOUT_ENV} sets how long to wait)"
                )
            if not told and self.on_wait is not None:
                self.on_wait(f"Waiting for {holder} to finish with dataset {self.name!r} …")
                told = True
            time.sleep(_POLL_SECONDS)

    def acquire(self) -> "DatasetLock":
        if self._fds:
            raise RuntimeError(f"{self!r} is already held")
        deadline = time.monotonic() + self.timeout
        try:
            if self.mode in ("write", "replace"):
                fd = self._open("write")
                self._fds.append(fd)
                self._wait(fd, fcntl.LOCK_EX, "another imf command writing it (import, encode or entities add)", deadline)
            fd = self._open("store")
            if fd is None:
                return self
            self._fds.append(fd)
            if self.mode != "replace":
                self._wait(fd, fcntl.LOCK_SH, "an import replacing it", deadline)
            elif not _try_flock(fd, fcntl.LOCK_EX):
                raise DatasetBusyError(
                    f"dataset {self.name!r} is in use by another imf process (a training run reading it, imf eval, "
                    f"predict or explore); let it finish or close it, then run the import again"
                )
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        while self._fds:
            os.close(self._fds.pop())  # closing the descriptor releases its flock

    def __enter__(self) -> "DatasetLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def dataset_lock(
    name: str,
    mode: str,
    home: str | Path | None = None,
    *,
    timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> DatasetLock:
    """A :class:`DatasetLock`, to use in a ``with`` block."""
    return DatasetLock(name, mode, home, timeout=timeout, on_wait=on_wait)


@contextlib.contextmanager
def locked_store(
    name: str,
    mode: str = "read",
    home: str | Path | None = None,
    *,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator:
    """Take the dataset's lock in ``mode``, then open its :class:`~kgdata.store.EntityStore`; close both after."""
    from kgdata.store import EntityStore

    with dataset_lock(name, mode, home, on_wait=on_wait), EntityStore.open(name, home) as store:
        yield store


def temporaries(dataset_dir: Path) -> list[Path]:
    """The temporary files of writers in ``dataset_dir`` (see :data:`TEMPORARY_PATTERNS`)."""
    return [path for pattern in TEMPORARY_PATTERNS for path in Path(dataset_dir).glob(pattern)]


def remove_temporaries(dataset_dir: Path) -> list[Path]:
    """Delete the writers' temporary files of a dataset; call only while holding its write lock."""
    removed = []
    for path in temporaries(dataset_dir):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def clean_stale_temporaries(home: str | Path | None = None) -> list[Path]:
    """Remove the temporary files of killed writers, of every dataset whose write lock is free.

    A temporary file whose writer is alive is kept: that writer holds the dataset's write lock. Called
    at the start of every command; returns the removed paths.
    """
    root = paths.datasets_dir(home)
    try:
        directories = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    except OSError:
        return []
    removed: list[Path] = []
    for directory in directories:
        if not temporaries(directory):
            continue
        try:
            with dataset_lock(directory.name, "write", home, timeout=0):
                removed += remove_temporaries(directory)
        except (ImfError, OSError):
            continue  # busy, an odd directory name, or a read-only workspace: leave it
    return removed
