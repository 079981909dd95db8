"""Entities outside the training graph in the prediction service: placement file, inline and added entities."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from imf_cli.service import INLINE_ID, PredictionService
from imf_cli.unseen import placement_path
from kgdata.errors import DataError, ImfError
from models.inductive import load_placement
from helpers import TINY_VALID
from unseen_helpers import ADDED, ENTITIES, TRAIN

EXPECTED_BRANCHES = ("structure", "visual", "text", "multimodal")


@pytest.fixture
def service(places_run, monkeypatch):
    home, run_dir = places_run
    monkeypatch.setenv("IMF_HOME", str(home))
    from helpers import tiny_cnn_class
    from kgdata.encoders import REGISTRY

    monkeypatch.setitem(REGISTRY, "tiny-cnn", tiny_cnn_class())
    with PredictionService.from_run(run_dir, device="cpu") as opened:
        yield opened


def image_of(service, key: str) -> str:
    return service.entity(service.resolve_entity(key).id).image


def check_rows(result, scored_by):
    """Every row: the branches that scored it, contributions that sum to the fused score, best first."""
    fused = [p.fused for p in result.predictions]
    assert fused == sorted(fused, reverse=True) and all(math.isfinite(f) for f in fused)
    for prediction in result.predictions:
        assert prediction.scored_by == scored_by
        assert sum(prediction.contributions.values()) == pytest.approx(prediction.fused, abs=1e-5)


# -------------------------------------------------------------------------------------------- placement
def test_training_stores_the_placement_of_its_best_checkpoint(places_run):
    _, run_dir = places_run
    maps, metadata = load_placement(placement_path(run_dir, "best"))
    # Fewer than ten graph entities: nothing is held out, and the maps train for the full budget.
    assert set(maps) == {"visual", "text"} and {m.method for m in maps.values()} == {"fitted"}
    assert metadata["checkpoint"] == "best" and len(metadata["fingerprint"]) == 64
    assert metadata["triples"] == len(TRAIN) + len(TINY_VALID)  # fitted to rank the graph's train and valid facts
    assert maps["text"].rows == len(ENTITIES) - len(ADDED)  # every graph entity has text (Europe: its name)
    assert maps["visual"].rows == len(ENTITIES) - len(ADDED) - 1  # Europe has no image
    assert not placement_path(run_dir, "last").exists()


def test_the_service_uses_the_stored_placement_and_refits_a_stale_one(service, monkeypatch, places_run):
    import models.placement

    path = placement_path(places_run[1], "best")
    stored = path.read_bytes()
    monkeypatch.setattr(models.placement, "fit_placement", lambda *a, **k: pytest.fail("refitted a valid placement"))
    assert service.inductive().placeable == ("visual", "text", "multimodal")

    service.unseen._inductive = None
    path.write_bytes(b"damaged")
    monkeypatch.undo()
    service.inductive()
    assert load_placement(path)[1]["fingerprint"] == load_placement_bytes(stored, path.parent)[1]["fingerprint"]


def load_placement_bytes(data: bytes, directory):
    path = directory / "copy.safetensors"
    path.write_bytes(data)
    try:
        return load_placement(path)
    finally:
        path.unlink()


# ------------------------------------------------------------------------------------------------ inline
def test_inline_text_is_scored_by_the_text_and_multimodal_branches(service):
    borders = service.resolve_relation("borders")
    result = service.predict_new(borders.id, text="republic in southern europe", k=5)
    assert result.entity.id == INLINE_ID and not result.in_graph
    assert result.scored_by == ("text", "multimodal")
    assert sum(result.weights.values()) == pytest.approx(1.0)
    assert len(result.predictions) == 5 and result.hidden_known == 0
    check_rows(result, ("text", "multimodal"))
    assert all(p.in_graph and not p.known for p in result.predictions)
    document = result.to_dict()
    assert document["scored_by"] == ["text", "multimodal"] and document["in_graph"] is False
    assert document["predictions"][0]["scored_by"] == ["text", "multimodal"]
    assert "structure" not in document["predictions"][0]["branches"]


def test_inline_image_only_and_both(service):
    relation = service.resolve_relation("in").id
    image = service.predict_new(relation, image=image_of(service, "france"), k=3)
    assert image.scored_by == ("visual", "multimodal")
    check_rows(image, ("visual", "multimodal"))
    both = service.predict_new(relation, text="republic in western europe", image=image_of(service, "france"), k=3)
    assert both.scored_by == ("visual", "text", "multimodal")
    assert both.entity.name == "republic in western europe" and both.entity.image.endswith("france.png")


def test_inline_input_errors_are_clear(service, tmp_path):
    relation = service.resolve_relation("in").id
    with pytest.raises(ImfError, match="--new-text"):
        service.predict_new(relation)
    with pytest.raises(DataError, match="no such image file"):
        service.predict_new(relation, image=tmp_path / "absent.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=f"{broken}: not a readable image"):
        service.predict_new(relation, image=broken)
    with pytest.raises(ImfError, match="empty"):
        service.predict_new(relation, text="   ")
    with pytest.raises(ImfError, match="empty"):
        service.predict_new(relation, text="\n\t ")
    # what an imported description may not hold, inline text may not either: named, with its column
    for text, shown in (("a\u202eb", "U+202E (RIGHT-TO-LEFT OVERRIDE) at column 2"), ("red\x1b[0m", "U+001B"),
                        ("x\u2028y", "U+2028 (LINE SEPARATOR)")):
        with pytest.raises(DataError, match=re.escape(f"the text of a new entity holds the control character {shown}")):
            service.predict_new(relation, text=text)
    pasted = service.predict_new(relation, text="republic in\r\nwestern\teurope\n", k=3)
    assert pasted.entity.name == pasted.entity.description == "republic in western europe"


# ------------------------------------------------------------------------------------------------- added
def test_an_added_entity_scores_as_head_exactly_as_the_same_input_given_inline(service):
    lyon = service.resolve_entity("lyon")
    assert service.is_added(lyon.id) and not service.is_added(service.resolve_entity("paris").id)
    relation = service.resolve_relation("capital_of").id
    stored = service.top_k(lyon.id, relation, k=4)
    inline = service.predict_new(relation, text=ENTITIES["lyon"][1], image=image_of(service, "lyon"), k=4)
    assert stored.entity == lyon and not stored.in_graph
    assert stored.scored_by == inline.scored_by == ("visual", "text", "multimodal")
    assert [p.entity.id for p in stored.predictions] == [p.entity.id for p in inline.predictions]
    for a, b in zip(stored.predictions, inline.predictions):
        assert a.fused == pytest.approx(b.fused, abs=1e-4)
    assert service.scored_by(lyon.id) == ("visual", "text", "multimodal")
    assert service.scored_by(0) == EXPECTED_BRANCHES


def test_an_added_entity_without_features_cannot_be_scored(service):
    blank = service.resolve_entity("blank")
    with pytest.raises(ImfError, match="no feature"):
        service.top_k(blank.id, 0)
    assert service.scored_by(blank.id) == ()


def test_added_entities_are_candidates_only_when_asked(service):
    france, relation = service.resolve_entity("france"), service.resolve_relation("borders").id
    lyon = service.resolve_entity("lyon")
    plain = service.top_k(france.id, relation, k=service.num_entities)
    assert all(p.in_graph for p in plain.predictions)
    asked = service.top_k(france.id, relation, k=service.num_entities, include_new=True)
    rows = {p.entity.key: p for p in asked.predictions}
    assert "lyon" in rows and "blank" not in rows  # blank has nothing to be scored by
    assert not rows["lyon"].in_graph and rows["lyon"].scored_by == ("visual", "text", "multimodal")
    assert sum(rows["lyon"].contributions.values()) == pytest.approx(rows["lyon"].fused, abs=1e-5)
    graph_rows = {p.entity.key: p.fused for p in plain.predictions}
    for key, fused in graph_rows.items():  # the graph candidates keep their scores
        assert rows[key].fused == pytest.approx(fused, abs=1e-5) and rows[key].scored_by == EXPECTED_BRANCHES
    assert asked.hidden_known == plain.hidden_known
    by_name = service.query(relation="borders", head="France", k=20, include_new=True)
    assert lyon.id in [p.entity.id for p in by_name.predictions]


def test_facts_and_evaluation_stay_on_the_training_graph(service, places_run):
    from imf_cli.run_eval import evaluate_run

    lyon, france = service.resolve_entity("lyon"), service.resolve_entity("france")
    assert service.supporting_facts(lyon.id, france.id) == []
    assert service.known(lyon.id, 0)["train"].numel() == 0
    report = evaluate_run(places_run[1], split="test", device="cpu", write=False)
    assert report["triples"] == 1 and 0 < report["fused"]["mrr"] <= 1


def test_a_structure_only_run_says_it_cannot_score_new_entities(places_run, monkeypatch, tmp_path):
    from imf_cli.pipeline import train_model
    from unseen_helpers import DATASET, FLAGS

    monkeypatch.setenv("IMF_HOME", str(places_run[0]))
    run = train_model(DATASET, flags=FLAGS, modalities=("structure",), run_dir=tmp_path / "run", progress=False)
    assert not placement_path(run.run_dir).exists()
    with PredictionService.from_run(run.run_dir, device="cpu") as service:
        with pytest.raises(ImfError, match="only a structure branch"):
            service.predict_new(0, text="anything")
        assert "only a structure branch" in service.why_no_new_entities()


# --------------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def cli(places_run, monkeypatch):
    """Run ``imf`` in this process against the places_run run's home; returns (invoke, run_dir)."""
    from typer.testing import CliRunner

    from helpers import tiny_cnn_class
    from imf_cli.main import app
    from kgdata.encoders import REGISTRY

    home, run_dir = places_run
    monkeypatch.setenv("IMF_HOME", str(home))
    monkeypatch.setitem(REGISTRY, "tiny-cnn", tiny_cnn_class())
    runner = CliRunner()
    yield (lambda *args: runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})), run_dir


def test_predict_new_text_json_says_which_branches_scored(cli, service):
    invoke, run_dir = cli
    result = invoke("predict", run_dir, "--new-text", "republic in southern europe", "--relation", "borders", "-k", "3",
                    "--json")
    assert result.exit_code == 0, result.output
    document = __import__("json").loads(result.stdout)
    assert document["in_graph"] is False and document["scored_by"] == ["text", "multimodal"]
    assert document["entity"]["id"] == INLINE_ID and len(document["predictions"]) == 3
    expected = service.predict_new(service.resolve_relation("borders").id, text="republic in southern europe", k=3)
    assert [p["entity"]["key"] for p in document["predictions"]] == [p.entity.key for p in expected.predictions]


def test_predict_table_shows_n_a_for_branches_that_did_not_score(cli, service):
    invoke, run_dir = cli
    image = image_of(service, "lyon")
    result = invoke("predict", run_dir, "--new-image", image, "--relation", "<- capital_of", "-k", "2")
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())
    name = Path(image).name
    assert f"(?, capital_of, {name})" in words and "not in the training graph: scored by visual, multimodal" in words
    rows = [line for line in result.output.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert len(rows) == 2 and all(row.count("n/a") == 2 for row in rows)  # structure and text

    stored = invoke("predict", run_dir, "--head", "lyon", "--relation", "capital_of", "--json")
    assert stored.exit_code == 0, stored.output
    assert __import__("json").loads(stored.stdout)["scored_by"] == ["visual", "text", "multimodal"]

    mixed = invoke("predict", run_dir, "--head", "France", "--relation", "borders", "-k", "20", "--include-new")
    line = next(line for line in mixed.output.splitlines() if "Lyon" in line)
    assert line.count("n/a") == 1 and "new" in line  # no structure score; not a graph entity
    assert "Lyon" not in invoke("predict", run_dir, "--head", "France", "--relation", "borders", "-k", "20").output


def test_predict_new_argument_errors_exit_2_with_one_line(cli, tmp_path):
    invoke, run_dir = cli
    both = invoke("predict", run_dir, "--new-text", "x", "--head", "France", "--relation", "borders")
    assert both.exit_code == 2 and "drop --head and --tail" in both.output
    missing = invoke("predict", run_dir, "--new-image", tmp_path / "nope.png", "--relation", "borders")
    assert missing.exit_code == 2 and f"{tmp_path / 'nope.png'}: no such image file" in missing.output.replace("\n", "")
    assert "Traceback" not in missing.output


def test_training_can_leave_the_placement_to_first_use(places_run, monkeypatch, tmp_path):
    from imf_cli.pipeline import train_model
    from unseen_helpers import DATASET, FLAGS

    monkeypatch.setenv("IMF_HOME", str(places_run[0]))
    run = train_model(DATASET, flags=FLAGS, run_dir=tmp_path / "run", progress=False, place_unseen=False)
    assert not placement_path(run.run_dir).exists()  # imf ablate trains its runs so
    with PredictionService.from_run(run.run_dir, device="cpu") as service:
        assert service.predict_new(service.resolve_relation("in").id, text="a republic").scored_by
    assert placement_path(run.run_dir).exists()  # fitted and stored on first use



def test_the_service_says_when_no_added_entity_can_be_ranked(service, monkeypatch):
    assert service.why_no_new_entities() is None  # feature branches, and two entities added after training
    blank = service.resolve_entity("blank").id  # added without a description or an image
    only_blank = ([blank], service.placed(blank))
    monkeypatch.setattr(service.unseen, "added", lambda: only_blank)
    why = service.why_no_new_entities()  # `n` said "new entities ranked" and ranked none
    assert why.startswith("none of the 1 entity added to places has features this run reads"), why
    assert "imf encode places --modality" in why
    monkeypatch.setattr(service, "num_entities", service.num_graph_entities)
    assert "no entities were added to places" in service.why_no_new_entities()


@pytest.fixture
def writable_run(places_run, monkeypatch, tmp_path):
    """The places run in a copy of its home that a test may change (add entities, encode), as IMF_HOME,
    with the tiny image encoder its features came from registered; returns the run directory."""
    import shutil

    from helpers import tiny_cnn_class
    from kgdata.encoders import REGISTRY

    home, run_dir = places_run
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    monkeypatch.setenv("IMF_HOME", str(copy))
    monkeypatch.setitem(REGISTRY, "tiny-cnn", tiny_cnn_class())
    return copy / "runs" / run_dir.name


def test_entities_added_while_the_service_is_open_are_taken_in(writable_run):
    """`imf entities add` and `imf encode` in another terminal while `imf explore` is open: the service
    counted the entities it was opened with, refused the new feature file ("holds 12 rows but … has 11
    entities; re-run imf encode … --force") and said no entity was added."""
    from kgdata.encoders import encode_dataset
    from kgdata.entities import NewEntity, add_entities
    from kgdata.features import list_features
    from kgdata.store import EntityStore

    with PredictionService.from_run(writable_run, device="cpu") as service:
        before = service.num_entities
        paris, borders = service.resolve_entity("paris").id, service.resolve_relation("borders").id
        first = service.top_k(paris, borders, 50, include_new=True)  # reads the feature files as they are
        assert "nice" not in {p.entity.key for p in first.predictions}
        add_entities("places", [NewEntity("nice", "Nice", "city in the south of france", None)])
        with EntityStore.open("places") as store:
            text = next(entry["encoder"] for entry in list_features(store) if entry["modality"] == "text")
            encode_dataset(store, "text", text, device="cpu")
        assert service.num_entities == before  # nothing read yet
        assert service.resolve_entity("Nice").key == "nice"
        assert service.num_entities == before + 1
        again = service.top_k(paris, borders, 50, include_new=True)
        assert "nice" in {p.entity.key for p in again.predictions}
        nice = service.top_k(service.resolve_entity("nice").id, borders, 3)
        assert nice.predictions and not nice.in_graph


def test_features_encoded_again_with_other_options_are_refused_not_mixed(writable_run):
    """`imf encode --force --pooling cls` over the mean-pooled features a run trained on: new entities
    were then placed from vectors of another kind, and ranked differently, without a word."""
    from kgdata.encoders import encode_dataset
    from kgdata.features import list_features
    from kgdata.store import EntityStore

    with EntityStore.open("places") as store:
        text = next(entry for entry in list_features(store) if entry["modality"] == "text")
        assert text["extra"]["options"]["pooling"] == "mean"
        encode_dataset(store, "text", text["encoder"], options={"pooling": "cls"}, device="cpu", force=True)
    with PredictionService.from_run(writable_run, device="cpu") as service:
        with pytest.raises(ImfError, match=r"encoded with other options than .*pooling: 'mean' then, 'cls' now"):
            service.predict_new(service.resolve_relation("borders").id, text="a city in france")


def test_features_encoded_after_the_service_looked_at_an_added_entity_are_taken_in(writable_run):
    """`imf entities add`, a query in `imf explore`, then `imf encode` in another terminal: the explorer
    kept saying "has a description not encoded yet: run imf encode" after the encode."""
    from kgdata.encoders import encode_dataset
    from kgdata.entities import NewEntity, add_entities
    from kgdata.features import list_features
    from kgdata.store import EntityStore

    with PredictionService.from_run(writable_run, device="cpu") as service:
        add_entities("places", [NewEntity("nice", "Nice", "city in the south of france", None)])
        nice, borders = service.resolve_entity("nice").id, service.resolve_relation("borders").id
        with pytest.raises(ImfError, match="not encoded yet"):
            service.top_k(nice, borders, 3)  # looked at, and its missing features remembered
        with EntityStore.open("places") as store:
            text = next(entry["encoder"] for entry in list_features(store) if entry["modality"] == "text")
            encode_dataset(store, "text", text, device="cpu")
        ranked = service.top_k(nice, borders, 3)
        assert ranked.predictions and not ranked.in_graph
        paris = service.resolve_entity("paris").id
        assert "nice" in {p.entity.key for p in service.top_k(paris, borders, 50, include_new=True).predictions}


def test_explain_ranks_among_the_added_entities_as_top_k_does_with_include_new(service):
    """With `n` on, the explorer's table said rank 62 and its detail pane "rank 60 of 298": explain ranked
    among the graph's entities only."""
    paris, borders = service.resolve_entity("paris").id, service.resolve_relation("borders").id
    listed = service.top_k(paris, borders, service.num_entities, include_new=True)
    assert listed.include_new and any(not p.in_graph for p in listed.predictions)
    for prediction in listed.predictions:
        why = service.explain(paris, borders, prediction.entity.id, include_new=True)
        assert why.rank == prediction.rank, (prediction.entity.key, why.rank, prediction.rank)
        assert why.added_candidates == service.num_entities - service.num_graph_entities
    graph_only = service.explain(paris, borders, listed.predictions[-1].entity.id)
    assert graph_only.added_candidates == 0
