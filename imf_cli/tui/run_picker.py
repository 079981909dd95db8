"""The run picker (``r``): the runs as ``imf runs`` lists them; Enter opens one in place of the current.

The app gets a :class:`RunSource` (``imf explore`` passes :class:`RunCatalog`; tests pass a fake): it
lists :class:`~imf_cli.runs.RunInfo` rows and opens a run as a service. Opening happens in a thread
worker of the app, since loading a model takes a moment.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from rich.cells import cell_len
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Static

from imf_cli.output import minutes_seconds
from imf_cli.tui.help import QuitHint
from imf_cli.tui.render import letter, short_run_name, truncate_middle, truncate_start
from imf_cli.tui.results import RowTable

if TYPE_CHECKING:
    from imf_cli.runs import RunInfo
    from imf_cli.service import Service


class RunSource(Protocol):
    """Where the picker finds runs and how it opens one."""

    def list(self) -> list["RunInfo"]: ...
    def open(self, path: Path) -> "Service": ...


class RunCatalog:
    """The runs of ``$IMF_HOME`` (:func:`imf_cli.runs.list_runs`), opened with ``checkpoint`` on ``device``."""

    def __init__(self, checkpoint: str = "best", device: str = "auto"):
        self.checkpoint = checkpoint
        self.device = device

    def list(self) -> list["RunInfo"]:
        from imf_cli.runs import list_runs

        return list_runs()

    def open(self, path: Path) -> "Service":
        from imf_cli.service import PredictionService

        return PredictionService.from_run(path, checkpoint=self.checkpoint, device=self.device)


#: The picker's largest width (``#picker``'s max-width in explore.tcss).
PICKER_WIDTH = 130

#: The run column's least width, and the columns dropped (in this order) before it is cut below it.
NAME_MIN = 10
NARROW_DROPS = ("time", "branches", "epochs", "dataset")

#: Runs that can be opened (they have a model and their dataset is as they knew it).
OPENABLE = ("finished", "stopped early", "resumable", "running")


def same_run(path: Path | None, other: Path | None) -> bool:
    """Whether two paths name one run directory: a run opened through a symlink or ``..`` is the run
    the catalog lists under its own path."""
    if path is None or other is None:
        return False
    from imf_cli.runs import run_identity

    return run_identity(path) == run_identity(other)


def why_not_openable(run: "RunInfo") -> str | None:
    """Why the picker cannot open ``run`` (None: it can): its status, or no checkpoint file."""
    if run.status not in OPENABLE:
        return run.reason or f"it is {run.status}"
    if not run.path.is_dir():
        return "its directory is gone (removed since the list was read)"
    if not run.has_checkpoint:
        return "it has no checkpoint (neither best.pt nor last.pt is in its directory)"
    return None


class RunPicker(QuitHint, ModalScreen["RunInfo | None"]):
    """Newest run first; the current one is marked, and the cursor starts on it. Enter opens the
    highlighted run (the current one: nothing changes), Escape closes."""

    BINDINGS = [
        QuitHint.CTRL_C,
        Binding("escape", "dismiss(None)", "Close"),
        Binding("r", "dismiss(None)", "Close", show=False),
        # The app's letter keys do not reach it under a modal screen: help and quit, as everywhere.
        Binding("question_mark", "app.help", "Help", show=False),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    def __init__(self, runs: list["RunInfo"], current: Path | None, opening: str | None = None):
        """``opening``: the name of a run picked earlier and still loading (the note says what keys do)."""
        super().__init__()
        self.runs = list(reversed(runs))
        self.current = current
        self.opening = opening
        self._laid_out_for: int | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            yield Static(Text("Runs (newest first). Enter opens one; Escape closes; q quits.", style="bold"), id="picker-title")
            yield RowTable(id="picker-table", cursor_type="row", zebra_stripes=True)
            yield Static(id="picker-note")
        yield Footer()  # this screen's keys: the one underneath would list keys that do nothing here

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        self._fill(self.app.size.width)
        if not self.runs:
            self.query_one("#picker-note", Static).update(Text("No runs yet: imf train DATASET.", style="dim"))
        elif self.opening is not None:  # Escape closes this list; it does not call that pick back
            self.query_one("#picker-note", Static).update(Text(
                f"{self.opening} is still opening: Escape leaves it opening; Enter on the run marked ▶ stays "
                f"on that one instead.", style="yellow"))
        shown = next((row for row, run in enumerate(self.runs) if same_run(run.path, self.current)), None)
        if shown is not None:  # start on the run shown now (Enter keeps it), not on whichever is newest
            table.move_cursor(row=shown, animate=False)
        table.focus()

    def on_resize(self, event: events.Resize) -> None:
        """Lay the columns out again for the new width (opened at 120 columns and narrowed to 60, the MRRs
        went off the edge), on the row the cursor was on."""
        if event.size.width != self._laid_out_for:
            table = self.query_one(DataTable)
            row = table.cursor_row
            self._fill(event.size.width)
            table.move_cursor(row=row, animate=False)

    def _fill(self, screen_width: int) -> None:
        """The columns and rows, fitted to a terminal ``screen_width`` cells wide."""
        table = self.query_one(DataTable)
        table.clear(columns=True)
        self._laid_out_for = screen_width
        # The columns people choose by first: at 80 columns the run, its status and its MRRs fit. A run's
        # name repeats its dataset; the dataset gets a column of its own only when runs of several are listed.
        several = len({run.dataset for run in self.runs}) > 1
        columns = ("", "run", *(("dataset",) if several else ()), "status", "valid MRR", "test MRR", "epochs",
                   "branches", "time")
        rows = [
            (
                "▶" if same_run(run.path, self.current) else "",
                short_run_name(run.dataset, run.name) if run.dataset else run.name,
                *((run.dataset or "?",) if several else ()),
                run.status,
                "" if run.valid_mrr is None else f"{run.valid_mrr:.4f}",
                "" if run.test_mrr is None else f"{run.test_mrr:.4f}",
                f"{run.epochs}/{run.max_epochs}" if run.max_epochs else str(run.epochs),
                "".join(letter(m) for m in run.branches),
                minutes_seconds(run.seconds) if run.seconds else "",
            )
            for run in self.runs
        ]
        # The run's name gives way to the figures, and then the least needed columns go: at 60 columns the
        # table scrolled sideways, and the MRRs at its edge read "0.01" for 0.0174.
        width = min(screen_width, PICKER_WIDTH) - 6  # the border and padding around the table
        cells = {column: max([cell_len(column), *(cell_len(row[i]) for row in rows)]) for i, column in enumerate(columns)}
        for dropped in (None, *NARROW_DROPS):
            if dropped in cells:
                del cells[dropped]
            # each column has a cell of padding on either side
            room = width - 2 * len(cells) - (sum(cells.values()) - cells["run"])
            if room >= NAME_MIN:
                break
        keep = [i for i, column in enumerate(columns) if column in cells]
        columns, rows = tuple(columns[i] for i in keep), [tuple(row[i] for i in keep) for row in rows]
        # Without its column the dataset is said by the name's start again; the end tells runs apart, so a
        # name is cut in the middle, or (its dataset said) at its start: at 60 columns runs read "20261205-…".
        whole = several and "dataset" not in cells
        names = [run.name if whole else row[1] for run, row in zip(self.runs, rows)]
        longest = max((cell_len(name) for name in names), default=0)
        name_width = max(min(longest, room), NAME_MIN)
        for column in columns:
            table.add_column(column, key=column or "mark", width=name_width if column == "run" else None)
        for run, row, name in zip(self.runs, rows, names):
            # Text, not str: DataTable reads a str cell as markup, and a run named "x-[baseline]" showed blank
            cells = [Text(cell) for cell in row]
            cells[1] = Text(truncate_middle(name, name_width) if whole else truncate_start(name, name_width))
            cells[columns.index("status")].style = "" if why_not_openable(run) is None else "red"
            table.add_row(*cells, key=str(run.path))

    @on(DataTable.RowSelected, "#picker-table")
    def _picked(self, event: DataTable.RowSelected) -> None:
        run = self.runs[event.cursor_row]
        if same_run(run.path, self.current):  # the run shown stays, whatever became of its files since
            self.dismiss(run)
            return
        reason = why_not_openable(run)
        if reason is not None:
            self.query_one("#picker-note", Static).update(Text(f"{run.name} cannot be opened: {reason}.", style="red"))
            return
        self.dismiss(run)
