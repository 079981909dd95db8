"""Errors raised by the data layer.

Every error the user can cause derives from :class:`ImfError`; the CLI prints its message as one line
and exits with the error's ``exit_code`` (2 for bad input, 1 for a fault of the environment), without a
traceback.
"""

from __future__ import annotations

from pathlib import Path


class ImfError(Exception):
    """Base class of the errors a user can cause and fix."""

    #: The CLI's exit status for this error: 2 for bad input, as click uses for usage errors.
    exit_code = 2


class EnvironmentFault(ImfError):
    """The machine, not the input, is at fault: a full disk, an unwritable workspace, a busy dataset."""

    exit_code = 1


class DataError(ImfError):
    """Bad input data, optionally located at ``path:line``."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = Path(path) if path is not None else None
        self.line = line
        self.reason = message
        location = ""
        if self.path is not None:
            location = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(location + message)


class DatasetExistsError(ImfError):
    """An import would overwrite a dataset without ``--replace``."""


class DatasetNotFoundError(ImfError):
    """No dataset of that name has been imported."""


class UnknownEntityError(ImfError, KeyError):
    """An entity or relation id or key that the store does not hold."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says an allocation failed: Python's ``MemoryError``, torch's ``OutOfMemoryError``
    (CUDA) or the ``RuntimeError`` torch's CPU allocator raises (``DefaultCPUAllocator: can't allocate
    memory``), which names no distinct type."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    if isinstance(error, RuntimeError):
        message = str(error)
        return "DefaultCPUAllocator" in message or "can't allocate memory" in message
    return False
