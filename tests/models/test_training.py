import json
from pathlib import Path

import pytest
import torch
import yaml

from models.checkpoint import CheckpointError, load_checkpoint
from models.config import resolve
from models.training import KGTensors, resume, train

FAST = {
    "model": {
        "dim": 16,
        "input_dropout": 0.0,
        "relation_dropout": 0.0,
        "hidden_dropout": 0.1,
        "fusion_dropout": 0.0,
    },
    "train": {"lr": 0.01, "batch_size": 16, "eval_every": 1, "patience": 0, "device": "cpu"},
    "eval": {"batch_size": 7},
}


def fast_config(**train):
    return resolve(FAST, {f"train.{key}": value for key, value in train.items()})


def read_trace(run_dir):
    return [json.loads(line) for line in (run_dir / "trace.jsonl").read_text().splitlines()]


def without_timing(records):
    return [{key: value for key, value in record.items() if key != "seconds"} for record in records]


def test_loss_falls_and_positives_outscore_negatives(tmp_path, kg):
    result = train(kg, fast_config(epochs=15, seed=1, eval_every=5), tmp_path / "run", progress=False)
    trace = read_trace(tmp_path / "run")
    assert trace[-1]["loss"]["total"] < 0.5 * trace[0]["loss"]["total"]
    model, _ = load_checkpoint(tmp_path / "run" / "last.pt")
    heads, relations, tails = kg.train.unbind(1)
    scores = model(heads, relations).fused
    positives = scores.gather(1, tails[:, None])
    known = torch.zeros_like(scores, dtype=torch.bool)
    for h, r, t in kg.train.tolist():
        known[(heads == h) & (relations == r), t] = True
    negatives = scores.masked_fill(known, float("nan"))
    assert (positives > negatives.nanmean(dim=1, keepdim=True)).float().mean() > 0.95
    assert result.best_valid_mrr > 0.5  # held-out triples are inferable; random ranking gives about 0.13


def test_run_directory_records_seed_config_metadata_and_checkpoints(tmp_path, kg):
    run_dir = tmp_path / "run"
    metadata = {"dataset": "tiny", "commit": "abc"}
    result = train(kg, fast_config(epochs=2, eval_every=2), run_dir, metadata=metadata, progress=False)
    document = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert isinstance(result.seed, int) and document["seed"] == result.seed == document["config"]["train"]["seed"]
    assert document["metadata"] == {"dataset": "tiny", "commit": "abc"}
    assert document["data"]["num_entities"] == kg.num_entities
    trace = read_trace(run_dir)
    assert [r["epoch"] for r in trace] == [1, 2]
    assert "valid" not in trace[0] and set(trace[1]["valid"]) == {"structure", "visual", "text", "multimodal", "fused", "mean_fusion"}
    assert set(trace[0]["loss"]) == {"total", "structure", "visual", "text", "multimodal", "fused", "contrastive"}
    for name in ("best.pt", "last.pt"):
        payload = torch.load(run_dir / name, weights_only=True)
        assert payload["epoch"] == 2 and payload["config"]["train"]["seed"] == result.seed
        assert {"torch", "shuffle", "numpy", "python"} <= set(payload["rng"][0])
    with pytest.raises(FileExistsError, match="write-once"):
        train(kg, fast_config(epochs=1), run_dir, progress=False)


class Killed(Exception):
    """Stands in for a process killed between epochs."""


def train_until_killed(kg, config, run_dir, *, after_epoch):
    def kill(record):
        if record["epoch"] == after_epoch:
            raise Killed

    with pytest.raises(Killed):
        train(kg, config, run_dir, progress=False, on_epoch_end=kill)


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, kg):
    config = fast_config(epochs=4, seed=7, lr_decay=0.9, checkpoint_every=1)
    straight = train(kg, config, tmp_path / "straight", progress=False)

    train_until_killed(kg, config, tmp_path / "killed", after_epoch=2)
    assert len(read_trace(tmp_path / "killed")) == 2
    resumed = resume(tmp_path / "killed", kg, progress=False)

    assert without_timing(read_trace(tmp_path / "killed")) == without_timing(read_trace(tmp_path / "straight"))
    assert (resumed.best_epoch, resumed.best_valid_mrr) == (straight.best_epoch, straight.best_valid_mrr)
    final_straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    final_resumed = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(final_straight[key], final_resumed[key]) for key in final_straight)
    # A finished run resumes to the same result at once.
    assert resume(tmp_path / "killed", kg, progress=False) == resumed


def test_a_finished_run_trained_further_matches_a_longer_run(tmp_path, kg):
    straight = train(kg, fast_config(epochs=4, seed=7, lr_decay=0.9), tmp_path / "straight", progress=False)
    short = train(kg, fast_config(epochs=2, seed=7, lr_decay=0.9), tmp_path / "short", progress=False)
    assert straight.epochs_completed == 4
    assert short.epochs_completed == 2 and resume(tmp_path / "short", kg, progress=False) == short  # finished

    longer = resume(tmp_path / "short", kg, progress=False, changes={"train.epochs": 4})
    assert longer.epochs_completed == 4 and [r["epoch"] for r in read_trace(tmp_path / "short")] == [1, 2, 3, 4]
    # Epoch 2's extra evaluation (the end of the short run) draws nothing from the training generators.
    final_straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    final_longer = torch.load(tmp_path / "short" / "last.pt", weights_only=True)
    assert all(torch.equal(final_straight["model"][key], final_longer["model"][key]) for key in final_straight["model"])
    assert final_longer["config"]["train"]["epochs"] == 4 and final_longer["finished"]
    document = yaml.safe_load((tmp_path / "short" / "config.yaml").read_text())
    assert document["config"]["train"]["epochs"] == 4
    assert [(entry["after_epoch"], entry["set"]) for entry in document["resumed"]] == [(2, {"train.epochs": 4})]


def test_more_patience_continues_a_run_that_stopped_early(tmp_path, kg):
    stopped = train(kg, fast_config(epochs=60, seed=2, patience=1, lr=0.05), tmp_path / "run", progress=False)
    assert stopped.stopped_early and stopped.epochs_completed < 60
    again = resume(tmp_path / "run", kg, progress=False, changes={"train.patience": 0, "train.epochs": stopped.epochs_completed + 2})
    assert not again.stopped_early and again.epochs_completed == stopped.epochs_completed + 2


def test_a_change_that_trains_nothing_now_still_holds_for_the_next_resume(tmp_path, kg):
    """config.yaml and last.pt agree after a resume whose changes leave the run finished (here: more
    epochs for a run that stopped early), so the next resume goes on from the changed schedule."""
    stopped = train(kg, fast_config(epochs=60, seed=2, patience=1, lr=0.05), tmp_path / "run", progress=False)
    assert stopped.stopped_early
    more = stopped.epochs_completed + 3
    idle = resume(tmp_path / "run", kg, progress=False, changes={"train.epochs": more})
    assert idle.epochs_completed == idle.start_epoch == stopped.epochs_completed and idle.max_epochs == more
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["config"]["train"]["epochs"] == more
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["config"]["train"]["epochs"] == more
    again = resume(tmp_path / "run", kg, progress=False, changes={"train.patience": 0})
    assert again.start_epoch == stopped.epochs_completed and again.epochs_completed == more


def test_more_epochs_cannot_end_a_run_inside_the_epoch_its_checkpoint_holds(tmp_path, kg):
    import os
    import signal

    from models.config import ConfigError
    from models.training import TrainingInterrupted

    def interrupt(record):
        if record["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted):
        train(kg, fast_config(epochs=3, seed=5), tmp_path / "run", progress=False, on_epoch_end=interrupt)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and last["progress"]
    with pytest.raises(ConfigError, match="inside epoch 2, which its last.pt holds part-way; give at least 2"):
        resume(tmp_path / "run", kg, progress=False, changes={"train.epochs": 1})
    assert resume(tmp_path / "run", kg, progress=False, changes={"train.epochs": 2}).epochs_completed == 2


def test_a_resume_changes_only_the_schedule(tmp_path, kg):
    from models.config import ConfigError

    run_dir = tmp_path / "run"
    train(kg, fast_config(epochs=3, seed=3), run_dir, progress=False)
    before = (run_dir / "config.yaml").read_text()
    for key, value in (("train.lr", 0.5), ("model.dim", 8), ("train.seed", 4), ("train.batch_size", 4)):
        with pytest.raises(ConfigError, match=f"{key} cannot change when a run is resumed"):
            resume(run_dir, kg, progress=False, changes={key: value})
    with pytest.raises(ConfigError, match="train.epochs 2 is below the 3 epochs"):
        resume(run_dir, kg, progress=False, changes={"train.epochs": 2})
    with pytest.raises(ConfigError, match="train.patience"):
        resume(run_dir, kg, progress=False, changes={"train.patience": -1})
    assert (run_dir / "config.yaml").read_text() == before  # nothing refused is recorded
    # The time budget of one invocation is not a change of the run.
    resume(run_dir, kg, progress=False, max_minutes=5, changes={"train.epochs": 3, "train.lr": None})
    assert "resumed" not in yaml.safe_load((run_dir / "config.yaml").read_text())


def test_sparser_checkpoints_still_resume_to_the_same_run(tmp_path, kg):
    straight = train(kg, fast_config(epochs=5, seed=7), tmp_path / "straight", progress=False)
    config = fast_config(epochs=5, seed=7, checkpoint_every=2)

    train_until_killed(kg, config, tmp_path / "killed", after_epoch=3)
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["epoch"] == 2
    resumed = resume(tmp_path / "killed", kg, progress=False)
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["epoch"] == 5  # the end is always saved
    assert [r["epoch"] for r in read_trace(tmp_path / "killed")] == [1, 2, 3, 4, 5]
    assert without_timing(read_trace(tmp_path / "killed")) == without_timing(read_trace(tmp_path / "straight"))
    assert (resumed.best_epoch, resumed.best_valid_mrr) == (straight.best_epoch, straight.best_valid_mrr)


def test_resume_drops_trace_lines_written_after_the_checkpoint(tmp_path, kg):
    run_dir = tmp_path / "run"
    train(kg, fast_config(epochs=2, seed=3), run_dir, progress=False)
    with open(run_dir / "trace.jsonl", "a") as trace:
        trace.write(json.dumps({"epoch": 3, "loss": {"total": -1}}) + "\n")
    resume(run_dir, kg, progress=False)
    assert [r["epoch"] for r in read_trace(run_dir)] == [1, 2]


def test_resume_refuses_other_data_and_missing_checkpoints(tmp_path, kg, kg_factory):
    run_dir = tmp_path / "run"
    train(kg, fast_config(epochs=1, seed=3), run_dir, progress=False)
    with pytest.raises(ValueError, match="data differ"):
        resume(run_dir, kg_factory(seed=5), progress=False)
    with pytest.raises(CheckpointError, match="no such file"):
        resume(tmp_path / "elsewhere", kg, progress=False)


def test_early_stopping_keeps_the_best_checkpoint(tmp_path, kg):
    result = train(kg, fast_config(epochs=60, seed=2, patience=2, lr=0.05), tmp_path / "run", progress=False)
    trace = read_trace(tmp_path / "run")
    assert result.stopped_early and result.epochs_completed == len(trace) < 60
    assert result.best_epoch == result.epochs_completed - 2
    best = max(trace, key=lambda r: r["valid"]["fused"]["mrr"])
    assert best["epoch"] == result.best_epoch
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=True)["epoch"] == result.best_epoch


def test_the_test_split_never_influences_training(tmp_path, kg, kg_factory):
    other = kg_factory(seed=9)
    swapped = KGTensors(
        kg.num_entities, kg.num_relations, kg.train, kg.valid, other.test[:3], features=kg.features
    )
    train(kg, fast_config(epochs=2, seed=4), tmp_path / "a", progress=False)
    train(swapped, fast_config(epochs=2, seed=4), tmp_path / "b", progress=False)
    assert without_timing(read_trace(tmp_path / "a")) == without_timing(read_trace(tmp_path / "b"))


def test_structure_only_training_and_missing_modalities(tmp_path, kg):
    config = resolve(FAST, {"model.modalities": ["structure"], "train.epochs": 1})
    result = train(kg, config, tmp_path / "structure", progress=False)
    assert set(read_trace(tmp_path / "structure")[0]["valid"]) == {"structure", "fused"}
    assert result.epochs_completed == 1
    bare = KGTensors(kg.num_entities, kg.num_relations, kg.train, kg.valid, kg.test)
    with pytest.raises(ValueError, match="no features for it"):
        train(bare, fast_config(epochs=1), tmp_path / "bare", progress=False)


def test_progress_bar_runs(tmp_path, kg, capsys):
    train(kg, fast_config(epochs=1), tmp_path / "run", progress=True)
    assert "valid MRR" in capsys.readouterr().out


def test_a_signal_stops_after_the_step_and_the_run_resumes_to_the_same_result(tmp_path, kg):
    import os
    import signal

    from models.training import TrainingInterrupted

    config = fast_config(epochs=4, seed=11, relations_per_batch=2, checkpoint_minutes=60.0)
    straight = train(kg, config, tmp_path / "straight", progress=False)

    def interrupt(record):
        if record["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: handled after the next step of epoch 3

    with pytest.raises(TrainingInterrupted, match=r"SIGINT: stopped in epoch 3 after batch 1/") as stopped:
        train(kg, config, tmp_path / "killed", progress=False, on_epoch_end=interrupt)
    assert stopped.value.run_dir == tmp_path / "killed"
    payload = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert payload["epoch"] == 2 and payload["progress"]["batch"] == 1
    assert [r["epoch"] for r in read_trace(tmp_path / "killed")] == [1, 2]

    resumed = resume(tmp_path / "killed", kg, progress=False)
    assert without_timing(read_trace(tmp_path / "killed")) == without_timing(read_trace(tmp_path / "straight"))
    assert (resumed.best_epoch, resumed.best_valid_mrr) == (straight.best_epoch, straight.best_valid_mrr)
    final_straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    final_resumed = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(final_straight[key], final_resumed[key]) for key in final_straight)


def test_checkpoints_are_written_by_time_and_at_the_end_not_every_epoch(tmp_path, kg):
    train(kg, fast_config(epochs=3, seed=2, checkpoint_minutes=60.0), tmp_path / "run", progress=False)
    trace = read_trace(tmp_path / "run")
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 3
    assert all("checkpoint" in record["seconds"] for record in trace)
    # Minutes count: a tiny budget writes last.pt at every epoch's end.
    epochs = []
    train(
        kg, fast_config(epochs=3, seed=2, checkpoint_minutes=1e-9), tmp_path / "often", progress=False,
        on_epoch_end=lambda record: epochs.append(torch.load(tmp_path / "often" / "last.pt", weights_only=True)["epoch"]),
    )
    assert epochs == [1, 2, 3]


def test_a_run_killed_before_its_first_checkpoint_restarts_as_the_same_run(tmp_path, kg):
    from models.config import RunConfig
    from models.training import restart

    config = fast_config(epochs=3, seed=4, checkpoint_minutes=60.0)
    straight = train(kg, config, tmp_path / "straight", progress=False)
    train_until_killed(kg, config, tmp_path / "killed", after_epoch=2)
    assert not (tmp_path / "killed" / "last.pt").exists()
    recorded = RunConfig.from_dict(yaml.safe_load((tmp_path / "killed" / "config.yaml").read_text())["config"])
    restarted = restart(tmp_path / "killed", kg, recorded, progress=False)
    assert without_timing(read_trace(tmp_path / "killed")) == without_timing(read_trace(tmp_path / "straight"))
    assert restarted.best_valid_mrr == straight.best_valid_mrr


def test_a_restart_with_more_epochs_records_the_change(tmp_path, kg):
    from models.config import RunConfig
    from models.training import restart

    config = fast_config(epochs=2, seed=4, checkpoint_minutes=60.0)
    train_until_killed(kg, config, tmp_path / "killed", after_epoch=1)
    recorded = RunConfig.from_dict(yaml.safe_load((tmp_path / "killed" / "config.yaml").read_text())["config"])
    assert restart(tmp_path / "killed", kg, recorded.resumed_with({"train.epochs": 3}), progress=False).epochs_completed == 3
    document = yaml.safe_load((tmp_path / "killed" / "config.yaml").read_text())
    assert document["config"]["train"]["epochs"] == 3 and document["resumed"][0]["set"] == {"train.epochs": 3}
    assert document["resumed"][0]["after_epoch"] == 0


def test_checkpoints_hold_no_feature_matrices_but_their_hashes(tmp_path, kg):
    train(kg, fast_config(epochs=1, seed=1), tmp_path / "run", progress=False)
    payload = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert not any(key.endswith((".features", ".reduced")) for key in payload["model"])
    assert set(payload["feature_hashes"]) == {"visual", "text"}
    changed = KGTensors(
        kg.num_entities, kg.num_relations, kg.train, kg.valid, kg.test,
        features={**kg.features, "text": (kg.features["text"][0] + 1.0, kg.features["text"][1])},
    )
    with pytest.raises(ValueError, match="features of text differ"):
        resume(tmp_path / "run", changed, progress=False)


PRESETS = sorted((Path(__file__).resolve().parents[2] / "imf_cli" / "presets").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_presets_checkpoint_policy_leaves_a_resumable_run_after_a_signal(tmp_path, kg, preset):
    """Each preset's checkpoint settings (countries-mm-quick.yaml: checkpoint_every 1000, never by epoch)
    still leave a last.pt on SIGTERM, and the resumed run ends as an uninterrupted one."""
    import os
    import signal

    from models.training import TrainingInterrupted

    section = yaml.safe_load(preset.read_text()).get("train", {})
    kept = {k: section[k] for k in ("checkpoint_every", "checkpoint_minutes", "relations_per_batch") if k in section}
    config = fast_config(epochs=3, seed=5, **kept)
    straight = train(kg, config, tmp_path / "straight", progress=False)

    def interrupt(record):
        if record["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="SIGTERM"):
        train(kg, config, tmp_path / "killed", progress=False, on_epoch_end=interrupt)
    assert (tmp_path / "killed" / "last.pt").is_file()
    resumed = resume(tmp_path / "killed", kg, progress=False)
    assert (resumed.best_epoch, resumed.best_valid_mrr) == (straight.best_epoch, straight.best_valid_mrr)
    assert without_timing(read_trace(tmp_path / "killed")) == without_timing(read_trace(tmp_path / "straight"))


def test_a_time_budget_stops_at_an_epoch_end_evaluated_and_resumes_to_the_same_run(tmp_path, kg):
    config = fast_config(epochs=4, seed=5, eval_every=3, checkpoint_minutes=60.0)
    straight = train(kg, config, tmp_path / "straight", progress=False)

    stopped = train(kg, config.with_max_minutes(1e-9), tmp_path / "budget", progress=False)
    assert stopped.stopped_at_time_limit and not stopped.stopped_early
    assert stopped.epochs_completed == 1 and stopped.best_epoch == 1
    trace = read_trace(tmp_path / "budget")
    # Epoch 1 is not on the eval_every=3 schedule: the budget evaluates it so best.pt has seen it.
    assert [r["epoch"] for r in trace] == [1] and trace[0]["stopped"] == "max_minutes" and "valid" in trace[0]
    assert trace[0]["valid"]["fused"]["mrr"] == pytest.approx(stopped.best_valid_mrr)
    last = torch.load(tmp_path / "budget" / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and not last["finished"] and last["config"]["train"]["max_minutes"] == 1e-9
    assert (tmp_path / "budget" / "best.pt").is_file()

    # Resumed without a budget it trains the rest; the weights are those of the uninterrupted run
    # (the extra evaluation draws nothing from the training generators).
    resumed = resume(tmp_path / "budget", kg, progress=False, max_minutes=0)
    assert not resumed.stopped_at_time_limit and resumed.epochs_completed == 4
    assert [r["epoch"] for r in read_trace(tmp_path / "budget")] == [1, 2, 3, 4]
    final_straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    final_resumed = torch.load(tmp_path / "budget" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(final_straight[key], final_resumed[key]) for key in final_straight)
    assert resumed.best_valid_mrr >= straight.best_valid_mrr  # it saw one evaluation more


def test_the_time_budget_is_checked_like_any_config_value():
    from models.config import ConfigError

    assert fast_config().train.max_minutes == 0.0  # no budget by default
    assert fast_config(max_minutes="90").train.max_minutes == 90.0
    with pytest.raises(ConfigError, match="max_minutes must be non-negative"):
        fast_config(max_minutes=-1)
    with pytest.raises(ConfigError, match="max_minutes"):
        fast_config().with_max_minutes(float("nan"))
    assert fast_config(max_minutes=5).with_max_minutes(None).train.max_minutes == 5.0


def test_selection_without_overlap_ranks_only_the_valid_triples_not_in_train(tmp_path, kg):
    import dataclasses

    from models.config import ConfigError

    leaky = dataclasses.replace(kg, valid=torch.cat([kg.valid, kg.train[:6]]))
    clean = train(kg, fast_config(epochs=2, seed=3), tmp_path / "clean", progress=False)
    dropped = train(leaky, fast_config(epochs=2, seed=3, valid_drop_overlap=True), tmp_path / "dropped", progress=False)
    kept = train(leaky, fast_config(epochs=2, seed=3), tmp_path / "kept", progress=False)
    trace = read_trace(tmp_path / "dropped")
    assert [record["valid_triples"] for record in trace] == [len(kg.valid)] * 2
    assert "valid_triples" not in read_trace(tmp_path / "kept")[0]
    # The leaked triples filter as train triples anyway: selection sees exactly the clean split's ranking.
    assert [r["valid"] for r in trace] == [r["valid"] for r in read_trace(tmp_path / "clean")]
    assert dropped.best_valid_mrr == clean.best_valid_mrr != kept.best_valid_mrr
    assert yaml.safe_load((tmp_path / "dropped" / "config.yaml").read_text())["config"]["train"]["valid_drop_overlap"]

    all_leaked = dataclasses.replace(kg, valid=kg.train[:5])
    with pytest.raises(ConfigError, match="every valid triple is also in train"):
        train(all_leaked, fast_config(epochs=1, valid_drop_overlap=True), tmp_path / "none", progress=False)
