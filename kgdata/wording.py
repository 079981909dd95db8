"""Counts in words and cut text, for the messages of every layer (kgdata's errors and warnings, imf_cli's
output and the TUI)."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``"1 epoch"``, ``"3 epochs"``, ``"1 entity"``: ``n`` and ``noun`` in the singular or the plural
    (``plural``, else an added s)."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {plural or noun + 's'}"


def truncate(text: str, width: int) -> str:
    """``text``, or its start and "…" in ``width`` terminal cells (a CJK character or an emoji takes
    two: counted as one, a name cut to fit a column overflowed it and lost its "…")."""
    from rich.cells import cell_len

    if cell_len(text) <= width:
        return text
    kept, used = [], 0
    for character in text:
        used += cell_len(character)
        if used > width - 1:
            break
        kept.append(character)
    return "".join(kept) + "…"


def gist(text: str, width: int = 300) -> str:
    """An error text in one line of at most ``width`` characters: its first line, and where that line ends
    with ":" (a heading such as torch's "Error(s) in loading state_dict for VGG:"), the lines after it
    too, joined by spaces; "" for an empty text."""
    lines = [" ".join(line.split()) for line in text.strip().splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    shown = lines[0]
    if shown.endswith(":"):
        shown = " ".join(lines)
    return truncate(shown, width)
