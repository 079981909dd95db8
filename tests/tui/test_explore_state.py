"""What the explore TUI keeps and shows across queries and run switches: history after an error, the
detail pane's scroll, the run picker's pending opens, wide characters, and the status line's room."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from textual.widgets import DataTable

from imf_cli.runs import RunInfo
from imf_cli.tui.app import ExploreApp
from imf_cli.tui.run_picker import RunPicker
from tui.fake_service import FakeService
from tui.pilot import run_query, settle, wait_until


def status(app) -> str:
    return str(app.query_one("#status").render())


class ClosingFake(FakeService):
    def __init__(self, *args, name: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.name, self.closed = name, False

    def close(self) -> None:
        self.closed = True


class Runs:
    """Runs a, b and c of the fake dataset; opening one waits for its gate, if it has one."""

    def __init__(self, root: Path, gates: dict[str, threading.Event] | None = None, made=None):
        """``made(service)``: changes each service opened (another dataset, a failing top_k, …)."""
        self.gates = gates or {}
        self.made = made
        self.runs = [
            RunInfo(root / f"countries-fake-{name}", "finished", dataset="countries-fake",
                    modalities=("structure", "visual", "text"), epochs=5, max_epochs=5, valid_mrr=0.4)
            for name in "abc"
        ]
        for run in self.runs:
            run.path.mkdir(parents=True)
            (run.path / "best.pt").write_bytes(b"")
        self.opened: list[ClosingFake] = []

    def list(self):
        return list(self.runs)

    def open(self, path):
        name = Path(path).name[-1]
        if name in self.gates:
            assert self.gates[name].wait(10)
        service = ClosingFake(name=name)
        if self.made is not None:
            self.made(service)
        self.opened.append(service)
        return service


async def open_picker(pilot) -> DataTable:
    """Press r from the results and return the picker's table."""
    pilot.app.table.focus()  # r in an input is a letter
    await pilot.press("r")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, RunPicker))
    await pilot.pause()
    return pilot.app.screen.query_one(DataTable)


async def pick(pilot, path: Path) -> None:
    table = await open_picker(pilot)
    table.move_cursor(row=table.get_row_index(str(path)))
    await pilot.press("enter")
    await wait_until(pilot, lambda: not isinstance(pilot.app.screen, RunPicker))


async def test_the_last_run_picked_wins_over_an_earlier_one_still_loading(tmp_path):
    """A slow run picked first, a fast one right after: the slow one landed last and replaced the
    user's later choice."""
    gate = threading.Event()
    runs = Runs(tmp_path / "runs", {"b": gate})
    a, b, c = (run.path for run in runs.runs)
    app = ExploreApp(ClosingFake(name="a"), runs=runs, run_path=a)
    async with app.run_test(size=(120, 30)) as pilot:
        await pick(pilot, b)  # waits on its gate
        await pick(pilot, c)
        await wait_until(pilot, lambda: app.run_path == c)
        gate.set()
        await settle(pilot)
        assert app.run_path == c and app.service.wrapped.name == "c"
        slow = next(service for service in runs.opened if service.name == "b")
        assert slow.closed  # loaded too late: closed, not leaked


async def test_picking_the_open_run_again_drops_a_pick_still_loading(tmp_path):
    gate = threading.Event()
    runs = Runs(tmp_path / "runs", {"b": gate})
    a, b, _ = (run.path for run in runs.runs)
    first = ClosingFake(name="a")
    app = ExploreApp(first, runs=runs, run_path=a)
    async with app.run_test(size=(120, 30)) as pilot:
        await pick(pilot, b)
        assert "Opening" in status(app)
        await open_picker(pilot)  # the picker says what its keys do to the pick still loading
        note = str(app.screen.query_one("#picker-note").render())
        assert "countries-fake-b is still opening: Escape leaves it opening" in " ".join(note.split())
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, RunPicker))
        await pick(pilot, a)
        assert "Stayed on" in status(app)
        gate.set()
        await settle(pilot)
        assert app.run_path == a and app.service.wrapped is first and not first.closed
        assert all(service.closed for service in runs.opened)


async def test_switching_runs_of_one_dataset_keeps_history_and_cursor_and_says_which_run(tmp_path):
    runs = Runs(tmp_path / "runs")
    a, b, _ = (run.path for run in runs.runs)
    app = ExploreApp(ClosingFake(name="a"), runs=runs, run_path=a)
    async with app.run_test(size=(120, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        app.table.focus()
        await pilot.press("down", "down")
        here = app.table.current.entity.id
        shown = app.results_shown
        await pick(pilot, b)
        await wait_until(pilot, lambda: app.run_path == b and app.results_shown > shown)
        await settle(pilot)
        assert "Opened countries-fake-b" in status(app) and "(France, shares border with, ?)" in status(app)
        assert app.table.current.entity.id == here  # the cursor stays on the entity it was on
        await pilot.press("enter")  # explore from that row, then come back with b
        await wait_until(pilot, lambda: app.current[0].id == here)
        await settle(pilot)
        await pilot.press("b")
        await wait_until(pilot, lambda: app.current is not None and app.current[0].name == "France")


async def test_a_run_of_another_dataset_clears_the_query_typed_for_the_old_one(tmp_path):
    """After picking a run of another dataset the inputs still said France / shares border with, and Enter
    asked the new dataset for a relation it does not have."""
    runs = Runs(tmp_path / "runs", made=lambda service: setattr(service, "dataset", "elsewhere"))
    a, b, _ = (run.path for run in runs.runs)
    app = ExploreApp(ClosingFake(name="a"), runs=runs, run_path=a)
    async with app.run_test(size=(120, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        await pick(pilot, b)
        await wait_until(pilot, lambda: app.run_path == b)
        await settle(pilot)
        bar = app.query_bar
        assert (bar.head_input.value, bar.relation_input.value) == ("", "")
        assert "Opened countries-fake-b" in status(app) and "France" not in status(app)
        assert app.focused is bar.head_input  # in the empty table the next keys did nothing
        await pilot.press("g")
        assert bar.head_input.value == "g"


async def test_a_failed_query_asked_again_of_a_new_run_says_which_run_once(tmp_path):
    """The re-asked query failed on the new run; the "Opened RUN" note then led a later, unrelated summary."""
    def failing(*args, **kwargs):
        raise RuntimeError("cannot rank that here")

    runs = Runs(tmp_path / "runs", made=lambda service: setattr(service, "top_k", failing))
    a, b, _ = (run.path for run in runs.runs)
    app = ExploreApp(ClosingFake(name="a"), runs=runs, run_path=a)
    async with app.run_test(size=(120, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        shown = app.results_shown
        await pick(pilot, b)
        await wait_until(pilot, lambda: app.run_path == b and app.results_shown > shown)
        await settle(pilot)
        assert "Opened countries-fake-b" in status(app) and "cannot rank that here" in status(app)
        assert app._opened_note is None


async def test_a_query_ranking_when_the_run_switches_is_asked_of_the_new_run(tmp_path):
    """The first query still ranking on run a, run b picked: a's answer (four branches) landed under b
    (one branch), and a was closed under the worker ranking on it ("closed database")."""
    gate = threading.Event()
    first = ClosingFake(name="a", gate=gate)  # every query of run a waits for the gate
    runs = Runs(tmp_path / "runs")
    a, b, _ = (run.path for run in runs.runs)
    runs.open = lambda path: runs.opened.append(ClosingFake(name="b", branches=("structure",))) or runs.opened[-1]
    app = ExploreApp(first, runs=runs, run_path=a)
    async with app.run_test(size=(120, 30)) as pilot:
        app.request("France", "shares border with")
        await wait_until(pilot, lambda: "Ranking" in status(app))
        await pick(pilot, b)
        await wait_until(pilot, lambda: app.run_path == b and app.results_shown == 1)
        assert app.table.branch_names == ("structure",) and app.current[0].name == "France"
        assert runs.opened[0].calls and not first.closed  # asked of b; a waits for its worker
        gate.set()
        await settle(pilot)
        await wait_until(pilot, lambda: first.closed)
        assert app.results_shown == 1 and app.service.wrapped is runs.opened[0]  # a's late answer dropped


async def test_b_after_a_failed_query_returns_to_the_rows_shown_before_it(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(120, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        shown = app.results_shown
        app.request("Germany", app.current[1])
        await wait_until(pilot, lambda: app.results_shown > shown)
        assert app.current[0].name == "Germany"
        shown = app.results_shown
        app.request("Xanadoo", app.current[1])
        await wait_until(pilot, lambda: app.results_shown > shown)
        assert "Xanadoo" in status(app)
        app.table.focus()
        await pilot.press("b")
        await wait_until(pilot, lambda: app.current is not None)
        await settle(pilot)
        assert app.current[0].name == "Germany"  # it went to France, skipping the rows just shown
        await pilot.press("b")
        await wait_until(pilot, lambda: app.current is not None and app.current[0].name == "France")


async def test_the_detail_pane_starts_at_the_top_for_each_candidate(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(130, 20)) as pilot:
        await run_query(pilot, "france", "bord")
        app.detail.scroll_end(animate=False)
        await pilot.pause()
        assert app.detail.scroll_y > 0
        app.table.focus()
        await pilot.press("down")
        await pilot.pause()
        assert app.detail.scroll_y == 0


async def test_wide_names_are_cut_to_the_column_with_an_ellipsis(fake):
    from rich.cells import cell_len

    wide = "中华人民共和国测试国家名称很长很长的名字"  # 20 characters, 40 cells
    fake.entities = [replace(e, name=f"{wide}{e.id}") if e.id else e for e in fake.entities]
    app = ExploreApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await run_query(pilot, "france", "bord")
        table = app.table
        row = 0
        width = table.columns["entity"].width
        name = str(table.get_cell_at((row, list(table.columns).index("entity"))))
        assert name.endswith("…") and cell_len(name) <= width


async def test_the_status_line_keeps_the_counts_at_80_columns(fake):
    app = ExploreApp(fake, subtitle="countries-fake · countries-fake-20261205-112222-984502")
    async with app.run_test(size=(80, 24)) as pilot:
        await run_query(pilot, "france", "bord")
        shown = status(app)
        assert "6 rows · 6 known hidden" in shown and shown.rstrip().endswith("ms")
        assert "F1" not in shown
    narrow = ExploreApp(FakeService(), subtitle="countries-fake · countries-fake-20261205-112222-984502")
    async with narrow.run_test(size=(60, 20)):
        assert "F1 help" in status(narrow)


async def test_ranking_keeps_the_status_lines_so_the_table_does_not_move():
    """"Ranking…" took one line where the summary before and after took two: the table jumped up and down."""
    gate = threading.Event()
    fake = FakeService(slow={1}, gate=gate)  # Germany's rows wait for the gate
    app = ExploreApp(fake, subtitle="countries-fake · countries-fake-20261205-112222-984502")
    async with app.run_test(size=(80, 24)) as pilot:
        await run_query(pilot, "france", "bord")
        lines, top = app.status.size.height, app.table.region.y
        assert lines >= 2  # the summary wraps at 80 columns
        app.request("Germany", app.current[1])
        await wait_until(pilot, lambda: "Ranking" in status(app))
        await pilot.pause()
        assert app.status.size.height == lines and app.table.region.y == top
        gate.set()
        await wait_until(pilot, lambda: "Ranking" not in status(app))
        await settle(pilot)
        assert app.status.styles.min_height is None  # the hold ends with the summary


async def test_n_while_a_query_ranks_does_not_freeze_the_app():
    """n's check waited on the UI thread for the service, which the ranking query held: every key froze."""

    class Checking(FakeService):
        def why_no_new_entities(self, quick=False):
            return None

    gate = threading.Event()
    fake = Checking(slow={1}, gate=gate, added=True)
    app = ExploreApp(fake)
    async with app.run_test(size=(120, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        app.request("Germany", app.current[1])
        await wait_until(pilot, lambda: "Ranking" in status(app))
        app.table.focus()
        await pilot.press("n", "f")  # n waits for the service in a worker; f is handled at once
        assert app.include_known and not app.include_new and not gate.is_set()
        gate.set()
        await wait_until(pilot, lambda: app.include_new)
        await settle(pilot)
        assert app.current[0].name == "Germany"
        await pilot.press("n", "n", "n")  # off, then on and off again before the check answered
        await settle(pilot)
        assert not app.include_new


async def test_the_picker_cuts_run_names_not_figures_at_60_columns(tmp_path):
    """At 60 columns the picker's table scrolled sideways and its MRRs read "0.01" for 0.0174."""
    runs = Runs(tmp_path / "runs")
    runs.runs = [replace(run, valid_mrr=0.0174, test_mrr=0.029, seconds=95.0) for run in runs.runs]
    app = ExploreApp(ClosingFake(name="a"), runs=runs, run_path=runs.runs[0].path)
    async with app.run_test(size=(60, 20)) as pilot:
        table = await open_picker(pilot)
        assert sum(column.get_render_width(table) for column in table.columns.values()) <= table.size.width
        assert table.max_scroll_x == 0
        row = table.get_row_at(0)
        assert "0.0174" in str(row[list(table.columns).index("valid MRR")])
        assert "time" not in table.columns and "epochs" in table.columns  # the least needed went first


async def test_the_picker_lays_its_columns_out_again_when_the_terminal_is_resized(tmp_path):
    """Opened at 120 columns and narrowed to 60, "test MRR" was cut and the rest went off the edge;
    opened at 60 and widened, it kept the 60-column layout. The cursor stays on its row."""
    runs = Runs(tmp_path / "runs")
    runs.runs = [replace(run, valid_mrr=0.0174, test_mrr=0.029, seconds=95.0) for run in runs.runs]
    app = ExploreApp(ClosingFake(name="a"), runs=runs, run_path=runs.runs[0].path)
    async with app.run_test(size=(120, 30)) as pilot:
        table = await open_picker(pilot)
        assert "time" in table.columns
        table.move_cursor(row=1)
        await pilot.resize_terminal(60, 20)
        await wait_until(pilot, lambda: "time" not in table.columns)
        await pilot.pause()
        assert sum(column.get_render_width(table) for column in table.columns.values()) <= table.size.width
        assert "0.0290" in str(table.get_row_at(0)[list(table.columns).index("test MRR")])
        assert table.cursor_row == 1
        await pilot.resize_terminal(120, 30)
        await wait_until(pilot, lambda: "time" in table.columns)


async def test_the_picker_cuts_long_run_names_where_they_differ_not_at_their_end(tmp_path):
    """At 60 columns every run read "20261205-…", and with runs of two datasets (the dataset column
    dropped, its prefix stripped from the names) the datasets could not be told apart either."""
    root = tmp_path / "runs"
    names = [("countries-mm", "countries-mm-20261205-171034-010772"),
             ("countries-mm", "countries-mm-20261205-172204-026571"), ("tiny", "tiny-20261205-173311-999999")]
    runs = Runs(root)
    runs.runs = [replace(runs.runs[0], path=root / name, dataset=dataset, valid_mrr=0.0174, test_mrr=0.029,
                         seconds=95.0) for dataset, name in names]
    for run in runs.runs:
        run.path.mkdir(parents=True, exist_ok=True)
    app = ExploreApp(ClosingFake(name="a"), runs=runs, run_path=runs.runs[0].path)
    async with app.run_test(size=(60, 20)) as pilot:
        table = await open_picker(pilot)
        shown = [str(table.get_row_at(row)[1]) for row in range(3)]
        assert len(set(shown)) == 3, shown
        assert all(name.endswith(full[-6:]) for name, (_, full) in zip(shown, reversed(names))), shown
        if "dataset" not in table.columns:  # its start says the dataset again
            assert shown[0].startswith("ti") and shown[1].startswith("co"), shown


async def test_at_60_columns_the_footer_shows_detail_and_runs(tmp_path):
    """At 60×15 the detail pane is hidden, and the footer was cut before "d Detail" and "r Runs"."""
    from textual.widgets import Footer

    runs = Runs(tmp_path / "runs")
    app = ExploreApp(ClosingFake(name="a"), runs=runs, run_path=runs.runs[0].path)
    async with app.run_test(size=(60, 15)) as pilot:
        app.table.focus()
        await pilot.pause()
        keys = {key.key: key.region for key in app.query_one(Footer).children if hasattr(key, "key")}
        assert keys["d"].right <= 60 and keys["r"].right <= 60 and keys["f1"].right <= 60
        assert not app.detail.display or app.detail.size.width == 0  # d is the way to the pane here


async def test_a_summary_wraps_again_or_not_when_the_terminal_is_resized(fake):
    """The wrap was decided for the height at the time of the query: a summary asked at 60×15 stayed cut
    on one line at 60×40, and one asked at 40×30 kept three lines at 40×12, leaving the table 4 rows."""
    app = ExploreApp(fake)
    async with app.run_test(size=(60, 15)) as pilot:
        await run_query(pilot, "france", "bord")
        assert app.status.size.height == 1
        await pilot.resize_terminal(60, 40)
        await pilot.pause()
        await pilot.pause()
        assert app.status.size.height > 1 and "ms" in status(app)
        await pilot.resize_terminal(60, 15)
        await pilot.pause()
        await pilot.pause()
        assert app.status.size.height == 1


async def test_a_long_head_name_leaves_the_summary_its_flags(fake):
    """A 121-character name filled the status lines: "known shown" and the latency were cut off."""
    fake.entities[0] = replace(fake.entities[0], name="France " + "très longue " * 10)
    app = ExploreApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        app.request(fake.entities[0].key, "shares border with")
        await wait_until(pilot, lambda: app.results_shown == 1)
        app.table.focus()
        await pilot.press("f")
        await wait_until(pilot, lambda: app.results_shown == 2)
        await settle(pilot)
        shown = " ".join(status(app).split())
        assert "France très longue" in shown and "…" in shown and "known shown" in shown and shown.endswith("ms")


async def test_a_run_opened_through_a_symlink_is_marked_in_the_picker(tmp_path):
    runs = Runs(tmp_path / "runs")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "runs")
    b = runs.runs[1].path
    app = ExploreApp(ClosingFake(name="b"), runs=runs, run_path=link / b.name)
    async with app.run_test(size=(120, 30)) as pilot:
        table = await open_picker(pilot)
        assert table.cursor_row == table.get_row_index(str(b)) and str(table.get_row(str(b))[0]) == "▶"
        await pilot.press("enter")  # the run shown: nothing is reopened
        await wait_until(pilot, lambda: not isinstance(app.screen, RunPicker))
        await settle(pilot)
        assert runs.opened == []


async def test_ctrl_c_under_the_help_and_the_picker_says_how_to_quit(tmp_path):
    """Ctrl+C said "Press ctrl+q to quit" on the main screen, and did nothing under the help or the picker."""
    from imf_cli.tui.help import HelpScreen

    runs = Runs(tmp_path / "runs")
    app = ExploreApp(ClosingFake(name="a"), runs=runs, run_path=runs.runs[0].path)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("ctrl+c")
        await pilot.pause()
        said = [str(n.message) for n in app._notifications]
        assert any("to quit the app" in message for message in said), said
        app.clear_notifications()
        await pilot.press("escape")
        await open_picker(pilot)
        await pilot.press("ctrl+c")
        await pilot.pause()
        said = [str(n.message) for n in app._notifications]
        assert any("to quit the app" in message for message in said), said
        assert isinstance(app.screen, RunPicker) and app.is_running


async def test_enter_on_the_open_run_stays_on_it_even_when_its_files_were_damaged_since(tmp_path):
    """The picker said the open run "cannot be opened: best.pt is damaged", though Enter on the open run
    changes nothing; a run whose directory was removed was said to have no checkpoint."""
    import shutil

    runs = Runs(tmp_path / "runs")
    a, b, c = (run.path for run in runs.runs)
    runs.runs[0] = replace(runs.runs[0], status="failed", reason="best.pt is damaged")
    app = ExploreApp(ClosingFake(name="a"), runs=runs, run_path=a)
    async with app.run_test(size=(120, 30)) as pilot:
        table = await open_picker(pilot)
        shutil.rmtree(c)
        table.move_cursor(row=table.get_row_index(str(c)))
        await pilot.press("enter")
        await pilot.pause()
        note = " ".join(str(app.screen.query_one("#picker-note").render()).split())
        assert "countries-fake-c cannot be opened: its directory is gone" in note, note
        table.move_cursor(row=table.get_row_index(str(a)))
        await pilot.press("enter")
        await wait_until(pilot, lambda: not isinstance(app.screen, RunPicker))
        assert app.run_path == a and app.service.wrapped.name == "a" and not runs.opened
