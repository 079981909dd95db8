"""The entity store's library API: lookups, FTS search, split arrays and the filter index."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import write_tsv_dataset
from kgdata.errors import DatasetNotFoundError, ImfError, UnknownEntityError
from kgdata.importing import import_dataset
from kgdata.store import EntityStore, KnownTriples, dataset_summaries, fts_query, like_prefix, list_datasets


@pytest.fixture
def store(tiny_tsv):
    import_dataset(tiny_tsv)
    with EntityStore.open("tiny") as opened:
        yield opened


def test_lookup_by_id_and_key(store):
    assert store.entity(3) == store.entity("france")
    assert store.relation("borders").id == 1
    assert store.relation(1).key == "borders"
    with pytest.raises(UnknownEntityError, match="unknown entity 'atlantis'"):
        store.entity("atlantis")
    with pytest.raises(UnknownEntityError):
        store.entity(99)
    assert [e.key for e in store.entities([5, 0])] == ["spain", "paris"]
    assert len(store.entities()) == store.num_entities == 7
    assert [r.key for r in store.relations()] == ["capital_of", "borders", "in"]
    assert repr(store) == "EntityStore(name='tiny', entities=7, relations=3, triples=10)"


def test_search_matches_words_prefixes_and_descriptions(store):
    assert [e.key for e in store.search("france")][0] == "france"
    # prefix of the last word, so a half-typed name finds its entity
    assert [e.key for e in store.search("germ")] == ["germany"]
    # words from the description; every word must match
    assert [e.key for e in store.search("western europe")] == ["france"]
    assert {e.key for e in store.search("republic")} == {"france", "germany"}
    assert store.search("republic", limit=1)[0].key in {"france", "germany"}
    # FTS syntax in user input is not interpreted
    assert store.search('AND OR "( *') == []
    assert store.search("zzz") == []


#: Entities for the name lookups, in id order: shared names, names that share a start, LIKE wildcards.
NAMED = [
    ("georgia_eu", "Georgia"),
    ("georgia_us", "GEORGIA"),
    ("germany", "Germany"),
    ("ge", "Gel"),
    ("tbilisi", "Tbilisi"),
    ("pct", "100% Pure"),
    ("pc1", "1000 Pure"),
    ("snake", "a_b"),
    ("plain", "axb"),
    ("slash", "c\\d"),
    ("links", "Peace"),
]


@pytest.fixture
def named(tmp_path):
    """A store whose entities are :data:`NAMED` (key, name), ids in that order."""
    keys = [key for key, _ in NAMED]
    train = [(keys[i], "next", keys[i + 1]) for i in range(len(keys) - 1)]
    source = write_tsv_dataset(
        tmp_path / "named", train=train, entities=[{"id": key, "name": name} for key, name in NAMED]
    )
    import_dataset(source)
    with EntityStore.open("named") as opened:
        yield opened


def keys(entities):
    return [e.key for e in entities]


def test_entities_named_is_an_exact_name_match_ignoring_case(named):
    assert keys(named.entities_named("georgia")) == ["georgia_eu", "georgia_us"]  # id order
    assert keys(named.entities_named("GEORGIA", limit=1)) == ["georgia_eu"]
    assert keys(named.entities_named("Germany")) == ["germany"]
    assert named.entities_named("Germ") == []  # not a prefix match
    assert named.entities_named("germany_") == [] and named.entities_named("gel%") == []
    assert named.entities_named("tbilisi") == [named.entity("tbilisi")]  # whole records


def test_entities_with_prefix_matches_names_and_keys_shortest_name_first(named):
    # Gel (3 letters), then Georgia, GEORGIA (7; by id), then Germany (7; a higher id)
    assert keys(named.entities_with_prefix("ge")) == ["ge", "georgia_eu", "georgia_us", "germany"]
    assert keys(named.entities_with_prefix("GEOR", limit=1)) == ["georgia_eu"]
    assert keys(named.entities_with_prefix("georgia_")) == ["georgia_eu", "georgia_us"]  # by key
    assert keys(named.entities_with_prefix("Pea")) == ["links"]  # by name
    assert named.entities_with_prefix("zz") == []
    assert len(named.entities_with_prefix("")) == len(NAMED)


def test_entities_with_prefix_takes_wildcards_literally(named):
    assert keys(named.entities_with_prefix("100%")) == ["pct"]  # not 1000 Pure
    assert keys(named.entities_with_prefix("a_")) == ["snake"]  # not axb
    assert keys(named.entities_with_prefix("c\\")) == ["slash"]
    assert named.entities_with_prefix("%") == [] and named.entities_with_prefix("_") == []


def test_like_prefix_escapes_wildcards_and_the_escape():
    assert like_prefix("a_b%c\\d") == "a\\_b\\%c\\\\d%"
    assert like_prefix("") == "%"


def test_entities_with_close_names_suggests_similar_names(named):
    assert keys(named.entities_with_close_names("Tbilsi")) == ["tbilisi"]
    # Georgia and GEORGIA share a lower-cased name: only the lower id is suggested
    assert keys(named.entities_with_close_names("georgai")) == ["georgia_eu"]
    assert keys(named.entities_with_close_names("Gemrany", limit=1)) == ["germany"]
    assert named.entities_with_close_names("zzzz") == []
    assert named.entities_with_close_names("Tbilsi", cutoff=0.99) == []


def test_fts_query_quotes_words():
    assert fts_query('new "york') == '"new" "york"*'
    assert fts_query("  ") is None


def test_triples_as_array_and_tensor(store):
    valid = store.triples("valid")
    assert valid.tolist() == [[5, 2, 6]]
    tensor = store.triples_tensor("train")
    assert tensor.dtype == torch.long and tensor.shape == (8, 3)
    assert np.array_equal(tensor.numpy(), store.triples("train"))
    with pytest.raises(ValueError):
        store.triples("dev")


def test_known_triples_filter_index(store):
    known = store.known_triples()
    assert len(known) == 10
    france, germany, spain = (store.entity(k).id for k in ("france", "germany", "spain"))
    borders = store.relation("borders").id
    assert known.tails(france, borders).tolist() == sorted([germany, spain])  # train + test
    assert known.heads(borders, france).tolist() == sorted([germany, spain])
    assert (france, borders, spain) in known
    assert (france, borders, france) not in known
    train_only = store.known_triples(["train"])
    assert train_only.tails(france, borders).tolist() == [germany]


def test_known_triples_random_against_python_sets():
    rng = np.random.default_rng(0)
    triples = np.stack([rng.integers(0, 30, 500), rng.integers(0, 4, 500), rng.integers(0, 30, 500)], 1)
    known = KnownTriples(triples, 30, 4)
    for h in range(30):
        for r in range(4):
            expected = sorted({t for hh, rr, t in triples.tolist() if (hh, rr) == (h, r)})
            assert known.tails(h, r).tolist() == expected


def test_open_unknown_dataset_lists_known(store):
    with pytest.raises(DatasetNotFoundError, match=r"imported: tiny"):
        EntityStore.open("nope")
    assert list_datasets() == ["tiny"]
    [summary] = dataset_summaries()
    assert summary["name"] == "tiny" and summary["entities"] == 7 and summary["train"] == 8


def test_store_opens_under_a_path_with_uri_characters(tiny_tsv, tmp_path):
    home = tmp_path / "odd home #1 ?x=%20"
    import_dataset(tiny_tsv, home=home)
    with EntityStore.open("tiny", home) as store:
        assert store.num_entities == 7


def test_one_unreadable_store_does_not_hide_the_other_datasets(store, imf_home):
    from typer.testing import CliRunner

    from imf_cli.main import app

    broken = imf_home / "datasets" / "broken"
    broken.mkdir(parents=True)
    (broken / "store.db").write_bytes(b"not a database at all" * 100)
    summaries = dataset_summaries()
    assert [s["name"] for s in summaries] == ["broken", "tiny"]
    assert "not a readable imf entity store" in summaries[0]["error"] and summaries[1]["entities"] == 7
    result = CliRunner().invoke(app, ["datasets"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "unreadable" in result.output and "tiny" in result.output and "--name broken --replace" in result.output


def test_entity_tables_fold_and_never_cut_a_name():
    """imf search at 40 columns showed 'Commiss…' and 'descrip…'; every text cell now folds."""
    import io
    from collections import Counter

    from rich.console import Console

    from imf_cli.output import entity_table

    cells = ("455", "org:unhcr", "United Nations High Commissioner for Refugees", "A United Nations agency.")
    for width in (30, 40, 80):
        table = entity_table("id", "key", "name", "description")
        table.add_row(*cells)
        console = Console(width=width, record=True, file=io.StringIO())
        console.print(table)
        text = console.export_text()
        assert "…" not in text and max(map(len, text.splitlines())) <= width
        missing = Counter("".join(cells + ("id", "key", "name", "description")).replace(" ", "")) - Counter(
            "".join(text.split())
        )
        assert not missing, (width, missing)


def test_imf_features_never_cuts_a_figure(store, monkeypatch):
    """At 60 columns the input hash was cut to '7ea', at 40 the dim and the coverage to '492…'."""
    from typer.testing import CliRunner

    from imf_cli.main import app

    entry = {"modality": "text", "encoder": "minilm", "dim": 384, "covered": 12842, "rows": 12842,
             "created_at": "2026-12-04T05:00:00", "input_hash": "7eae47ce3b0011", "status": "ok", "path": "x"}
    monkeypatch.setattr("kgdata.features.list_features", lambda store: [entry])
    for width, left_out in ((80, ""), (60, "input hash"), (40, "input hash, created (UTC)"), (34, "input hash, created (UTC), dim"), (24, "input hash, created (UTC), dim, covered")):
        result = CliRunner().invoke(app, ["features", "tiny"], env={"COLUMNS": str(width)})
        assert result.exit_code == 0 and "…" not in result.output, result.output
        assert "minilm" in result.output and ("12,842/12,842" in result.output) == (width > 24)
        assert ("7eae47ce3b" in result.output) == (not left_out)
        words = " ".join(result.output.split())
        assert (f"Left out for the terminal's width: {left_out} (--json" in words) == bool(left_out), words


def test_imf_datasets_never_cuts_a_name_or_a_count(store, monkeypatch):
    from typer.testing import CliRunner

    from imf_cli.main import app

    rows = [{"name": "a-rather-long-dataset-name", "format": "tsv", "entities": 123456, "relations": 9,
             "train": 5942, "valid": 741, "test": 742}]
    monkeypatch.setattr("kgdata.store.dataset_summaries", lambda: rows)
    for width, left_out in ((80, ""), (50, "format, relations")):
        result = CliRunner().invoke(app, ["datasets"], env={"COLUMNS": str(width)})
        assert result.exit_code == 0 and "…" not in result.output, result.output
        assert "a-rather-long-dataset-name" in result.output and "123,456" in result.output
        words = " ".join(result.output.split())
        assert (f"Left out for the terminal's width: {left_out}" in words) == bool(left_out)


def test_a_store_that_is_a_directory_is_listed_as_damaged_not_hidden(imf_home):
    (imf_home / "datasets" / "broken" / "store.db").mkdir(parents=True)
    (summary,) = dataset_summaries()
    assert summary["name"] == "broken"
    assert "store.db is not a file" in summary["error"] and "remove it" in summary["error"]
    with pytest.raises(ImfError, match="dataset 'broken' is damaged"):
        EntityStore.open("broken")


def test_a_writer_killed_mid_transaction_leaves_a_store_that_readers_roll_back(tiny_tsv, imf_home):
    """A hot journal (SIGKILL, a full disk during ``imf entities add``) made every read-only open fail
    with "attempt to write a readonly database"; the next reader now rolls it back, as SQLite would."""
    import subprocess
    import sys

    import_dataset(tiny_tsv)
    store_path = imf_home / "datasets" / "tiny" / "store.db"
    crash = (
        "import os, sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1]); db.execute('PRAGMA cache_size=1'); db.execute('BEGIN')\n"
        "db.execute(\"UPDATE entities SET name = name || ' (half-written)'\")\n"
        "db.executemany('INSERT INTO metadata VALUES (?, ?)', [(f'junk{i}', '0') for i in range(50000)])\n"
        "os._exit(9)\n"
    )
    subprocess.run([sys.executable, "-c", crash, str(store_path)], check=False)
    assert store_path.with_name(store_path.name + "-journal").exists()  # the killed writer's hot journal
    with EntityStore(store_path) as store:
        assert not any(entity.name.endswith("(half-written)") for entity in store.entities(range(store.num_entities)))
        assert "junk0" not in store.metadata
