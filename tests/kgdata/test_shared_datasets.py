"""Imports of the real shared benchmarks (skipped cleanly when ../shared/datasets is absent)."""

from __future__ import annotations

import pytest

from helpers import shared_dataset
from kgdata.importing import import_dataset
from kgdata.store import EntityStore

pytestmark = pytest.mark.shared_data


def test_fb15k_237():
    report = import_dataset(shared_dataset("fb15k-237"))
    assert report.format == "tsv"
    assert (report.entities, report.relations) == (14541, 237)
    assert (report.train, report.valid, report.test) == (272115, 17535, 20466)
    with EntityStore.open("fb15k-237") as store:
        assert store.search("barack obama")[0].name == "Barack Obama"
        known = store.known_triples()
        assert len(known) == 272115 + 17535 + 20466


def test_db15k():
    report = import_dataset(shared_dataset("db15k"))
    assert report.format == "imf"
    assert (report.entities, report.relations) == (12842, 279)
    assert report.entities_with_description == 12303
    assert report.duplicates_dropped["train"] > 0
    assert report.train + report.duplicates_dropped["train"] == 69319
    assert any("duplicate" in w for w in report.warnings)
    with EntityStore.open("db15k") as store:
        assert store.entity("<http://dbpedia.org/resource/Pocatello,_Idaho>").name == "Pocatello, Idaho"


def test_mkg_w():
    report = import_dataset(shared_dataset("mkg-w"))
    assert report.format == "ids"
    assert (report.entities, report.train, report.valid, report.test) == (15000, 34196, 4276, 4274)
