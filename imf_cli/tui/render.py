"""Small renderers shared by the explore widgets: score bars, branch colours, flags and paths.

Every bar shows a branch's share of the fused decision, :func:`imf_cli.scoring.branch_shares`
(weight × probability, normalised over the branches), in the table and in the detail pane alike;
a full bar is a share of 100%.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from rich.cells import cell_len
from rich.text import Text
from textual.content import Content

from kgdata.wording import truncate  # noqa: F401  (the widgets import it from here)

#: Branch → colour of its bars. Unknown branches get the last colour.
BRANCH_COLOURS = {
    "structure": "#5fafff",
    "visual": "#d787d7",
    "text": "#87d787",
    "multimodal": "#ffaf5f",
}
SHORT_NAMES = {"structure": "struct", "visual": "visual", "text": "text", "multimodal": "multi"}
#: The narrowest headers, as ``imf runs`` abbreviates the branches.
LETTERS = {"structure": "S", "visual": "V", "text": "T", "multimodal": "M"}
_EIGHTHS = " ▏▎▍▌▋▊▉"
#: What a branch cell shows when the branch did not score the row.
NOT_SCORED = "n/a"


def bar(fraction: float, width: int) -> str:
    """A left-aligned bar of ``width`` cells filled to ``fraction`` in eighths of a cell."""
    fraction = 0.0 if math.isnan(fraction) else min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    text = "█" * full + (_EIGHTHS[rest] if rest else "")
    return text.ljust(width)


def score_text(score: float, width: int = 6) -> str:
    """A score in at most ``width`` cells with as many decimals as fit, up to three: ``0.041``,
    ``-1.234``, ``-12.34``. Two decimals made the top rows of a query read ``0.04`` alike."""
    for decimals in (3, 2, 1, 0):
        text = f"{score:.{decimals}f}"
        if len(text) <= width:
            return text
    return f"{score:.0f}"


def letter(branch: str) -> str:
    """The one-letter name of a branch (:data:`LETTERS`; an unknown one by its initial)."""
    return LETTERS.get(branch, branch[:1].upper())


def colour(branch: str) -> str:
    return BRANCH_COLOURS.get(branch, "#ffaf5f")


def branch_cell(
    branch: str, share: float, width: int, *, dominant: bool = False, scored: bool = True, percent: int = 5
) -> Text:
    """``██▍  42%``: the branch's share of the fused decision as a bar on a dark track and a percentage
    ``percent`` cells wide (4 fits ``100%``; 5 keeps a space after the bar).

    The branch with the largest share is bold and underlined. A branch that did not score the row (the
    structure branch for an entity outside the training graph) shows ``n/a``, not an empty bar.
    """
    text = Text(no_wrap=True, end="")
    if not scored:
        text.append(NOT_SCORED.rjust(width + percent), style="dim")
        return text
    text.append(bar(share, width), style=f"{colour(branch)} on #3a3a3a")
    text.append(f"{share:{percent}.0%}", style="bold underline" if dominant else "")
    return text


def known_label(known: frozenset[str] | set[str]) -> str:
    return ",".join(split for split in ("train", "valid", "test") if split in known)


def truncate_start(text: str, width: int) -> str:
    """``text`` cut from the start, for names whose end tells them apart (``…0311-491388``), in ``width``
    terminal cells (a CJK character takes two)."""
    if cell_len(text) <= width:
        return text
    kept, used = [], 0
    for character in reversed(text):
        used += cell_len(character)
        if used > width - 1:
            break
        kept.append(character)
    return "…" + "".join(reversed(kept))


def truncate_middle(text: str, width: int) -> str:
    """``text`` cut in the middle (``count…171034-010772``): its start says what it is (a run's dataset),
    its end tells it from its likes."""
    if cell_len(text) <= width:
        return text
    head = max((width - 1) // 3, 1)
    return truncate(text, head + 1)[:-1] + truncate_start(text, width - head)


def short_run_name(dataset: str, run: str) -> str:
    """A run's name without its repeat of the dataset: runs are named ``<dataset>-<date>-<time>-<id>``,
    and only the end tells two of them apart."""
    prefix = f"{dataset}-"
    return run[len(prefix):] if run.startswith(prefix) and len(run) > len(prefix) else run


def run_label(dataset: str, run: str) -> str:
    """``dataset · run``, the run named by :func:`short_run_name`."""
    return f"{dataset} · {short_run_name(dataset, run)}"


def fit_label(label: str, width: int) -> str:
    """A ``dataset · run`` label in ``width`` cells: the dataset goes first, then the run name's start."""
    if len(label) <= width:
        return label
    _, dot, run = label.partition(" · ")
    return truncate_start(run if dot else label, width)


def display_path(path: str | os.PathLike) -> str:
    """A path as people read it: relative to the working directory below it, else with ``~``."""
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        pass
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except (ValueError, RuntimeError):
        return str(path)


def _wrapped_lines(text: Text, width: int) -> int:
    return len(Content.from_rich_text(text).wrap(width))


def fit_lines(text: Text, width: int, lines: int) -> Text:
    """``text``, or its longest start that ends in "…" and, wrapped at word boundaries to ``width`` cells
    as a Static wraps it, takes at most ``lines`` lines. (A cut by cell count alone left a text that
    wrapped onto one line more, which the status line's max-height then hid without a sign.)"""
    if _wrapped_lines(text, width) <= lines:
        return text
    low, high = 1, min(text.cell_len, lines * width)
    while low < high:  # the longest cut that fits
        middle = (low + high + 1) // 2
        cut = text.copy()
        cut.truncate(middle, overflow="ellipsis")
        low, high = (middle, high) if _wrapped_lines(cut, width) <= lines else (low, middle - 1)
    cut = text.copy()
    cut.truncate(low, overflow="ellipsis")
    # end at a word's end where one is near: "… word37 wo…" read as a typo
    kept = cut.plain[:-1]
    if not text.plain[len(kept):len(kept) + 1].isspace():
        space = kept.rstrip().rfind(" ")
        if space >= 0.75 * len(kept):
            cut = text.copy()
            cut.truncate(cell_len(kept[:space].rstrip()) + 1, overflow="ellipsis")
    return cut
