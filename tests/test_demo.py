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


def test_the_demo_table_never_cuts_a_figure():
    """Below 80 columns the demo's table cut its figures ('0.4…'); now it leaves out whole columns."""
    import dataclasses
    import io

    from rich.console import Console

    from imf_cli.commands.demo import results_table
    from imf_cli.demo import DemoResult, DemoRow

    def metrics(mrr, mr):
        return {"mrr": mrr, "mr": mr, "hits@1": 0.345, "hits@3": 0.555, "hits@10": 0.738}

    rows = [DemoRow("structure", "branch", metrics(0.482, 12.9)), DemoRow("text", "branch", metrics(0.486, 13.1)),
            DemoRow("IMF (learned fusion)", "fusion", metrics(0.499, 12.1)),
            DemoRow("structure-only baseline", "baseline", metrics(0.466, 12.1))]
    fields = {field.name: None for field in dataclasses.fields(DemoResult)}
    result = DemoResult(**{**fields, "rows": rows, "weights": {"structure": 0.52, "text": 0.48}})
    for width, left_out in ((80, ""), (60, "MR, Hits@3, weight"), (40, "MR, Hits@3, weight, Hits@1, Hits@10")):
        console = Console(width=width, record=True, file=io.StringIO())
        console.print(results_table(result, width))
        text = console.export_text()
        assert "…" not in text and max(map(len, text.splitlines())) <= width, text
        assert all(figure in text for figure in ("0.482", "0.486", "0.499", "0.466", "structure-only baseline"))
        words = " ".join(text.split())
        assert (f"Left out for the terminal's width: {left_out} (imf demo --json" in words) == bool(left_out), words
        assert ("12.9" in text) == (not left_out)
