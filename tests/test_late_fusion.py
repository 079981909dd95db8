"""``benchmarks/late_fusion.py``: two one-branch runs mixed after the fact, on a tiny dataset."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY_VALID
from imf_cli.pipeline import train_model
from imf_cli.run_eval import evaluate_run
from kgdata.features import save_features
from kgdata.importing import import_dataset
from kgdata.store import EntityStore

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "late_fusion.py"
SMALL = {"model.dim": 8, "train.batch_size": 4, "train.eval_every": 1, "train.device": "cpu", "train.epochs": 2}


def late_fusion():
    spec = importlib.util.spec_from_file_location("late_fusion", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_end_weights_are_each_run_alone_and_the_mixture_ranks_every_query(tiny_tsv, imf_home, capsys):
    import_dataset(tiny_tsv)
    runs = [
        train_model("tiny", flags={**SMALL, "train.seed": seed}, modalities=("structure",), progress=False).run_dir
        for seed in (1, 2)
    ]
    assert late_fusion().main([str(runs[0]), str(runs[1]), "--weights", "0.5", "--threads", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for run, weight in zip(runs, ("0.0", "1.0")):
        alone = evaluate_run(run, split="valid", write=False)["fused"]
        assert report["metrics"][weight]["mrr"] == pytest.approx(alone["mrr"])
        assert report["metrics"][weight]["mr"] == pytest.approx(alone["mr"])
    assert set(report["metrics"]) == {"0.0", "0.5", "1.0"}
    assert report["best_w"] in (0.0, 0.5, 1.0)
    queries = sum(row["queries"] for row in report["per_category"].values())
    assert queries == 2 * len(TINY_VALID)


def test_a_run_with_several_branches_is_refused(tiny_tsv, imf_home):
    import_dataset(tiny_tsv)
    with EntityStore.open("tiny") as store:
        n = store.num_entities
        save_features(store, "text", "test-bert", np.random.default_rng(0).normal(size=(n, 6)), np.ones(n, dtype=bool),
                      input_hash="t")
    run = train_model("tiny", flags={**SMALL, "train.seed": 1}, modalities=("structure", "text"), progress=False).run_dir
    with pytest.raises(SystemExit, match="give one-branch runs"):
        late_fusion().main([str(run), str(run), "--threads", "1"])
