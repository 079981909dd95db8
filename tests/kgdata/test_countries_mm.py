"""The bundled Countries-MM dataset: it imports offline, with the counts and split invariants promised."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from kgdata.importing import bundled_path, import_dataset
from kgdata.store import EntityStore


@pytest.fixture(scope="module")
def countries(tmp_path_factory):
    home = tmp_path_factory.mktemp("countries-home")
    report = import_dataset("countries-mm", home=home)
    with EntityStore.open("countries-mm", home) as store:
        yield report, store


def test_counts_match_the_build_stats(countries):
    report, store = countries
    stats = json.loads((bundled_path("countries-mm") / "stats.json").read_text())
    assert (report.entities, report.relations) == (stats["entities"], stats["relations"]) == (492, 9)
    assert (report.train, report.valid, report.test) == (5942, 741, 742)
    assert report.entities_with_image == stats["entities_with_image"] == 256
    assert report.entities_with_description == stats["entities_with_text"] == 244
    assert sum(report.duplicates_dropped.values()) == 0
    assert report.unseen_entities == {"valid": 0, "test": 0}
    assert {r.key for r in store.relations()} >= {
        "shares_border_with", "located_in_subregion", "part_of_region", "has_official_language",
        "uses_currency", "member_of", "exports_to", "imports_from", "has_government_type",
    }


def test_split_invariants(countries):
    _, store = countries
    splits = {s: store.triples(s) for s in ("train", "valid", "test")}
    total = sum(len(a) for a in splits.values())
    assert abs(len(splits["train"]) / total - 0.8) < 0.02
    rows = [tuple(t) for a in splits.values() for t in a.tolist()]
    assert len(set(rows)) == len(rows)  # no duplicates, no triple in two splits
    train_entities = set(splits["train"][:, [0, 2]].ravel().tolist())
    train_relations = set(splits["train"][:, 1].tolist())
    for split in ("valid", "test"):
        assert set(splits[split][:, [0, 2]].ravel().tolist()) <= train_entities
        assert set(splits[split][:, 1].tolist()) <= train_relations


def test_every_country_has_a_flag_and_most_have_factbook_text(countries):
    _, store = countries
    country_rows = [e for e in store.entities() if e.key.startswith("country:")]
    assert len(country_rows) == 250
    assert all(e.image for e in country_rows)
    assert sum(1 for e in country_rows if e.description and len(e.description) > 200) >= 240
    with Image.open(store.entity("country:FRA").image) as flag:
        assert flag.size == (128, 96)
        pixels = np.asarray(flag.convert("RGB"))
    # the French tricolour: blue left, white middle, red right
    assert pixels[48, 10, 2] > 100 and pixels[48, 64].min() > 200 and pixels[48, 118, 0] > 200


def test_search_finds_countries_by_factbook_words(countries):
    _, store = countries
    assert store.search("france")[0].key == "country:FRA"
    assert [e.key for e in store.search("nile")][:2] == ["country:EGY", "country:SDN"]
    # a name match outranks words in descriptions
    assert store.search("eur")[0].key in {"currency:EUR", "region:europe"}


def test_a_damaged_bundled_store_is_named_as_unreadable_and_replace_repairs_it(tmp_path):
    """Re-importing the bundled dataset over a damaged store said it had 'other content'."""
    from kgdata.errors import DatasetExistsError

    home = tmp_path / "home"
    report = import_dataset("countries-mm", home=home)
    store = home / "datasets" / "countries-mm" / "store.db"
    size = store.stat().st_size
    with open(store, "r+b") as handle:
        handle.truncate(size // 2)
    with pytest.raises(DatasetExistsError) as error:
        import_dataset("countries-mm", home=home)
    message = str(error.value)
    assert message.startswith(f"{store}: not a readable imf entity store (") and "other content" not in message
    assert message.endswith("); pass --replace to import dataset 'countries-mm' again")
    again = import_dataset("countries-mm", home=home, replace=True)
    assert (again.entities, again.train) == (report.entities, report.train)
    assert import_dataset("countries-mm", home=home).status == "unchanged"
