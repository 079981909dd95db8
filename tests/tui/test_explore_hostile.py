"""The explore TUI driven as a careless user would: typing while a query runs, keys that cannot apply,
relation keys that look like inverse marks, a run picker with a damaged run."""

from __future__ import annotations

import threading

from rich.text import Text
from textual.widgets import DataTable

from imf_cli.runs import RunInfo
from imf_cli.service import EntityInfo, RelationChoice
from imf_cli.tui.app import ExploreApp
from imf_cli.tui.query_bar import match_relations
from imf_cli.tui.render import run_label
from imf_cli.tui.run_picker import RunPicker
from imf_cli.unseen import missing_features_advice
from tui.fake_service import FakeService
from tui.pilot import run_query, settle, type_head, wait_until


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
    def why_no_new_entities(self, quick=False):
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


async def test_the_status_line_keeps_the_query_and_the_end_of_the_run_name_at_80_columns(fake):
    subtitle = run_label("countries-mm", "countries-mm-20261205-021538-488446")
    assert subtitle == "countries-mm · 20261205-021538-488446"
    app = ExploreApp(fake, subtitle="countries-mm · countries-mm-20261205-021538-488446")
    async with app.run_test(size=(80, 24)) as pilot:
        await run_query(pilot, "france", "bord")
        line = status(app)
        assert "(France, shares border with, ?)" in line and "rows" in line
        # What tells two runs of a dataset apart is the end of their names: it stays, the start gives way.
        assert line.startswith(" …") and "021538-488446 " in line
        await pilot.resize_terminal(60, 24)
        await pilot.pause()
        narrower = status(app)
        assert "(France, shares border with, ?)" in narrower and "488446 " in narrower
        assert len(narrower.split("  (")[0]) < len(line.split("  (")[0])  # the label refitted to the new width


async def test_a_status_message_too_long_for_three_lines_ends_in_an_ellipsis(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        app._status(Text("word " * 100 + "END"), wrap=True)
        await pilot.pause()
        line = status(app)
        assert "END" not in line and line.rstrip().endswith("…") and len(line) <= 3 * 78
        opened = ExploreApp(fake, opened_because="x-run, the newest finished run with the most branches " * 6)
    async with opened.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        label, _, rest = status(opened).strip().partition("  ")
        assert rest.startswith("F1 help")  # the way to help comes before the long reason
    because = ("countries-mm-20261205-172233, the newest finished run with the most branches (4: structure, visual, "
               "text, multimodal); newer: countries-mm-20261205-180004 (finished, structure)")
    usual = ExploreApp(fake, opened_because=because)
    async with usual.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        shown = " ".join(status(usual).split())
        assert shown.endswith("newer: countries-mm-20261205-180004 (finished, structure)."), shown  # all of it


async def test_switching_to_a_run_that_cannot_rank_new_entities_turns_n_off(flag):
    app = ExploreApp(FakeService(str(flag)))
    async with app.run_test(size=(100, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        await pilot.press("n")
        await wait_until(pilot, lambda: app.results_shown == 2)
        assert app.include_new
        shown = app.results_shown
        app.switch_service(NoNewEntities(str(flag)))
        await wait_until(pilot, lambda: app.results_shown > shown)
        await settle(pilot)
        assert not app.include_new
        assert "(France, shares border with, ?)" in status(app) and "new entities" not in status(app)


async def test_f_pressed_while_back_is_still_ranking_applies_to_the_query_it_goes_back_to(flag):
    gate = threading.Event()
    gate.set()
    fake = FakeService(str(flag), slow={0}, gate=gate)
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        await pilot.pause(0.6)  # past the doubled-Enter guard
        await pilot.press("down", "down")
        explored_from = app.table.current.entity.id
        await pilot.press("enter")  # explore from the third row
        await wait_until(pilot, lambda: app.results_shown == 2)
        await settle(pilot)
        gate.clear()  # France's queries now wait: b is still ranking when f is pressed
        shown = app.results_shown
        await pilot.press("b")
        await wait_until(pilot, lambda: fake.calls and fake.calls[-1][0] == 0)
        await pilot.press("f")
        gate.set()
        await wait_until(pilot, lambda: app.results_shown > shown)
        await pilot.pause(0.3)
        assert app.include_known and app.table.result.hidden_known == 0 and "known shown" in status(app)
        # Back on the entity explored from (the known answers, now shown, moved it down).
        assert app.table.current.entity.id == explored_from and app.table.cursor_row > 2


async def test_k_pressed_while_an_explore_is_still_ranking_keeps_the_way_back(flag):
    gate = threading.Event()
    gate.set()
    fake = FakeService(str(flag), slow=None, gate=gate)
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        await pilot.pause(0.6)  # past the doubled-Enter guard
        await pilot.press("down")
        target = app.table.current.entity.id
        gate.clear()  # the explore waits: k is pressed before its answer
        shown = app.results_shown
        await pilot.press("enter")
        await wait_until(pilot, lambda: fake.calls and fake.calls[-1][0] == target)
        await pilot.press("k")
        gate.set()
        await wait_until(pilot, lambda: app.results_shown > shown and app.current[0].id == target)
        await settle(pilot)
        assert [query[0].name for query, _ in app.history] == ["France"]
        shown = app.results_shown
        await pilot.press("b")
        await wait_until(pilot, lambda: app.results_shown > shown)
        assert app.current[0].name == "France"


async def test_home_and_end_go_to_the_first_and_last_row(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        await pilot.press("end")
        assert app.table.cursor_row == app.table.row_count - 1 > 0
        await pilot.press("home")
        assert app.table.cursor_row == 0


async def test_at_40_columns_one_column_names_the_branch_that_weighs_most(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(40, 12)) as pilot:
        await run_query(pilot, "france", "bord")
        table = app.table
        assert [str(c.label) for c in table.columns.values()][-2:] == ["top", "known"]
        assert sum(c.get_render_width(table) for c in table.columns.values()) <= table.size.width
        assert str(table.get_row_at(0)[3]).strip()[:1] in "SVTM"


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


async def test_a_search_that_finds_the_dataset_locked_says_so(fake):
    import sqlite3

    def locked(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    fake.search_entities = locked
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"Germ")
        await wait_until(pilot, lambda: "busy" in status(app))
        assert "another imf process is writing it" in status(app)


def test_suggestions_are_cut_to_the_width_of_their_list():
    """The option list wraps a prompt wider than itself (no_wrap notwithstanding): an inverse relation
    took two lines at 80 columns, an added entity's badge four at 40."""
    from imf_cli.tui.query_bar import entity_prompt, relation_prompt

    inverse = RelationChoice(3, "shares_border_with", "shares border with", True)
    for width in (12, 30, 60):
        assert relation_prompt(inverse, width).cell_len <= width
    added = EntityInfo(9, "country:BWR", "Brightwater", "A made-up country " * 10, None, added=True)
    for width in (12, 30, 60):
        assert entity_prompt(added, width).cell_len <= width
    # the badge stays whole where the name, key or markup-like text would have pushed it out (at 80 columns)
    for name in ("Zanzibaria", "[bold]Markup[/] Land [red]x[/red]", "Ώ" * 60, "中" * 40):
        shown = entity_prompt(EntityInfo(9, "zanz", name, "An island.", None, added=True), 40)
        assert (" new " in shown.plain or " not in " in shown.plain) and shown.cell_len <= 40, shown.plain
    assert entity_prompt(EntityInfo(9, "zanz", "Zanzibaria", None, None, added=True), 40).plain.rstrip() == (
        "Zanzibaria  zanz   not in graph"
    )
    assert "not in training graph" in entity_prompt(EntityInfo(9, "zanz", "Zanzibaria", None, None, added=True), 60).plain
    assert relation_prompt(inverse, 200).plain == "← shares border with  predicts heads · type <- for inverses"
    assert relation_prompt(inverse, 40).plain == "← shares border with  heads · type <-"


async def test_a_run_directory_removed_while_open_is_said_on_the_next_answer(fake, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    fake.run_dir = run
    app = ExploreApp(fake)
    async with app.run_test(size=(160, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        assert "gone" not in status(app)
        run.rmdir()
        shown = app.results_shown
        await pilot.press("k")
        await wait_until(pilot, lambda: app.results_shown > shown)
        assert "its run directory is gone" in status(app)


async def test_a_status_message_of_long_words_is_cut_where_it_shows_not_past_the_third_line(fake):
    """A message under 3 × 78 cells whose long words wrapped onto a fourth line (a checkpoint path, a list
    of relations) lost its end to the status's max-height, with no "…"."""
    from textual.content import Content

    app = ExploreApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        words = [f"/tmp/a-long-path-{i}/" + "x" * 44 for i in range(4)]  # 62 cells each: one per line
        app._status(Text(" ".join(words) + " END"), wrap=True)
        await pilot.pause()
        shown = app.query_one("#status").render()
        lines = Content.from_rich_text(shown).wrap(78) if isinstance(shown, Text) else shown.wrap(78)
        assert len(lines) <= 3 and str(lines[-1]).rstrip().endswith("…"), [str(line) for line in lines]
        assert "END" not in str(shown)
        app._status(Text("short words " * 5 + "END"), wrap=True)
        await pilot.pause()
        assert status(app).rstrip().endswith("END")  # what fits is not cut


async def test_open_suggestions_are_refitted_when_the_terminal_is_resized(fake):
    """Typed at 120 columns, then resized to 80: each suggestion wrapped onto two lines, and only two showed."""
    app = ExploreApp(fake)
    async with app.run_test(size=(120, 30)) as pilot:
        bar = await type_head(pilot, "re")
        await pilot.press("down")
        highlighted = bar.suggestions("head").highlighted
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        await pilot.pause()
        suggestions = bar.suggestions("head")
        width = bar.query_one("#head-field").size.width - 6
        prompts = [suggestions.get_option_at_index(i).prompt for i in range(suggestions.option_count)]
        assert prompts and all(prompt.cell_len <= width for prompt in prompts), (width, [p.cell_len for p in prompts])
        assert suggestions.highlighted == highlighted  # the row the user was on


async def test_a_long_description_ends_in_an_ellipsis_where_the_pane_cuts_it_at_any_width(fake):
    """The pane's max-height cut Azerbaijan's description mid-sentence ("incorporated into") without a
    sign; it is now cut to the lines shown, ending in "…", and fitted again when the terminal is resized."""
    from dataclasses import replace

    from imf_cli.tui.detail import DESCRIPTION_LINES, FittedText
    from imf_cli.tui.render import _wrapped_lines

    app = ExploreApp(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await run_query(pilot, "italy", "bord")
        await settle(pilot)
        result = app.table.result
        long = replace(result.predictions[0], entity=replace(result.predictions[0].entity, description=" ".join(
            f"word{i}" for i in range(200))))
        app.detail.shown = None  # the same row: show it again with the long text
        app.detail.show(result, long)
        # where the pane is under about 27 cells wide, 320 characters take more than its 12 lines
        for size in ((34, 40), (28, 40), (120, 40), (24, 40)):
            await pilot.resize_terminal(*size)
            await settle(pilot)
            pane = app.query_one("#detail-description", FittedText)
            shown = pane.visual.plain if hasattr(pane.visual, "plain") else str(pane.visual)
            assert shown.endswith("…"), (size, shown[-40:])
            assert long.entity.description.startswith(shown[:-1].rstrip() + " "), shown[-40:]  # at a word's end
            assert _wrapped_lines(Text(shown), pane.content_size.width) <= DESCRIPTION_LINES


async def test_the_row_the_pane_describes_stays_in_view_when_the_pane_takes_the_rows_it_was_on(fake):
    """At 40×12, d showed the pane for row 4 while the table, shortened to one row, showed row 1."""
    app = ExploreApp(fake)
    async with app.run_test(size=(40, 12)) as pilot:
        await run_query(pilot, "france", "bord")
        table = app.table
        if app.detail.display:
            await pilot.press("d")  # start with the pane hidden, whichever way the width decides
            await settle(pilot)
        await pilot.press("down", "down", "down")
        await settle(pilot)
        row = table.cursor_row
        assert row == 3
        await pilot.press("d")
        await settle(pilot)
        await pilot.pause(0.1)
        assert app.detail.display
        top = round(table.scroll_y)
        visible = table.scrollable_content_region.height - 1  # less the header row
        assert top <= row < top + max(visible, 1), (top, visible, row)
