"""Snapshots of the explore screens on the deterministic fake service (pytest-textual-snapshot).

Update after a deliberate change of the UI with ``pytest tests/tui --snapshot-update`` and look at the
SVGs under ``tests/tui/__snapshots__``.
"""

from __future__ import annotations

from imf_cli.tui.app import ExploreApp
from tui.pilot import no_blink, run_query, settle


def test_results_screen_80x24(fake, snap_compare):
    async def query(pilot):
        no_blink(pilot.app)
        await run_query(pilot, "france", "bord")
        await pilot.press("down")
        await settle(pilot)

    assert snap_compare(ExploreApp(fake, show_latency=False), run_before=query, terminal_size=(80, 24))


def test_detail_pane_with_image_and_known_facts_130x36(fake, snap_compare):
    async def query(pilot):
        no_blink(pilot.app)
        await run_query(pilot, "germ", "bord")
        await pilot.press("f")
        await settle(pilot)
        await pilot.press("down", "down")  # France: known in train, with a flag
        await settle(pilot)

    assert snap_compare(ExploreApp(fake, show_latency=False), run_before=query, terminal_size=(130, 36))


def test_suggestions_under_the_head_input(fake, snap_compare):
    async def typing(pilot):
        no_blink(pilot.app)
        await run_query(pilot, "spa", "<bord")
        await pilot.press("slash", *"rep")
        bar = pilot.app.query_bar
        while bar.suggested_for != "rep":
            await pilot.pause(0.01)
        await settle(pilot)

    assert snap_compare(ExploreApp(fake, show_latency=False), run_before=typing, terminal_size=(80, 24))


def test_help_screen(fake, snap_compare):
    app = ExploreApp(fake, show_latency=False)
    assert snap_compare(app, press=["tab", "tab", "question_mark"], terminal_size=(80, 24))
