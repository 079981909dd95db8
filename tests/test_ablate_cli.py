"""`imf ablate`: every variant and seed trained once, valid selects, test read once, resumable; and the
CLI face of issue 12's safety checks (a diverging run, the paper preset)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from imf_cli.ablation import ablation_variants, departure_variants
from imf_cli.main import app
from kgdata.features import save_features
from kgdata.importing import import_dataset
from kgdata.store import EntityStore
from models.config import load_yaml, resolve

runner = CliRunner()


@pytest.fixture
def tiny_with_text(tiny_tsv):
    import_dataset(tiny_tsv)
    with EntityStore.open("tiny") as store:
        n = store.num_entities
        rng = np.random.default_rng(0)
        save_features(store, "text", "test-bert", rng.normal(size=(n, 6)), np.ones(n, dtype=bool), input_hash="t")
    return "tiny"


def test_ablation_variants_follow_the_paper():
    names = [v.name for v in ablation_variants(("structure", "visual", "text"))]
    assert names == ["full", "no-contrastive", "no-interactive", "mean-fusion", "only-structure", "only-visual", "only-text"]
    mean = next(v for v in ablation_variants(("structure", "text")) if v.name == "mean-fusion")
    config = resolve({}, dict(mean.overrides))  # a valid config: the reference's probability mean
    assert (config.model.fusion, config.model.decision_space) == ("mean", "probability")
    assert [v.name for v in ablation_variants(("structure",))] == ["full"]


def test_departures_flip_each_paper_switch_once():
    paper = load_yaml("imf_cli/presets/paper.yaml")
    base = resolve({}).to_dict()
    variants = departure_variants(base, paper)
    flipped = {key for v in variants[1:-1] for key in v.overrides}
    differing = {f"{s}.{k}" for s, values in paper.items() for k, v in values.items() if base[s][k] != v}
    assert flipped == differing and variants[-1].name == "paper"
    for variant in variants:  # every variant is a valid config, the whole preset included
        resolve({}, dict(variant.overrides))
    coupled = next(v for v in variants if "train.fit_fusion_on_valid" in v.overrides)
    assert coupled.overrides == {"train.fit_fusion_on_valid": False, "train.fused_loss_weight": 1.0}
    assert coupled.name == "paper:fit_fusion_on_valid+fused_loss_weight"


def test_ablate_trains_every_cell_once_and_resumes(tiny_with_text, tmp_path, imf_home):
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump({"model": {"dim": 8}, "train": {"batch_size": 4, "eval_every": 1, "device": "cpu"}}))
    args = ["ablate", "tiny", "--config", str(config), "--seeds", "2", "--budget", "2", "--json", "--threads", "1",
            "--variant", "full", "--variant", "mean-fusion", "--variant", "only-text"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert [v["variant"] for v in report["variants"]] == ["full", "mean-fusion", "only-text"]
    for variant in report["variants"]:
        assert variant["seeds"] == [1, 2]
        for split in ("valid", "test"):
            stats = variant[split]["mrr"]
            assert 0 < stats["mean"] <= 1 and stats["sd"] >= 0
        for run in variant["runs"]:
            assert (imf_home / "ablations").exists() and json.loads(
                (imf_home / run["run_dir"] / "metrics-test.json").read_text()
            )["split"] == "test"
    # Each variant against the first on valid MRR, with the difference weighed against the seed spread.
    full = report["variants"][0]["valid"]["mrr"]
    assert len(report["verdicts"]) == 2
    for verdict, variant in zip(report["verdicts"], report["variants"][1:]):
        mine = variant["valid"]["mrr"]
        assert verdict.startswith(f"valid MRR: {variant['variant']} {mine['mean']:.4f} against full {full['mean']:.4f}, "
                                  f"a difference of {mine['mean'] - full['mean']:+.4f}; ")
        spread = max(mine["sd"], full["sd"])
        assert ("no difference shown" in verdict) == (abs(mine["mean"] - full["mean"]) <= spread)
        assert verdict.endswith(f"full and {variant['variant']} have fewer than 3 seeds")
    mean_runs = report["variants"][1]["runs"]
    stored = yaml.safe_load(open(mean_runs[0]["run_dir"] + "/config.yaml"))["config"]["model"]
    assert (stored["fusion"], stored["decision_space"]) == ("mean", "probability")
    # Run again: every cell is reused, nothing retrained, the same numbers.
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and json.loads(again.stdout)["variants"] == report["variants"]
    # a damaged result.json of a finished cell is read again from its run, not a crash
    cells = [Path(run["run_dir"]) / "result.json" for run in report["variants"][0]["runs"]]
    cells[0].write_text("{not json")
    cells[1].write_text(json.dumps({"seed": "1", "valid": [], "test": {}, "seconds": None}))
    repaired = runner.invoke(app, args)
    assert repaired.exit_code == 0, repaired.output
    assert json.loads(repaired.stdout)["variants"] == report["variants"]
    assert all(json.loads(cell.read_text())["seed"] in (1, 2) for cell in cells)
    markdown = tmp_path / "table.md"
    table = runner.invoke(app, [*args[:-6], "--variant", "full", "--markdown", str(markdown)])
    assert table.exit_code == 0 and "| full |" in markdown.read_text()
    shown = runner.invoke(app, [arg for arg in args if arg != "--json"])  # the table view prints them too
    assert shown.exit_code == 0 and "Valid MRR: mean-fusion" in " ".join(shown.output.split())


def test_grid_is_its_own_study_and_is_never_silently_ignored(tiny_with_text, tmp_path, imf_home):
    """`imf ablate tiny --grid train.lr=…` without --study trained the ablation study's variants for
    hours and ignored the grid. Now --grid alone runs the grid study; with another study it is an error."""
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump({"model": {"dim": 8, "modalities": ["structure"]},
                                      "train": {"batch_size": 4, "eval_every": 1, "device": "cpu"}}))
    base = ["ablate", "tiny", "--config", str(config), "--seeds", "1", "--budget", "1", "--threads", "1"]
    mixed = runner.invoke(app, [*base, "--study", "ablation", "--grid", "train.lr=0.01"])
    assert mixed.exit_code == 2
    assert "--grid belongs to the grid study, not the ablation study; leave out --study ablation" in mixed.output
    typo = runner.invoke(app, [*base, "--grid", "train.lr=0.01,fast"])
    assert typo.exit_code == 2 and "train.lr' expects a finite float, got 'fast'" in typo.output
    for target, message in ((tmp_path, "--markdown needs a file to write, and this is a directory"),
                            (tmp_path / "no" / "t.md", "the folder")):
        unwritable = runner.invoke(app, [*base, "--grid", "train.lr=0.01", "--markdown", str(target)])
        assert unwritable.exit_code == 2 and message in " ".join(unwritable.output.split()), unwritable.output
    assert not list(imf_home.glob("ablations/*/*/seed-1"))  # nothing was trained by either
    grid = runner.invoke(app, [*base, "--grid", "train.lr=0.01,0.003", "--json"])
    assert grid.exit_code == 0, grid.output
    report = json.loads(grid.stdout)
    assert report["study"] == "grid"
    assert [v["variant"] for v in report["variants"]] == ["lr=0.01", "lr=0.003"]
    for variant in report["variants"]:
        stored = yaml.safe_load(open(imf_home / variant["runs"][0]["run_dir"] / "config.yaml"))["config"]["train"]
        assert stored["lr"] == float(variant["variant"].split("=")[1])


def test_a_diverging_training_run_exits_with_a_clear_message(tiny_with_text):
    result = runner.invoke(
        app,
        ["train", "tiny", "--modalities", "structure", "--dim", "8", "--epochs", "2", "--eval-every", "1",
         "--batch-size", "4", "--lr", "1e30", "--seed", "1", "--device", "cpu", "--json"],
    )
    assert result.exit_code == 2
    assert "epoch 1" in result.output and "lower learning rate" in result.output
    assert "best_valid_mrr" not in result.output  # never a "2.0" result


def test_a_config_with_an_infinite_learning_rate_is_refused(tiny_with_text, tmp_path):
    config = tmp_path / "inf.yaml"
    config.write_text("train:\n  lr: .inf\n")
    result = runner.invoke(app, ["train", "tiny", "--config", str(config)])
    assert result.exit_code == 2 and "expects a finite float" in result.output


def test_departures_without_gat_features_fail_before_training(tiny_with_text, imf_home):
    result = runner.invoke(app, ["ablate", "tiny", "--study", "departures", "--seeds", "1", "--budget", "1"])
    assert result.exit_code != 0
    assert "paper:structure_init" in result.output and "--modality structure" in result.output
    assert not list(imf_home.glob("ablations/*/*/seed-1"))  # nothing was trained


def test_a_signal_during_a_study_says_how_to_go_on_and_the_rerun_resumes_it(tiny_with_text, monkeypatch):
    # SIGTERM (or Ctrl-C) in the middle of one run of the study: exit 130 with where it stopped and how
    # to go on, not a crash report; the same command then finishes the study, resuming that run
    import os
    import signal

    from imf_cli import pipeline

    real_train = pipeline.train_model

    def signalled(*args, **kwargs):
        def stop(line: str):  # the epoch's log line
            if line.startswith("epoch 1/"):
                os.kill(os.getpid(), signal.SIGTERM)

        return real_train(*args, **{**kwargs, "on_epoch": stop})

    monkeypatch.setattr(pipeline, "train_model", signalled)
    args = ["ablate", "tiny", "--seeds", "1", "--budget", "2", "--variant", "only-structure", "--no-progress"]
    args += ["--config", str(_small_config(tiny_with_text))]
    stopped = runner.invoke(app, args)
    assert stopped.exit_code == 130, stopped.output
    assert "Interrupted: SIGTERM: stopped in epoch 2 after batch 1/" in stopped.output
    assert "Resume with: the same imf ablate command" in stopped.output
    assert "a bug in imf" not in stopped.output and "Traceback" not in stopped.output

    monkeypatch.setattr(pipeline, "train_model", real_train)
    finished = runner.invoke(app, [*args, "--json"])
    assert finished.exit_code == 0, finished.output
    (row,) = json.loads(finished.stdout)["variants"]
    assert row["variant"] == "only-structure" and [r["seed"] for r in row["runs"]] == [1]
    trace = (Path(row["runs"][0]["run_dir"]) / "trace.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in trace] == [1, 2]  # resumed in epoch 2, not retrained


def test_an_interruption_in_any_training_command_is_reported_with_the_resume_command(tmp_path, capsys):
    from imf_cli.output import report_failure
    from models.training import TrainingInterrupted

    code = report_failure(TrainingInterrupted(tmp_path / "run", 3, 4, 9, "SIGINT"))
    err = capsys.readouterr().err
    assert code == 130 and "a bug in imf" not in err
    assert "Interrupted: SIGINT: stopped in epoch 3 after batch 4/9" in " ".join(err.split())
    assert f"imf train --resume {tmp_path / 'run'}" in "".join(err.split("\n"))


def _small_config(name: str):
    from kgdata.paths import imf_home

    path = imf_home() / "small.yaml"
    path.write_text("model: {dim: 8}\ntrain: {batch_size: 4, eval_every: 1, device: cpu, checkpoint_minutes: 60}\n")
    return path


def test_the_summary_splits_valid_and_test_where_one_table_does_not_fit():
    from types import SimpleNamespace

    from rich.console import Console

    from imf_cli.commands.ablate import summary_tables

    def stat(split, metric):
        return (float("nan"), float("nan")) if metric == "hits@10" else ((0.5051, 0.0123) if split == "valid" else (0.5, 0.01))

    summaries = [SimpleNamespace(variant=SimpleNamespace(name=name), stat=stat)
                 for name in ("full", "no-contrastive", "structure-only")]
    for width, count in ((120, 1), (80, 2)):
        tables = summary_tables(summaries, "tiny: paper, mean±sd over 3 seeds", width)
        console = Console(width=width, record=True)
        for table in tables:
            console.print(table)
        text = console.export_text()
        assert len(tables) == count and max(map(len, text.splitlines())) <= width
        rows = [line.split() for line in text.splitlines() if line.split()[:1] == ["no-contrastive"]]
        assert len(rows) == count
        assert [cell for row in rows for cell in row[1:]] == ["0.505±0.012", "0.505±0.012", "n/a", "0.500±0.010", "0.500±0.010", "n/a"]


@pytest.mark.parametrize(("items", "message"), [
    (["model.dim=8", "model.dim=16"], "--grid model.dim is given twice"),
    (["model.dim=8,8"], "--grid model.dim lists 8 twice"),
    (["model.dim=8,08"], "--grid model.dim lists 8 twice"),  # YAML 1.1 read 08 as a string: two cells of dim 8
    (["train.lr=0.1,1e-1"], "--grid train.lr lists 0.1 twice"),  # and 1e-1 as a string
    (["model.dim=[" + "[" * 3000], "a value is not a YAML scalar"),
    (["train.seed=5,6"], "--grid cannot vary train.seed: every variant is trained with each seed of --seeds"),
    (["model.dim=4,"], "has an empty value"),
    (["model.dim=4, ,8"], "has an empty value"),
    (["model.dim=4,null"], "null is not a setting"),
    (["model.dim=~"], "null is not a setting"),
])
def test_a_grid_that_repeats_a_key_or_a_value_is_refused(items, message):
    from imf_cli.ablation import parse_grid
    from kgdata.errors import ImfError

    with pytest.raises(ImfError, match=message.replace("[", r"\[")) as refused:
        parse_grid(items)
    assert len(str(refused.value)) < 300


def test_grid_numbers_are_read_as_a_config_file_reads_them_not_as_yaml_1_1_octal():
    from imf_cli.ablation import parse_grid

    assert parse_grid(["model.dim=010,16", "train.lr=1e-3,0.01"]) == {"model.dim": [10, 16], "train.lr": [0.001, 0.01]}


@pytest.mark.parametrize("seeds", ["0", "101", "99999999999999999999"])
def test_a_seed_count_out_of_range_is_refused_before_anything_is_built(tiny_with_text, seeds):
    result = runner.invoke(app, ["ablate", "tiny", "--seeds", seeds, "--no-progress"])
    assert result.exit_code == 2 and f"--seeds must be from 1 to 100, not {seeds}" in result.output


def test_a_reimported_dataset_gets_cells_of_its_own(tiny_with_text, tiny_tsv, tmp_path, imf_home):
    """After `imf import --replace` with other triples, the study reused the old data's cells and
    averaged them with cells trained on the new data."""
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump({"model": {"dim": 8}, "train": {"batch_size": 4, "eval_every": 1, "device": "cpu"}}))
    args = ["ablate", "tiny", "--config", str(config), "--seeds", "1", "--budget", "1", "--threads", "1",
            "--variant", "full", "--no-progress"]
    assert runner.invoke(app, args).exit_code == 0
    first = {path.parent.parent.parent for path in imf_home.glob("ablations/*/*/seed-1/result.json")}
    assert len(first) == 1
    lines = (tiny_tsv / "train.txt").read_text().splitlines()
    (tiny_tsv / "train.txt").write_text("\n".join(lines[1:]) + "\n")
    import_dataset(tiny_tsv, replace=True)
    with EntityStore.open("tiny") as store:
        n = store.num_entities
        save_features(store, "text", "test-bert", np.ones((n, 6)), np.ones(n, dtype=bool), input_hash="t")
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    studies = {path.parent.parent.parent for path in imf_home.glob("ablations/*/*/seed-1/result.json")}
    assert len(studies) == 2 and first < studies  # a study of its own, trained on the new data


def test_a_variant_without_its_features_fails_before_the_study_directory_exists(tiny_with_text, imf_home, tmp_path):
    """The check came in the first cell's training, after study.json and the cell's folder were written."""
    config = tmp_path / "visual.yaml"
    config.write_text("model:\n  modalities: [structure, visual]\n")
    result = runner.invoke(app, ["ablate", "tiny", "--seeds", "1", "--budget", "1", "--config", str(config)])
    flat = " ".join(result.output.split())
    assert result.exit_code == 2 and "trains the visual branch, but dataset 'tiny' has no image features" in flat, flat
    assert not list(imf_home.glob("ablations/*"))


def test_a_budget_and_a_grid_over_the_epochs_are_refused_together(tiny_with_text, imf_home):
    result = runner.invoke(app, ["ablate", "tiny", "--seeds", "1", "--budget", "1", "--grid", "train.epochs=1,2"])
    assert result.exit_code == 2 and "--budget and a --grid over train.epochs" in " ".join(result.output.split())


def test_one_seed_has_no_spread_rather_than_a_spread_of_zero():
    """`imf ablate --seeds 1` showed 1.000±0.000 and wrote "sd": 0.0, a spread nobody measured."""
    from imf_cli.ablation import format_stat
    from imf_cli.commands.ablate import _short
    from imf_cli.evidence import Stat, verdict

    one = Stat.of([0.5])
    assert one.sd is None and one.to_dict() == {"mean": 0.5, "sd": None, "n": 1}
    assert Stat.of([0.5, 0.7]).sd == pytest.approx(0.1414, abs=1e-4)
    assert format_stat(0.5, None) == "0.5000" and _short(0.5, None) == "0.500"
    assert format_stat(0.5, 0.01) == "0.5000 ± 0.0100"
    said = verdict(("a", one), ("b", Stat.of([0.6, 0.7])), what="valid MRR")
    assert said.endswith("a has one seed: no seed spread to weigh it against")
