"""The results table: one row per candidate, with the fused score, each branch's score and its bar,
and the splits in which the triple is already a known fact."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.widgets import DataTable

from imf_cli.service import Prediction, QueryResult
from imf_cli.tui.render import SHORT_NAMES, branch_cell, known_label, truncate

#: From this table width on, bars and names get more room.
WIDE = 100


class ResultsTable(DataTable):
    """Rows of a :class:`QueryResult`; :meth:`prediction_at` maps a row back to its prediction."""

    def __init__(self, branch_names: tuple[str, ...], *, id: str | None = None):
        super().__init__(id=id, cursor_type="row", zebra_stripes=True, show_row_labels=False)
        self.branch_names = tuple(branch_names)
        self.result: QueryResult | None = None
        self._wide: bool | None = None

    def prediction_at(self, row: int) -> Prediction | None:
        if self.result is None or not 0 <= row < len(self.result.predictions):
            return None
        return self.result.predictions[row]

    @property
    def current(self) -> Prediction | None:
        return self.prediction_at(self.cursor_row)

    def show(self, result: QueryResult | None) -> None:
        """Replace the rows (None clears the table), keeping the cursor on the first row."""
        self.result = result
        self._wide = self.size.width >= WIDE
        self.clear(columns=True)
        bar_width, name_width = (6, 28) if self._wide else (3, 15)
        self.add_column(Text("#", justify="right"), key="rank")
        self.add_column("entity", key="entity", width=name_width)
        self.add_column(Text("fused", justify="right"), key="fused")
        for branch in self.branch_names:
            label = branch if self._wide else SHORT_NAMES.get(branch, branch[:6])
            self.add_column(label, key=branch)
        self.add_column("known", key="known")
        if result is None:
            return
        for prediction in result.predictions:
            dominant = max(prediction.contributions, key=prediction.contributions.get, default=None)
            self.add_row(
                Text(str(prediction.rank), justify="right"),
                truncate(prediction.entity.name, name_width),
                Text(f"{prediction.fused:.2f}", justify="right", style="bold"),
                *(
                    branch_cell(b, prediction.branches.get(b, float("nan")), bar_width, dominant=b == dominant)
                    for b in self.branch_names
                ),
                Text(known_label(prediction.known), style="yellow"),
                key=str(prediction.entity.id),
            )

    def on_resize(self, event: events.Resize) -> None:
        if self._wide is not None and (event.size.width >= WIDE) != self._wide:
            row = self.cursor_row
            self.show(self.result)
            self.move_cursor(row=row)
