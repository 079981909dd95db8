"""``ExploreApp``: browse a trained model's ranked answers, with each modality's part in the score.

The app takes an injected :class:`~imf_cli.service.Service` (``imf explore`` builds the real
:class:`~imf_cli.service.PredictionService`; tests pass a small fake). Queries run in a thread worker,
``exclusive`` so that a new query cancels the previous one; the worker posts
:class:`~imf_cli.tui.messages.ResultsReady` and the UI reacts in a handler, so it never blocks.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker

from imf_cli.service import EntityInfo, QueryResult, RelationChoice, Service
from imf_cli.tui.detail import DetailPane
from imf_cli.tui.help import HelpScreen
from imf_cli.tui.locked import LockedService
from imf_cli.tui.messages import QueryFailed, QueryRequested, ResultsReady
from imf_cli.tui.query_bar import QueryBar
from imf_cli.tui.results import ResultsTable

ROW_COUNTS = (10, 20, 50, 100)
#: Below this width the detail pane goes under the table instead of beside it.
NARROW = 120
HINT = "Type a head entity, pick a relation, press Enter.  ? help"


class Body(Container):
    """Table and detail pane: side by side on wide terminals, stacked on narrow ones."""

    def on_resize(self, event: events.Resize) -> None:
        self.set_class(event.size.width < NARROW, "-narrow")


class ExploreApp(App[None]):
    CSS_PATH = "explore.tcss"
    TITLE = "imf explore"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("slash", "focus_search", "Search"),
        Binding("f", "toggle_known", "Known"),
        Binding("k", "cycle_rows", "Rows"),
        Binding("b", "back", "Back"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("down", "focus_results", "Results", show=False),
    ]

    def __init__(
        self, service: Service, *, rows: int = 20, subtitle: str | None = None, show_latency: bool = True
    ):
        super().__init__()
        self.show_latency = show_latency
        self.service = LockedService(service)
        self.rows = rows
        self.include_known = False
        self.sub_title = subtitle or str(service.dataset)
        self.current: tuple[EntityInfo, RelationChoice] | None = None
        self.history: list[tuple[EntityInfo, RelationChoice]] = []
        #: Incremented each time a query's answer (its rows, or its error) is on screen; tests and the
        #: benchmark wait on it.
        self.results_shown = 0
        #: Milliseconds from the request to the rows being on screen, for the last query.
        self.last_latency_ms: float | None = None
        self._serial = 0
        self._remember = True
        self._started = 0.0
        # The widgets are kept, not queried: a query answered while the help screen is up finds them.
        self.query_bar = QueryBar(self.service, id="query")
        self.status = Static(id="status")
        self.table = ResultsTable(self.service.branch_names, id="results")
        self.detail = DetailPane(self.service, id="detail")

    def compose(self) -> ComposeResult:
        yield self.query_bar
        yield self.status
        with Body(id="body"):
            yield self.table
            yield self.detail
        yield Footer()

    def on_mount(self) -> None:
        self.detail.clear()
        self._status(Text(HINT, style="dim"))
        self.query_bar.head_input.focus()

    # ------------------------------------------------------------------ queries
    @on(QueryRequested)
    def _requested(self, message: QueryRequested) -> None:
        message.stop()
        self.request(message.head, message.relation)

    def request(self, head: EntityInfo | str, relation: RelationChoice | str, *, remember: bool = True) -> None:
        """Rank answers to ``(head, relation, ?)`` in a worker; a newer request cancels this one."""
        self._serial += 1
        self._remember = remember
        self._started = time.perf_counter()
        self._status(Text("Ranking…", style="dim"))
        self._query(self._serial, head, relation, self.rows, self.include_known)

    @work(thread=True, exclusive=True, group="query", exit_on_error=False)
    def _query(
        self, serial: int, head: EntityInfo | str, relation: RelationChoice | str, rows: int, known: bool
    ) -> None:
        worker = get_current_worker()
        field = "head"
        try:
            entity = head if isinstance(head, EntityInfo) else self.service.resolve_entity(head)
            field = "relation"
            if not isinstance(relation, RelationChoice):  # typed text: the service reads any inverse mark
                relation = self.service.resolve_relation(relation)
            if worker.is_cancelled:
                return
            field = None
            result = self.service.top_k(entity.id, relation.id, rows, include_known=known)
        except Exception as error:  # an unknown name or a service error: report it, keep the app up
            self.post_message(QueryFailed(serial, str(error) or type(error).__name__, field))
            return
        if not worker.is_cancelled:
            self.post_message(ResultsReady(serial, result))

    @on(ResultsReady)
    def _results(self, message: ResultsReady) -> None:
        if message.serial != self._serial:
            return  # a newer query is on its way
        result = message.result
        query = (result.entity, result.relation)
        if self._remember and self.current is not None and self.current != query:
            self.history.append(self.current)
        self.current = query
        self.query_bar.set_query(*query)
        self.table.show(result)
        self.detail.show(result, self.table.prediction_at(0))
        if self.query_bar.has_focus_within:
            self.table.focus()
        self.last_latency_ms = (time.perf_counter() - self._started) * 1000
        self._status(self._summary(result))
        self.results_shown += 1

    @on(QueryFailed)
    def _failed(self, message: QueryFailed) -> None:
        if message.serial != self._serial:
            return
        self.table.show(None)
        self.detail.clear()
        self._status(Text(message.error, style="bold red"), wrap=True)
        if message.field is not None:
            self.query_bar.focus_field(message.field)
        self.results_shown += 1

    def _summary(self, result: QueryResult) -> Text:
        text = Text()
        text.append(f"({result.entity.name}, {result.relation.label}, ?)", style="bold")
        text.append(f" · {len(result.predictions)} rows")
        if self.include_known:
            text.append(" · known shown", style="yellow")
        elif result.hidden_known:
            text.append(f" · {result.hidden_known} known hidden", style="yellow")
        if self.show_latency:
            text.append(f" · {self.last_latency_ms:.0f} ms", style="dim")
        return text

    def _status(self, text: Text, *, wrap: bool = False) -> None:
        """One line, or up to three for an error that needs them."""
        line = Text(no_wrap=not wrap, overflow="ellipsis")
        line.append(f" {self.sub_title} ", style="reverse")
        line.append(" ")
        self.status.update(line + text)

    # ---------------------------------------------------------------- the table
    @on(DataTable.RowHighlighted, "#results")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.table.result is not None:
            self.detail.show(self.table.result, self.table.prediction_at(event.cursor_row))

    @on(DataTable.RowSelected, "#results")
    def _selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a row: explore from that entity, with the same relation."""
        prediction = self.table.prediction_at(event.cursor_row)
        if prediction is not None and self.current is not None:
            self.request(prediction.entity, self.current[1])

    # ------------------------------------------------------------------ actions
    def action_focus_search(self) -> None:
        self.query_bar.focus_search()

    def action_focus_results(self) -> None:
        self.table.focus()

    def action_toggle_known(self) -> None:
        self.include_known = not self.include_known
        self._rerun()

    def action_cycle_rows(self) -> None:
        position = ROW_COUNTS.index(self.rows) + 1 if self.rows in ROW_COUNTS else 0
        self.rows = ROW_COUNTS[position % len(ROW_COUNTS)]
        self._rerun()

    def _rerun(self) -> None:
        if self.current is not None:
            self.request(*self.current, remember=False)
        else:
            state = "shown" if self.include_known else "hidden"
            self._status(Text(f"{self.rows} rows, known answers {state}.  {HINT}", style="dim"))

    def action_back(self) -> None:
        if self.history:
            self.current = None
            self.request(*self.history.pop(), remember=False)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())
