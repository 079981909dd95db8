"""Counts in words and cut text, for the messages of every layer (kgdata's errors and warnings, imf_cli's
output and the TUI)."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``"1 epoch"``, ``"3 epochs"``, ``"1 entity"``: ``n`` and ``noun`` in the singular or the plural
    (``plural``, else an added s)."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {plural or noun + 's'}"


def truncate(text: str, width: int) -> str:
    """``text``, or its start and "…" in ``width`` characters."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"
