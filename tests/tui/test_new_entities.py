"""Entities outside the training graph in the explore TUI, and its "why" detail pane, driven by Pilot.

On the fake service (Newland is added after training) and on a real run with an entity added by
``kgdata.entities.add_entities``: the autocomplete badge, ``n/a`` for the structure column, the ``n``
key that ranks added entities, and the explanation in the detail pane.
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from imf_cli.tui.app import ExploreApp
from imf_cli.tui.query_bar import ADDED_BADGE
from imf_cli.tui.results import ResultsTable
from tui.fake_service import FakeService
from tui.pilot import run_query, settle, type_head, wait_until


def text_of(renderable, width: int = 200) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def suggestion_lines(app, field: str = "head") -> list[str]:
    suggestions = app.query_bar.suggestions(field)
    return [text_of(suggestions.get_option_at_index(i).prompt) for i in range(suggestions.option_count)]


def cells(app, row: int) -> list[str]:
    table = app.query_one(ResultsTable)
    return [text_of(cell).strip() for cell in table.get_row_at(row)]


@pytest.fixture
def added(flag) -> FakeService:
    return FakeService(str(flag), added=True)


async def test_added_entities_carry_a_badge_in_the_suggestions(added):
    app = ExploreApp(added)
    async with app.run_test(size=(120, 30)) as pilot:
        await type_head(pilot, "republic")
        lines = suggestion_lines(app)
        newland = [line for line in lines if "Newland" in line]
        assert newland and ADDED_BADGE in newland[0]
        assert all(ADDED_BADGE not in line for line in lines if "Newland" not in line)


async def test_an_added_head_shows_n_a_for_the_structure_branch(added):
    app = ExploreApp(added)
    async with app.run_test(size=(130, 36)) as pilot:
        await run_query(pilot, "newl", "bord")
        result = app.query_one(ResultsTable).result
        assert result.entity.name == "Newland" and not result.in_graph
        structure = list(app.query_one(ResultsTable).columns).index("structure")
        for row in range(len(result.predictions)):
            assert cells(app, row)[structure] == "n/a"
            assert cells(app, row)[structure + 1].endswith("%")  # visual still has its share
        status = str(app.query_one("#status").render())
        assert "not in the training graph: scored by visual, text, multimodal" in status
        fusion = text_of(app.query_one("#detail-fusion").content)
        assert "structure" not in fusion and "text" in fusion


async def test_n_ranks_the_added_entities_too(added):
    app = ExploreApp(added)
    async with app.run_test(size=(130, 36)) as pilot:
        await run_query(pilot, "fran", "bord")
        names = [p.entity.name for p in app.query_one(ResultsTable).result.predictions]
        assert "Newland" not in names
        shown = app.results_shown
        await pilot.press("n")
        await wait_until(pilot, lambda: app.results_shown > shown)
        await settle(pilot)
        table = app.query_one(ResultsTable)
        predictions = table.result.predictions
        row = [p.entity.name for p in predictions].index("Newland")
        structure = list(table.columns).index("structure")
        assert cells(app, row)[structure] == "n/a" and cells(app, row)[-1] == "new"
        assert not predictions[row].in_graph
        assert "new entities ranked" in str(app.query_one("#status").render())
        table.move_cursor(row=row)
        await settle(pilot)
        assert "not in training graph" in str(app.query_one("#detail-title").render())
        # the pane ranks as the list does, among the added entities too (it said a graph-only rank)
        for at in (row, len(predictions) - 1):
            table.move_cursor(row=at)
            await settle(pilot)
            why = " ".join(text_of(app.query_one("#detail-facts").content).split())
            assert f"rank {at + 1} of " in why and "the graph's entities and 1 added entity" in why, why
        assert added.explained[-1][3] is True


async def test_the_detail_pane_falls_back_to_supporting_facts_without_explain(flag):
    class NoExplain(FakeService):
        def explain(self, head, relation, tail):
            raise RuntimeError("no explanations here")

    app = ExploreApp(NoExplain(str(flag)))
    async with app.run_test(size=(130, 36)) as pilot:
        await run_query(pilot, "germ", "bord")
        await pilot.press("f")
        await wait_until(pilot, lambda: app.results_shown == 2)
        await settle(pilot)
        table = app.query_one(ResultsTable)
        table.move_cursor(row=[p.entity.name for p in table.result.predictions].index("France"))
        await settle(pilot)
        facts = text_of(app.query_one("#detail-facts").content)
        assert "Supporting facts" in facts and "shares border with" in facts and app.is_running


# ------------------------------------------------------------------------------------------ a real run
async def test_a_real_run_explains_in_the_pane_and_scores_an_added_entity(places_run, monkeypatch):
    from imf_cli.service import PredictionService

    home, run_dir = places_run
    monkeypatch.setenv("IMF_HOME", str(home))
    with PredictionService.from_run(run_dir, device="cpu") as service:
        app = ExploreApp(service)
        async with app.run_test(size=(160, 45)) as pilot:
            await type_head(pilot, "lyo")
            assert ADDED_BADGE in suggestion_lines(app)[0]
            await pilot.press("enter", *"capital", "enter")
            await wait_until(pilot, lambda: app.results_shown == 1)
            await settle(pilot)
            table = app.query_one(ResultsTable)
            assert table.result.entity.key == "lyon" and table.result.scored_by == ("visual", "text", "multimodal")
            assert cells(app, 0)[list(table.columns).index("structure")] == "n/a"
            why = " ".join(text_of(app.query_one("#detail-facts").content).split())
            assert "rank" in why and "Nearest neighbours" in why and "not in the training graph" in why

            app.include_known = True  # a graph query, known answers shown: (?, capital_of, France)
            app.request("France", "<- capital_of")
            await wait_until(pilot, lambda: app.results_shown == 2)
            await settle(pilot)
            table = app.query_one(ResultsTable)
            names = [p.entity.key for p in table.result.predictions]
            table.move_cursor(row=names.index("paris"))
            await settle(pilot)
            why = " ".join(text_of(app.query_one("#detail-facts").content).split())
            assert "known fact: train" in why and "Evidence" in why and "rank" in why
            assert "n/a" not in cells(app, names.index("paris"))
