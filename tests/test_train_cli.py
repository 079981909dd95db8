"""`imf train` and `imf eval` end to end on small data: run directories, metrics, resume, DDP, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from imf_cli.main import app
from kgdata.features import save_features
from kgdata.importing import import_dataset
from kgdata.store import EntityStore

runner = CliRunner()
SMALL = ["--dim", "8", "--batch-size", "4", "--eval-every", "1", "--seed", "3", "--device", "cpu", "--no-progress"]


@pytest.fixture
def tiny_with_features(tiny_tsv):
    import_dataset(tiny_tsv)
    rng = np.random.default_rng(0)
    with EntityStore.open("tiny") as store:
        n = store.num_entities
        mask = np.ones(n, dtype=bool)
        mask[2] = False  # madrid has no image
        save_features(store, "image", "test-cnn", rng.normal(size=(n, 12)), mask, input_hash="i")
        save_features(store, "text", "test-bert", rng.normal(size=(n, 6)), np.ones(n, dtype=bool), input_hash="t")
    return "tiny"


def train(*args: str) -> dict:
    result = runner.invoke(app, ["train", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_train_writes_a_complete_run_and_eval_reports_every_branch(tiny_with_features, imf_home):
    summary = train("tiny", "--epochs", "3", *SMALL)
    run = imf_home / "runs" / summary["run_dir"].split("/")[-1]
    assert run.is_dir() and summary["seed"] == 3 and summary["epochs"] == 3
    # inductive-best.safetensors: the placement of entities outside the graph, fitted after training
    assert sorted(p.name for p in run.iterdir()) == [
        "best.pt", "config.yaml", "inductive-best.safetensors", "last.pt", "trace.jsonl"
    ]

    skipped = train("tiny", "--epochs", "1", "--no-place-unseen", *SMALL)
    assert not (Path(skipped["run_dir"]) / "inductive-best.safetensors").exists()
    assert (Path(skipped["run_dir"]) / "best.pt").exists()

    document = yaml.safe_load((run / "config.yaml").read_text())
    assert document["seed"] == 3
    assert document["config"]["model"]["modalities"] == ["structure", "visual", "text"]
    assert document["config"]["model"]["dim"] == 8
    meta = document["metadata"]
    assert meta["dataset"] == "tiny" and len(meta["dataset_hash"]) == 64
    assert {(f["modality"], f["encoder"], f["dim"], f["missing"]) for f in meta["features"]} == {
        ("image", "test-cnn", 12, 1),
        ("text", "test-bert", 6, 0),
    }
    trace = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    assert [t["epoch"] for t in trace] == [1, 2, 3]
    assert all("valid" in t for t in trace)

    payload = torch.load(run / "best.pt", weights_only=True)
    assert payload["config"]["train"]["seed"] == 3

    result = runner.invoke(app, ["eval", str(run), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["split"] == "test" and report["triples"] == 1
    assert set(report["branches"]) == {"structure", "visual", "text", "multimodal"}
    for metrics in [*report["branches"].values(), report["fused"], report["mean_fusion"]]:
        assert 0 < metrics["mrr"] <= 1 and 1 <= metrics["mr"] <= 7
        assert metrics["hits@1"] <= metrics["hits@3"] <= metrics["hits@10"] == 1.0  # 7 entities

    table = runner.invoke(app, ["eval", str(run), "--split", "valid"])
    assert table.exit_code == 0 and "fused" in table.stdout and "Hits@10" in table.stdout


def test_ctrl_c_during_the_placement_fit_skips_it_and_keeps_the_finished_run(tiny_with_features, imf_home, monkeypatch):
    """On a large graph the placement fit after training takes minutes (over 5 on DB15K at 2 threads);
    Ctrl+C there ended `imf train` with a bare 'Interrupted.' and exit 130, as if the run were lost."""
    import imf_cli.unseen

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(imf_cli.unseen, "write_run_placement", interrupted)
    result = runner.invoke(app, ["train", "tiny", "--epochs", "2", *SMALL])
    assert result.exit_code == 0, result.output
    assert "Ctrl+C skips this step: the run is already saved" in result.output
    assert "Skipped the placement of new entities (interrupted): the run is complete and saved" in result.output
    assert "Trained 2 epochs (seed 3)" in result.output
    run = imf_home / "runs" / result.stdout.strip().splitlines()[-1].split("/")[-1]
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.yaml", "last.pt", "trace.jsonl"]
    resumed = runner.invoke(app, ["train", "--resume", str(run), "--no-progress"])  # the resume path does the same
    assert resumed.exit_code == 0, resumed.output
    assert "Skipped the placement of new entities (interrupted)" in resumed.output


def test_modalities_default_to_what_is_encoded(tiny_tsv):
    import_dataset(tiny_tsv)
    summary = train("tiny", "--epochs", "1", *SMALL)
    document = yaml.safe_load(open(os.path.join(summary["run_dir"], "config.yaml")))
    assert document["config"]["model"]["modalities"] == ["structure"]


@pytest.mark.parametrize("value", ["", " , "])
def test_empty_modalities_are_refused_not_taken_for_the_default(tiny_tsv, value):
    import_dataset(tiny_tsv)
    result = runner.invoke(app, ["train", "tiny", "--modalities", value, "--epochs", "1", "--no-progress"])
    assert result.exit_code == 2 and "--modalities is empty" in result.output


def test_config_file_modalities_are_not_overridden_by_the_default(tiny_with_features, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model:\n  modalities: [structure, text]\n")
    summary = train("tiny", "--epochs", "1", "--config", str(config), *SMALL)
    document = yaml.safe_load(open(os.path.join(summary["run_dir"], "config.yaml")))
    assert document["config"]["model"]["modalities"] == ["structure", "text"]
    # an explicit flag still wins over the file
    summary = train("tiny", "--epochs", "1", "--config", str(config), "--modalities", "structure", *SMALL)
    document = yaml.safe_load(open(os.path.join(summary["run_dir"], "config.yaml")))
    assert document["config"]["model"]["modalities"] == ["structure"]


def test_resume_of_a_finished_run_keeps_its_result(tiny_with_features):
    first = train("tiny", "--epochs", "2", "--modalities", "structure,text", *SMALL)
    again = train("--resume", first["run_dir"], "--no-progress")
    assert again["best_valid_mrr"] == first["best_valid_mrr"] and again["epochs"] == 2


def test_resume_with_more_epochs_trains_a_finished_run_further_and_refuses_other_changes(tiny_with_features):
    first = train("tiny", "--epochs", "2", "--modalities", "structure", *SMALL)
    again = runner.invoke(app, ["train", "--resume", first["run_dir"], "--no-progress"], env={"COLUMNS": "300"})
    assert again.exit_code == 0 and "already finished: nothing was trained" in again.output
    assert f"imf train --resume {first['run_dir']} --epochs N (N > 2)" in again.output
    longer = train("--resume", first["run_dir"], "--epochs", "3", "--eval-every", "3", "--no-progress")
    assert longer["epochs"] == 3
    document = yaml.safe_load(open(os.path.join(first["run_dir"], "config.yaml")))
    assert document["config"]["train"]["epochs"] == 3 and document["resumed"][0]["set"] == {
        "train.epochs": 3,
        "train.eval_every": 3,
    }
    shown = runner.invoke(app, ["runs", "show", first["run_dir"]], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "after epoch 2" in shown.output and "train.epochs=3, train.eval_every=3" in shown.output
    for flags, named in (
        (["--lr", "0.5"], "--lr"),
        (["--dim", "4", "--seed", "9"], "--dim, --seed"),
        (["--modalities", "structure,text"], "--modalities"),
    ):
        refused = runner.invoke(app, ["train", "--resume", first["run_dir"], *flags, "--no-progress"])
        assert refused.exit_code == 2, refused.output
        assert f"{named} cannot change when a run is resumed" in refused.output and "Traceback" not in refused.output
    for budget in ("nan", "inf", "-1"):
        refused = runner.invoke(app, ["train", "--resume", first["run_dir"], "--max-minutes", budget, "--no-progress"])
        assert refused.exit_code == 2 and "--max-minutes must be a finite number ≥ 0" in refused.output, refused.output
    fewer = runner.invoke(app, ["train", "--resume", first["run_dir"], "--epochs", "1", "--no-progress"])
    assert fewer.exit_code == 2 and "train.epochs 1 is below the 3 epochs" in fewer.output, fewer.output
    other = runner.invoke(app, ["train", "other", "--resume", first["run_dir"], "--no-progress"])
    assert other.exit_code == 2 and "trained on dataset 'tiny', not 'other'" in other.output, other.output
    assert yaml.safe_load(open(os.path.join(first["run_dir"], "config.yaml"))) == document


def test_another_runs_checkpoint_copied_into_a_run_is_refused_by_resume_and_eval(tiny_with_features):
    import shutil

    ours = train("tiny", "--epochs", "2", "--modalities", "structure", *SMALL)
    theirs = train("tiny", "--epochs", "2", "--modalities", "structure", *SMALL[:-3], "--seed", "4", "--no-progress",
                   "--device", "cpu")  # the same but the seed: the same shapes, other weights
    run = Path(ours["run_dir"])
    document = (run / "config.yaml").read_text()
    for name in ("last.pt", "best.pt"):
        shutil.copy(Path(theirs["run_dir"]) / name, run / name)
    resumed = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "3", "--no-progress"])
    assert resumed.exit_code != 0 and "Traceback" not in resumed.output
    assert "best.pt" in resumed.output and "train.seed differ from the run's config.yaml" in " ".join(resumed.output.split())
    assert (run / "config.yaml").read_text() == document  # nothing rewritten
    evaluated = runner.invoke(app, ["eval", str(run), "--device", "cpu"])
    assert evaluated.exit_code == 2 and "it is another run's checkpoint" in " ".join(evaluated.output.split())


def test_a_run_whose_last_checkpoint_is_gone_says_it_trains_again_from_the_start(tiny_with_features):
    first = train("tiny", "--epochs", "2", "--modalities", "structure", *SMALL)
    os.remove(os.path.join(first["run_dir"], "last.pt"))
    again = runner.invoke(app, ["train", "--resume", first["run_dir"], "--no-progress"], env={"COLUMNS": "300"})
    assert again.exit_code == 0, again.output
    assert "last.pt is missing: the 2 epochs that trace.jsonl records are trained again from epoch 0" in again.output


def test_a_run_that_stopped_early_goes_on_with_more_patience(tiny_with_features):
    stopped = train("tiny", "--epochs", "60", "--patience", "1", "--lr", "0.05", "--modalities", "structure", *SMALL)
    assert stopped["stopped_early"] and stopped["epochs"] < 60
    again = runner.invoke(app, ["train", "--resume", stopped["run_dir"], "--no-progress"], env={"COLUMNS": "300"})
    assert again.exit_code == 0 and "already finished (stopped early): nothing was trained" in again.output
    assert "--patience N" in again.output
    more = train("--resume", stopped["run_dir"], "--patience", "0", "--epochs", str(stopped["epochs"] + 2), "--no-progress")
    assert not more["stopped_early"] and more["epochs"] == stopped["epochs"] + 2


def test_max_minutes_stops_a_run_resumably_and_resume_takes_a_new_budget(tiny_with_features):
    stopped = train("tiny", "--epochs", "3", "--modalities", "structure,text", "--max-minutes", "0.000001", *SMALL)
    assert stopped["stopped_at_time_limit"] and stopped["epochs"] == 1 and stopped["best_epoch"] == 1
    plain = runner.invoke(app, ["runs", "--json"])
    assert [run["status"] for run in json.loads(plain.stdout)] == ["resumable"]
    again = train("--resume", stopped["run_dir"], "--max-minutes", "0.000001", "--no-progress")
    assert again["stopped_at_time_limit"] and again["epochs"] == 2
    done = train("--resume", stopped["run_dir"], "--max-minutes", "0", "--no-progress")
    assert not done["stopped_at_time_limit"] and done["epochs"] == 3
    text = runner.invoke(
        app, ["train", "tiny", "--epochs", "2", "--modalities", "structure", "--max-minutes", "1e-6", *SMALL]
    )
    assert text.exit_code == 0 and "continue with: imf train --resume" in text.output
    negative = runner.invoke(app, ["train", "--resume", stopped["run_dir"], "--max-minutes", "-1", "--no-progress"])
    assert negative.exit_code == 2 and "--max-minutes must be a finite number ≥ 0" in negative.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tiny", "--max-minutes", "-5"], "train.max_minutes must be non-negative"),
        (["tiny", "--modalities", "structure,smell"], "model.modalities holds the unknown branch 'smell'"),
        (["tiny", "--fusion", "median"], "model.fusion"),
        (["nope"], "no dataset named 'nope'"),
        (["tiny", "--modalities", "structure,visual"], "no image features"),
    ],
)
def test_bad_train_arguments_exit_2(tiny_tsv, args, message):
    import_dataset(tiny_tsv)
    result = runner.invoke(app, ["train", *args, "--epochs", "1", "--no-progress"])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_unknown_config_file_key_is_an_error(tiny_tsv, tmp_path):
    import_dataset(tiny_tsv)
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  epochs: 1\n  learning_rate: 0.1\n")
    result = runner.invoke(app, ["train", "tiny", "--config", str(config), "--no-progress"])
    assert result.exit_code == 2 and "learning_rate" in result.output


def test_eval_of_corrupt_checkpoint_names_the_file(tiny_with_features):
    summary = train("tiny", "--epochs", "1", "--modalities", "structure", *SMALL)
    best = os.path.join(summary["run_dir"], "best.pt")
    with open(best, "wb") as handle:
        handle.write(b"not a checkpoint")
    result = runner.invoke(app, ["eval", summary["run_dir"]])
    assert result.exit_code == 2 and "best.pt" in result.output


def test_torchrun_two_cpu_processes_on_countries_mm(imf_home):
    import_dataset("countries-mm")
    run_dir = imf_home / "runs" / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
        "-m", "imf_cli", "train", "countries-mm", "--modalities", "structure", "--epochs", "1", "--dim", "16",
        "--batch-size", "128", "--eval-every", "1", "--seed", "5", "--device", "cpu", "--no-progress",
        "--run-dir", str(run_dir),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    document = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert document["environment"]["world_size"] == 2
    from models.checkpoint import load_checkpoint

    model, config = load_checkpoint(run_dir / "best.pt")
    assert config["train"]["seed"] == 5 and model.num_entities == 492


def test_modalities_written_as_one_string_in_a_config_are_planned_as_names(tiny_with_features, tmp_path):
    config = tmp_path / "text.yaml"
    config.write_text("model:\n  modalities: structure, text\ntrain:\n  epochs: 1\n")
    result = runner.invoke(app, ["train", "tiny", "--config", str(config), *SMALL])
    assert result.exit_code == 0, result.output
    assert "Training branches: structure, text (as chosen)." in result.output


def test_eval_drop_overlap_ranks_only_the_test_triples_in_no_earlier_split(tmp_path, imf_home):
    from helpers import TINY_TEST, TINY_TRAIN, TINY_VALID, write_tsv_dataset

    test = TINY_TEST + [TINY_TRAIN[1], TINY_VALID[0]]  # two leaks: one from train, one from valid
    import_dataset(write_tsv_dataset(tmp_path / "leaky", train=TINY_TRAIN, valid=TINY_VALID, test=test))
    run = Path(train("leaky", "--epochs", "1", "--modalities", "structure", *SMALL)["run_dir"])
    full = json.loads(runner.invoke(app, ["eval", str(run), "--split", "test", "--json"]).stdout)
    result = runner.invoke(app, ["eval", str(run), "--split", "test", "--drop-overlap", "--json"])
    assert result.exit_code == 0, result.output
    kept = json.loads(result.stdout)
    assert (full["triples"], kept["triples"], kept["overlap_left_out"]) == (3, 1, 2)
    assert "overlap_left_out" not in full
    assert json.loads((run / "metrics-test-no-overlap.json").read_text()) == kept
    assert json.loads((run / "metrics-test.json").read_text()) == full  # the full report is not replaced
    table = runner.invoke(app, ["eval", str(run), "--split", "test", "--drop-overlap"])
    assert "Left out 2 test triples also in train or valid; ranked the other 1." in " ".join(table.output.split())


def test_also_in_matches_whole_triples_only():
    from models.splits import also_in

    triples = np.array([[0, 1, 2], [2, 1, 0], [0, 0, 2], [5, 3, 9]])
    others = [np.array([[0, 1, 2]]), np.array([[5, 3, 9], [1, 1, 1]])]
    assert also_in(triples, others).tolist() == [True, False, False, True]
    assert also_in(triples, []).tolist() == [False] * 4


def test_precision_is_a_flag_of_new_runs_recorded_in_the_config_and_fixed_on_resume(tiny_tsv):
    import_dataset(tiny_tsv)
    summary = train("tiny", "--epochs", "1", "--precision", "bf16", *SMALL)
    document = yaml.safe_load(open(os.path.join(summary["run_dir"], "config.yaml")))
    assert document["config"]["train"]["precision"] == "bf16"
    resumed = runner.invoke(app, ["train", "--resume", summary["run_dir"], "--precision", "fp32", "--no-progress"])
    assert resumed.exit_code == 2 and "--precision cannot change when a run is resumed" in resumed.output
    refused = runner.invoke(app, ["train", "tiny", "--precision", "fp16", *SMALL])
    assert refused.exit_code == 2 and "train.precision must be one of" in refused.output


def test_a_preset_can_be_named_instead_of_its_path(tmp_path, monkeypatch):
    """The README's imf_cli/presets/… paths exist only in a source checkout; a pip install has the
    presets inside the package."""
    from imf_cli.pipeline import PRESETS, config_path, read_config_file
    from kgdata.errors import ImfError

    monkeypatch.chdir(tmp_path)
    assert config_path(Path("db15k")) == PRESETS / "db15k.yaml"
    assert config_path(Path("countries-mm-quick.yaml")) == PRESETS / "countries-mm-quick.yaml"
    assert read_config_file(Path("db15k-structure"))["model"]["modalities"] == ["structure"]
    (tmp_path / "db15k").write_text("model: {dim: 16}\n")  # a file of that name wins
    assert read_config_file(Path("db15k")) == {"model": {"dim": 16}}
    with pytest.raises(ImfError, match=r"config file does not exist; or name a preset: countries-mm, countries-mm-quick, db15k"):
        read_config_file(Path("no-such-preset"))
    with pytest.raises(ImfError, match="does not exist"):
        read_config_file(Path("sub/db15k"))  # a path is a path


def test_a_checkpoint_trained_on_another_dataset_of_the_same_sizes_is_refused(tiny_with_features):
    """Its weights load (the sizes match) and eval and predict answered with them, silently."""
    import torch

    ours = train("tiny", "--epochs", "1", "--modalities", "structure", *SMALL)
    path = Path(ours["run_dir"]) / "best.pt"
    payload = torch.load(path, weights_only=True)
    payload["data_fingerprint"] = "0" * 64
    payload["metadata"] = {**payload["metadata"], "dataset": "elsewhere"}
    torch.save(payload, path)
    evaluated = runner.invoke(app, ["eval", ours["run_dir"], "--device", "cpu"])
    said = " ".join(evaluated.output.split())
    assert evaluated.exit_code == 2 and "trained on other data than the run records" in said, said
    assert "(dataset 'elsewhere')" in said and "Traceback" not in said


def test_train_names_the_encoder_it_picked_when_a_modality_has_several(tiny_with_features, imf_home):
    """With several image feature files imf train used the newest and said only "Training branches: …"."""
    import time

    with EntityStore.open("tiny") as store:
        n = store.num_entities
        time.sleep(1.1)  # created_at has second resolution: this file is the newest
        save_features(store, "image", "newer-cnn", np.ones((n, 5)), np.ones(n, dtype=bool), input_hash="i")
    result = runner.invoke(app, ["train", "tiny", "--epochs", "1", "--dim", "4", "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Visual features: encoder 'newer-cnn', the newest of 2 (test-cnn); --image-encoder ENCODER picks another." in (
        " ".join(result.output.split()))
    assert "Text features" not in result.output  # one text file: nothing to choose


def test_resuming_a_finished_run_whose_trace_was_emptied_says_the_trace_is_short(tiny_with_features):
    """An emptied trace.jsonl left a run listed as resumable that resume said was finished, with no word why."""
    first = train("tiny", "--epochs", "2", "--modalities", "structure", *SMALL)
    (Path(first["run_dir"]) / "trace.jsonl").write_text("")
    again = runner.invoke(app, ["train", "--resume", first["run_dir"], "--no-progress"])
    assert again.exit_code == 0, again.output
    text = " ".join(again.output.split())
    assert "nothing was trained" in text and "trace.jsonl records 0 of the 2 epochs that last.pt holds" in text
