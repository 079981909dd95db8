"""``ExploreApp``: browse a trained model's ranked answers, with each modality's part in the score.

The app takes an injected :class:`~imf_cli.service.Service` (``imf explore`` builds the real
:class:`~imf_cli.service.PredictionService`; tests pass a small fake). Queries run in a thread worker,
``exclusive`` so that a new query cancels the previous one; the worker posts
:class:`~imf_cli.tui.messages.ResultsReady` and the UI reacts in a handler, so it never blocks.

Keys that always work, even while typing: F1 help, Ctrl+Q quit, Escape leaves the input (the footer
shows them). The single-letter keys (``/ f n k b r ? q``) work outside the inputs and are shown only there.
``n`` adds the entities added after training (``imf entities add``) to the ranked candidates.
With a :class:`~imf_cli.tui.run_picker.RunSource`, ``r`` lists the runs and switches to another.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Static
from textual.worker import get_current_worker

from imf_cli.service import EntityInfo, QueryResult, RelationChoice, Service
from imf_cli.tui.detail import DetailPane
from imf_cli.tui.help import HelpScreen
from imf_cli.tui.locked import LockedService
from imf_cli.tui.messages import (
    LeaveInput, NewEntitiesChecked, Notice, QueryFailed, QueryRequested, ResultsReady, RunOpened,
)
from imf_cli.tui.query_bar import QueryBar
from imf_cli.tui.render import fit_label, fit_lines, run_label
from imf_cli.tui.results import ResultsTable
from imf_cli.tui.run_picker import RunPicker, RunSource, same_run
from kgdata.wording import truncate

try:  # the clock of events' .time (when a key was pressed); private in textual, so with a fallback
    from textual._time import get_time as textual_clock
except ImportError:  # the clocks textual uses: perf_counter on Windows, monotonic elsewhere
    textual_clock = time.perf_counter if sys.platform == "win32" else time.monotonic

ROW_COUNTS = (10, 20, 50, 100)
#: Seconds after a query from the inputs puts its rows on screen under the cursor during which an Enter
#: pressed on the row the cursor has not left is taken for a doubled Enter (one to pick the relation,
#: which runs the query, one more out of habit), not for "explore from this entity". It counts from
#: the screen refresh that shows the rows to the moment the key was pressed (the key event's own
#: time), so a loaded machine, slow to draw or to handle keys, does not shorten it.
ENTER_GUARD = 0.5
#: Below this width the detail pane goes under the table instead of beside it.
NARROW = 120
#: Below this width the stacked pane's two columns (the entity, the branches' scores) go one under
#: the other: side by side at 60 columns the description had three cells.
STACK_DETAIL = 76
#: Below this many rows for table and pane, the pane is hidden unless ``d`` shows it: stacked, the
#: table would get two or three rows (at 40×12 only its header).
SHORT = 14
HINT = "Type a head entity, pick a relation, press Enter.  F1 help"
#: Actions of single-letter keys: an input takes the letter, so they are hidden while one has focus.
LETTER_ACTIONS = {
    "focus_search", "toggle_known", "toggle_new", "cycle_rows", "back", "help_letter", "quit_letter", "runs",
    "toggle_detail",
}
#: Lines the status line may take (``#status``'s max-height).
STATUS_LINES = 3
#: Below this height a query's summary keeps to one line, so that the table keeps its rows (at 40×12
#: three lines of summary left it its header); from it up, the summary wraps rather than cut its counts.
WRAP_SUMMARY = 20
#: Cells a head or relation name takes in a query's summary; longer ones end in "…".
SUMMARY_NAME = 32


class Body(Container):
    """Table and detail pane: side by side on wide terminals, stacked on narrow ones; on short ones the
    pane is hidden, unless the user asked for it (``d`` toggles it at any size)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: None: the size decides; True or False: the user's choice (``d``).
        self.detail_choice: bool | None = None
        self.short = False

    def on_resize(self, event: events.Resize) -> None:
        self.set_class(event.size.width < NARROW, "-narrow")
        self.set_class(event.size.width < STACK_DETAIL, "-stacked-detail")
        self.short = event.size.height < SHORT
        self.apply()

    @property
    def detail_shown(self) -> bool:
        return self.detail_choice if self.detail_choice is not None else not self.short

    def toggle_detail(self) -> bool:
        """Show the pane if hidden, else hide it; returns whether it is shown now."""
        self.detail_choice = not self.detail_shown
        self.apply()
        return self.detail_shown

    def apply(self) -> None:
        self.set_class(not self.detail_shown, "-no-detail")


class StatusLine(Static):
    """The line under the inputs; ``on_width`` is called when its width changes."""

    def __init__(self, on_width, *, id: str | None = None):
        super().__init__(id=id)
        self.on_width = on_width
        self._width: int | None = None

    def on_resize(self, event: events.Resize) -> None:
        if self._width is not None and event.size.width != self._width:
            self.on_width()
        self._width = event.size.width


class CompactFooter(Footer):
    """The footer, without padding around its keys below 80 columns, so that more of them fit."""

    def on_resize(self, event: events.Resize) -> None:
        self.compact = event.size.width < 80


class ExploreApp(App[None]):
    CSS_PATH = "explore.tcss"
    TITLE = "imf explore"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("f1", "help", "Help", priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("slash", "focus_search", "Search"),
        # d and r before the others: at 60 columns the footer ends after n, and d is how the detail pane,
        # hidden on short terminals, is found
        Binding("d", "toggle_detail", "Detail"),
        Binding("r", "runs", "Runs"),
        Binding("f", "toggle_known", "Known"),
        Binding("n", "toggle_new", "New"),
        Binding("k", "cycle_rows", "Rows"),
        Binding("b", "back", "Back"),
        Binding("question_mark", "help_letter", "Help", show=False),
        Binding("q", "quit_letter", "Quit", show=False),
        Binding("down", "focus_results", "Results", show=False),
    ]

    def __init__(
        self,
        service: Service,
        *,
        rows: int = 20,
        subtitle: str | None = None,
        show_latency: bool = True,
        image: str = "auto",
        runs: RunSource | None = None,
        run_path=None,
        opened_because: str | None = None,
    ):
        """``image`` picks the image renderer (:data:`imf_cli.tui.preview.IMAGE_MODES`); ``runs`` enables
        the run picker, with ``run_path`` the run shown; ``opened_because`` is said on the status line."""
        super().__init__()
        self.show_latency = show_latency
        self.service = LockedService(service)
        self.run_source = runs
        self.run_path = run_path
        self.opened_because = opened_because
        self.rows = rows
        self.include_known = False
        #: Rank the entities added after training too (``n``).
        self.include_new = False
        self._new_check = 0  # n presses since ``include_new`` last changed (see action_toggle_new)
        self._opening: str | None = None  # the run picked last, while it loads
        self.sub_title = subtitle or str(service.dataset)
        self.current: tuple[EntityInfo, RelationChoice] | None = None
        #: Earlier queries for ``b``, each with the entity id of the row the cursor was on when the user left it.
        self.history: list[tuple[tuple[EntityInfo, RelationChoice], int | None]] = []
        #: The query last asked for (typed text or resolved), answered or not: what ``f``, ``k`` and ``n``
        #: rerun, so that one pressed while it is still ranking applies to it. None after a query whose
        #: head or relation could not be resolved (rerunning it would fail the same way).
        self._asked: tuple[EntityInfo | str, RelationChoice | str] | None = None
        #: ``include_known`` and ``include_new`` as the query on its way was asked with: its summary says these.
        self._asked_flags = (False, False)
        #: The row to put the cursor on when the query on its way arrives (``b``: where the user was).
        self._keep: int | None = None
        #: The status line's last text, to refit it when the terminal is resized.
        #: The status text and whether it wraps (None: a query's summary, which wraps on tall terminals only)
        self._shown_status: tuple[Text, bool | None] | None = None
        #: Incremented each time a query's answer (its rows, or its error) is on screen; tests and the
        #: benchmark wait on it.
        self.results_shown = 0
        #: Milliseconds from the request to the rows being on screen, for the last query.
        self.last_latency_ms: float | None = None
        self._serial = 0
        #: Counts the runs picked: a run still loading when another is picked is closed, not shown.
        self._run_serial = 0
        #: Said once, before the summary of the next answer ("Opened RUN (branches)" after r).
        self._opened_note: str | None = None
        self._remember = True
        self._started = 0.0
        #: The focused widget and the two inputs' text when the last query was asked: an answer that
        #: arrives after the user moved on or typed leaves both alone (see :meth:`_untouched`).
        self._asked_from: tuple[object, str, str] | None = None
        # The widgets are kept, not queried: a query answered while the help screen is up finds them.
        self.query_bar = QueryBar(self.service, id="query")
        self.status = StatusLine(self._refit_status, id="status")
        self.table = ResultsTable(self.service.branch_names, id="results")
        self.detail = DetailPane(self.service, id="detail", image=image)
        self.body = Body(id="body")
        #: The two inputs' text when the status last showed an error or a notice, which the next edit of
        #: either input replaces with the hint; None when the status shows neither.
        self._clear_on_edit: tuple[str, str] | None = None
        #: When the rows of a query from the inputs, which moved the focus to the table, were drawn
        #: (``textual_clock``), and the row the cursor was put on (see ENTER_GUARD).
        self._focused_by_query: tuple[float, int] = (float("-inf"), -1)

    def compose(self) -> ComposeResult:
        yield self.query_bar
        yield self.status
        with self.body:
            yield self.table
            yield self.detail
        yield CompactFooter()

    def on_mount(self) -> None:
        self.detail.clear()
        if self.opened_because:  # the inputs' placeholders say what to type: the why gets the room
            self._status(Text(f"F1 help  ·  Opened {self.opened_because}.", style="dim"))
        else:
            self._status(Text(HINT, style="dim"))
        self.query_bar.head_input.focus()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """Single-letter keys are off (and hidden from the footer) while an input has the focus. (Under
        the run picker and the help they do not reach the app: those screens bind ``?`` and ``q``.)"""
        if action in LETTER_ACTIONS and isinstance(self.focused, Input):
            return False
        if action in LETTER_ACTIONS | {"focus_results"} and isinstance(self.screen, ModalScreen):
            return False  # under the help or the run picker: their footer lists their own keys
        if action == "runs" and self.run_source is None:
            return False
        return True

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
        self._asked_from = self._focus_and_inputs()
        self._asked = (head, relation)
        self._asked_flags = (self.include_known, self.include_new)
        self._keep = None  # b and a rerun set it again after asking
        # Ranking… keeps the lines the status had, so that the table does not move up and back down
        self._status(Text("Ranking…", style="dim"), hold_height=True)
        self._query(self._serial, head, relation, self.rows, self.include_known, self.include_new)

    @work(thread=True, exclusive=True, group="query", exit_on_error=False)
    def _query(
        self, serial: int, head: EntityInfo | str, relation: RelationChoice | str, rows: int, known: bool, new: bool
    ) -> None:
        worker = get_current_worker()
        field = "head"
        try:
            entity = head if isinstance(head, EntityInfo) else self.service.resolve_entity(head)
            field = "relation"
            if not isinstance(relation, RelationChoice):  # typed text: the service reads any inverse mark
                relation = self.service.resolve_relation(relation)
            field = None
            options = {"include_new": True} if new else {}  # a service without added entities need not know it
            # Checked again once the lock is held: requests typed quickly queue on it, and only the newest
            # one is worth ranking.
            ran, result = self.service.call_unless(
                lambda: worker.is_cancelled, "top_k", entity.id, relation.id, rows, include_known=known, **options
            )
            if not ran:
                return
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
        here = self.table.current.entity.id if self.table.current is not None else None
        if self._remember and self.current is not None and self.current != query:
            self.history.append((self.current, here))
        rerun = self.current == query and not self._remember
        kept = here if rerun else self._keep
        self._keep = None
        self.current = query
        self._asked = query
        untouched = self._untouched()
        if self._untouched(focus=False):
            self.query_bar.set_query(*query)  # nothing typed since: show the query as resolved
        self.table.show(result, keep=kept)
        self.detail.show(result, self.table.current)
        if self.query_bar.has_focus_within and untouched:
            self.table.focus()
            row = self.table.cursor_row
            self._focused_by_query = (textual_clock(), row)
            # the guard counts from when the rows are drawn: on a loaded machine that comes later
            self.call_after_refresh(self._rows_drawn, message.serial, row)
        self.last_latency_ms = (time.perf_counter() - self._started) * 1000
        self._status(self._summary(result), wrap=None)
        self.results_shown += 1

    def _rows_drawn(self, serial: int, row: int) -> None:
        if serial == self._serial and self._focused_by_query[1] == row:
            self._focused_by_query = (textual_clock(), row)

    @on(QueryFailed)
    def _failed(self, message: QueryFailed) -> None:
        if message.serial != self._serial:
            return
        if self._remember and self.current is not None:
            # The rows on screen go; b must still return to them, as it would after a query that answered.
            here = self.table.current.entity.id if self.table.current is not None else None
            self.history.append((self.current, here))
            self.current = None
        self.table.show(None)
        self.detail.clear()
        error = Text(message.error, style="bold red")
        if self._opened_note is not None:  # the query asked again of a new run failed: say both, once
            error = Text.assemble((f"{self._opened_note} · ", "dim"), error)
            self._opened_note = None
        self._status(error, clear_on_edit=True)
        self._keep = None
        if message.field is not None:
            self._asked = None  # an unknown head or relation: f, k and n have nothing to rerun
        if message.field is not None and self._untouched():
            self.query_bar.focus_field(message.field, suggest=True)  # its list holds the names to pick from
        self.results_shown += 1

    def _focus_and_inputs(self) -> tuple[object, str, str]:
        return (self.focused, *self._inputs())

    def _untouched(self, *, focus: bool = True) -> bool:
        """Whether the inputs (and, with ``focus``, the focus) are as they were when the shown query was
        asked. If the user has since typed, or moved to another field, an answer must not overwrite
        what they typed nor take the focus: their next keys would land in the table, where letters
        are commands."""
        if self._asked_from is None:
            return True
        now = self._focus_and_inputs()
        return self._asked_from == now if focus else self._asked_from[1:] == now[1:]

    def _summary(self, result: QueryResult) -> Text:
        text = Text()
        if self._opened_note is not None:
            text.append(f"{self._opened_note} · ", style="dim")
            self._opened_note = None
        # The head input shows the names whole; here a 121-character name pushed the counts and flags out
        head, relation = truncate(result.entity.name, SUMMARY_NAME), truncate(result.relation.label, SUMMARY_NAME)
        text.append(f"({head}, {relation}, ?)", style="bold")
        text.append(f" · {len(result.predictions)} rows")
        if not result.in_graph:
            text.append(f" · not in the training graph: scored by {', '.join(result.scored_by)}", style="magenta")
        known, new = self._asked_flags
        if new:
            text.append(" · new entities ranked", style="magenta")
        if known:
            text.append(" · known shown", style="yellow")
        elif result.hidden_known:
            text.append(f" · {result.hidden_known} known hidden", style="yellow")
        run_dir = getattr(self.service, "run_dir", None)
        if run_dir is not None and not Path(run_dir).is_dir():  # removed or moved while open (imf runs rm)
            text.append(" · its run directory is gone: this model stays loaded until r opens another", style="red")
        if self.show_latency:
            text.append(f" · {self.last_latency_ms:.0f} ms", style="dim")
        return text

    def _status(
        self, text: Text, *, wrap: bool | None = True, hold_height: bool = False, clear_on_edit: bool = False
    ) -> None:
        """Up to three lines (one where ``wrap`` is False; with None, from WRAP_SUMMARY rows up, decided again
        when the terminal is resized); what does not fit ends in "…". Every message wraps: one line cut
        the counts and warnings of a summary, and the hint's "F1 help", at 80 columns.
        ``hold_height``: take at least the lines shown now (a passing message, as "Ranking…").
        ``clear_on_edit``: an error or a notice, which the next edit of the query replaces with the hint."""
        self._clear_on_edit = self._inputs() if clear_on_edit else None
        self.status.styles.min_height = (self.status.size.height or None) if hold_height else None
        self._shown_status = (text, wrap)
        self._draw_status()

    def _draw_status(self, height: int | None = None) -> None:
        text, wrap = self._shown_status
        if wrap is None:
            wrap = (height or self.size.height) >= WRAP_SUMMARY
        line = Text(no_wrap=not wrap, overflow="ellipsis")
        # Textual's Static drops a Text's no_wrap: the widget's own text-wrap style does it
        self.status.set_class(not wrap, "-one-line")
        width = self.size.width
        # The run's label gives way first: at 80 columns a dataset · run name took the whole line.
        label = fit_label(self.sub_title, max(16, width // 3)) if width else self.sub_title
        line.append(f" {label} ", style="reverse")
        line.append(" ")
        line = line + text
        # Wrapped, the text may take STATUS_LINES lines of the status's width (less its padding); a
        # longer one would be cut at the last line's edge without a sign.
        if wrap and width > 2:
            line = fit_lines(line, width - 2, STATUS_LINES)
        self.status.update(line)

    def _refit_status(self) -> None:
        """The status line's width changed: its label and its cut were fitted to the old one."""
        if self._shown_status is not None:
            self._draw_status()

    def on_resize(self, event: events.Resize) -> None:
        """The terminal's height decides whether a summary wraps (the width is the status line's own)."""
        if self._shown_status is not None and self._shown_status[1] is None:
            self._draw_status(height=event.size.height)  # self.size is the old one still

    # ------------------------------------------------------------ the query bar
    @on(Notice)
    def _notice(self, message: Notice) -> None:
        message.stop()
        self._status(Text(message.text, style="bold red" if message.error else "yellow"), clear_on_edit=True)

    @on(LeaveInput)
    def _leave_input(self, message: LeaveInput) -> None:
        message.stop()
        self.table.focus()

    def _inputs(self) -> tuple[str, str]:
        return self.query_bar.head_input.value, self.query_bar.relation_input.value

    @on(Input.Changed)
    def _typing(self, event: Input.Changed) -> None:
        """An old error or notice goes away as soon as the user edits the query: "Enter ranks (Spain,
        exports to, ?)" must not stay while they type another relation. A change the message already
        saw (the pick that led to it, arriving late) leaves it."""
        if self._clear_on_edit is not None and event.input.has_focus and self._inputs() != self._clear_on_edit:
            self._status(Text(HINT, style="dim"))

    # ---------------------------------------------------------------- the table
    @on(DataTable.RowHighlighted, "#results")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.table.result is not None:
            self.detail.show(self.table.result, self.table.prediction_at(event.cursor_row))

    @on(DataTable.RowSelected, "#results")
    def _selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a row: explore from that entity, with the same relation."""
        when, row = self._focused_by_query
        pressed = self.table.take_enter_time()
        pressed = textual_clock() if pressed is None else pressed
        if event.cursor_row == row and pressed - when < ENTER_GUARD:
            return  # the Enter that ran the query, pressed twice: the cursor has not moved since
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

    def action_toggle_detail(self) -> None:
        shown = self.body.toggle_detail()
        if not shown and self.detail.has_focus_within:
            self.table.focus()

    def action_toggle_new(self) -> None:
        if self.include_new:
            self.include_new, self._new_check = False, 0
            self._rerun()
            return
        self._new_check += 1  # n again while the check below runs: that turn-on is dropped
        if self._new_check % 2:  # an odd count: this n asks to turn it on (an even one undid it)
            # In a worker: the check waits for the service, which a query or an explanation may hold
            self._check_new_entities(self._new_check)

    @work(thread=True, group="new-check", exit_on_error=False)
    def _check_new_entities(self, serial: int) -> None:
        try:
            reason = self._why_no_new_entities()
        except Exception as error:  # the service failed: say so, as any query's error
            reason = str(error) or type(error).__name__
        self.post_message(NewEntitiesChecked(serial, reason))

    @on(NewEntitiesChecked)
    def _new_entities_checked(self, message: NewEntitiesChecked) -> None:
        if message.serial != self._new_check or self.include_new:
            return  # n was pressed again since
        self._new_check = 0
        if message.reason is not None:  # refuse the toggle: the rows stay, and every later query still works
            self._status(Text(f"n: {message.reason}.", style="yellow"))
            return
        self.include_new = True
        self._rerun()

    def _why_no_new_entities(self, quick: bool = False) -> str | None:
        """Why the open run cannot rank the entities added after training (None: it can, or its service
        cannot say, as a test's fake cannot: such a service is taken to rank them). ``quick``: only what
        needs no feature file read (on the UI thread)."""
        check = getattr(self.service.wrapped, "why_no_new_entities", None)
        return None if check is None else self.service.why_no_new_entities(quick=quick)

    def action_cycle_rows(self) -> None:
        position = ROW_COUNTS.index(self.rows) + 1 if self.rows in ROW_COUNTS else 0
        self.rows = ROW_COUNTS[position % len(ROW_COUNTS)]
        self._rerun()

    def _rerun(self) -> None:
        """Ask again for the query last asked (answered or on its way) with the new settings."""
        if self._asked is not None:
            keep = self._keep
            # A query still on its way keeps its place in the history: replacing an unanswered
            # "explore from this row" must not lose the query b would return to.
            pending = self._asked != self.current
            self.request(*self._asked, remember=self._remember and pending)
            self._keep = keep
        else:
            state = "shown" if self.include_known else "hidden"
            new = "ranked" if self.include_new else "not ranked"
            self._status(Text(f"{self.rows} rows, known answers {state}, new entities {new}.  {HINT}", style="dim"))

    def action_back(self) -> None:
        if self.history:
            query, row = self.history.pop()
            self.current = None
            self.request(*query, remember=False)
            self._keep = row  # the cursor goes back to the row the user explored from
        else:
            self._status(Text("b: no earlier query to go back to (Enter on a row explores from it).", style="yellow"))

    def action_help(self) -> None:
        """Open the help, or close it when it is open."""
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss()
        else:
            self.push_screen(HelpScreen())

    def action_help_letter(self) -> None:
        self.action_help()

    async def action_quit_letter(self) -> None:
        await self.action_quit()

    # ------------------------------------------------------------------- runs
    def action_runs(self) -> None:
        """List the runs; the one picked replaces the current run."""
        if self.run_source is None:
            return
        opening = self._opening if self._loading_a_run() else None
        self.push_screen(RunPicker(self.run_source.list(), self.run_path, opening), self._open_run)

    def _open_run(self, run) -> None:
        if run is None:
            return
        if same_run(run.path, self.run_path):
            if self._loading_a_run():  # the open run picked again: the pick still loading is dropped
                self._run_serial += 1
                self.workers.cancel_group(self, "run")
                self._status(Text(f"Stayed on {run.name}.", style="dim"))
            return
        self._run_serial += 1
        self._opening = run.name
        self._status(Text(f"Opening {run.name} …", style="dim"))
        self._load_run(run, self._run_serial)

    def _loading_a_run(self) -> bool:
        return any(worker.group == "run" and not worker.is_finished for worker in self.workers)

    @work(thread=True, exclusive=True, group="run", exit_on_error=False)
    def _load_run(self, run, serial: int) -> None:
        worker = get_current_worker()
        try:
            service = self.run_source.open(run.path)
        except Exception as error:  # a damaged run: say so, keep the current one
            self.post_message(RunOpened(run.name, error=str(error) or type(error).__name__, serial=serial))
            return
        if worker.is_cancelled:  # picked over while it loaded
            _close(service)
            return
        self.post_message(RunOpened(run.name, service=(run, service), serial=serial))

    @on(RunOpened)
    def _run_opened(self, message: RunOpened) -> None:
        if message.serial != self._run_serial:  # an earlier pick: the user has picked again since
            if message.service is not None:
                _close(message.service[1])
            return
        if message.error is not None:
            self._status(Text(f"Could not open {message.name}: {message.error}", style="bold red"), clear_on_edit=True)
            return
        run, service = message.service
        opened = f"Opened {run.name} ({', '.join(service.branch_names)})"
        if self.switch_service(service, run.path, subtitle=run_label(str(service.dataset), run.name)):
            self._opened_note = opened  # the query shown is asked again: its summary says it first
        else:
            self._status(Text(f"{opened}.  {HINT}", style="dim"))

    def switch_service(self, service: Service, run_path=None, *, subtitle: str | None = None) -> bool:
        """Show another run: the query bar, table and detail pane use ``service``; the old one is closed.

        On the same dataset the query shown is asked again of the new run, with the cursor on the same
        entity, and ``b``'s history is kept (the entities are the same); returns whether it was asked."""
        old_locked, old = self.service, self.service.wrapped  # closed once no worker is using it
        # A query still ranking on the old run was asked of it: its answer must not land under the new
        # one (it would show branches the new run does not have). It is asked again of the new run below.
        pending = self._asked if self.current is None else None
        self._serial += 1
        self._new_check = 0  # an n still being checked asked about the old run
        for node, group in ((self, "query"), (self.detail, "detail"), (self.query_bar, "suggest")):
            self.workers.cancel_group(node, group)
        self.service = LockedService(service)
        self.run_path = run_path
        self.sub_title = subtitle or str(service.dataset)
        same_dataset = service.dataset == getattr(old, "dataset", None)
        self.query_bar.use_service(self.service, clear=not same_dataset)
        self.table.branch_names = tuple(self.service.branch_names)
        self.detail.service = self.service
        previous = self.current
        here = self.table.current.entity.id if self.table.current is not None else None
        self.current, self._asked = None, None
        if not same_dataset:
            self.history = []
        self.table.show(None)
        self.detail.clear()
        if not same_dataset:
            # the inputs were cleared and the table is empty: the next keys are a head to type, and in the
            # table they did nothing
            self.query_bar.head_input.focus()
        if self.include_new:  # the new run may have no branch that can place an added entity
            reason = self._why_no_new_entities(quick=True)
            if reason is not None:
                self.include_new = False
                self.notify(f"New entities are no longer ranked (n): {reason}.", severity="warning", timeout=8)
        again = _query_text(previous or pending) if same_dataset else None
        if again is not None:
            self.request(*again, remember=False)
            self._keep = here
        self._close_when_idle(old_locked)
        return again is not None

    @work(thread=True, group="close", exit_on_error=False)
    def _close_when_idle(self, locked: LockedService) -> None:
        locked.close_when_idle()


def _query_text(query) -> tuple[str, str] | None:
    """``(head, relation)`` as typed text that asks ``query`` again (of another run of the dataset): keys,
    the inverse marked; None for no query, or a head without a key."""
    if query is None:
        return None
    head, relation = query
    head_text = head.key if isinstance(head, EntityInfo) else str(head)
    if isinstance(relation, RelationChoice):
        relation_text = relation.key if not relation.inverse else f"<- {relation.key}"
    else:
        relation_text = str(relation)
    return (head_text, relation_text) if head_text else None


def _close(service) -> None:
    """Close a service that has a ``close`` (a test's fake may not)."""
    close = getattr(service, "close", None)
    if close is not None:
        close()
