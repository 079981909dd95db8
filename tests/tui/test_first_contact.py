"""The explore TUI as a first-time user meets it (issue 16): keys that work from the inputs, bars that
show each branch's share of the decision, columns sized to the terminal, the query bar's behaviour,
and the run picker. Driven with Pilot on the deterministic fake service."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import DataTable

from imf_cli.runs import RunInfo
from imf_cli.scoring import branch_shares
from imf_cli.tui.app import ExploreApp
from imf_cli.tui.help import HelpScreen
from imf_cli.tui.query_bar import match_relations
from imf_cli.tui.results import NAME_MIN, ResultsTable
from imf_cli.tui.run_picker import RunPicker
from tui.fake_service import FakeService
from tui.pilot import run_query, settle, wait_until


def status(app) -> str:
    return str(app.query_one("#status").render())


def footer_keys(app) -> set[str]:
    return {b.key for _, b, enabled, *_ in app.active_bindings.values() if b.show and enabled}


def cell(table: ResultsTable, row: int, column: str) -> str:
    return str(table.get_cell_at((row, list(table.columns).index(column))))


# ------------------------------------------------------------------------------------ keys
async def test_f1_ctrl_q_and_escape_work_from_the_head_input(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        assert app.focused.id == "head"
        keys = footer_keys(app)
        assert {"f1", "ctrl+q", "escape"} <= keys  # the footer shows the keys that work here
        assert not keys & {"f", "k", "b", "slash", "question_mark", "q"}  # letters type into the input
        await pilot.press("question_mark", "q")
        assert app.query_one("#head").value == "?q" and app.is_running
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        assert not isinstance(app.screen, HelpScreen) and app.focused.id == "head"
        await pilot.press("ctrl+q")
        assert not app.is_running


async def test_escape_closes_the_list_then_leaves_the_input(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"fra")
        await wait_until(pilot, lambda: app.query_bar.suggestions("head").is_open)
        await pilot.press("escape")
        assert not app.query_bar.suggestions("head").is_open and app.focused.id == "head"
        await pilot.press("escape")
        assert isinstance(app.focused, DataTable)
        assert {"f", "k", "b", "slash", "f1", "ctrl+q"} <= footer_keys(app)


# ------------------------------------------------------------------------------------ bars
async def test_branch_bars_show_each_branch_share_of_the_decision(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(140, 40)) as pilot:
        await run_query(pilot, "france", "bord")
        table = app.query_one(ResultsTable)
        result = table.result
        for row, prediction in enumerate(result.predictions):
            shares = branch_shares(result.weights, prediction.branches)
            assert result.shares(prediction) == shares and abs(sum(shares.values()) - 1) < 1e-9
            shown = [cell(table, row, branch).split()[-1] for branch in fake.branch_names]
            assert shown == [f"{shares[b]:.0%}" for b in fake.branch_names]
        # negative logits no longer give slivers everywhere: every row has a branch with a large share
        assert all(max(result.shares(p).values()) >= 0.3 for p in result.predictions)
        # the detail pane shows the same quantity for the highlighted row
        console = Console(width=60, record=True, file=io.StringIO())
        console.print(app.query_one("#detail-fusion").content)
        fusion = console.export_text()
        first = result.shares(result.predictions[0])
        for branch in fake.branch_names:
            line = next(line for line in fusion.splitlines() if line.startswith(branch))
            assert line.rstrip().endswith(f"{first[branch]:.0%}")


def test_branch_shares_are_weighted_probabilities():
    shares = branch_shares({"a": 0.5, "b": 0.5}, {"a": 0.0, "b": 0.0})
    assert shares == {"a": 0.5, "b": 0.5}
    shares = branch_shares({"a": 0.9, "b": 0.1}, {"a": -8.0, "b": 8.0})
    assert shares["b"] > 0.95  # a confident "no", however trusted, is a small part of the decision
    assert branch_shares({"a": 1.0}, {"a": float("nan")}) == {"a": 0.0}


# ----------------------------------------------------------------------------------- width
@pytest.mark.parametrize("width", [80, 100, 140, 160])
async def test_columns_fit_the_terminal_and_the_name_takes_the_slack(fake, width):
    app = ExploreApp(fake)
    async with app.run_test(size=(width, 36)) as pilot:
        await run_query(pilot, "germ", "bord")
        await pilot.press("f")  # known answers shown: the widest known column
        await wait_until(pilot, lambda: app.results_shown == 2)
        await settle(pilot)
        table = app.query_one(ResultsTable)
        assert table.virtual_size.width <= table.scrollable_content_region.width  # nothing clipped
        assert str(table.columns["known"].label) == "known"
        name = table.columns["entity"].width
        assert name >= NAME_MIN
        if width >= 120:
            # names were cut at 14 characters at 140 columns ("International …"): now they fit
            assert name >= max(len(p.entity.name) for p in table.result.predictions)


async def test_wider_terminals_give_the_name_column_more_room(fake):
    widths = {}
    for width in (120, 160):
        app = ExploreApp(fake)
        async with app.run_test(size=(width, 30)) as pilot:
            await run_query(pilot, "france", "bord")
            widths[width] = app.query_one(ResultsTable).columns["entity"].width
    assert widths[160] > widths[120]


# ------------------------------------------------------------------------------ query bar
async def test_picking_a_new_head_keeps_the_old_rows_until_enter(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        calls, shown = list(fake.calls), app.results_shown
        await pilot.press("slash", *"euro")
        await wait_until(pilot, lambda: app.query_bar.suggested_for == "euro")
        await pilot.press("enter")
        await settle(pilot)
        assert fake.calls == calls and app.results_shown == shown  # no surprise query
        assert app.query_one(ResultsTable).result.entity.name == "France"  # the old rows stay
        assert "Enter ranks (Euro, shares border with, ?)" in status(app)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.results_shown > shown)
        assert "(Euro, shares border with, ?)" in status(app) and fake.calls[-1][:2] == (11, 0)


def test_relation_suggestions_tolerate_typos_and_show_the_inverse_mark(fake):
    relations = fake.relations()
    assert [r.label for r in match_relations(relations, "shres bordr")] == [
        "shares border with", "← shares border with"
    ]
    assert [r.label for r in match_relations(relations, "<- uses curency")] == ["← uses currency"]


async def test_inverse_suggestions_say_how_to_type_them(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("tab")
        assert app.focused.id == "relation"
        prompts = [str(o.prompt) for o in app.query_bar.suggestions("relation").options]
        inverse = [p for p in prompts if p.startswith("←")]
        assert inverse and all("type <-" in p for p in inverse)
        assert "<-" in app.query_one("#relation").placeholder


async def test_a_stale_error_goes_away_while_typing(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        app.request("Atlantis", "shares border with")
        await wait_until(pilot, lambda: app.results_shown == 1)
        assert "no entity matches 'Atlantis'" in status(app) and app.focused.id == "head"
        await pilot.press("x")
        assert "Atlantis" not in status(app) and "Type a head entity" in status(app)


async def test_enter_on_an_empty_head_says_what_is_missing(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("enter")
        assert "Type a head entity first" in status(app) and app.focused.id == "head"
        assert app.results_shown == 0


async def test_f_and_k_keep_the_cursor_on_its_entity(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await run_query(pilot, "germ", "bord")
        table = app.query_one(ResultsTable)
        await pilot.press("down", "down")
        entity = table.current.entity
        for key, count in (("f", 2), ("k", 3), ("f", 4)):
            await pilot.press(key)
            await wait_until(pilot, lambda: app.results_shown == count)
            await settle(pilot)
            assert table.current.entity == entity, key
            assert str(app.query_one("#detail-title").render()).startswith(entity.name)


# ------------------------------------------------------------------------------ run picker
class FakeRuns:
    """Two finished runs of the fake dataset; opening one builds a fresh fake service."""

    def __init__(self, image: str, root: Path):
        self.image = image
        self.runs = [
            RunInfo(root / "countries-fake-a", "finished", dataset="countries-fake",
                    modalities=("structure", "visual", "text"), epochs=80, max_epochs=80, valid_mrr=0.41),
            RunInfo(root / "countries-fake-b", "finished", dataset="countries-fake",
                    modalities=("structure",), epochs=80, max_epochs=80, valid_mrr=0.39),
        ]
        for run in self.runs:
            run.path.mkdir(parents=True)
            (run.path / "best.pt").write_bytes(b"")
        self.opened: list[Path] = []

    def list(self):
        return list(self.runs)

    def open(self, path):
        self.opened.append(path)
        return FakeService(self.image)


async def test_r_lists_the_runs_and_switches_to_the_one_picked(fake, flag, tmp_path):
    runs = FakeRuns(str(flag), tmp_path / "runs")
    app = ExploreApp(fake, runs=runs, run_path=runs.runs[0].path, subtitle="countries-fake · countries-fake-a")
    async with app.run_test(size=(120, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        await pilot.press("r")
        assert isinstance(app.screen, RunPicker)
        picker = app.screen.query_one(DataTable)
        # Newest first, named without their dataset (one dataset listed: no dataset column).
        assert [str(picker.get_cell_at((i, 1))) for i in range(2)] == ["b", "a"]
        assert str(picker.get_cell_at((1, 0))) == "▶"  # the run shown now
        assert picker.cursor_row == 1  # the cursor starts on it, not on the newest
        shown = app.results_shown
        await pilot.press("up", "enter")  # the newest: b
        await wait_until(pilot, lambda: app.run_path == runs.runs[1].path and app.results_shown > shown)
        await settle(pilot)
        assert runs.opened == [runs.runs[1].path]
        assert app.sub_title == "countries-fake · b"
        assert "(France, shares border with, ?)" in status(app)  # the same query, on the new run
        assert app.service.wrapped is not fake


async def test_enter_in_the_run_picker_on_the_current_run_keeps_it(fake, flag, tmp_path):
    runs = FakeRuns(str(flag), tmp_path / "runs")
    app = ExploreApp(fake, runs=runs, run_path=runs.runs[0].path, subtitle="countries-fake · countries-fake-a")
    async with app.run_test(size=(120, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        await pilot.press("r", "enter")
        await settle(pilot)
        assert not isinstance(app.screen, RunPicker)
        assert runs.opened == [] and app.service.wrapped is fake and app.run_path == runs.runs[0].path


async def test_without_a_run_source_r_does_nothing(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        app.table.focus()
        await pilot.press("r")
        assert not isinstance(app.screen, RunPicker)
        assert "r" not in footer_keys(app)
