"""The explore TUI driven through Textual's Pilot, on the deterministic fake service."""

from __future__ import annotations

import io
import threading

from rich.console import Console
from textual.widgets import DataTable, Input

from imf_cli.tui.app import ExploreApp
from imf_cli.tui.detail import DetailPane
from imf_cli.tui.messages import Notice
from imf_cli.tui.results import ResultsTable
from tui.fake_service import FakeService
from tui.pilot import no_blink, run_query, settle, wait_until


def status(app) -> str:
    return str(app.query_one("#status").render())


def detail_text(app) -> str:
    names = ("title", "description", "image", "facts")
    return " ".join(str(app.query_one(f"#detail-{name}").render()) for name in names)


def rendered(static) -> str:
    console = Console(width=60, record=True, file=io.StringIO())
    console.print(static.content)
    return console.export_text()


def rows(app) -> list[str]:
    table = app.query_one(ResultsTable)
    return [p.entity.name for p in table.result.predictions] if table.result else []


async def test_type_a_head_pick_a_relation_get_rows(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        no_blink(app)
        await pilot.press(*"fra")
        await wait_until(pilot, lambda: app.query_one("#head-suggestions").is_open)
        prompts = [str(o.prompt) for o in app.query_one("#head-suggestions").options]
        assert prompts[0].startswith("France  country:FRA  A republic in")
        await pilot.press("enter")
        assert app.focused.id == "relation" and app.query_one("#head").value == "France"
        await pilot.press(*"bord")
        labels = [str(o.prompt) for o in app.query_one("#relation-suggestions").options]
        assert labels[0] == "shares border with" and len(labels) == 2
        assert labels[1].startswith("← shares border with  ") and labels[1].endswith("type <-")  # as fits
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.results_shown == 1)
        await settle(pilot)
        table = app.query_one(ResultsTable)
        assert table.row_count == 6  # 12 entities, 6 known neighbours hidden
        assert "(France, shares border with, ?)" in status(app) and "6 known hidden" in status(app)
        assert app.focused is table
        assert app.last_latency_ms is not None and app.last_latency_ms < 1000
        assert fake.calls == [(0, 0, 20, False)]


async def test_inverse_relation_asks_for_heads(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await run_query(pilot, "euro", "<cur")
        assert "(Euro, ← uses currency, ?)" in status(app)
        assert fake.calls[-1][:2] == (11, 7)


async def test_typed_relation_text_goes_to_the_service_with_its_mark(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        app.request("euro", "<- uses currency")
        await wait_until(pilot, lambda: app.results_shown == 1)
        await settle(pilot)
        assert "(Euro, ← uses currency, ?)" in status(app)
        assert fake.calls[-1][:2] == (11, 7)


async def test_known_toggle_changes_rows(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        hidden = rows(app)
        assert len(hidden) == 6 and "Germany" not in hidden
        await pilot.press("f")
        await wait_until(pilot, lambda: app.results_shown == 2)
        shown = rows(app)
        assert len(shown) == 12 and {"Germany", "Spain", "Switzerland"} <= set(shown)
        table = app.query_one(ResultsTable)
        known = {p.entity.name: str(table.get_cell(str(p.entity.id), "known")) for p in table.result.predictions}
        flags = [known[name] for name in ("Germany", "Spain", "Switzerland", "Portugal")]
        assert flags == ["train", "valid", "test", ""]
        assert "known shown" in status(app)
        await pilot.press("f")
        await wait_until(pilot, lambda: app.results_shown == 3)
        assert rows(app) == hidden


async def test_k_cycles_the_row_count(fake):
    app = ExploreApp(fake, rows=10)
    async with app.run_test(size=(100, 30)) as pilot:
        await run_query(pilot, "germ", "part")
        assert fake.calls[-1] == (1, 2, 10, False)
        for expected in (20, 50, 100, 10):
            before = app.results_shown
            await pilot.press("k")
            await wait_until(pilot, lambda: app.results_shown > before)
            assert app.rows == expected and fake.calls[-1][2] == expected


async def test_detail_pane_follows_the_cursor(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(130, 36)) as pilot:
        await run_query(pilot, "germ", "bord")
        await pilot.press("f")
        await wait_until(pilot, lambda: app.results_shown == 2)
        await settle(pilot)
        app.query_one(ResultsTable).move_cursor(row=0)
        await settle(pilot)
        first, second = app.query_one(ResultsTable).result.predictions[:2]
        assert first.entity.name in detail_text(app)
        await pilot.press("down")
        await settle(pilot)
        assert second.entity.name in detail_text(app) and f"rank {second.rank}" in detail_text(app)
        # down to France: description, image path, preview, and the explanation: rank, evidence, neighbours
        names = rows(app)
        for _ in range(names.index("France") - 1):
            await pilot.press("down")
        await settle(pilot)
        text = detail_text(app)
        assert "A republic in Western Europe" in text and "Image: images/flag_fra.png" in text
        assert "known: train" in text
        why = " ".join(rendered(app.query_one("#detail-facts")).split())
        assert "Germany shares border with France" in why or "France shares border with Germany" in why
        assert "rank 1 of" in why and "Evidence" in why and "Nearest neighbours" in why
        assert app.query_one("#detail-preview").display
        fusion = rendered(app.query_one("#detail-fusion"))
        assert "structure" in fusion and "multimodal" in fusion and "0.46" in fusion and "w×p" in fusion


async def test_unknown_entity_shows_a_message_and_no_crash(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        before = app.results_shown
        await pilot.press("slash")
        await pilot.press(*"Atlantis")
        await pilot.press("enter")  # no suggestion: on to the relation, which is still filled
        await wait_until(pilot, lambda: app.results_shown > before)
        assert "no entity matches 'Atlantis'" in status(app)
        assert app.query_one(ResultsTable).row_count == 0
        assert app.is_running
        # the head input has the focus, its text selected: the next query replaces it
        assert app.focused.id == "head" and app.focused.selected_text == "Atlantis"
        await run_query(pilot, "spa")  # the relation is still chosen: Enter runs the query
        assert "(Spain, shares border with, ?)" in status(app)


def test_printable_keeps_what_the_entity_store_can_hold():
    """The inputs drop or blank the same classes that the importer refuses (kgdata.files)."""
    from imf_cli.tui.query_bar import printable
    from kgdata.files import control_character

    assert printable("Ger\u2028many\u2029x\x85y") == "Ger many x y"
    assert printable("\u2066Paris\u2069 \u202bX") == "Paris X"
    for text in ("\x1b[31mFra\x07nce\u202e", "a\u2028b", "\u2067x\u2069\x9b", "\t\x00z"):
        assert control_character(printable(text)) is None, text
    assert printable("باريس\u200f ברלין") == "باريس\u200f ברלין"  # right-to-left text and its marks stay


async def test_pasted_escapes_and_control_characters_never_reach_the_inputs(fake):
    from textual import events

    from imf_cli.tui.query_bar import MAX_QUERY

    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        head = app.query_one("#head")
        head.post_message(events.Paste("\x1b[31mFra\x07nce\x1b[0m\u202e"))
        await wait_until(pilot, lambda: head.value == "Fra nce" or head.value == "France")
        assert head.value == "Fra nce"  # the bell became a space, the colour codes and the override are gone
        head.value = ""
        head.post_message(events.Paste("\x1b]0;pwned\x07Fra\tnce\r\nSpain"))
        await wait_until(pilot, lambda: head.value != "")
        assert head.value == "Fra nce"  # the window title sequence is dropped; only the first line is taken
        head.value = ""
        head.post_message(events.Paste("x" * 5000))
        await wait_until(pilot, lambda: head.value != "")
        assert head.value == "x" * MAX_QUERY
        await pilot.press("y")  # full: a key more is refused, not appended
        assert head.value == "x" * MAX_QUERY
        head.value = ""
        await run_query(pilot, "fra", "bord")  # the inputs still take typing
        assert "(France, shares border with, ?)" in status(app)


async def test_a_one_branch_run_shows_its_branch_score_and_no_share_bars():
    app = ExploreApp(FakeService(branches=("structure",)))
    async with app.run_test(size=(100, 30)) as pilot:
        await run_query(pilot, "fra", "bord")
        table = app.query_one(ResultsTable)
        labels = [str(column.label) for column in table.columns.values()]
        assert labels == ["#", "entity", "struct", "known"]  # no "fused", no 100% bar on every row
        assert "%" not in " ".join(str(cell) for cell in table.get_row_at(0))
        await wait_until(pilot, lambda: "structure score" in detail_text(app))
        why = str(app.query_one("#detail-fusion").render())
        assert "the structure branch alone scores this query" in why and "weight × probability" not in why


async def test_ambiguous_and_unknown_relation_text(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        head = app.query_one("#head")
        head.value = "republic"  # typed but not picked: the worker resolves the text
        app.query_one("#relation").value = "flies to"
        await pilot.pause()
        app.request("republic", "shares border with")
        await wait_until(pilot, lambda: app.results_shown == 1)
        assert "'republic' matches several entities: France [country:FRA]" in status(app)
        assert app.focused.id == "head"
        bar = app.query_bar  # its list is open on the candidates, to pick one (it stayed closed)
        await wait_until(pilot, lambda: bar.suggestions("head").is_open and bar.suggested_for == "republic")
        assert "France" in str(bar.suggestions("head").get_option_at_index(0).prompt)
        app.request("France", "flies to")
        await wait_until(pilot, lambda: app.results_shown == 2)
        assert "no relation matches 'flies to'" in status(app)
        assert app.focused.id == "relation"


async def test_a_new_query_cancels_the_previous_one(flag):
    gate = threading.Event()
    fake = FakeService(str(flag), slow={0}, gate=gate)  # France's query waits for the gate
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        france, germany = fake.entity(0), fake.entity(1)
        border = fake.relations()[0]
        app.request(france, border)  # slow
        await wait_until(pilot, lambda: fake.calls)  # its worker is inside top_k
        app.request(germany, border)  # fast; cancels the first (and waits for the service's lock)
        assert app.results_shown == 0
        gate.set()  # the first query finishes now, before the newer one
        await wait_until(pilot, lambda: app.results_shown == 1)
        assert "(Germany," in status(app)
        await wait_until(pilot, lambda: fake.finished == [france.id, germany.id])
        await settle(pilot)
        assert app.results_shown == 1 and "(Germany," in status(app)
        assert app.query_one(ResultsTable).result.entity == germany


async def test_enter_on_a_row_explores_from_it_and_b_goes_back(fake, monkeypatch):
    monkeypatch.setattr("imf_cli.tui.app.ENTER_GUARD", 0.0)  # the row's Enter comes at once here
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await run_query(pilot, "italy", "bord")
        first = rows(app)[0]
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.results_shown == 2)
        assert f"({first}, shares border with, ?)" in status(app)
        assert app.query_one("#head").value == first
        await pilot.press("b")
        await wait_until(pilot, lambda: app.results_shown == 3)
        assert "(Italy, shares border with, ?)" in status(app)


async def test_a_doubled_enter_after_picking_the_relation_stays_on_the_query(fake, monkeypatch):
    """Picking the relation with Enter runs the query and puts the cursor on the first row; an Enter
    pressed twice out of habit took that row's entity as the new head. Within ENTER_GUARD, Enter on the
    row the cursor has not left does nothing; once the cursor moves, Enter explores at once."""
    monkeypatch.setattr("imf_cli.tui.app.ENTER_GUARD", 60.0)  # a slow test machine stays inside it
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await run_query(pilot, "italy", "bord")
        await pilot.press("enter")
        await settle(pilot)
        assert app.results_shown == 1 and "(Italy, shares border with, ?)" in status(app)
        second = rows(app)[1]
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: app.results_shown == 2)
        assert f"({second}, shares border with, ?)" in status(app)


async def test_the_enter_guard_counts_from_the_key_press_and_the_drawn_rows_not_from_a_busy_app(fake, monkeypatch):
    """On a loaded machine the second Enter of a double press was handled more than ENTER_GUARD after the
    rows were focused and explored from row 1. The guard now compares the key's own press time with the
    refresh that drew the rows: pressed before that (or within the guard after), it stays on the query."""
    from textual import events

    # a long guard, so that handling the keys (however slow this machine is) decides nothing: the press
    # times alone do (the old code timed the handling, and swallowed both Enters below)
    monkeypatch.setattr("imf_cli.tui.app.ENTER_GUARD", 30.0)
    app = ExploreApp(fake)

    def enter_pressed_at(when: float) -> None:
        key = events.Key("enter", "\r")
        key.time = when  # pressed then, handled whenever the app gets to it
        key.set_sender(app)
        app._driver.send_message(key)

    async with app.run_test(size=(100, 30)) as pilot:
        await run_query(pilot, "italy", "bord")
        await settle(pilot)
        assert app.results_shown == 1 and isinstance(app.focused, ResultsTable)
        drawn, row = app._focused_by_query
        assert row == 0 and drawn > float("-inf")
        enter_pressed_at(drawn - 0.2)
        await settle(pilot)
        enter_pressed_at(drawn + 29.0)
        await settle(pilot)
        assert app.results_shown == 1 and "(Italy, shares border with, ?)" in status(app)
        first = rows(app)[0]
        enter_pressed_at(drawn + 31.0)  # past the guard: the user saw the rows and chose the first
        await wait_until(pilot, lambda: app.results_shown == 2)
        assert f"({first}, shares border with, ?)" in status(app)


async def test_a_notice_goes_when_the_query_is_edited_and_not_when_the_pick_that_led_to_it_lands(fake):
    """"Enter ranks (Spain, exports to, ?)" stayed while the user typed another relation, and "Type a head
    entity first" after they had picked one: notices now clear on the next edit, as errors do."""
    app = ExploreApp(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("enter")  # nothing typed
        await settle(pilot)
        assert "Type a head entity first" in status(app)
        await pilot.press("f", "r")
        await settle(pilot)
        assert "Type a head entity first" not in status(app)
        app.query_bar.head_input.value = ""
        await run_query(pilot, "italy", "bord")
        await settle(pilot)
        assert app.results_shown == 1
        app._notice(Notice("Enter ranks (Italy, shares border with, ?); Tab changes the relation."))
        app.query_bar.head_input.focus()
        await settle(pilot)
        app.query_bar.head_input.post_message(Input.Changed(app.query_bar.head_input, "Italy"))  # the pick, late
        await settle(pilot)
        assert "Enter ranks (Italy" in status(app)
        app.query_bar.relation_input.focus()
        await settle(pilot)
        await pilot.press("x")
        await settle(pilot)
        assert "Enter ranks" not in status(app)


async def test_keys_help_and_quit(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await run_query(pilot, "france", "bord")
        await pilot.press("question_mark")
        assert app.screen.__class__.__name__ == "HelpScreen"
        await pilot.press("escape")
        assert app.screen.__class__.__name__ != "HelpScreen"
        await pilot.press("slash")
        assert app.focused.id == "head"
        await pilot.press("down")  # no suggestions open: down goes to the results
        assert isinstance(app.focused, DataTable)
        footer_keys = {b.key for _, b, enabled, *_ in app.active_bindings.values() if b.show and enabled}
        assert {"slash", "f", "k", "b", "f1", "ctrl+q"} <= footer_keys
        await pilot.press("q")
        assert not app.is_running


async def test_layout_stacks_below_120_columns(fake):
    for size, narrow in (((80, 24), True), ((140, 40), False)):
        app = ExploreApp(fake)
        async with app.run_test(size=size) as pilot:
            await run_query(pilot, "france", "bord")
            assert app.query_one("#body").has_class("-narrow") is narrow
            table, detail = app.query_one(ResultsTable), app.query_one(DetailPane)
            assert table.region.width > 0 and detail.region.width > 0 and detail.region.height > 0
            if narrow:
                assert table.region.width == detail.region.width == 80
                # every column fits: no horizontal scrolling at 80 columns
                assert table.virtual_size.width <= table.scrollable_content_region.width
            else:
                assert detail.region.x >= table.region.right


async def test_results_that_arrive_under_the_help_screen_are_shown(flag):
    gate = threading.Event()
    fake = FakeService(str(flag), gate=gate)  # every query waits for the gate
    app = ExploreApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        app.request(fake.entity(3), fake.relations()[0])
        app.table.focus()
        await pilot.press("question_mark")
        assert app.screen.__class__.__name__ == "HelpScreen" and app.results_shown == 0
        gate.set()  # the results arrive while the help screen is up
        await wait_until(pilot, lambda: app.results_shown == 1)
        assert app.screen.__class__.__name__ == "HelpScreen"
        await pilot.press("escape")
        assert rows(app) and "(Italy, shares border with, ?)" in status(app)


async def test_after_a_resize_from_wide_to_60_columns_every_results_column_is_on_screen(fake):
    app = ExploreApp(fake)
    async with app.run_test(size=(130, 30)) as pilot:
        await run_query(pilot, "france", "bord")
        table = app.query_one(ResultsTable)
        for width in (60, 100, 60):
            await pilot.resize_terminal(width, 20)
            await settle(pilot)
            assert table.size.width == width
            assert table.virtual_size.width <= table.scrollable_content_region.width, width


async def test_the_stacked_detail_pane_puts_its_columns_one_under_the_other_below_76_columns(fake):
    """At 60 columns the entity column beside the 40-cell scores column left the description 3 cells."""
    for width, stacked in ((60, True), (80, False)):
        app = ExploreApp(fake)
        async with app.run_test(size=(width, 24)) as pilot:
            await run_query(pilot, "france", "bord")
            await settle(pilot)
            about, scores = app.query_one("#detail-about"), app.query_one("#detail-scores")
            description = app.query_one("#detail-description")
            if stacked:
                assert scores.region.y >= about.region.bottom and description.region.width >= 30
            else:
                assert scores.region.x >= about.region.right and scores.region.y == about.region.y


def test_the_results_columns_fit_a_60_column_terminal_without_scrolling():
    """At 60 columns the bars' narrowest width left the name column short and pushed 'known' off the
    edge; the bars now give way to the percentages alone."""
    from imf_cli.tui.results import FUSED, NAME_MIN, PADDING, RANK, SCROLLBAR, column_widths

    four = ("structure", "visual", "text", "multimodal")
    for branches in (("structure", "text", "multimodal"), four):
        for width in (60, 66, 72):
            widths = column_widths(width, branches, known=5, longest=30)
            total = (RANK + widths.name + FUSED + widths.known + PADDING * (4 + len(branches)) + SCROLLBAR
                     + sum(max(widths.bar + widths.share, len(label)) for label in widths.labels))
            assert widths.name >= NAME_MIN and total <= width, (branches, widths, total)
    # four branches at 60 columns: headed by letters over 4-cell percentages (the 'known' column fell
    # off the edge after a resize from a wide terminal); from 66 the short names are back
    assert column_widths(60, four, known=5, longest=30).labels == ("S", "V", "T", "M")
    assert column_widths(66, four, known=5, longest=30).labels == ("struct", "visual", "text", "multi")
    assert column_widths(60, ("structure", "text", "multimodal"), known=5, longest=30).bar == 0
    assert column_widths(120, ("structure", "text", "multimodal"), known=5, longest=30).bar == 10


async def test_head_suggestions_fit_their_list_in_a_narrow_terminal(fake):
    """At 60 columns the prompts were laid out for a 30-cell list in a 22-cell one, and every
    description wrapped onto a line of its own."""
    from rich.cells import cell_len

    app = ExploreApp(fake)
    async with app.run_test(size=(60, 20)) as pilot:
        await pilot.press(*"fra")
        await wait_until(pilot, lambda: app.query_one("#head-suggestions").is_open)
        suggestions = app.query_one("#head-suggestions")
        room = suggestions.content_region.width
        assert all(cell_len(str(option.prompt)) <= room for option in suggestions.options), (
            room, [str(o.prompt) for o in suggestions.options])


async def test_a_short_terminal_shows_result_rows_and_d_toggles_the_detail_pane(fake):
    """At 40×12 the stacked detail pane left the table its header alone; the status line wrapped a
    one-line summary onto three lines. Now the pane waits for ``d`` there, and the summary keeps one line."""
    app = ExploreApp(fake)
    async with app.run_test(size=(40, 12)) as pilot:
        await run_query(pilot, "france", "bord")
        table, detail = app.query_one(ResultsTable), app.query_one(DetailPane)
        assert not detail.display or detail.region.height == 0
        assert app.query_one("#status").region.height == 1
        assert table.region.height >= 5  # the header and at least four rows
        await pilot.press("d")
        await settle(pilot)
        assert detail.region.height > 0
        await pilot.press("d")
        await settle(pilot)
        assert detail.region.height == 0 and table.region.height >= 5
    app = ExploreApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await run_query(pilot, "france", "bord")
        table, detail = app.query_one(ResultsTable), app.query_one(DetailPane)
        before = table.region.height
        assert detail.region.height > 0
        await pilot.press("d")
        await settle(pilot)
        assert detail.region.height == 0 and table.region.height > before
        await pilot.press("d")
        await settle(pilot)
        assert detail.region.height > 0 and table.region.height == before


async def test_with_image_drawing_off_the_image_is_named_not_called_unreadable(flag):
    fake = FakeService(str(flag))
    app = ExploreApp(fake, image="none")
    async with app.run_test(size=(130, 36)) as pilot:
        await run_query(pilot, "germ", "bord")
        await pilot.press("f")
        await wait_until(pilot, lambda: app.results_shown == 2)
        names = rows(app)
        app.query_one(ResultsTable).move_cursor(row=names.index("France"))
        await settle(pilot)
        text = detail_text(app)
        assert "Image: images/flag_fra.png" in text and "unreadable" not in text
        assert not app.query_one("#detail-preview").display


def test_scores_show_as_many_decimals_as_their_column_holds():
    from imf_cli.tui.render import score_text

    assert [score_text(x) for x in (0.0412, 0.0378, -1.23456, -12.3456, 123.456, -1234.5, 123456.7)] == [
        "0.041", "0.038", "-1.235", "-12.35", "123.46", "-1234", "123457"
    ]
