"""What the training loop shows and listens to: a rich progress bar over epochs, and SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import threading
from typing import Any

from models.evaluation import FUSED


class StopSignals:
    """Turn the first SIGINT or SIGTERM into a request to stop after the current step; a second one stops at once.

    Only installed in the main thread (signal handlers cannot be set elsewhere); elsewhere it never asks to stop.
    """

    def __init__(self):
        self.requested = False
        self.name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame) -> None:
        if self.requested:  # asked twice: give up on the clean stop
            signal.signal(number, self._previous.get(number, signal.SIG_DFL))
            signal.raise_signal(number)
            return
        self.requested = True
        self.name = signal.Signals(number).name

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


class EpochProgress:
    """A rich progress bar over the run's epochs with the last epoch's loss and the last valid fused MRR, or nothing."""

    def __init__(self, enabled: bool, epochs: int, completed_epochs: int):
        self.enabled = enabled
        self.epochs = epochs
        self.completed_epochs = completed_epochs
        self.bar = None
        self.task = None

    def __enter__(self) -> EpochProgress:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.total:.0f}"),
                BarColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("valid MRR {task.fields[mrr]}"),
                TimeElapsedColumn(),
            )
            self.bar.start()
            done = self.completed_epochs
            self.task = self.bar.add_task("train", total=self.epochs, completed=done, epoch=done, loss="–", mrr="–")
        return self

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.stop()

    def advance(self, fraction: float) -> None:
        """A batch is done: move by ``fraction`` of an epoch."""
        if self.bar is not None:
            self.bar.advance(self.task, fraction)

    def epoch_done(self, epoch: int, loss: float, valid: dict[str, dict[str, float]] | None) -> None:
        """An epoch is done, with its mean loss and, if it was evaluated, its valid metrics."""
        if self.bar is None:
            return
        fields = {"epoch": epoch, "loss": f"{loss:.4f}"}
        if valid is not None:
            fields["mrr"] = f"{valid[FUSED]['mrr']:.4f}"
        self.bar.update(self.task, completed=epoch, **fields)
