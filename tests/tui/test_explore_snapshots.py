"""Snapshots of the explore screens on the deterministic fake service (pytest-textual-snapshot).

Update after a deliberate change of the UI with ``pytest tests/tui --snapshot-update`` and look at the
SVGs under ``tests/tui/__snapshots__``. The image is drawn with half blocks whatever the terminal
(``image="halfcell"``), so the screens are the same everywhere.
"""

from __future__ import annotations

from imf_cli.tui.app import ExploreApp
from tui.pilot import no_blink, run_query, settle


def app(service) -> ExploreApp:
    return ExploreApp(service, show_latency=False, image="halfcell")


async def cursor_to(pilot, name: str) -> None:
    """Move the results cursor down to the row of ``name`` (``f`` keeps the cursor where it was)."""
    table = pilot.app.table
    table.move_cursor(row=0)
    names = [p.entity.name for p in table.result.predictions]
    await pilot.press(*["down"] * names.index(name))
    await settle(pilot)


def test_results_screen_80x24(fake, snap_compare):
    async def query(pilot):
        no_blink(pilot.app)
        await run_query(pilot, "france", "bord")
        await pilot.press("down")
        await settle(pilot)

    assert snap_compare(app(fake), run_before=query, terminal_size=(80, 24))


def test_detail_pane_with_image_and_known_facts_130x36(fake, snap_compare):
    async def query(pilot):
        no_blink(pilot.app)
        await run_query(pilot, "germ", "bord")
        await pilot.press("f")
        await settle(pilot)
        await cursor_to(pilot, "France")  # known in train, with a flag

    assert snap_compare(app(fake), run_before=query, terminal_size=(130, 36))


def test_suggestions_under_the_head_input(fake, snap_compare):
    async def typing(pilot):
        no_blink(pilot.app)
        await run_query(pilot, "spa", "<bord")
        await pilot.press("slash", *"rep")
        bar = pilot.app.query_bar
        while bar.suggested_for != "rep":
            await pilot.pause(0.01)
        await settle(pilot)

    assert snap_compare(app(fake), run_before=typing, terminal_size=(80, 24))


def test_help_screen(fake, snap_compare):
    assert snap_compare(app(fake), press=["f1"], terminal_size=(80, 24))


def test_first_screen_80x24(fake, snap_compare):
    """What a first-time user sees: the hint, the head input focused, F1 / Ctrl+Q / Esc in the footer."""

    async def start(pilot):
        no_blink(pilot.app)
        await settle(pilot)

    assert snap_compare(app(fake), run_before=start, terminal_size=(80, 24))


def test_results_and_detail_160x45(fake, snap_compare):
    """A wide terminal: names whole, wide share bars, the detail pane with the flag beside the table."""

    async def query(pilot):
        no_blink(pilot.app)
        await run_query(pilot, "germ", "bord")
        await pilot.press("f")
        await settle(pilot)
        await cursor_to(pilot, "France")  # known in train, with a flag

    assert snap_compare(app(fake), run_before=query, terminal_size=(160, 45))
