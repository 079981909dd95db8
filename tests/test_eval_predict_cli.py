"""`imf eval` against a brute-force reference on a small trained model, and `imf predict` end to end."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import write_tsv_dataset
from imf_cli.main import app
from kgdata.features import save_features
from kgdata.importing import import_dataset
from kgdata.store import EntityStore
from models.checkpoint import load_checkpoint

runner = CliRunner()
HITS = (1, 3, 10)


def clustered_triples(seed: int = 0) -> list[tuple[str, str, str]]:
    """4 clusters of 8 entities: ``same_cluster`` links members, ``hub`` each to its hub, ``next`` to the next hub."""
    rows = []
    for cluster in range(4):
        members = [f"e{cluster * 8 + i}" for i in range(8)]
        for i, member in enumerate(members):
            rows += [(member, "same_cluster", other) for other in members[i + 1 : i + 4]]
            rows.append((member, "hub", members[0]))
            rows.append((member, "next", f"e{(cluster + 1) % 4 * 8}"))
    random.Random(seed).shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A home with the dataset ``clusters`` (3 relations, 32 entities) and a 3-epoch structure + text run."""
    home = tmp_path_factory.mktemp("eval-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMF_HOME", str(home))
        rows = clustered_triples()
        entities = [
            {"id": f"e{i}", "name": f"Entity {i}", "description": f"member of cluster {i // 8}"} for i in range(32)
        ]
        source = write_tsv_dataset(
            tmp_path_factory.mktemp("data") / "clusters",
            train=rows[: len(rows) * 8 // 10],
            valid=rows[len(rows) * 8 // 10 : len(rows) * 9 // 10],
            test=rows[len(rows) * 9 // 10 :],
            entities=entities,
        )
        import_dataset(source)
        with EntityStore.open("clusters") as store:
            features = np.random.default_rng(0).normal(size=(32, 6))
            save_features(store, "text", "test-bert", features, np.ones(32, dtype=bool), input_hash="t")
        result = runner.invoke(
            app,
            ["train", "clusters", "--modalities", "structure,text", "--epochs", "3", "--dim", "8", "--batch-size",
             "8", "--eval-every", "1", "--seed", "1", "--device", "cpu", "--no-progress",
             "--run-dir", str(home / "runs" / "r")],
        )
        assert result.exit_code == 0, result.output
    return home, home / "runs" / "r"


@pytest.fixture
def run_dir(run, monkeypatch):
    monkeypatch.setenv("IMF_HOME", str(run[0]))
    return run[1]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def invoke_json(*args) -> dict:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def brute_force_metrics(run_dir, split: str = "test") -> dict:
    """Every score's metrics, computed plainly: one query at a time, one candidate at a time."""
    model, _ = load_checkpoint(run_dir / "best.pt")
    with EntityStore.open("clusters") as store:
        known = {tuple(t) for s in ("train", "valid", "test") for t in store.triples(s).tolist()}
        triples = store.triples(split).tolist()
        n, r = store.num_entities, store.num_relations
    ranks: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for h, rel, t in triples:
        for direction, entity, relation, answer in (("tails", h, rel, t), ("heads", t, rel + r, h)):
            with torch.no_grad():
                scores = model(torch.tensor([entity]), torch.tensor([relation]))
            # The reference's mean fusion, by hand: the mean of the branches' sigmoid probabilities.
            mean = sum(torch.sigmoid(s.double()) for s in scores.branches.values()) / 3
            rows = {**scores.branches, "fused": scores.fused, "mean_fusion": mean}
            for name, row in rows.items():
                row = row[0].tolist()
                higher = equal = 0
                for candidate in range(n):
                    triple = (entity, rel, candidate) if direction == "tails" else (candidate, rel, entity)
                    if candidate != answer and triple in known:
                        continue
                    higher += row[candidate] > row[answer]
                    equal += row[candidate] == row[answer]
                ranks.setdefault(name, {}).setdefault(direction, []).append((higher + 1, higher + equal))

    def metrics(pairs):
        realistic = [(o + p) / 2 for o, p in pairs]
        values = {"mrr": np.mean([1 / x for x in realistic]), "mr": np.mean(realistic)}
        values.update({f"hits@{k}": np.mean([x <= k for x in realistic]) for k in HITS})
        values["optimistic_mrr"] = np.mean([1 / o for o, _ in pairs])
        values["pessimistic_mrr"] = np.mean([1 / p for _, p in pairs])
        return values

    return {
        name: {**metrics(by["tails"] + by["heads"]), "heads": metrics(by["heads"]), "tails": metrics(by["tails"])}
        for name, by in ranks.items()
    }


def assert_block(got: dict, expected: dict, label: str) -> None:
    for key, value in expected.items():
        if isinstance(value, dict):
            assert_block(got[key], value, f"{label}.{key}")
        else:
            assert got[key] == pytest.approx(value, abs=1e-9), f"{label}.{key}"


def test_eval_agrees_with_brute_force_for_every_branch_and_writes_the_json(run_dir):
    result = invoke("eval", run_dir, "--split", "test", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert list(report)[:2] == ["split", "checkpoint"] and (report["split"], report["checkpoint"]) == ("test", "best")
    assert set(report) >= {"fused", "branches", "mean_fusion", "per_relation"} and report["per_relation"] is None
    assert list(report["branches"]) == ["structure", "text", "multimodal"]
    expected = brute_force_metrics(run_dir)
    for name in ("structure", "text", "multimodal"):
        assert_block(report["branches"][name], expected[name], name)
    assert_block(report["fused"], expected["fused"], "fused")
    assert_block(report["mean_fusion"], expected["mean_fusion"], "mean_fusion")
    assert json.loads((run_dir / "metrics-test.json").read_text()) == report
    model, _ = load_checkpoint(run_dir / "best.pt")
    stored = model.decision.weights(torch.zeros(1, dtype=torch.long)).tolist()
    assert list(report["fusion_weights"]) == ["structure", "text", "multimodal"]
    assert list(report["fusion_weights"].values()) == pytest.approx(stored)


def test_each_read_of_test_is_counted_and_a_second_one_is_said(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    for name in ("metrics-test.json", "metrics-test-no-overlap.json"):
        (run / name).unlink(missing_ok=True)
    first = invoke("eval", run, "--split", "test", "--device", "cpu")
    assert first.exit_code == 0, first.output
    assert "report it once" in first.stdout and "has now been read" not in first.stdout
    once = json.loads((run / "metrics-test.json").read_text())
    assert once["test_reads"] == 1 and once["first_test_read_at"] == once["read_at"]
    again = invoke("eval", run, "--split", "test", "--device", "cpu")
    assert "has now been read 2 times" in " ".join(again.stdout.split())
    # Either file counts: a read without the leaked triples is a read of test too.
    third = invoke_json("eval", run, "--split", "test", "--drop-overlap", "--device", "cpu")
    assert third["test_reads"] == 3 and third["first_test_read_at"] == once["read_at"]
    assert json.loads((run / "metrics-test.json").read_text())["test_reads"] == 2
    assert "test_reads" not in invoke_json("eval", run, "--split", "valid", "--device", "cpu")


def test_per_relation_metrics_and_an_explicit_batch_size(run_dir):
    auto = invoke_json("eval", run_dir, "--split", "valid", "--per-relation")
    small = invoke_json("eval", run_dir, "--split", "valid", "--per-relation", "--batch-size", 1)
    assert small["chunk_size"] == 1 and auto["chunk_size"] > 1
    for key in ("fused", "branches", "mean_fusion", "per_relation"):
        assert small[key] == auto[key]
    per = auto["per_relation"]
    assert set(per) <= {"same_cluster", "hub", "next"} and sum(v["triples"] for v in per.values()) == auto["triples"]
    weighted = sum(v["triples"] * v["fused"]["mrr"] for v in per.values()) / auto["triples"]
    assert weighted == pytest.approx(auto["fused"]["mrr"])
    assert set(per["hub"]["branches"]) == {"structure", "text", "multimodal"} and "heads" in per["hub"]["mean_fusion"]
    assert {v["category"] for v in per.values()} <= {"1-1", "1-N", "N-1", "N-N"}
    categories = auto["per_category"]
    assert sum(v["triples"] for v in categories.values()) == auto["triples"]
    assert sum(v["relations"] for v in categories.values()) == len(per)
    for name, values in categories.items():
        members = [v for v in per.values() if v["category"] == name]
        mrr = sum(v["triples"] * v["fused"]["mrr"] for v in members) / values["triples"]
        assert values["fused"]["mrr"] == pytest.approx(mrr)
    assert (run_dir / "metrics-valid.json").is_file()


def test_eval_table_for_people(run_dir):
    result = invoke("eval", run_dir, "--per-relation")  # valid by default
    assert result.exit_code == 0, result.output
    expected = ("structure", "multimodal", "fused", "mean fusion", "heads", "per relation", "same_cluster",
                "per relation category")
    for text in (*expected, "metrics-valid.json"):
        assert text in result.stdout, text


def test_the_relation_table_shows_names_and_fits_80_columns():
    """Keys (DBpedia's URIs on DB15K) appear only where names collide; each name stays on one line."""
    from rich.console import Console

    from imf_cli.commands.eval import relation_labels, relation_table

    block = {"mrr": 0.5, "heads": {"mrr": 0.4}, "tails": {"mrr": 0.6}}

    def values(name, triples):
        return {"name": name, "triples": triples, "category": "N-1", "fused": block, "mean_fusion": block,
                "branches": {"structure": block, "multimodal": {**block, "mrr": 0.625}}}

    per = {
        "<http://dbpedia.org/ontology/birthPlace>": values("birthPlace", 900),
        "<http://dbpedia.org/ontology/location>": values("location", 50),
        "<http://schema.org/location>": values("location", 40),
        "r9": values("", 3),
    }
    assert relation_labels(per) == {
        "<http://dbpedia.org/ontology/birthPlace>": "birthPlace",
        "<http://dbpedia.org/ontology/location>": "location (<http://dbpedia.org/ontology/location>)",
        "<http://schema.org/location>": "location (<http://schema.org/location>)",
        "r9": "(r9)",
    }
    per = {f"r{i}": values(name, 10 - i) for i, name in enumerate(["imports from", "has government type"])}
    console = Console(width=80, record=True)
    console.print(relation_table({"per_relation": per}))
    lines = console.export_text().splitlines()
    assert max(map(len, lines)) <= 80
    rows = [line for line in lines if "N-1" in line]
    assert len(rows) == 2 and "imports from" in rows[0] and "multimodal 0.625" in rows[0]
    assert "has government" in rows[1]  # the longer name folds, but keeps its row


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split", "train"], "'train' is not one of"),
        (["--checkpoint", "middle"], "unknown checkpoint 'middle'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_eval_arguments_exit_2(run_dir, args, message):
    result = invoke("eval", run_dir, *args)
    assert result.exit_code == 2 and message in result.output


def test_eval_of_a_directory_that_is_not_a_run(tmp_path):
    result = invoke("eval", tmp_path)
    assert result.exit_code == 2 and "not a run directory" in result.output


@pytest.mark.parametrize("width", [120, 62, 44])
def test_predict_table_keeps_names_and_scores_and_drops_the_key_where_it_does_not_fit(run_dir, width, monkeypatch):
    from imf_cli import output

    monkeypatch.setattr(output.console, "_width", width)  # restored to None: $COLUMNS rules again
    result = invoke("predict", run_dir, "--head", "e0", "--relation", "same_cluster", "-k", 3)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= width
    assert "…" not in result.output  # no score is ever cut
    header = next(line.split() for line in lines if line.split()[:2] == ["rank", "name"])
    words = " ".join(result.output.split())
    if width == 44:  # the branch columns go, the last first; the fused score stays
        assert header[2:] == ["fused", "structure", "known"]
        assert "text, multimodal, keys left out for the terminal's width (--json has them)" in words
        return
    assert header[2:6] == ["fused", "structure", "text", "multimodal"]
    rows = [line.split() for line in lines if line.split()[:1] in (["1"], ["2"], ["3"]) and "Entity" in line]
    assert len(rows) == 3 and all(row[1] == "Entity" and row[2].isdigit() and len(row) >= 8 for row in rows)
    if width == 120:
        assert header[-1] == "key" and "keys left out" not in words
    else:
        assert "key" not in header and "keys left out for the terminal's width (--json has them)" in words


def test_predict_json_rows_flags_and_include_known(run_dir):
    with EntityStore.open("clusters") as store:
        splits = {s: {tuple(t) for t in store.triples(s).tolist()} for s in ("train", "valid", "test")}
        e0, same = store.entity("e0").id, store.relation("same_cluster").id
    known_tails = {t for triples in splits.values() for (h, r, t) in triples if (h, r) == (e0, same)}

    hidden = invoke_json("predict", run_dir, "--head", "e0", "--relation", "same_cluster", "-k", 5)
    assert hidden["entity"]["key"] == "e0" and hidden["relation"]["inverse"] is False
    assert hidden["hidden_known"] == len(known_tails) > 0
    assert len(hidden["predictions"]) == 5
    assert all(not any(p["known"].values()) and p["entity"]["id"] not in known_tails for p in hidden["predictions"])
    assert set(hidden["weights"]) == {"structure", "text", "multimodal"}

    shown = invoke_json("predict", run_dir, "--head", "e0", "--relation", "same", "-k", 32, "--include-known")
    assert shown["hidden_known"] == 0 and len(shown["predictions"]) == 32
    for row in shown["predictions"]:
        candidate = row["entity"]["id"]
        assert row["known"] == {s: (e0, same, candidate) in splits[s] for s in splits}
        assert set(row["branches"]) == set(row["contributions"]) == {"structure", "text", "multimodal"}
        assert sum(row["contributions"].values()) == pytest.approx(row["fused"], abs=1e-5)
    assert [row["rank"] for row in shown["predictions"]] == list(range(1, 33))
    assert sum(any(row["known"].values()) for row in shown["predictions"]) == len(known_tails)


def test_predict_heads_and_the_table(run_dir):
    heads = invoke_json("predict", run_dir, "--tail", "Entity 0", "--relation", "hub", "-k", 3)
    assert heads["relation"]["inverse"] is True and heads["entity"]["key"] == "e0"
    table = invoke("predict", run_dir, "--head", "Entity 9", "--relation", "next", "-k", "4")
    assert table.exit_code == 0, table.output
    assert "(Entity 9, next, ?)" in table.stdout and "fusion weights" in table.stdout and "multimodal" in table.stdout


@pytest.mark.parametrize(
    ("args", "messages"),
    [
        (["--head", "Entity", "--relation", "hub"], ["'Entity' matches several", "Entity 0 [e0]; Entity 1", "…"]),
        (["--head", "cluster 3", "--relation", "hub"], ["matches several entities", "Entity 24 [e24]"]),
        (["--head", "Entty 3", "--relation", "hub"], ["no entity of dataset 'clusters' matches 'Entty 3'", "did you"]),
        (["--head", "e1", "--relation", "color"], ["no relation of dataset 'clusters' matches 'color'"]),
        (["--head", "e1", "--tail", "e2", "--relation", "hub"], ["exactly one of --head"]),
        (["--relation", "hub"], ["exactly one of --head"]),
    ],
)
def test_predict_name_errors_are_clear(run_dir, args, messages):
    result = invoke("predict", run_dir, *args)
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    for message in messages:
        assert message in output
    assert "Traceback" not in result.output


def test_the_predict_table_measures_wide_characters_by_their_cells():
    """A name in CJK characters takes two cells per character: the layout must not overflow."""
    from types import SimpleNamespace

    from rich.console import Console

    from imf_cli.commands.predict import prediction_table

    def prediction(rank, name, key):
        return SimpleNamespace(rank=rank, entity=SimpleNamespace(name=name, key=key), fused=0.5,
                               branches={"structure": 0.25}, known=set(), in_graph=True)

    result = SimpleNamespace(predictions=[prediction(1, "東京都庁舎東京都庁舎東京都庁舎", "tokyo"), prediction(2, "Paris", "paris")])
    for width in (70, 44):
        console = Console(width=width, record=True)
        console.print(prediction_table(result, ["structure"], "(x, r, ?)", "fusion weights: structure 1.000", width))
        lines = console.export_text().splitlines()
        assert max(console.measure(line).maximum for line in lines) <= width
        assert any("東京都庁舎東京都庁舎東京都庁舎" in line for line in lines) == (width == 70)
        assert "".join(ch for ch in "".join(lines) if ord(ch) > 0x3000) == "東京都庁舎東京都庁舎東京都庁舎"  # folded, never cut


def test_a_one_branch_model_shows_its_branch_alone():
    """Fused and mean fusion equal the only branch: the tables show it once and say so."""
    from rich.console import Console

    from imf_cli.commands.eval import category_table, relation_table, summary_table

    block = {"mrr": 0.5, "mr": 3.0, "hits@1": 0.25, "hits@3": 0.5, "hits@10": 1.0,
             "heads": {"mrr": 0.4}, "tails": {"mrr": 0.6}}
    scores = {"branches": {"structure": block}, "fused": block, "mean_fusion": block}
    result = {"dataset": "tiny", "split": "valid", "checkpoint": "best", "triples": 4, **scores,
              "per_relation": {"r0": {"name": "r zero", "triples": 4, "category": "N-1", **scores}},
              "per_category": {"N-1": {"relations": 1, "triples": 4, **scores}}}
    for table, missing in [(summary_table, ("fused", "mean fusion")), (relation_table, ("mean", "best branch")),
                           (category_table, ("fused", "mean fusion"))]:
        console = Console(width=100, record=True)
        console.print(table(result))
        text = console.export_text()
        assert "structure" in text and "0.5" in text, table
        for word in missing:
            assert word not in text.replace("fused and mean-fusion scores", ""), (table, word)
        for width in (40, 30):  # narrow: the expendable columns it lacks are skipped, not a crash
            console = Console(width=width, record=True)
            console.print(table(result, width))
            text = console.export_text()
            assert "0.5" in text and "…" not in text and max(map(len, text.splitlines())) <= width, (table, width, text)
    console = Console(width=100, record=True)
    console.print(summary_table(result))
    assert "One branch" in console.export_text()
    result["branches"] = {"structure": block, "text": block}
    for part in (result["per_relation"]["r0"], result["per_category"]["N-1"]):
        part["branches"] = result["branches"]
    for table in (summary_table, relation_table, category_table):
        console = Console(width=120, record=True)
        console.print(table(result))
        assert "mean" in console.export_text(), table
    from types import SimpleNamespace

    from imf_cli.commands.predict import prediction_table

    rows = SimpleNamespace(predictions=[SimpleNamespace(
        rank=1, entity=SimpleNamespace(name="Paris", key="paris"), fused=0.75,
        branches={"structure": 0.25, "text": 0.5}, known=set(), in_graph=True)])
    for branches, shown in ((["structure"], False), (["structure", "text"], True)):
        console = Console(width=100, record=True)
        console.print(prediction_table(rows, branches, "(x, r, ?)", "", 100))
        text = console.export_text()
        assert ("fused" in text) == shown and ("0.750" in text) == shown and "0.250" in text
    console = Console(width=30, record=True)  # a one-branch run at 30 columns: the known flags go, no score is cut
    console.print(prediction_table(rows, ["structure"], "(x, r, ?)", "one branch", 30))
    text = console.export_text()
    assert "…" not in text and "0.250" in text and "known" not in text.replace("known left out", "")
    assert "known left out for the terminal's width" in " ".join(text.split()) and "paris" in text


@pytest.mark.parametrize("command", ["predict", "explain", "explore", "ablate", "eval", "train", "encode"])
def test_every_command_that_runs_torch_takes_threads_and_refuses_zero(command):
    result = invoke(command, "x", "--threads", "0")
    assert result.exit_code == 2 and "--threads" in result.output and "greater than or equal to 1" in " ".join(result.output.split())


def test_predict_with_one_thread(run_dir):
    import torch

    before = torch.get_num_threads()
    try:
        result = invoke("predict", run_dir, "--head", "e0", "--relation", "same_cluster", "-k", 2, "--threads", 1)
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("width", "left_out"), [(100, []), (60, ["tails"]), (52, ["tails", "heads"]), (40, ["tails", "heads", "Hits@3", "MR"])])
def test_the_summary_never_cuts_a_number_and_names_what_a_narrow_terminal_leaves_out(width, left_out):
    """At 72 columns every figure read '0.01…'; now columns go, in a fixed order, and the caption says so."""
    from rich.console import Console

    from imf_cli.commands.eval import summary_table

    def block(x):
        return {"mrr": x, "mr": 1234.5, "hits@1": x, "hits@3": x, "hits@10": x, "heads": {"mrr": x}, "tails": {"mrr": x}}

    result = {"dataset": "db15k", "split": "test", "checkpoint": "best", "triples": 19275,
              "branches": {"structure": block(0.4121), "multimodal": block(0.3333)},
              "fused": block(0.4222), "mean_fusion": block(0.4111)}
    console = Console(width=width, record=True)
    console.print(summary_table(result, width))
    text = console.export_text()
    assert "…" not in text and max(map(len, text.splitlines())) <= width
    assert text.count("0.4121") >= 2 and "mean fusion" in text and "multimodal" in text
    header = next(line for line in text.splitlines() if line.startswith("score")).split()
    for column in ("tails", "heads", "Hits@3", "MR"):
        assert (column in header) == (column not in left_out), column
    caption = " ".join(text.split())
    assert ("Left out for the terminal's width: " + ", ".join(left_out)) in caption if left_out else "Left out" not in caption


def test_the_per_relation_and_category_tables_never_cut_a_figure(run_dir, monkeypatch):
    """At 60 columns every MRR read '0.0…' in both tables."""
    from imf_cli import output

    for width in (100, 60, 44):
        monkeypatch.setattr(output.console, "_width", width)  # restored to None: $COLUMNS rules again
        result = invoke("eval", run_dir, "--per-relation")
        assert result.exit_code == 0, result.output
        assert "…" not in result.output.replace("best.pt …", "")  # the "Ranking … with RUN/best.pt …" line
        from rich.cells import cell_len

        assert max(map(cell_len, result.output.splitlines())) <= width
        words = " ".join(result.output.split())
        assert ("Left out for the terminal's width" in words) == (width < 100)


def test_a_run_stopped_before_its_first_validation_says_how_to_go_on(run_dir, tmp_path):
    """A run killed in its first epoch has last.pt and no best.pt; eval, predict and explain said
    only 'cannot load checkpoint …/best.pt: no such file'."""
    import shutil

    early = run_dir.parent / "early"
    shutil.copytree(run_dir, early)
    try:
        (early / "best.pt").unlink()
        trace = (early / "trace.jsonl").read_text()
        (early / "trace.jsonl").write_text("")  # no validation yet
        for command in (["eval", early, "--split", "valid"], ["predict", early, "--head", "Entity 1", "--relation", "hub"]):
            result = invoke(*command)
            assert result.exit_code == 2, result.output
            assert (
                f"run early has no best.pt yet: it stopped before its first validation. Continue it with imf "
                f"train --resume {early}, or use its last weights with --checkpoint last"
            ) in " ".join(result.output.split())
        assert invoke("eval", early, "--split", "valid", "--checkpoint", "last").exit_code == 0
        # A best.pt that validations wrote, removed since: said as such, not as a run that never validated.
        (early / "trace.jsonl").write_text(trace)
        validations = sum('"valid"' in line for line in trace.splitlines())
        result = invoke("eval", early, "--split", "valid")
        assert result.exit_code == 2 and "yet" not in result.output
        assert f"run early has no best.pt, though trace.jsonl records {validations} validation" in " ".join(result.output.split())
    finally:
        shutil.rmtree(early)


def test_threads_beyond_four_per_cpu_are_a_usage_error(run_dir, monkeypatch):
    """--threads 100000 crashed the process inside OpenMP (a segmentation fault); 16,384 failed to
    create threads; 1,024 on 2 CPUs made an epoch crawl."""
    import imf_cli.output as output

    monkeypatch.setattr(output, "usable_cpus", lambda: 2)
    for command in (["eval", run_dir, "--split", "valid"], ["train", "clusters", "--epochs", "1"]):
        result = invoke(*command, "--threads", "9")
        assert result.exit_code == 2 and "Invalid value for '--threads': 9 is more than 4 per CPU" in result.output
    assert invoke("eval", run_dir, "--split", "valid", "--threads", "8").exit_code == 0


def test_a_checkpoint_of_another_run_is_one_clear_error_in_eval_predict_and_explain(run_dir, tmp_path):
    import shutil

    source = write_tsv_dataset(
        tmp_path / "other", train=[("x", "q", "y"), ("y", "q", "z")], valid=[("x", "q", "z")], test=[("z", "q", "x")]
    )
    import_dataset(source, name="other")
    other = run_dir.parent / "other-run"
    trained = invoke("train", "other", "--modalities", "structure", "--epochs", "1", "--dim", "8", "--batch-size", "2",
                     "--device", "cpu", "--no-progress", "--run-dir", other)
    assert trained.exit_code == 0, trained.output
    copy = run_dir.parent / "r-copied"
    shutil.copytree(run_dir, copy)
    shutil.copy(other / "best.pt", copy / "best.pt")  # clusters' run, other's weights
    for args in (("eval", copy), ("predict", copy, "--head", "Entity 1", "--relation", "hub"),
                 ("explain", copy, "--head", "Entity 1", "--relation", "hub", "--tail", "Entity 2")):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        # the data fingerprint tells first (it also catches another dataset of the same sizes)
        assert "trained on other data than the run records (dataset 'other')" in " ".join(result.output.split())
        assert "bug in imf" not in result.output


def test_valid_fused_is_cross_fitted_as_training_selected_with(run_dir):
    """The run fits its decision weights on valid: ranked with them, valid's fused MRR was in-sample
    (above every branch, where the cross-fitted figure training chose best.pt with was below them)."""
    trace = [json.loads(line) for line in (run_dir / "trace.jsonl").read_text().splitlines()]
    best = next(r for r in trace if r["epoch"] == trace[-1]["best_epoch"])
    report = invoke_json("eval", run_dir, "--split", "valid", "--device", "cpu")
    assert report["fused_cross_fitted"] is True
    assert report["fused"]["mrr"] == pytest.approx(best["valid"]["fused"]["mrr"], abs=1e-6)
    for name, branch in report["branches"].items():
        assert branch["mrr"] == pytest.approx(best["valid"][name]["mrr"], abs=1e-6)
    assert "cross-fitted" in invoke("eval", run_dir, "--split", "valid", "--device", "cpu").output
    test = invoke_json("eval", run_dir, "--split", "test", "--device", "cpu")
    assert "fused_cross_fitted" not in test  # test is never fitted on


def test_last_pt_s_test_report_goes_beside_best_pt_s_and_runs_shows_best(run_dir):
    """`imf eval --split test --checkpoint last` overwrote metrics-test.json, and `imf runs` then showed
    last.pt's test MRR under "fused MRR of best.pt"."""
    from imf_cli.runs import run_info

    best = invoke_json("eval", run_dir, "--split", "test", "--device", "cpu")
    last = invoke_json("eval", run_dir, "--split", "test", "--device", "cpu", "--checkpoint", "last")
    assert (run_dir / "metrics-test-last.json").is_file()
    stored = json.loads((run_dir / "metrics-test.json").read_text())
    assert stored["checkpoint"] == "best" and stored["fused"]["mrr"] == best["fused"]["mrr"]
    assert run_info(run_dir).test_mrr == pytest.approx(best["fused"]["mrr"])
    assert last["test_reads"] == best["test_reads"] + 1  # every read of test counts, either checkpoint


def test_eval_in_a_read_only_run_shows_the_figures_then_says_they_were_not_written(run_dir, monkeypatch):
    """Only "cannot write …/metrics-valid.json" came out: the computed figures were thrown away."""
    from imf_cli import run_eval
    from kgdata.errors import ImfError

    def refuse(path, value):
        raise ImfError(f"cannot write {path}: Permission denied")

    monkeypatch.setattr(run_eval, "_write_json", refuse)
    shown = invoke("eval", run_dir, "--device", "cpu")
    flat = " ".join(shown.output.split())
    assert shown.exit_code == 1 and "MRR" in flat and "Hits@10" in flat, shown.output
    assert "metrics-valid.json: Permission denied; the figures above were not recorded" in flat and "Wrote" not in flat
    as_json = invoke("eval", run_dir, "--device", "cpu", "--json")
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["fused"]["mrr"] > 0


def test_an_unknown_checkpoint_is_refused_before_the_progress_line(run_dir):
    shown = invoke("eval", run_dir, "--checkpoint", "nope", "--device", "cpu", "--no-progress")
    assert shown.exit_code == 2 and "unknown checkpoint 'nope'" in shown.output and "Ranking" not in shown.output
