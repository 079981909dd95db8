"""imf_cli/runs.py and ``imf runs``: status, references, the default run of ``imf explore``, removal."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from imf_cli import runs
from imf_cli.main import app
from imf_cli.pipeline import train_model
from kgdata.errors import ImfError
from kgdata.features import save_features
from kgdata.importing import import_dataset
from kgdata.store import EntityStore

runner = CliRunner()
SMALL = {"model.dim": 8, "train.batch_size": 4, "train.eval_every": 1, "train.seed": 3, "train.device": "cpu"}


@pytest.fixture
def tiny(tiny_tsv):
    import_dataset(tiny_tsv)
    return "tiny"


def train(epochs: int = 2, modalities=("structure",), **flags):
    return train_model("tiny", flags={**SMALL, "train.epochs": epochs, **flags}, modalities=modalities,
                       progress=False).run_dir


def with_text_features():
    rng = np.random.default_rng(0)
    with EntityStore.open("tiny") as store:
        n = store.num_entities
        save_features(store, "text", "test-bert", rng.normal(size=(n, 6)), np.ones(n, dtype=bool), input_hash="t")


def set_mtime(run, seconds: float) -> None:
    os.utime(run / "config.yaml", (seconds, seconds))


def test_status_finished_stopped_resumable_failed_orphan(tiny, imf_home):
    finished = train(2)
    stopped = train(8, **{"train.patience": 1, "train.lr": 1e-12})  # nothing improves after epoch 1
    killed = train(2)
    # a kill after epoch 1: the trace and last.pt of one epoch (as models.training leaves them)
    trace = (killed / "trace.jsonl").read_text().splitlines()
    (killed / "trace.jsonl").write_text(trace[0] + "\n")
    failed = imf_home / "runs" / "tiny-failed"
    failed.mkdir()
    (failed / "config.yaml").write_text((finished / "config.yaml").read_text())
    info = {run.path: run for run in runs.list_runs()}
    assert info[finished].status == "finished" and info[finished].epochs == 2
    assert info[stopped].status == "stopped early" and info[stopped].epochs < 8
    assert info[killed].status == "resumable"
    assert info[failed].status == "failed" and "no checkpoint" in info[failed].reason
    assert info[finished].modalities == ("structure",) and info[finished].seed == 3
    assert info[finished].valid_mrr is not None and info[finished].size > 0 and info[finished].seconds > 0
    # the dataset is re-imported with other triples: every run becomes an orphan, saying why
    import_dataset(_changed_copy(imf_home), name="tiny", replace=True)
    assert {run.status for run in runs.list_runs()} == {"orphan"}
    assert "re-imported" in runs.run_info(finished).reason
    # imf explore without a run said "no runs … yet; train one first"
    with pytest.raises(ImfError) as error:
        runs.default_run()
    newest = [run for run in runs.list_runs() if run.has_checkpoint][-1]
    assert str(error.value) == (
        f"no run in {imf_home / 'runs'} can be opened: the 3 runs with a checkpoint are orphans, the newest "
        f"{newest.name}: {newest.reason}; import the dataset again as it was, or train a new run"
    )


def _changed_copy(imf_home):
    from helpers import TINY_TEST, TINY_TRAIN, TINY_VALID, write_tsv_dataset

    return write_tsv_dataset(imf_home.parent / "tiny-changed", train=TINY_TRAIN[:-1], valid=TINY_VALID, test=TINY_TEST)


def test_a_run_being_trained_is_running(tiny):
    seen = []

    def look(record):
        (run,) = [r for r in runs.list_runs() if r.status == "running"]
        seen.append(run.name)

    from imf_cli import pipeline

    original = pipeline._epoch_lines
    pipeline._epoch_lines = lambda on_epoch, epochs: look
    try:
        run = train(1)
    finally:
        pipeline._epoch_lines = original
    assert seen == [run.name] and runs.run_info(run).status == "finished"


def test_references_latest_dataset_latest_prefix_and_directory(tiny, imf_home, tmp_path):
    first, second = train(1), train(1)
    set_mtime(first, 1_000)
    set_mtime(second, 2_000)
    assert runs.resolve_run("latest") == second == runs.resolve_run("tiny@latest")
    assert runs.resolve_run(str(first)) == first
    assert runs.resolve_run(first.name) == first
    assert runs.resolve_run(first.name[:-3]) == first  # a unique prefix
    with pytest.raises(ImfError, match="matches 2 runs"):
        runs.resolve_run("tiny-")
    with pytest.raises(ImfError, match="no run matches 'nope'"):
        runs.resolve_run("nope")
    with pytest.raises(ImfError, match="no dataset 'other' in .*; import it first: imf import SOURCE --name other"):
        runs.resolve_run("other@latest")  # not "train one first: imf train other", which fails too
    for bad in ("@latest", "tiny@latest@latest", "../x@latest"):  # not 'no runs yet' while runs exist
        with pytest.raises(ImfError, match="DATASET@latest needs a dataset name"):
            runs.resolve_run(bad)
    with pytest.raises(ImfError, match="not a run directory"):
        runs.resolve_run(str(tmp_path))
    # a run without a checkpoint is never "latest"
    broken = imf_home / "runs" / "tiny-zzz"
    broken.mkdir()
    (broken / "config.yaml").write_text((first / "config.yaml").read_text())
    assert runs.resolve_run("latest") == second


def test_every_command_takes_a_reference(tiny):
    run = train(1)
    for args in (["eval", "tiny@latest", "--json", "--no-progress"],
                 ["predict", "latest", "--head", "france", "--relation", "borders", "--json"],
                 ["runs", "show", run.name[:-2], "--json"],
                 ["train", "--resume", "tiny@latest", "--json", "--no-progress"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)


def test_explore_opens_the_newest_finished_run_with_the_most_branches(tiny):
    with_text_features()
    full = train(1, modalities=("structure", "text"))
    baseline = train(1)
    set_mtime(full, 1_000)
    set_mtime(baseline, 2_000)  # newer, as after imf demo
    path, reason = runs.default_run()
    assert path == full
    assert "newest finished run with the most branches (3: structure, text, multimodal)" in reason
    assert baseline.name in reason and "newer" in reason


def test_imf_runs_lists_shows_and_removes(tiny, imf_home):
    run = train(2)
    runner.invoke(app, ["eval", run.name, "--split", "test", "--no-progress"])
    listed = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)
    assert [r["name"] for r in listed] == [run.name] and listed[0]["status"] == "finished"
    assert listed[0]["test_mrr"] is not None and listed[0]["dataset"] == "tiny"
    assert json.loads(runner.invoke(app, ["runs", "other", "--json"]).stdout) == []
    table = runner.invoke(app, ["runs", "tiny"], env={"COLUMNS": "160"})
    assert table.exit_code == 0 and run.name in table.output and "finished" in table.output
    shown = runner.invoke(app, ["runs", "show", "latest", "--width", "60"], env={"COLUMNS": "100"})
    assert shown.exit_code == 0, shown.output
    assert "training loss per epoch" in shown.output and "valid MRR" in shown.output
    assert "fused" in shown.output and "dim=8" in shown.output
    curves = json.loads(runner.invoke(app, ["runs", "show", "latest", "--json"]).stdout)["curves"]
    assert curves["epochs"] == [1, 2] and set(curves["valid"]) == {"structure", "fused"}
    refused = runner.invoke(app, ["runs", "rm", run.name], input="n\n")
    assert refused.exit_code == 1 and run.exists()
    unanswered = runner.invoke(app, ["runs", "rm", run.name], input="")  # stdin at its end: click said "Aborted."
    assert unanswered.exit_code == 1 and run.exists()
    assert "Nothing removed (answer y, or add --yes" in unanswered.output and "Aborted" not in unanswered.output
    removed = runner.invoke(app, ["runs", "rm", "latest"], input="y\n")
    assert removed.exit_code == 0 and not run.exists()
    assert runner.invoke(app, ["runs"]).output.startswith("No runs")


def test_the_runs_table_keeps_each_run_name_whole_and_leaves_out_columns_to_fit():
    from types import SimpleNamespace

    from rich.console import Console

    from imf_cli.commands.runs import runs_table

    def run(name, seed):
        return SimpleNamespace(name=name, status="finished", modalities=("structure", "visual", "text"), seed=seed,
                               epochs=80, max_epochs=80, best_epoch=75, valid_mrr=0.5012, test_mrr=0.4985,
                               seconds=125.0, size=5_100_000)

    runs = [run("countries-mm-20261203-222701-829640", 592259963), run("db15k-structure-s2", 2)]
    for width, left_out in ((160, None), (80, "size, seed, time, test")):
        console = Console(width=width, record=True)
        console.print(runs_table(runs, width=width))
        text = console.export_text()
        lines = text.splitlines()
        assert max(map(len, lines)) <= width
        assert any(line.startswith("countries-mm-20261203-222701-829640 ") for line in lines)
        words = " ".join(text.split())
        if left_out is None:
            assert "Left out" not in words and "592259963" in words and "5.1MB" in words
        else:
            assert f"Left out for the terminal's width: {left_out} (imf runs show RUN and --json have them)" in words
            assert "592259963" not in words and "0.5012" in words and "S+V+T" in words
    console = Console(width=32, record=True)  # narrower: down to run, status and valid; the run name folds
    console.print(runs_table(runs, width=32))
    text = console.export_text()
    assert "…" not in text and max(map(len, text.splitlines())) <= 32
    assert "finished" in text and text.count("0.5012") == 2 and "db15k-struct" in text
    assert "best, epochs, branches (imf runs show" in " ".join(text.split())


def test_config_differences_name_only_the_keys_that_differ():
    from imf_cli.run_compare import config_differences

    a = {"model": {"dim": 8, "modalities": ["structure"]}, "train": {"lr": 0.01, "seed": 1}}
    b = {"model": {"dim": 8, "modalities": ["structure", "text"]}, "train": {"lr": 0.01, "seed": 2, "max_minutes": 5}}
    assert config_differences([a, b]) == {
        "model.modalities": (("structure",), ("structure", "text")),
        "train.seed": (1, 2),
        "train.max_minutes": (None, 5),
    }
    assert config_differences([a, a]) == {}


def test_runs_of_the_same_name_get_headings_that_tell_them_apart():
    from pathlib import Path

    from imf_cli.commands.runs import distinct_names

    assert distinct_names([Path("/r/a"), Path("/r/b")]) == ["a", "b"]
    assert distinct_names([Path("/x/p/run"), Path("/y/p/run"), Path("/z/other")]) == ["x/p/run", "y/p/run", "other"]
    assert distinct_names([Path("/home/runs/run"), Path("/tmp/run")]) == ["runs/run", "tmp/run"]


def test_imf_runs_compare_aligns_the_curves_and_names_the_differences(tiny, imf_home):
    first = train(3)
    second = train(2, **{"train.lr": 0.05, "train.batch_size": 8})
    compared = runner.invoke(app, ["runs", "compare", first.name, second.name, "--json"])
    assert compared.exit_code == 0, compared.output
    document = json.loads(compared.stdout)
    assert [r["name"] for r in document["runs"]] == [first.name, second.name]
    assert document["differences"] == {"train.epochs": [3, 2], "train.batch_size": [4, 8], "train.lr": [0.0005, 0.05]}
    assert [point["epoch"] for point in document["curve"]] == [1, 2, 3]
    for run, column in ((first, 0), (second, 1)):
        trace = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
        assert [p["values"][column] for p in document["curve"][: len(trace)]] == [r["valid"]["fused"]["mrr"] for r in trace]
        minutes = [p["minutes"][column] for p in document["curve"][: len(trace)]]
        expected = np.cumsum([r["seconds"]["train"] for r in trace]) / 60
        assert minutes == pytest.approx(expected, abs=0.01) and minutes == sorted(minutes)
    assert document["curve"][2]["values"][1] is None and document["curve"][2]["minutes"][1] is None
    assert all(r["median_epoch_seconds"] > 0 for r in document["runs"])
    mr = json.loads(runner.invoke(app, ["runs", "compare", first.name, second.name, "--metric", "MR", "--score",
                                        "structure", "--json"]).stdout)
    assert mr["metric"] == "mr" and mr["curve"][0]["values"][0] >= 1

    table = runner.invoke(app, ["runs", "compare", first.name, second.name], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    (lr,) = [line for line in lines if line.startswith("train.lr")]
    assert lr.split()[1:] == ["0.0005", "0.05"]
    assert not any(line.startswith(("model.dim", "train.seed")) for line in lines)  # the same in both
    assert "valid MRR (fused) at each evaluated epoch" in table.output and " min" in table.output


def test_imf_runs_compare_by_seed_gives_each_config_its_mean_and_sd(tiny, imf_home):
    import statistics

    slow = [train(2, **{"train.seed": 1}), train(3, **{"train.seed": 2})]  # epochs: schedule, not config
    fast = [train(2, **{"train.seed": 1, "train.lr": 0.05}), train(2, **{"train.seed": 2, "train.lr": 0.05})]
    names = [run.name for run in (*slow, *fast)]
    document = json.loads(runner.invoke(app, ["runs", "compare", *names, "--by-seed", "--json"]).stdout)
    assert [(g["label"], g["members"]) for g in document["groups"]] == [("A", [0, 1]), ("B", [2, 3])]
    assert document["group_differences"] == {"train.lr": [0.0005, 0.05]}
    for group, runs_of in zip(document["groups"], (slow, fast)):
        traces = [[json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()] for run in runs_of]
        bests = [max(r["valid"]["fused"]["mrr"] for r in trace) for trace in traces]
        assert group["best"] == pytest.approx({"mean": statistics.fmean(bests), "sd": statistics.stdev(bests), "n": 2})
        at_2 = [trace[1]["valid"]["fused"]["mrr"] for trace in traces]
        assert group["curve"][1] == pytest.approx({"mean": statistics.fmean(at_2), "sd": statistics.stdev(at_2), "n": 2})
    assert document["groups"][0]["curve"][2]["n"] == 1 and document["groups"][1]["curve"][2] is None  # epoch 3
    assert document["verdict"].startswith("best valid MRR (fused): ") and "fewer than 3 seeds" in document["verdict"]

    table = runner.invoke(app, ["runs", "compare", *names, "--by-seed"], env={"COLUMNS": "250"})
    assert table.exit_code == 0, table.output
    (group_row,) = [line for line in table.output.splitlines() if line.startswith("group ")]
    assert group_row.split()[1:] == ["A", "A", "B", "B"]
    (lr,) = [line for line in table.output.splitlines() if line.startswith("train.lr")]
    assert lr.split()[1:] == ["0.0005", "0.05"]
    assert "±" in table.output and "(n 1)" in table.output and "Best valid MRR (fused)" in table.output
    plain = json.loads(runner.invoke(app, ["runs", "compare", *names, "--json"]).stdout)
    assert plain["groups"] == [] and plain["verdict"] is None  # without --by-seed


def test_a_verdict_needs_a_seed_spread_and_one_dataset():
    from imf_cli.evidence import Stat
    from imf_cli.run_compare import RunComparison, SeedGroup

    groups = (SeedGroup("A", (), Stat(0.40, 0.0, 1), None, ()), SeedGroup("B", (), Stat(0.41, 0.01, 3), None, ()))
    alone = RunComparison((), (), {}, "mrr", "fused", (), ("x",), groups).verdict()
    assert alone.endswith("a difference of +0.0100; A has one seed: no seed spread to weigh it against")
    assert RunComparison((), (), {}, "mrr", "fused", (), ("x", "y"), groups).verdict() is None


@pytest.mark.parametrize(
    ("metric", "a", "b", "expected"),
    [
        ("mrr", (0.400, 0.010, 3), (0.405, 0.009, 3), "B 0.4050 against A 0.4000, a difference of +0.0050; not more than the larger seed sd (0.0100): no difference shown"),
        ("mrr", (0.400, 0.010, 3), (0.430, 0.009, 3), "B 0.4300 against A 0.4000, a difference of +0.0300; more than the larger seed sd (0.0100)"),
        ("mr", (900.0, 10.0, 3), (950.0, 5.0, 2), "A 900.0 against B 950.0, a difference of -50.0; more than the larger seed sd (10.0); B has fewer than 3 seeds"),
    ],
)
def test_the_seed_verdict_weighs_the_gap_against_the_spread(metric, a, b, expected):
    from imf_cli.evidence import Stat
    from imf_cli.run_compare import RunComparison, SeedGroup

    groups = tuple(SeedGroup(label, (), Stat(*values), None, ()) for label, values in (("A", a), ("B", b)))
    comparison = RunComparison((), (), {}, metric, "fused", (), ("x",), groups)
    assert comparison.verdict() == f"best valid {metric.upper()} (fused): {expected}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["latest"], "needs at least two different runs"),
        (["latest", "latest"], "needs at least two different runs"),
        (["latest", "FIRST", "--metric", "auc"], "unknown metric 'auc'; choose from mrr, hits@1"),
        (["latest", "FIRST", "--score", "text"], "no run has a 'text' score; the runs have: fused, structure"),
        (["latest", "no-such-run"], "no-such-run"),
    ],
)
def test_imf_runs_compare_refuses_what_it_cannot_compare(tiny, args, message):
    from helpers import error_line

    first = train(1)
    train(1)
    args = [first.name if arg == "FIRST" else arg for arg in args]
    assert message in error_line(runner.invoke(app, ["runs", "compare", *args]))


def test_imf_runs_compare_counts_a_symlink_to_a_run_as_that_run(tiny, tmp_path):
    """`imf runs compare LINK RUN`, LINK a symlink to RUN, compared the run with itself."""
    from helpers import error_line

    run = train(1)
    link = tmp_path / "link"
    link.symlink_to(run)
    assert "needs at least two different runs" in error_line(runner.invoke(app, ["runs", "compare", str(link), str(run)]))


def test_imf_runs_compare_refuses_a_run_without_its_config_as_runs_show_does(tiny):
    from helpers import error_line

    first, second = train(1), train(1)
    (first / "config.yaml").unlink()
    shown = error_line(runner.invoke(app, ["runs", "show", str(first)]))
    compared = error_line(runner.invoke(app, ["runs", "compare", str(first), str(second)]))
    assert "config.yaml" in compared and compared == shown


def test_service_and_pipeline_do_not_import_each_other():
    import ast
    from pathlib import Path

    root = Path(runs.__file__).parent
    for module, other in (
        ("service.py", "imf_cli.pipeline"), ("pipeline.py", "imf_cli.service"), ("run_eval.py", "imf_cli.service")
    ):
        tree = ast.parse((root / module).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert other not in imported, module
        assert imported & {"imf_cli.runs", "imf_cli.run_loading"}, module  # they share the run code instead


def test_search_puts_names_that_start_with_the_text_first_and_tolerates_typos(imf_home):
    from imf_cli.service import PredictionService

    from types import SimpleNamespace

    from kgdata.entities import NewEntity, add_entities

    import_dataset("countries-mm")
    add_entities("countries-mm", [NewEntity("country:FRX", "Fraxinia")])
    with EntityStore.open("countries-mm") as store:
        service = PredictionService.__new__(PredictionService)  # only the store-backed lookups are used
        service.store, service.num_entities, service._lock = store, store.num_entities, threading.RLock()
        service.num_graph_entities = store.num_graph_entities
        service.model = SimpleNamespace(feature_dims={"text": 8})
        assert service.search_entities("Fra", limit=5)[0].name == "France"
        assert service.search_entities("Frnace", limit=5)[0].name == "France"  # a typo: edit distance
        assert service.search_entities("Untied Sta", limit=5)[0].name == "United States"  # still typing
        assert "Fraxinia" in [e.name for e in service.search_entities("Frax", limit=5)]
        service.model = SimpleNamespace(feature_dims={})  # structure only: it cannot score an added entity
        assert "Fraxinia" not in [e.name for e in service.search_entities("Frax", limit=5)]


def test_curves_put_a_falling_loss_on_a_log_axis_and_draw_a_one_branch_run_once():
    from imf_cli.plots import training_plots

    def series(losses, valid):
        epochs = list(range(1, len(losses) + 1))
        return {"epochs": epochs, "loss": losses, "valid_epochs": epochs, "valid": valid}

    falling = [0.1, 0.005, 0.003, 0.002, 0.0015, 0.0012]
    one = {"structure": [0.1, 0.2, 0.3, 0.35, 0.37, 0.38]}
    loss_plot, valid_plot = training_plots(series(falling, {**one, "fused": one["structure"]}), colour=False)
    assert "training loss per epoch (log scale)" in loss_plot.plain
    # log axis: the tick labels span the orders of magnitude (a linear axis has evenly spaced ones)
    ticks = [float(line.split("┤")[0]) for line in loss_plot.plain.splitlines() if "┤" in line]
    assert ticks[0] / ticks[1] == pytest.approx(ticks[-2] / ticks[-1], rel=0.05) and ticks[0] / ticks[1] > 2
    assert "structure" in valid_plot.plain and "fused" not in valid_plot.plain
    flat = [0.5, 0.45, 0.4, 0.38, 0.36, 0.35]
    two = {"structure": one["structure"], "text": one["structure"][::-1], "fused": one["structure"]}
    loss_plot, valid_plot = training_plots(series(flat, two), colour=False)
    assert "log scale" not in loss_plot.plain and "fused" in valid_plot.plain and "text" in valid_plot.plain


def test_runs_rm_deletes_only_what_a_run_wrote(tiny, imf_home, tmp_path):
    """`imf runs rm DIR --yes` deleted any directory with a config.yaml in it, a project's included."""
    import shutil

    project = tmp_path / "project"
    project.mkdir()
    (project / "config.yaml").write_text("name: my project\n")
    (project / "data.txt").write_text("keep me\n")
    refused = runner.invoke(app, ["runs", "rm", str(project), "--yes"])
    assert refused.exit_code != 0 and "not removed" in refused.output and (project / "data.txt").is_file()

    elsewhere = train(1, **{"train.eval_every": 1})
    moved = shutil.move(str(elsewhere), tmp_path / "moved-run")  # a run put outside the runs directory
    (tmp_path / "moved-run" / "notes.md").write_text("mine\n")
    kept = train(1)
    refused = runner.invoke(app, ["runs", "rm", kept.name, str(moved), "--yes"])  # one refused: none removed
    assert refused.exit_code != 0 and "notes.md" in refused.output
    assert (tmp_path / "moved-run" / "best.pt").is_file() and (kept / "config.yaml").is_file()
    (tmp_path / "moved-run" / "notes.md").unlink()
    (tmp_path / "moved-run" / ".inductive-best.safetensors.4242.tmp").write_bytes(b"")  # a killed write's leftover
    (tmp_path / "moved-run" / "last.pt.tmp").write_bytes(b"")
    removed = runner.invoke(app, ["runs", "rm", str(moved), "--yes"])
    assert removed.exit_code == 0, removed.output
    assert not (tmp_path / "moved-run").exists()


def test_runs_show_names_a_damaged_trace_line_which_the_listing_skips(tiny, imf_home):
    run = train(2)
    lines = (run / "trace.jsonl").read_text().splitlines()
    (run / "trace.jsonl").write_text("not json\n" + "\n".join(lines[1:]) + "\n")
    shown = runner.invoke(app, ["runs", "show", run.name])
    assert shown.exit_code == 2
    assert f"{run / 'trace.jsonl'}:1: not a trace record" in " ".join(shown.output.split())
    listed = runner.invoke(app, ["runs", "--json"])
    assert listed.exit_code == 0 and run.name in listed.stdout
    # A torn last line, which a killed run leaves, is not damage.
    (run / "trace.jsonl").write_text("\n".join(lines) + "\n" + lines[-1][:10])
    assert runner.invoke(app, ["runs", "show", run.name]).exit_code == 0


def test_runs_rm_refuses_a_symlink_before_removing_anything_and_takes_dot_as_its_directory(tiny, imf_home, tmp_path, monkeypatch):
    first, second = train(1), train(1)
    link = tmp_path / "link"
    link.symlink_to(second)
    refused = runner.invoke(app, ["runs", "rm", first.name, str(link), "--yes"])
    assert refused.exit_code == 2 and "is a symbolic link; not removed" in " ".join(refused.output.split())
    assert first.is_dir() and second.is_dir()  # checked before any removal: nothing removed
    inner = imf_home / "runs" / "inner-link"
    inner.symlink_to(second)
    assert runner.invoke(app, ["runs", "rm", "inner-link", "--yes"]).exit_code == 2 and second.is_dir()
    inner.unlink()
    monkeypatch.chdir(first)
    removed = runner.invoke(app, ["runs", "rm", ".", "--yes"])
    assert removed.exit_code == 0, removed.output
    assert not first.exists() and first.name in removed.output


def test_runs_show_of_a_run_killed_in_its_first_epoch_says_it_is_not_validated(tiny, imf_home):
    run = train(2)
    (run / "trace.jsonl").write_text("")
    shown = runner.invoke(app, ["runs", "show", run.name], env={"COLUMNS": "120"})
    assert shown.exit_code == 0, shown.output
    assert "0 of 2; not validated yet" in " ".join(shown.output.split()) and "best None" not in shown.output


def test_runs_with_a_word_that_is_neither_a_dataset_nor_a_command_says_so(tiny, imf_home):
    result = runner.invoke(app, ["runs", "delete"])
    assert result.exit_code == 2
    line = " ".join(result.output.split())
    assert "no dataset and no runs named 'delete' (imported: tiny)" in line and "rm" in line
    assert runner.invoke(app, ["runs", "../x"]).exit_code == 2
    assert runner.invoke(app, ["runs", "tiny"]).exit_code == 0  # a dataset without runs yet is fine


def test_imf_runs_compare_names_a_damaged_trace_line_as_runs_show_does(tiny, imf_home):
    from helpers import error_line

    first = train(3)
    second = train(3)
    lines = (second / "trace.jsonl").read_text().splitlines(keepends=True)
    (second / "trace.jsonl").write_text(lines[0] + "garbage{{{\n" + "".join(lines[2:]))
    for args in (["show", second.name], ["compare", first.name, second.name]):
        line = error_line(runner.invoke(app, ["runs", *args]))
        assert f"{second / 'trace.jsonl'}:2: not a trace record" in line, args


def test_a_run_whose_checkpoints_are_damaged_or_gone_is_listed_with_the_reason(tiny):
    from imf_cli.runs import run_info

    run = train(2)
    assert run_info(run).status == "finished" and run_info(run).reason == ""
    (run / "best.pt").write_bytes(b"")
    info = run_info(run)
    assert info.status == "failed" and info.reason == (
        "best.pt is damaged (not the zip archive torch.save writes); its last.pt reads: --checkpoint last "
        "(imf eval, predict, explore) uses it")
    (run / "best.pt").unlink()
    assert run_info(run).reason.startswith("best.pt is missing, though trace.jsonl records validations")
    (run / "last.pt").write_bytes(b"\x00" * 100)
    assert run_info(run).reason == "last.pt is damaged (not the zip archive torch.save writes)"


def test_a_run_whose_config_or_trace_other_commands_refuse_is_listed_as_failed_with_the_reason(tiny):
    """`epochs: -2` in config.yaml or a garbled trace line: the listing said finished 2/-2, while eval,
    --resume and runs show refused the run."""
    from imf_cli.runs import run_info

    run = train(2)
    config = (run / "config.yaml").read_text()
    assert "  epochs: 2\n" in config
    (run / "config.yaml").write_text(config.replace("  epochs: 2\n", "  epochs: -2\n", 1))
    info = run_info(run)
    assert info.status == "failed" and "config.yaml" in info.reason and "train.epochs" in info.reason
    (run / "config.yaml").write_text(config)
    assert run_info(run).status == "finished"
    lines = (run / "trace.jsonl").read_text().splitlines(keepends=True)
    (run / "trace.jsonl").write_text('{"epoch": 1, garbage\n' + "".join(lines[1:]))
    info = run_info(run)
    assert info.status == "failed" and f"{run / 'trace.jsonl'}:1: not a trace record" in info.reason


def test_an_unreadable_run_is_listed_as_failed_and_hides_no_other(tiny, imf_home, monkeypatch):
    """One run directory without read permission made `imf runs list` and every `latest` fail."""
    good = train(1)
    locked = imf_home / "runs" / "tiny-locked"
    locked.mkdir()
    real = runs._disk_size

    def size(path):
        if path == locked:
            raise PermissionError(13, "Permission denied", str(locked / "config.yaml"))
        return real(path)

    monkeypatch.setattr(runs, "_disk_size", size)
    listed = {info.path: info for info in runs.list_runs()}
    assert listed[good].status != runs.FAILED
    assert listed[locked].status == runs.FAILED and "cannot be read: Permission denied" in listed[locked].reason
    assert runs.resolve_run("latest") == good == runs.resolve_run("tiny@latest")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_for_a_runs_trace_or_metrics_does_not_block_the_listing(tiny, imf_home):
    import signal

    run = train(1)
    (run / "trace.jsonl").unlink()
    os.mkfifo(run / "trace.jsonl")
    os.mkfifo(run / "metrics-test.json")
    signal.alarm(20)  # a regression fails here instead of hanging the suite
    try:
        listed = {info.path: info for info in runs.list_runs()}
        assert listed[run].status == runs.FAILED and "not a regular file" in listed[run].reason
        assert listed[run].test_mrr is None
    finally:
        signal.alarm(0)


def test_a_damaged_test_report_counts_as_a_read_and_out_of_range_figures_are_not_shown(tmp_path):
    """A junk metrics-test.json was ignored, and the next read of test counted as the first; an MRR of 5
    was listed as the run's test MRR."""
    from imf_cli.run_eval import _test_reads

    (tmp_path / "metrics-test.json").write_text("junk")
    assert _test_reads(tmp_path, count_this=True)["test_reads"] == 2
    (tmp_path / "metrics-test.json").write_text(json.dumps({"fused": {"mrr": 5, "mr": 0.5, "hits@1": 0.2}}))
    assert runs.read_metrics(tmp_path, "test")["fused"] == {"hits@1": 0.2}


def test_a_run_whose_checkpoint_is_a_directory_is_listed_as_failed(tiny, imf_home):
    run = train(1)
    (run / "best.pt").unlink()
    (run / "best.pt").mkdir()
    listed = {info.path: info for info in runs.list_runs()}
    assert listed[run].status == runs.FAILED and "best.pt is a directory" in listed[run].reason


def test_a_replace_with_other_content_says_which_runs_it_orphans(tiny, imf_home, tmp_path):
    """The runs became orphans without a word."""
    from helpers import TINY_TEST, TINY_TRAIN, TINY_VALID, write_tsv_dataset

    train(1)
    other = write_tsv_dataset(tmp_path / "other", train=TINY_TRAIN[1:], valid=TINY_VALID, test=TINY_TEST)
    result = runner.invoke(app, ["import", str(other), "--name", "tiny", "--replace"])
    flat = " ".join(result.output.split())
    assert result.exit_code == 0 and "1 run of tiny was trained on the replaced content and is now an orphan" in flat, flat


def test_a_replace_with_other_content_says_which_feature_files_went_stale(tiny, tiny_tsv, imf_home, tmp_path):
    """The structure features went stale without a word; training found out later."""
    from helpers import TINY_TEST, TINY_TRAIN, TINY_VALID, write_tsv_dataset
    from kgdata.inputs import COMPUTED_FROM, graph_input_hash

    with EntityStore.open("tiny") as store:
        n, source = store.num_entities, COMPUTED_FROM["structure"]
        save_features(store, "structure", "gat", np.ones((n, 4)), np.ones(n, dtype=bool), input_hash="g",
                      computed_from=source, graph_input_hash=graph_input_hash(store, source))
    other = write_tsv_dataset(tmp_path / "other", train=TINY_TRAIN[1:], valid=TINY_VALID, test=TINY_TEST)
    result = runner.invoke(app, ["import", str(other), "--name", "tiny", "--replace"])
    flat = " ".join(result.output.split())
    assert result.exit_code == 0, flat
    assert "1 feature file of tiny was computed from the replaced content and is stale now (structure/gat)" in flat
    assert "imf features tiny says how to make it again" in flat
    back = runner.invoke(app, ["import", str(tiny_tsv), "--name", "tiny", "--replace"])
    assert back.exit_code == 0 and "feature file" not in " ".join(back.output.split())  # they fit the old content


def test_a_run_name_with_a_line_feed_lists_as_one_row(tiny):
    """A directory made by hand with a line feed in its name printed as two table rows."""
    run = train(1)
    odd = run.with_name(run.name + "\nsecond")
    run.rename(odd)
    listed = runner.invoke(app, ["runs"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert f"{run.name}%0Asecond" in listed.output
    assert not any(line.startswith("second") for line in listed.output.splitlines())
