"""The results table: one row per candidate, with the fused score, each branch's share of the fused
decision as a bar, and the splits in which the triple is already a known fact. A one-branch run has no
shares to show: its score column is named after the branch, and there are no bars.

Columns are sized to the table's width: rank, fused, the branch bars and known get what they need,
and the entity name takes the rest (:func:`column_widths`). Where not even a percentage per branch
fits (below about 60 columns with four branches), one ``top`` column names the branch with the largest
share and gives that share (``T  88%``).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.widgets import DataTable

from imf_cli.scoring import dominant_branch
from imf_cli.service import Prediction, QueryResult
from imf_cli.tui.render import SHORT_NAMES, branch_cell, colour, known_label, letter, score_text, truncate

#: Cells a column adds around its content (DataTable's cell padding, one each side).
PADDING = 2
#: Room kept for the vertical scrollbar.
SCROLLBAR = 2
RANK, FUSED, SHARE = 3, 6, 5  # "100", "-12.34", " 100%"
NAME_MIN = 12
#: The entity column's least width in the one-column (``top``) layout.
NAME_MIN_TOP = 8
#: ``T 100%``: the letter of the branch with the largest share, and the share.
TOP = 6
#: Names longer than this do not hold back the bars.
NAME_WANTED = 30
#: Bar widths tried, widest first, until the name column has room for the names (0: the percentage alone).
BAR_WIDTHS = (10, 8, 6, 5, 4, 3, 2, 0)


@dataclass(frozen=True)
class Widths:
    name: int
    bar: int
    known: int
    labels: tuple[str, ...]
    #: Cells of each branch's percentage: :data:`SHARE`, or 4 in the letters layout.
    share: int = SHARE
    #: One ``top`` column instead of a column per branch: the narrowest layout.
    top: bool = False


def column_widths(width: int, branches: tuple[str, ...], known: int, longest: int = NAME_WANTED) -> Widths:
    """Column widths for a table ``width`` cells wide: the name column takes the slack.

    ``known`` is the widest known-flags label of the rows and ``longest`` the longest name. Branch
    columns get the widest bar that leaves room for the names (up to :data:`NAME_WANTED` cells, and at
    least :data:`NAME_MIN`); whatever is left over goes to the name column. Where even the percentages
    alone leave the names too little, the branches are headed by a letter (S, V, T, M) over a 4-cell
    percentage: four branches then fit 60 columns.
    """
    known = max(known, len("known"))
    wanted = max(NAME_MIN, min(longest, NAME_WANTED))
    fixed = RANK + FUSED + known + PADDING * (4 + len(branches)) + SCROLLBAR
    for bar in BAR_WIDTHS:
        labels = tuple(b if len(b) <= bar + SHARE else SHORT_NAMES.get(b, b[:6]) for b in branches)
        name = width - fixed - sum(max(bar + SHARE, len(label)) for label in labels)
        if name >= wanted:
            return Widths(name, bar, known, labels)
    if name >= NAME_MIN:  # the percentages fit with the short names: keep those, give the names the rest
        return Widths(name, 0, known, labels)
    letters = tuple(letter(b) for b in branches)
    name = width - fixed - len(branches) * (SHARE - 1)
    if name >= NAME_MIN or len(branches) < 2:
        return Widths(max(name, NAME_MIN), 0, known, letters, SHARE - 1)
    # Not even a letter and a percentage per branch: one column for the branch that weighs most.
    name = width - (RANK + FUSED + known + PADDING * 5 + SCROLLBAR) - TOP
    return Widths(max(name, NAME_MIN_TOP), 0, known, ("top",), TOP, top=True)


def top_cell(branch: str | None, shares: dict[str, float]) -> Text:
    """``T  88%``: the branch with the largest share (its letter, in its colour) and that share."""
    if branch is None:
        return Text("", end="")
    text = Text(no_wrap=True, end="")
    text.append(letter(branch), style=f"bold {colour(branch)}")
    text.append(f"{shares.get(branch, 0.0):5.0%}")
    return text


class RowTable(DataTable):
    """A table of rows: Home and End go to the first and last row (DataTable's own scroll sideways)."""

    BINDINGS = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]


class ResultsTable(RowTable):
    """Rows of a :class:`QueryResult`; :meth:`prediction_at` maps a row back to its prediction."""

    def __init__(self, branch_names: tuple[str, ...], *, id: str | None = None):
        super().__init__(id=id, cursor_type="row", zebra_stripes=True, show_row_labels=False)
        self.branch_names = tuple(branch_names)
        self.result: QueryResult | None = None
        self._laid_out_for: int | None = None
        #: When the last key pressed here was Enter, the time it was pressed (the event's time); else None.
        self._enter_pressed: float | None = None

    def on_key(self, event: events.Key) -> None:
        """Note when Enter was pressed: handled before the binding that selects the row, and timed at the
        key press, not when a busy app gets to it (see ``ENTER_GUARD`` in :mod:`imf_cli.tui.app`)."""
        self._enter_pressed = event.time if event.key == "enter" else None

    def on_mouse_down(self, event: events.MouseDown) -> None:
        self._enter_pressed = None  # a click selects too: it is timed when handled

    def take_enter_time(self) -> float | None:
        """The time the Enter that selected a row was pressed (None: not by Enter), forgotten once read."""
        pressed, self._enter_pressed = self._enter_pressed, None
        return pressed

    def prediction_at(self, row: int) -> Prediction | None:
        if self.result is None or not 0 <= row < len(self.result.predictions):
            return None
        return self.result.predictions[row]

    @property
    def current(self) -> Prediction | None:
        return self.prediction_at(self.cursor_row)

    def show(self, result: QueryResult | None, *, keep: int | None = None) -> None:
        """Replace the rows (None clears the table). The cursor goes to the row of entity ``keep`` if it
        is among the new rows, else to the first row."""
        self.result = result
        self._laid_out_for = self.size.width
        self.clear(columns=True)
        predictions = result.predictions if result is not None else []
        known = max((len(known_label(p.known)) for p in predictions), default=0)
        longest = max((cell_len(p.entity.name) for p in predictions), default=NAME_MIN)
        # One branch: its score is the ranking, and a share bar would read 100% on every row.
        bars = self.branch_names if len(self.branch_names) > 1 else ()
        score = "fused" if bars else SHORT_NAMES.get(self.branch_names[0], self.branch_names[0][:FUSED])
        widths = column_widths(self.size.width, bars, known, longest)
        self.add_column(Text("#", justify="right"), key="rank", width=RANK)
        self.add_column("entity", key="entity", width=widths.name)
        self.add_column(Text(score, justify="right"), key="fused", width=FUSED)
        if widths.top:
            self.add_column(Text("top", justify="right"), key="top", width=TOP)
        else:
            for branch, label in zip(bars, widths.labels):
                self.add_column(label, key=branch, width=max(widths.bar + widths.share, len(label)))
        self.add_column("known", key="known", width=widths.known)
        if result is None:
            return
        for prediction in predictions:
            shares = result.shares(prediction)
            dominant = dominant_branch(result.weights, prediction.branches)
            name = Text(truncate(prediction.entity.name, widths.name))
            if not prediction.in_graph:
                name.stylize("italic magenta")
            self.add_row(
                Text(str(prediction.rank), justify="right"),
                name,
                Text(score_text(prediction.fused, FUSED), justify="right", style="bold"),
                *(
                    [top_cell(dominant, shares)] if widths.top else (
                        branch_cell(b, shares.get(b, 0.0), widths.bar, dominant=b == dominant,
                                    scored=b in prediction.branches, percent=widths.share)
                        for b in bars
                    )
                ),
                Text(known_label(prediction.known) if prediction.in_graph else "new", style="yellow"),
                key=str(prediction.entity.id),
            )
        ids = [p.entity.id for p in predictions]
        if keep in ids:
            self.move_cursor(row=ids.index(keep), animate=False)

    def on_resize(self, event: events.Resize) -> None:
        if self._laid_out_for is not None and event.size.width != self._laid_out_for:
            current = self.current
            self.show(self.result, keep=current.entity.id if current else None)
        elif self.row_count:
            # shorter (the detail pane took rows): the highlighted row, which the pane describes, stays in view
            self.call_after_refresh(self._scroll_cursor_visible)

    def _scroll_cursor_visible(self) -> None:
        if self.row_count and 0 <= self.cursor_row < self.row_count:
            self.move_cursor(row=self.cursor_row, animate=False, scroll=True)
