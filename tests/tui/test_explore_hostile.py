"""The explore TUI driven as a careless user would: typing while a query runs, keys that cannot apply,
relation keys that look like inverse marks, a run picker with a damaged run."""

from __future__ import annotations

import threading

from textual.widgets import DataTable

from imf_cli.runs import RunInfo
from imf_cli.service import EntityInfo, RelationChoice
from imf_cli.tui.app import ExploreApp
from imf_cli.tui.query_bar import match_relations
from imf_cli.tui.run_picker import RunPicker
from imf_cli.unseen import missing_features_advice
from tui.fake_service import FakeService
from tui.pilot import run_query, settle, wait_until


def status(app) -> str:
    return str(app.query_one("#status").render())


async def test_results_that_arrive_while_the_user_types_leave_the_input_and_the_focus_alone(flag):
    gate = threading.Event()
    fake = FakeService(str(flag), slow={0}, gate=gate)
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        app.request(fake.entity(0), fake.relations()[0])  # asked from the head input, which has focus
        await wait_until(pilot, lambda: fake.calls)
        await pilot.press(*"Ita")  # the user starts the next query before the answer comes
        gate.set()
        await wait_until(pilot, lambda: app.results_shown == 1)
        await settle(pilot)
        assert app.focused is app.query_bar.head_input and app.query_bar.head_input.value == "Ita"
        assert app.query_one("#results", DataTable).row_count > 0  # the answer is shown all the same
        await pilot.press("q")  # a letter: still typed into the input, not the table's quit key
        assert app.is_running and app.query_bar.head_input.value == "Itaq"


async def test_an_answer_to_an_untouched_query_bar_moves_the_focus_to_the_rows(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        assert app.focused is app.table
        assert app.query_bar.head_input.value == "France"


async def test_queries_superseded_while_they_wait_for_the_service_are_never_ranked(flag):
    gate = threading.Event()
    fake = FakeService(str(flag), slow={0}, gate=gate)
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        border = fake.relations()[0]
        app.request(fake.entity(0), border)  # holds the service's lock until the gate opens
        await wait_until(pilot, lambda: fake.calls)
        for entity in (1, 2, 3, 4):  # typed quickly: each waits for the lock, each cancels the one before
            app.request(fake.entity(entity), border)
            await pilot.pause(0.05)
        gate.set()
        await wait_until(pilot, lambda: app.results_shown == 1)
        await settle(pilot)
        assert [call[0] for call in fake.calls] == [0, 4]
        assert "(Belgium," in status(app)


def test_a_relation_key_that_starts_with_an_inverse_mark_is_offered_forward_first():
    relations = [
        RelationChoice(0, "<http://ex.org/rel>", "<http://ex.org/rel>"),
        RelationChoice(1, "<- tricky", "<- tricky"),
        RelationChoice(2, "born_in", "born in"),
    ]
    relations += [RelationChoice(r.id + 3, r.key, r.name, inverse=True) for r in relations]
    first = match_relations(relations, "<http://ex.org/rel>")[0]
    assert (first.key, first.inverse) == ("<http://ex.org/rel>", False)
    assert [(r.key, r.inverse) for r in match_relations(relations, "<- tri")][:1] == [("<- tricky", False)]
    # A plain inverse mark still asks for inverses, forward relations being listed only when the text
    # as typed begins their key.
    assert [(r.key, r.inverse) for r in match_relations(relations, "<- born")] == [("born_in", True)]


class NoNewEntities(FakeService):
    def why_no_new_entities(self):
        return "this run has only a structure branch"


async def test_n_on_a_run_that_cannot_rank_new_entities_is_refused_and_queries_still_work(flag):
    app = ExploreApp(NoNewEntities(str(flag)))
    async with app.run_test(size=(100, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        shown = app.results_shown
        await pilot.press("n")
        await settle(pilot)
        assert not app.include_new and app.results_shown == shown
        assert "only a structure branch" in status(app)
        assert app.query_one("#results", DataTable).row_count > 0  # the rows stay
        await pilot.press("k")
        await wait_until(pilot, lambda: app.results_shown > shown)
        assert "(France, shares border with, ?)" in status(app)


async def test_b_without_history_says_so(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        await pilot.press("b")
        assert "no earlier query" in status(app)


async def test_the_status_line_keeps_the_query_at_80_columns_with_a_long_run_name(fake):
    subtitle = "countries-mm · countries-mm-20261205-021538-488446"
    app = ExploreApp(fake, subtitle=subtitle)
    async with app.run_test(size=(80, 24)) as pilot:
        await run_query(pilot, "france", "bord")
        line = status(app)
        assert "(France, shares border with, ?)" in line and "rows" in line
        assert line.startswith(" countries-mm ·") and subtitle not in line


async def test_the_run_picker_names_a_missing_checkpoint_and_marks_the_run(fake, tmp_path):
    missing = tmp_path / "runs" / "countries-fake-missing"
    missing.mkdir(parents=True)  # finished, but best.pt and last.pt are gone

    class Runs:
        def list(self):
            return [RunInfo(missing, "finished", dataset="countries-fake", modalities=("structure",), epochs=3)]

        def open(self, path):
            raise AssertionError("a run without a checkpoint must not be opened")

    app = ExploreApp(fake, runs=Runs())
    async with app.run_test(size=(120, 30)) as pilot:
        app.table.focus()
        await pilot.press("r")
        assert isinstance(app.screen, RunPicker)
        assert app.screen.query_one(DataTable).get_cell_at((0, 2)).style == "red"
        await pilot.press("enter")
        note = str(app.screen.query_one("#picker-note").render())
        assert "has no checkpoint" in note and "finished" not in note


def test_an_added_entity_with_a_description_is_told_to_encode_it():
    described = EntityInfo(20, "country:NEW", "Newland", "A new republic.", None, True)
    bare = EntityInfo(21, "country:BARE", "Bare", None, None, True)
    assert missing_features_advice(described, ("text",), "cm") == (
        "it has a description not encoded yet: run imf encode cm --modality text"
    )
    assert missing_features_advice(bare, ("visual", "text"), "cm") == (
        "it needs an image or a description; add them and run imf encode cm"
    )
