"""The explore TUI and ``imf explore`` on a real (tiny) trained run: the PredictionService end to end."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from imf_cli.commands import explore as explore_cmd
from imf_cli.main import app as cli
from imf_cli.pipeline import train_model
from imf_cli.tui.app import ExploreApp
from imf_cli.tui.results import ResultsTable
from kgdata.features import save_features
from kgdata.importing import import_dataset
from kgdata.store import EntityStore
from tui.pilot import run_query, settle, wait_until


@pytest.fixture
def tiny_run(tiny_tsv, imf_home):
    """A one-epoch, dim-8 run on the 7-entity KG with random image and text features: four branches."""
    import_dataset(tiny_tsv)
    rng = np.random.default_rng(0)
    with EntityStore.open("tiny") as store:
        n = store.num_entities
        save_features(store, "image", "test-cnn", rng.normal(size=(n, 12)), np.ones(n, dtype=bool), input_hash="i")
        save_features(store, "text", "test-bert", rng.normal(size=(n, 6)), np.ones(n, dtype=bool), input_hash="t")
    flags = {"model.dim": 8, "train.epochs": 1, "train.batch_size": 4, "train.eval_every": 1,
             "train.seed": 3, "train.device": "cpu"}
    return train_model("tiny", flags=flags, progress=False).run_dir


def test_explore_a_real_run(tiny_run):
    path, reason = explore_cmd.find_run(None)
    assert path == tiny_run and "newest finished run with the most branches (4:" in reason
    service = explore_cmd.build_service(path, "best", "cpu")

    async def drive():
        app = ExploreApp(service)
        async with app.run_test(size=(100, 30)) as pilot:
            await run_query(pilot, "fran", "bord")  # FTS finds France; (France, borders, ?)
            table = app.query_one(ResultsTable)
            result = table.result
            assert result.entity.name == "France" and result.relation.key == "borders"
            # train: germany; test: spain: both hidden by default
            assert table.row_count == 5 and result.hidden_known == 2
            branches = [str(c.label) for c in table.columns.values()][3:-1]
            assert branches == list(service.branch_names) == ["structure", "visual", "text", "multimodal"]
            assert abs(sum(result.weights.values()) - 1) < 1e-5
            await pilot.press("f")
            await wait_until(pilot, lambda: app.results_shown == 2)
            await settle(pilot)
            known = {p.entity.key: p.known for p in app.query_one(ResultsTable).result.predictions}
            assert known["germany"] == {"train"} and known["spain"] == {"test"}
            # the unknown entity message comes from the real service
            await pilot.press("slash", *"Atlantis", "enter")
            await wait_until(pilot, lambda: app.results_shown == 3)
            assert "Atlantis" in str(app.query_one("#status").render()) and app.is_running
            # a typo still gets live suggestions: full-text search finds nothing, edit distance does
            bar = app.query_bar
            assert app.focused.id == "head"  # the failed query left the head input focused, text selected
            await pilot.press(*"Frnace")
            await wait_until(pilot, lambda: bar.suggested_for == "Frnace" and bar.suggestions("head").is_open)
            assert str(bar.suggestions("head").options[0].prompt).startswith("France")

    import asyncio

    asyncio.run(drive())
    service.close()


def test_imf_explore_opens_the_latest_run(tiny_run, monkeypatch):
    opened = []
    monkeypatch.setattr(ExploreApp, "run", lambda self: opened.append(self))
    monkeypatch.setattr(explore_cmd, "check_terminal", lambda: None)  # CliRunner's streams are no terminal
    result = CliRunner().invoke(cli, ["explore", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (app,) = opened
    # The run name without its repeat of the dataset: the end tells runs apart.
    assert app.service.wrapped.run_dir == tiny_run and app.sub_title == f"tiny · {tiny_run.name.removeprefix('tiny-')}"
    assert app.run_path == tiny_run and app.run_source is not None
    assert "newest finished run with the most branches" in app.opened_because
    app.service.wrapped.close()
