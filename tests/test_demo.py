"""``imf demo --quick``: the whole pipeline, offline, on the bundled Countries-MM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from imf_cli.demo import preset_path
from imf_cli.main import app
from models.config import resolve

runner = CliRunner()
BRANCHES = ("structure", "visual", "text", "multimodal")


@pytest.mark.slow
def test_quick_demo_runs_end_to_end(imf_home):
    result = runner.invoke(app, ["demo", "--quick", "--json", "--seed", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = report["rows"]
    assert set(rows) == {*BRANCHES, "IMF (learned fusion)", "IMF (mean fusion)", "structure-only baseline"}
    for name, row in rows.items():
        assert 0.0 < row["mrr"] <= 1.0 and row["mr"] >= 1.0, name
        assert row["hits@1"] <= row["hits@3"] <= row["hits@10"], name
    assert {rows[b]["kind"] for b in BRANCHES} == {"branch"}
    # Random ranking of 492 entities gives an MRR near 0.014; even four epochs learn something.
    assert rows["IMF (learned fusion)"]["mrr"] > 0.03
    assert set(report["weights"]) == set(BRANCHES) and sum(report["weights"].values()) == pytest.approx(1.0)

    for key in ("run_dir", "baseline_dir"):
        document = yaml.safe_load((imf_home / "runs" / report[key].rsplit("/", 1)[1] / "config.yaml").read_text())
        assert document["seed"] == 3 and document["metadata"]["dataset"] == "countries-mm"
    imf_config = yaml.safe_load((imf_home / "runs" / report["run_dir"].rsplit("/", 1)[1] / "config.yaml").read_text())
    assert imf_config["config"]["model"]["modalities"] == ["structure", "visual", "text"]
    features = {f["modality"]: f["encoder"] for f in imf_config["metadata"]["features"]}
    assert features == {"image": "efficientnet-lite0", "text": "minilm"}

    # A second run reuses the import and the features, and trains new runs.
    again = runner.invoke(app, ["demo", "--quick", "--seed", "3", "--no-progress"])
    assert again.exit_code == 0, again.output
    assert "already imported" in again.output and again.output.count("up to date") == 2
    assert "imf explore " in again.output and "learned fusion" in again.output


def test_presets_are_valid_configs():
    for quick in (False, True):
        values = yaml.safe_load(preset_path(quick).read_text())
        config = resolve(values)
        assert config.model.modalities == ("structure", "visual", "text")
        assert config.train.patience == 0  # a fixed budget: the best epoch is still chosen on valid
    paper = resolve(yaml.safe_load((preset_path().parent / "paper.yaml").read_text()))
    assert not paper.model.detach_fusion_inputs and not paper.train.fit_fusion_on_valid
    assert paper.train.fused_loss_weight == 1.0


@pytest.mark.parametrize("dataset", ["db15k", "fb15k-237"])
def test_benchmark_presets_differ_from_their_baselines_only_in_modalities(dataset):
    presets = preset_path().parent
    fused = yaml.safe_load((presets / f"{dataset}.yaml").read_text())
    baseline = yaml.safe_load((presets / f"{dataset}-structure.yaml").read_text())
    assert resolve(fused).model.modalities == ("structure", "text")
    assert resolve(baseline).model.modalities == ("structure",)
    fused["model"].pop("modalities"), baseline["model"].pop("modalities")
    assert fused == baseline
    assert resolve(fused).train.patience > 0  # early stopping on valid


def test_benchmark_recipes_are_valid_configs():
    recipes = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "recipes").glob("*.yaml"))
    assert recipes
    for recipe in recipes:
        resolve(yaml.safe_load(recipe.read_text()))
