"""One lock around the service, so thread workers never call it concurrently.

The service holds one SQLite connection and a model; neither is promised to be safe under concurrent
calls from several threads. Every call is short (milliseconds), so serialising them costs little.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from imf_cli.service import Service


class LockedService:
    """Forwards attributes to ``service``; calls to its methods hold one lock."""

    def __init__(self, service: Service):
        self._service = service
        self._lock = threading.Lock()

    @property
    def wrapped(self) -> Service:
        return self._service

    def call_unless(self, cancelled: Callable[[], bool], name: str, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """``(True, service.name(*args, **kwargs))``, or ``(False, None)`` without calling it when
        ``cancelled()`` is true once the lock is held: a request superseded while it waited for the
        lock costs nothing."""
        with self._lock:
            if cancelled():
                return False, None
            return True, getattr(self._service, name)(*args, **kwargs)

    def close_when_idle(self) -> None:
        """Close the service (when it has a ``close``) once no call is using it: a worker still ranking on
        it would otherwise meet a closed database."""
        with self._lock:
            close = getattr(self._service, "close", None)
            if close is not None:
                close()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._service, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attribute(*args, **kwargs)

        return call
