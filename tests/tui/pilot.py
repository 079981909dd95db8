"""Pilot helpers for the explore TUI tests and the benchmark."""

from __future__ import annotations

import asyncio


async def wait_until(pilot, condition, timeout: float = 5.0) -> None:
    """Let the app run until ``condition()`` holds (workers finish, messages are handled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.01)


async def type_head(pilot, text: str):
    """Type ``text`` into the focused head input and wait for its suggestion list; returns the query bar."""
    bar = pilot.app.query_bar
    await pilot.press(*text)
    await wait_until(pilot, lambda: bar.suggested_for == text and bar.suggestions("head").is_open)
    return bar


async def settle(pilot) -> None:
    """Wait for every worker, then for the messages they posted."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def no_blink(app) -> None:
    from textual.widgets import Input

    for widget in app.query(Input):
        widget.cursor_blink = False


async def run_query(pilot, head: str, relation: str | None = None) -> None:
    """Type ``head`` and take the first suggestion; then type ``relation`` and take the first (without
    ``relation``, a second Enter runs the query with the relation already chosen); wait for the rows."""
    app = pilot.app
    shown = app.results_shown
    await pilot.press(*head)
    bar = app.query_bar
    await wait_until(pilot, lambda: bar.suggested_for == bar.head_input.value and bar.suggestions("head").is_open)
    await pilot.press("enter")
    if relation is not None:
        assert app.focused.id == "relation"
        await pilot.press(*relation)
        await pilot.press("enter")
    else:
        assert app.results_shown == shown  # picking a head alone runs nothing
        await pilot.press("enter")
    await wait_until(pilot, lambda: app.results_shown > shown)
    await settle(pilot)
