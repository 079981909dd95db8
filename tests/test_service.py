"""PredictionService: loading a run, name resolution, top-k rows with flags, supporting facts, threads."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers import TINY_TEST, TINY_TRAIN, TINY_VALID, write_tsv_dataset
from imf_cli.pipeline import train_model
from imf_cli.service import (
    INVERSE_MARKS,
    SPLITS,
    AmbiguousNameError,
    PredictionService,
    UnknownNameError,
    split_relation_text,
)
from kgdata.errors import ImfError, UnknownEntityError
from kgdata.features import save_features
from kgdata.importing import import_dataset
from kgdata.store import EntityStore
from models.checkpoint import load_checkpoint

# Two entities share the name "Georgia"; "Ge" starts three names.
TRAIN = TINY_TRAIN + [
    ("tbilisi", "capital_of", "georgia_eu"),
    ("georgia_eu", "in", "europe"),
    ("atlanta", "capital_of", "georgia_us"),
]
NAMES = {
    "paris": ("Paris", ""),
    "berlin": ("Berlin", ""),
    "madrid": ("Madrid", ""),
    "france": ("France", "Republic in Western Europe"),
    "germany": ("Germany", "Federal republic in Central Europe"),
    "spain": ("Spain", "Kingdom in Southern Europe"),
    "europe": ("Europe", "A continent"),
    "tbilisi": ("Tbilisi", ""),
    "georgia_eu": ("Georgia", "Country in the Caucasus"),
    "atlanta": ("Atlanta", ""),
    "georgia_us": ("Georgia", "State of the United States"),
}
FLAGS = ["--dim", "8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A home with the dataset ``places`` and a 3-epoch structure + text run (3 branches)."""
    home = tmp_path_factory.mktemp("service-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMF_HOME", str(home))
        torch.set_num_threads(1)
        entities = [{"id": key, "name": name, "description": text} for key, (name, text) in NAMES.items()]
        source = write_tsv_dataset(
            tmp_path_factory.mktemp("data") / "places", train=TRAIN, valid=TINY_VALID, test=TINY_TEST, entities=entities
        )
        import_dataset(source)
        with EntityStore.open("places") as store:
            n = store.num_entities
            features = np.random.default_rng(0).normal(size=(n, 6))
            save_features(store, "text", "test-bert", features, np.ones(n, dtype=bool), input_hash="t")
        flags = {"model.dim": 8, "train.epochs": 3, "train.batch_size": 4, "train.eval_every": 1, "train.seed": 3,
                 "train.device": "cpu"}
        result = train_model("places", flags=flags, modalities=("structure", "text"), run_dir=home / "runs" / "r",
                             progress=False)
    return home, result.run_dir


@pytest.fixture
def service(trained, monkeypatch):
    home, run_dir = trained
    monkeypatch.setenv("IMF_HOME", str(home))
    with PredictionService.from_run(run_dir, device="cpu") as opened:
        yield opened


def test_loads_a_run_with_its_branches_and_relations(service):
    assert service.dataset == "places"
    assert service.branch_names == ("structure", "text", "multimodal")
    relations = service.relations()
    assert len(relations) == 6 and [r.inverse for r in relations] == [False] * 3 + [True] * 3
    assert [r.id for r in relations] == list(range(6))
    assert relations[3].key == relations[0].key and relations[3].label == f"← {relations[0].name}"
    assert "places" in repr(service)


def test_top_k_rows_match_the_model_and_flag_known_triples(service, trained):
    france, borders = service.resolve_entity("france"), service.resolve_relation("borders")
    result = service.top_k(france.id, borders.id, k=20, include_known=True)
    assert len(result.predictions) == service.num_entities  # k is capped by the candidates
    assert [p.rank for p in result.predictions] == list(range(1, service.num_entities + 1))
    fused = [p.fused for p in result.predictions]
    assert fused == sorted(fused, reverse=True)
    assert sum(result.weights.values()) == pytest.approx(1.0)

    model, _ = load_checkpoint(trained[1] / "best.pt")
    expected = model(torch.tensor([france.id]), torch.tensor([borders.id]))
    for prediction in result.predictions:
        candidate = prediction.entity.id
        assert prediction.fused == pytest.approx(expected.fused[0, candidate].item(), abs=1e-5)
        for name in service.branch_names:
            assert prediction.branches[name] == pytest.approx(expected.branches[name][0, candidate].item(), abs=1e-5)
            assert prediction.contributions[name] == pytest.approx(result.weights[name] * prediction.branches[name])
        assert sum(prediction.contributions.values()) == pytest.approx(prediction.fused, abs=1e-5)

    flags = {p.entity.key: p.known for p in result.predictions}
    assert flags["germany"] == {"train"}  # (france, borders, germany) is a training fact
    assert flags["spain"] == {"test"}
    assert flags["europe"] == frozenset() and result.hidden_known == 0
    assert result.predictions[0].to_dict()["known"] == {s: s in result.predictions[0].known for s in SPLITS}


def test_known_answers_are_hidden_unless_asked_for(service):
    france, borders = service.resolve_entity("France"), service.resolve_relation("borders")
    result = service.top_k(france.id, borders.id, k=3)
    keys = [p.entity.key for p in result.predictions]
    assert "germany" not in keys and "spain" not in keys and len(keys) == 3
    assert result.hidden_known == 2 and all(not p.known for p in result.predictions)
    everything = service.top_k(france.id, borders.id, k=100)
    assert len(everything.predictions) == service.num_entities - 2


def test_inverse_relations_predict_heads(service):
    europe = service.resolve_entity("europe")
    inverse_in = service.resolve_relation("in", inverse=True)
    assert inverse_in.inverse and inverse_in.id == service.resolve_relation("in").id + 3
    result = service.top_k(europe.id, inverse_in.id, k=20, include_known=True)
    flags = {p.entity.key: p.known for p in result.predictions}
    assert flags["france"] == {"train"} and flags["spain"] == {"valid"} and flags["georgia_eu"] == {"train"}
    assert result.relation.label == "← in"
    assert service.resolve_relation("← in") == inverse_in
    by_name = service.query(tail="Europe", relation="in", k=20, include_known=True)
    assert [p.entity.id for p in by_name.predictions] == [p.entity.id for p in result.predictions]


def test_resolve_entity_by_key_name_prefix_and_search(service):
    assert service.resolve_entity("georgia_us").name == "Georgia"  # key
    assert service.resolve_entity("gErMaNy").key == "germany"  # name, any case
    assert service.resolve_entity("Tbil").key == "tbilisi"  # unique prefix
    assert service.resolve_entity("  Madrid ").key == "madrid"


def test_a_word_found_only_in_a_description_names_the_entity_but_does_not_pick_it(service):
    # One search hit, by its description ("Country in the Caucasus"): never taken silently as the head.
    with pytest.raises(UnknownNameError) as described:
        service.resolve_entity("caucasus")
    assert [c.key for c in described.value.candidates] == ["georgia_eu"]
    assert "has the name or key 'caucasus'" in str(described.value)
    assert "description of Georgia [georgia_eu]: give its key or name" in str(described.value)


def test_a_search_hit_by_its_name_words_in_another_order_is_taken():
    from kgdata.store import Entity
    from kgdata.store import named_by as _named_by

    entity = Entity(0, "country:GBR", "United Kingdom", "Island country in north-western Europe", None)
    assert _named_by(entity, "kingdom united") and _named_by(entity, "King Unit") and _named_by(entity, "gbr")
    assert not _named_by(entity, "kingdom island") and not _named_by(entity, "europe")


def test_ambiguous_and_unknown_names_list_candidates(service):
    with pytest.raises(AmbiguousNameError) as same_name:
        service.resolve_entity("georgia")
    assert {c.key for c in same_name.value.candidates} == {"georgia_eu", "georgia_us"}
    assert "georgia_eu" in str(same_name.value) and "georgia_us" in str(same_name.value)
    with pytest.raises(AmbiguousNameError) as prefix:
        service.resolve_entity("Ge")
    assert {c.key for c in prefix.value.candidates} == {"germany", "georgia_eu", "georgia_us"}
    with pytest.raises(AmbiguousNameError) as search:
        service.resolve_entity("republic")
    assert {c.key for c in search.value.candidates} == {"france", "germany"}
    with pytest.raises(UnknownNameError) as unknown:
        service.resolve_entity("Frnace")
    assert "did you mean: France [france]" in str(unknown.value)
    assert isinstance(unknown.value, ImfError)
    with pytest.raises(UnknownNameError, match="no entity of dataset 'places' matches 'zzz'$"):
        service.resolve_entity("zzz")
    with pytest.raises(ImfError, match="no entity given"):
        service.resolve_entity(" ")


def test_resolve_relation(service):
    assert service.resolve_relation("capital_of").id == 0
    assert service.resolve_relation("CAP").key == "capital_of"  # unique prefix
    assert service.resolve_relation("order").key == "borders"  # unique part
    with pytest.raises(AmbiguousNameError) as ambiguous:
        service.resolve_relation("o")
    assert {r.key for r in ambiguous.value.candidates} == {"capital_of", "borders"}
    with pytest.raises(UnknownNameError, match="did you mean: borders"):
        service.resolve_relation("bordres")


def test_split_relation_text_is_the_one_the_tui_uses():
    from imf_cli.tui import app, query_bar

    # The suggestions split the mark themselves; a typed query hands the raw text to the service.
    assert query_bar.split_relation_text is split_relation_text and not hasattr(app, "split_relation_text")
    assert INVERSE_MARKS == ("←", "<-", "<", "^")
    assert split_relation_text(" <- shares border ") == ("shares border", True)
    assert split_relation_text("<in") == ("in", True)
    assert split_relation_text("^ in") == ("in", True)  # SPARQL's inverse path
    assert split_relation_text(" in ") == ("in", None)


@pytest.mark.parametrize("mark", INVERSE_MARKS)
def test_resolve_relation_accepts_every_inverse_mark(service, mark):
    inverse_in = service.resolve_relation("in", inverse=True)
    assert inverse_in.inverse
    assert service.resolve_relation(f"{mark} in") == inverse_in
    assert service.resolve_relation(f"  {mark}IN ") == inverse_in
    assert service.resolve_relation(f"{mark} in", inverse=True) == service.resolve_relation("in")  # they cancel
    borders = service.resolve_relation(f"{mark} bord")  # a unique prefix, with a mark
    assert borders.key == "borders" and borders.inverse
    with pytest.raises(ImfError, match="no relation given"):
        service.resolve_relation(f" {mark} ")


def test_a_relation_key_that_starts_with_a_mark_is_taken_as_written(service):
    # Keys of the imf layout (DB15K) are URIs such as <http://dbpedia.org/ontology/country>.
    service._relations = [replace(r, key=f"<http://x/{r.key}>") for r in service._relations]
    forward = service.resolve_relation("<http://x/in>")
    assert forward.key == "<http://x/in>" and not forward.inverse
    assert service.resolve_relation("<http://x/in>", inverse=True).inverse
    assert service.resolve_relation("← <http://x/in>") == service.resolve_relation("<http://x/in>", inverse=True)


def test_bad_ids_and_k_are_clear_errors(service):
    with pytest.raises(UnknownEntityError, match="no entity id 99"):
        service.top_k(99, 0)
    with pytest.raises(UnknownEntityError, match="no relation id 6"):
        service.top_k(0, 6)
    with pytest.raises(ImfError, match="k must be at least 1"):
        service.top_k(0, 0, k=0)
    with pytest.raises(ImfError, match="exactly one of --head"):
        service.query(head="France", tail="Spain", relation="borders")


def test_supporting_facts_direct_first_then_paths_through_rare_neighbours(service):
    def triples(facts):
        return [(f.head.key, f.relation.key, f.tail.key, f.split) for f in facts]

    france, germany = service.resolve_entity("france").id, service.resolve_entity("germany").id
    assert triples(service.supporting_facts(france, germany)) == [
        ("france", "borders", "germany", "train"),
        ("germany", "borders", "france", "train"),
        ("france", "in", "europe", "train"),
        ("germany", "in", "europe", "train"),
    ]
    assert len(service.supporting_facts(france, germany, limit=3)) == 2  # a path is never cut in half
    paris, spain = service.resolve_entity("paris").id, service.resolve_entity("spain").id
    assert triples(service.supporting_facts(paris, spain)) == [
        ("paris", "capital_of", "france", "train"),
        ("spain", "borders", "france", "train"),
    ]
    # spain and georgia_eu share europe only through valid (spain, in, europe): not a training fact.
    assert service.supporting_facts(spain, service.resolve_entity("georgia_eu").id) == []
    assert service.supporting_facts(paris, paris) == []


def test_top_k_from_worker_threads_equals_the_main_thread(service):
    germany, borders = service.resolve_entity("germany").id, service.resolve_relation("borders").id
    expected = service.top_k(germany, borders, k=5)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda relation: service.top_k(germany, relation, k=5), [borders, 0, 4, borders]))
    assert results[0] == expected and results[-1] == expected
    assert not torch.is_inference_mode_enabled()


def test_search_and_entity_lookups(service):
    assert [e.key for e in service.search_entities("west")] == ["france"]
    assert service.search_entities("  ") == []
    france = service.resolve_entity("france")
    assert service.entity(france.id) == france and france.description.startswith("Republic")
    assert json.loads(json.dumps(france.to_dict()))["key"] == "france"


def test_close_closes_the_store(trained, monkeypatch):
    monkeypatch.setenv("IMF_HOME", str(trained[0]))
    with PredictionService.from_run(trained[1], device="cpu") as service:
        pass
    with pytest.raises(sqlite3.ProgrammingError):
        service.store.db.execute("SELECT 1")


def test_from_run_errors(trained, monkeypatch, tmp_path):
    home, run_dir = trained
    monkeypatch.setenv("IMF_HOME", str(home))
    with pytest.raises(ImfError, match="unknown checkpoint 'middle'"):
        PredictionService.from_run(run_dir, checkpoint="middle")
    with pytest.raises(ImfError, match="not a run directory"):
        PredictionService.from_run(tmp_path)
    with pytest.raises(ImfError, match="unknown device"):
        PredictionService.from_run(run_dir, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ImfError, match="CUDA is not available"):
            PredictionService.from_run(run_dir, device="cuda")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    (broken / "best.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ImfError, match=r"broken/best\.pt"):
        PredictionService.from_run(broken)


def test_a_reimported_dataset_is_refused(trained, monkeypatch, tmp_path):
    home, run_dir = trained
    monkeypatch.setenv("IMF_HOME", str(tmp_path / "other-home"))
    changed = write_tsv_dataset(tmp_path / "places", train=TRAIN[:-1], valid=TINY_VALID, test=TINY_TEST)
    import_dataset(changed)
    with pytest.raises(ImfError, match="changed since run"):
        PredictionService.from_run(run_dir)


def test_importing_the_service_pulls_in_neither_typer_textual_nor_torch():
    code = (
        "import sys, imf_cli.service; "
        "print(*(name in sys.modules for name in ('typer', 'textual', 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False"]


def test_inline_entities_need_features_that_imf_can_encode_again(service):
    with pytest.raises(ImfError, match="came from 'test-bert' .imported, not encoded by imf."):
        service.predict_new(service.resolve_relation("borders").id, text="a republic")
    with pytest.raises(ImfError, match="no visual branch"):
        service.predict_new(service.resolve_relation("borders").id, image="flag.png")


def test_a_long_name_is_echoed_short_and_the_advice_comes_before_the_candidates(service):
    from imf_cli.service import UnknownNameError

    with pytest.raises(UnknownNameError) as unknown:
        service.resolve_entity("x" * 5000)
    assert len(str(unknown.value)) < 400 and "'xxxxxxxx" in str(unknown.value) and "…[4,964 characters]…" in str(unknown.value)
    with pytest.raises(UnknownNameError) as unknown:
        service.resolve_relation("y" * 5000)
    assert len(str(unknown.value)) < 1000 and "…[4,964 characters]…" in str(unknown.value)


def test_an_entity_added_after_the_service_opened_is_named_with_what_to_do(service, monkeypatch):
    """`imf entities add` in another terminal: the TUI's search finds the new entity, but the service
    opened before it has no features for it (it said 'no entity id 494 … (ids 0–493)')."""
    from types import SimpleNamespace

    from imf_cli.service import UnknownEntityError

    added = service.num_entities
    real = service.store.entity
    monkeypatch.setattr(service.store, "entity",
                        lambda ref: SimpleNamespace(name="Quuxland") if ref == added else real(ref))
    relation = service.relations()[0].id
    with pytest.raises(UnknownEntityError, match="'Quuxland' was added to dataset 'places' after this session opened"):
        service.top_k(added, relation, 5)
    with pytest.raises(UnknownEntityError, match=f"no entity id {added + 1} in dataset 'places'"):
        service.top_k(added + 1, relation, 5)


def test_a_unique_prefix_that_is_a_whole_word_of_other_names_is_ambiguous(tmp_path, monkeypatch):
    """"Korea" begins only "Korean" (a language) but is a whole word of "South Korea" and "North Korea":
    taking the unique prefix answered for the language without a word."""
    monkeypatch.setenv("IMF_HOME", str(tmp_path / "home"))
    names = {"korean": "Korean", "south_korea": "South Korea", "north_korea": "North Korea", "seoul": "Seoul",
             "japan": "Japan", "japanese": "Japanese language"}
    train = [("seoul", "capital_of", "south_korea"), ("south_korea", "speaks", "korean"),
             ("north_korea", "speaks", "korean"), ("japan", "speaks", "japanese"), ("north_korea", "borders", "south_korea")]
    source = write_tsv_dataset(tmp_path / "koreas", train=train, valid=train[:1], test=train[1:2],
                               entities=[{"id": key, "name": name} for key, name in names.items()])
    import_dataset(source)
    flags = {"model.dim": 4, "train.epochs": 1, "train.batch_size": 4, "train.seed": 1, "train.device": "cpu"}
    run = train_model("koreas", flags=flags, modalities=("structure",), run_dir=tmp_path / "run", progress=False)
    with PredictionService.from_run(run.run_dir, device="cpu") as service:
        with pytest.raises(AmbiguousNameError, match="matches several entities") as ambiguous:
            service.resolve_entity("Korea")
        assert {c.key for c in ambiguous.value.candidates} == {"korean", "south_korea", "north_korea"}
        assert service.resolve_entity("Korean").key == "korean"  # a whole name still answers
        assert service.resolve_entity("Japanes").key == "japanese"  # a prefix of no other name's word too
        assert service.resolve_entity("Seo").key == "seoul"


def test_an_inverse_mark_and_inverse_together_read_the_relation_forwards(service):
    """`imf predict --tail T --relation "<- borders"` asks (?, ← borders, T), which is (T, borders, ?): the
    mark was ignored and the query ranked heads of borders."""
    forward = service.resolve_relation("borders")
    assert not forward.inverse
    assert service.resolve_relation("<- borders", inverse=True) == forward
    assert service.resolve_relation("borders", inverse=True).inverse
    assert service.resolve_relation("<- borders").inverse


def test_contributions_sum_to_the_fused_decision_in_probability_space(service, monkeypatch):
    """The paper preset fuses probabilities: contributions as weight × logit missed the fused score by up
    to 1.2 logits there."""
    from imf_cli.scoring import sigmoid

    monkeypatch.setattr(service.model.decision, "space", "probability")
    france, borders = service.resolve_entity("france"), service.resolve_relation("borders")
    result = service.top_k(france.id, borders.id, k=5, include_known=True)
    for prediction in result.predictions:
        for name, logit in prediction.branches.items():
            assert prediction.contributions[name] == pytest.approx(result.weights[name] * sigmoid(logit))
        assert sum(prediction.contributions.values()) == pytest.approx(sigmoid(prediction.fused), abs=1e-5)


def test_names_typed_without_their_accents_resolve(tmp_path, monkeypatch):
    """"Sao Tome and Principe" was refused ("the words occur in the description of São Tomé…") and
    "Curacao" was ambiguous with the Netherlands, whose description mentions Curaçao."""
    monkeypatch.setenv("IMF_HOME", str(tmp_path / "home"))
    entities = [
        {"id": "stp", "name": "São Tomé and Príncipe", "description": "An island country in the Gulf of Guinea."},
        {"id": "cuw", "name": "Curaçao", "description": "An island in the southern Caribbean."},
        {"id": "nld", "name": "Netherlands", "description": "A kingdom; Curaçao is one of its countries."},
        {"id": "gab", "name": "Gabon", "description": "A country on the Gulf of Guinea."},
    ]
    train = [("stp", "near", "gab"), ("cuw", "part_of", "nld"), ("gab", "near", "stp"), ("nld", "has", "cuw")]
    import_dataset(write_tsv_dataset(tmp_path / "isles", train=train, valid=train[:1], test=train[1:2], entities=entities))
    flags = {"model.dim": 4, "train.epochs": 1, "train.batch_size": 4, "train.seed": 1, "train.device": "cpu"}
    run = train_model("isles", flags=flags, modalities=("structure",), run_dir=tmp_path / "run", progress=False)
    with PredictionService.from_run(run.run_dir, device="cpu") as service:
        assert service.resolve_entity("Sao Tome and Principe").key == "stp"
        assert service.resolve_entity("SÃO TOMÉ AND PRÍNCIPE").key == "stp"
        assert service.resolve_entity("Curacao").key == "cuw"
        with pytest.raises(UnknownNameError, match="the words occur in the description of Gabon"):
            service.resolve_entity("country on the Gulf")  # by its description alone: named, not taken


def test_an_inline_image_is_labelled_by_its_file_name_with_escapes_made_visible():
    """`imf predict --new-image $'/tmp/e\\e[31m.png'` printed the escape in its caption."""
    from imf_cli.service import _inline_name

    assert _inline_name(None, "/tmp/e\x1b[31m.png") == "e%1B[31m.png"
    assert len(_inline_name(None, "/tmp/" + "x" * 100 + ".png")) <= 40
    assert _inline_name("  a   red\tcity ", None) == "a red city"
