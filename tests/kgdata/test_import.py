"""Importing each layout, and every kind of bad input (one clear error naming file and line)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY_TEST, TINY_TRAIN, TINY_VALID, write_tsv_dataset
from kgdata import importing
from kgdata.errors import DataError, DatasetExistsError
from kgdata.importing import import_dataset
from kgdata.store import EntityStore


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- tsv
def test_tsv_import_counts_ids_and_metadata(tiny_tsv, imf_home):
    report = import_dataset(tiny_tsv)
    assert (report.name, report.format) == ("tiny", "tsv")
    assert (report.entities, report.relations) == (7, 3)
    assert (report.train, report.valid, report.test) == (8, 1, 1)
    assert report.entities_with_description == 2
    with EntityStore.open("tiny") as store:
        assert store.path == imf_home / "datasets" / "tiny" / "store.db"
        # ids follow entities.tsv order, relations first appearance
        assert store.entity_keys == ["paris", "berlin", "madrid", "france", "germany", "spain", "europe"]
        assert store.relation_keys == ["capital_of", "borders", "in"]
        train = store.triples("train")
        assert train.dtype == np.int64 and train.shape == (8, 3)
        assert train[0].tolist() == [0, 0, 3]  # paris capital_of france
        assert store.entity("france").name == "France"
        assert store.entity(3).description.startswith("Republic")
        assert store.entity(0).text == "Paris"  # no description: the name
        meta = store.metadata
        assert meta["format"] == "tsv" and meta["source"] == str(tiny_tsv)
        assert meta["counts"]["triples"] == 10
        assert len(meta["content_hash"]) == 64 and "imported_at" in meta


def test_tsv_without_entities_file_assigns_ids_by_first_appearance(tmp_path):
    root = write_tsv_dataset(tmp_path / "bare", train=TINY_TRAIN, valid=TINY_VALID, test=TINY_TEST)
    report = import_dataset(root)
    assert report.entities == 7
    with EntityStore.open("bare") as store:
        assert store.entity_keys[:3] == ["paris", "france", "berlin"]
        assert store.entity("paris").name == "paris"


def test_gzipped_tsv_and_valid_named_val(tmp_path):
    root = tmp_path / "gz"
    root.mkdir()
    for split, rows in (("train", TINY_TRAIN), ("val", TINY_VALID), ("test", TINY_TEST)):
        with gzip.open(root / f"{split}.tsv.gz", "wt", encoding="utf-8") as handle:
            handle.writelines("\t".join(r) + "\n" for r in rows)
    report = import_dataset(root, format="tsv")
    assert (report.train, report.valid, report.test) == (8, 1, 1)


def test_duplicates_dropped_and_unseen_entities_reported(tmp_path):
    train = TINY_TRAIN + [TINY_TRAIN[0], TINY_TRAIN[0], TINY_TRAIN[3]]
    root = write_tsv_dataset(tmp_path / "dup", train=train, valid=[("rome", "in", "europe")], test=TINY_TEST)
    report = import_dataset(root)
    assert report.train == 8
    assert report.duplicates_dropped == {"train": 3, "valid": 0, "test": 0}
    assert report.unseen_entities == {"valid": 1, "test": 0}
    assert any("3 duplicate" in w for w in report.warnings)
    assert any("1 valid entity never occurs in train" in w for w in report.warnings)
    with EntityStore.open("dup") as store:
        assert store.metadata["duplicates_dropped"]["train"] == 3


def test_relations_missing_from_train_are_counted_and_warned(tmp_path):
    test = TINY_TEST + [("paris", "twinned_with", "berlin")]
    report = import_dataset(write_tsv_dataset(tmp_path / "rel", train=TINY_TRAIN, valid=TINY_VALID, test=test))
    assert report.unseen_relations == {"valid": 0, "test": 1}
    assert any(w.startswith("1 test relation never occurs in train") for w in report.warnings)
    with EntityStore.open("rel") as store:
        assert store.metadata["unseen_relations"] == {"valid": 0, "test": 1}
    # A relation list with an id that no triple uses: listed, and said.
    root = write_ids_dataset(tmp_path / "wd3", relation2id=True)
    (root / "relation2id.txt").write_text("P1 0\nP2 1\nP3 2\n")
    report = import_dataset(root)
    assert (report.unused_relations, report.unseen_relations) == (1, {"valid": 0, "test": 0})
    assert "1 relation listed without a triple in any split" in report.warnings


def test_keys_that_only_look_alike_are_warned(tmp_path):
    train = TINY_TRAIN + [("Cafe\u0301", "in", "europe"), ("Caf\u00e9", "in", "europe"), ("europe\u200b", "in", "europe")]
    report = import_dataset(write_tsv_dataset(tmp_path / "alike", train=train, valid=TINY_VALID, test=TINY_TEST))
    assert report.entities == 10  # kept apart: the file says they differ
    (warning,) = [w for w in report.warnings if "look" in w or "normalisation" in w]
    assert warning.startswith("2 entity keys differ from another only in Unicode normalisation or invisible")
    assert "'Cafe\\u0301' and 'Caf\\xe9'" in warning
    plain = import_dataset(write_tsv_dataset(tmp_path / "plain", train=TINY_TRAIN, valid=TINY_VALID, test=TINY_TEST))
    assert not any("normalisation" in w for w in plain.warnings)


def test_triples_of_a_later_split_also_in_an_earlier_one_are_counted_as_leaks(tmp_path):
    test = TINY_TEST + [TINY_TRAIN[1], TINY_VALID[0]]  # one test triple from train, one from valid
    valid = TINY_VALID + [TINY_TRAIN[2]]
    root = write_tsv_dataset(tmp_path / "leaky", train=TINY_TRAIN, valid=valid, test=test)
    report = import_dataset(root)
    assert report.overlapping_triples == {"valid": 1, "test": 2}
    assert any("1 valid triple is also in train" in w for w in report.warnings)
    assert any("2 test triples are also in train or valid" in w for w in report.warnings)
    with EntityStore.open("leaky") as store:
        assert store.metadata["overlapping_triples"] == {"valid": 1, "test": 2}


def test_an_empty_valid_or_test_split_is_warned_about_at_import(tmp_path):
    report = import_dataset(write_tsv_dataset(tmp_path / "novalid", train=TINY_TRAIN, valid=[], test=TINY_TEST))
    assert "the valid split is empty: imf train selects the model on it" in report.warnings
    assert not any("test split is empty" in w for w in report.warnings)
    report = import_dataset(write_tsv_dataset(tmp_path / "notest", train=TINY_TRAIN, valid=TINY_VALID, test=[]))
    assert report.warnings == ["the test split is empty: imf eval --split test has nothing to rank"]


def test_images_resolved_relative_to_dataset(tmp_path):
    root = tmp_path / "img"
    (root / "images").mkdir(parents=True)
    (root / "images" / "fr.png").write_bytes(b"\x89PNG fake")
    names = ["paris", "berlin", "madrid", "france", "germany", "spain", "europe"]
    entities = [{"id": n, "image": "images/fr.png" if n == "france" else ""} for n in names]
    write_tsv_dataset(root, train=TINY_TRAIN, valid=TINY_VALID, test=TINY_TEST, entities=entities)
    report = import_dataset(root)
    assert report.entities_with_image == 1
    with EntityStore.open("img") as store:
        assert store.entity("france").image == str((root / "images" / "fr.png").resolve())
        assert store.entity("spain").image is None


# ------------------------------------------------------------------------ imf / ids
def write_imf_dataset(root: Path, *, extra_train: str = "", entity2id: str | None = None) -> Path:
    root.mkdir(parents=True)
    uri = "<http://dbpedia.org/resource/{}>".format
    rel = "<http://dbpedia.org/ontology/{}>".format
    ents = ["Pocatello,_Idaho", "Idaho", "United_States", "Caf%C3%A9_Society"]
    (root / "entity2id.txt").write_text(
        entity2id if entity2id is not None else "".join(f"{uri(e)} {i}\n" for i, e in enumerate(ents))
    )
    (root / "relation2id.txt").write_text(f"{rel('isPartOf')} 0\n{rel('country')} 1\n")
    line = lambda h, r, t: f"{uri(h)} {rel(r)} {uri(t)} .\n"
    train = line(ents[0], "isPartOf", ents[1]) * 2 + line(ents[1], "country", ents[2]) + line(ents[3], "country", ents[2])
    (root / "train.txt").write_text(train + extra_train)
    (root / "val.txt").write_text(line(ents[0], "country", ents[2]))
    (root / "test.txt").write_text(line(ents[3], "isPartOf", ents[1]))
    (root / "entity_description.tsv").write_text(f"{uri(ents[0])}\tcity in Idaho\n")
    return root


def test_imf_format_names_from_uris_and_duplicates(tmp_path):
    root = write_imf_dataset(tmp_path / "mmkb")
    report = import_dataset(root)
    assert report.format == "imf"
    assert (report.entities, report.relations, report.train) == (4, 2, 3)
    assert report.duplicates_dropped["train"] == 1
    with EntityStore.open("mmkb") as store:
        assert store.entity(0).name == "Pocatello, Idaho"
        assert store.entity(0).description == "city in Idaho"
        assert store.entity(3).name == "Café Society"
        assert store.relation(1).name == "country"
        assert store.entity("<http://dbpedia.org/resource/Idaho>").id == 1


def write_ids_dataset(root: Path, train: str = "0\t0\t1\n1\t1\t2\n", relation2id: bool = False) -> Path:
    root.mkdir(parents=True)
    (root / "entity2id.txt").write_text(
        "".join(f"http://www.wikidata.org/entity/Q{i} {i}\n" for i in range(3))
    )
    if relation2id:
        (root / "relation2id.txt").write_text("P1 0\nP2 1\n")
    (root / "train.txt").write_text(train)
    (root / "valid.txt").write_text("0\t1\t2\n")
    (root / "test.txt").write_text("2\t0\t0\n")
    return root


def test_ids_format(tmp_path):
    report = import_dataset(write_ids_dataset(tmp_path / "wd"))
    assert report.format == "ids"
    assert (report.entities, report.relations, report.train) == (3, 2, 2)
    with EntityStore.open("wd") as store:
        assert store.entity(2).name == "Q2"
        assert store.triples("test").tolist() == [[2, 0, 0]]
        assert [store.relation(i).key for i in range(2)] == ["0", "1"]


def test_ids_format_keeps_the_relations_of_relation2id_even_those_without_triples(tmp_path):
    root = write_ids_dataset(tmp_path / "wd2", relation2id=True)
    (root / "relation2id.txt").write_text("http://x/likes 0\nhttp://x/hates 1\nhttp://x/unused 2\n")
    report = import_dataset(root)
    assert report.relations == 3
    with EntityStore.open("wd2") as store:
        assert [(store.relation(i).key, store.relation(i).name) for i in range(3)] == [
            ("http://x/likes", "likes"), ("http://x/hates", "hates"), ("http://x/unused", "unused")
        ]


# ------------------------------------------------------------------------ bad input
def bad_case(tmp_path, case: str) -> tuple[Path, str, str, int | None]:
    """Build one bad dataset; return (dir, format, expected file name, expected line)."""
    if case == "two-fields":
        root = write_tsv_dataset(tmp_path / case, train=TINY_TRAIN + [("paris", "in")], valid=TINY_VALID, test=TINY_TEST)
        return root, "auto", "train.txt", 9
    if case == "id-out-of-range":
        return write_ids_dataset(tmp_path / case, train="0\t0\t1\n0\t0\t7\n"), "auto", "train.txt", 2
    if case == "relation-out-of-range":
        return write_ids_dataset(tmp_path / case, train="0\t5\t1\n", relation2id=True), "ids", "train.txt", 1
    if case == "entity-not-in-map":
        extra = "<http://dbpedia.org/resource/Nowhere> <http://dbpedia.org/ontology/country> <http://dbpedia.org/resource/Idaho> .\n"
        return write_imf_dataset(tmp_path / case, extra_train=extra), "auto", "train.txt", 5
    if case == "entity-not-in-entities-tsv":
        entities = [{"id": n} for n in ("paris", "france", "berlin", "germany", "europe", "madrid")]  # no spain
        root = write_tsv_dataset(tmp_path / case, train=TINY_TRAIN, valid=TINY_VALID, test=TINY_TEST, entities=entities)
        return root, "tsv", "train.txt", 7
    if case == "missing-split":
        root = write_tsv_dataset(tmp_path / case, train=TINY_TRAIN, valid=TINY_VALID, test=TINY_TEST)
        (root / "test.txt").unlink()
        return root, "tsv", case, None
    if case == "unknown-format":
        root = tmp_path / case
        root.mkdir()
        (root / "README").write_text("nothing here")
        return root, "auto", case, None
    if case == "empty-train":
        return write_tsv_dataset(tmp_path / case, train=[], valid=TINY_VALID, test=TINY_TEST), "tsv", "train.txt", None
    if case == "encoding":
        root = write_tsv_dataset(tmp_path / case, train=TINY_TRAIN, valid=TINY_VALID, test=TINY_TEST)
        with open(root / "valid.txt", "ab") as handle:
            handle.write(b"caf\xe9\tin\teurope\n")
        return root, "tsv", "valid.txt", 2
    if case == "non-integer-id":
        return write_ids_dataset(tmp_path / case, train="0\t0\t1\nx\t0\t1\n"), "ids", "train.txt", 2
    if case == "underscored-id":  # int() reads 1_0 as 10
        return write_ids_dataset(tmp_path / case, train="0\t0\t1\n1\t1_0\t2\n"), "ids", "train.txt", 2
    if case == "non-ascii-digit":  # int() reads ARABIC-INDIC DIGIT ONE as 1
        return write_ids_dataset(tmp_path / case, train="0\t0\t1\n1\t\u0661\t2\n"), "ids", "train.txt", 2
    if case == "non-ascii-digit-in-map":
        root = write_ids_dataset(tmp_path / case)
        (root / "entity2id.txt").write_text("a 0\nb \u0661\nc 2\n")
        return root, "ids", "entity2id.txt", 2
    if case == "dense-ids":
        root = write_imf_dataset(tmp_path / case, entity2id="<a> 0\n<b> 5\n")
        return root, "imf", "entity2id.txt", 2
    if case == "bad-header":
        root = write_tsv_dataset(tmp_path / case, train=TINY_TRAIN, valid=TINY_VALID, test=TINY_TEST)
        (root / "entities.tsv").write_text("name\tdescription\nParis\tcity\n")
        return root, "tsv", "entities.tsv", 1
    if case == "empty-relation-field":
        root = write_tsv_dataset(tmp_path / case, train=TINY_TRAIN, valid=TINY_VALID, test=TINY_TEST)
        (root / "test.txt").write_text("paris\t\tfrance\n")
        return root, "tsv", "test.txt", 1
    if case == "empty-relation-id":
        root = write_tsv_dataset(tmp_path / case, train=TINY_TRAIN, valid=TINY_VALID, test=TINY_TEST)
        (root / "relations.tsv").write_text("id\tname\n\tCapital of\n")
        return root, "tsv", "relations.tsv", 2
    if case == "missing-image":
        entities = [{"id": "paris", "image": "images/nope.png"}]
        root = write_tsv_dataset(tmp_path / case, train=[("paris", "r", "paris")], valid=[], test=[], entities=entities)
        return root, "tsv", "entities.tsv", 2
    if case == "corrupt-gzip":  # a damaged deflate stream inside a well-formed gzip header: zlib.error
        import gzip

        root = write_tsv_dataset(tmp_path / case, train=TINY_TRAIN * 40, valid=TINY_VALID, test=TINY_TEST)
        packed = bytearray(gzip.compress((root / "train.txt").read_bytes()))
        packed[20:60] = bytes(b ^ 0x5A for b in packed[20:60])
        (root / "train.txt").unlink()
        (root / "train.txt.gz").write_bytes(bytes(packed))
        return root, "tsv", "train.txt.gz", None
    if case == "headerless-entities":
        root = write_tsv_dataset(tmp_path / case, train=TINY_TRAIN, valid=TINY_VALID, test=TINY_TEST)
        (root / "entities.tsv").write_text("paris\tParis\tcapital of France\n")
        return root, "tsv", "entities.tsv", 1
    if case == "described-twice":
        root = write_imf_dataset(tmp_path / case)
        with open(root / "entity_description.tsv", "a") as handle:
            handle.write("<http://dbpedia.org/resource/Idaho>\ta state\n<http://dbpedia.org/resource/Idaho>\tagain\n")
        return root, "imf", "entity_description.tsv", 3
    if case == "two-train-files":
        root = write_tsv_dataset(tmp_path / case, train=TINY_TRAIN, valid=TINY_VALID, test=TINY_TEST)
        (root / "train.tsv").write_text("paris\tin\n")  # malformed, and not the one that would be read
        return root, "auto", case, None
    raise AssertionError(case)


BAD_CASES = [
    "two-fields",
    "id-out-of-range",
    "relation-out-of-range",
    "entity-not-in-map",
    "entity-not-in-entities-tsv",
    "missing-split",
    "unknown-format",
    "empty-train",
    "encoding",
    "non-integer-id",
    "underscored-id",
    "non-ascii-digit",
    "non-ascii-digit-in-map",
    "dense-ids",
    "bad-header",
    "missing-image",
    "empty-relation-field",
    "empty-relation-id",
    "corrupt-gzip",
    "described-twice",
    "two-train-files",
    "headerless-entities",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_names_file_and_line_and_keeps_existing_store(case, tmp_path, tiny_tsv, imf_home):
    import_dataset(tiny_tsv, name="keep")
    store_file = imf_home / "datasets" / "keep" / "store.db"
    before = digest(store_file)

    root, fmt, file_name, line = bad_case(tmp_path, case)
    with pytest.raises(DataError) as caught:
        import_dataset(root, name="keep", format=fmt, replace=True)
    error = caught.value
    assert error.path is not None and error.path.name == file_name
    assert error.line == line
    assert str(error).startswith(f"{error.path}:{line}: " if line else f"{error.path}: ")
    assert "\n" not in str(error)

    assert digest(store_file) == before
    assert sorted(p.name for p in store_file.parent.iterdir()) == ["store.db"]


def test_failed_import_of_new_dataset_leaves_nothing(tmp_path, imf_home):
    root, *_ = bad_case(tmp_path, "two-fields")
    with pytest.raises(DataError):
        import_dataset(root, name="fresh")
    assert not (imf_home / "datasets" / "fresh").exists()


def test_interrupted_write_keeps_existing_store_byte_identical(tiny_tsv, imf_home, monkeypatch):
    import_dataset(tiny_tsv, name="keep")
    store_file = imf_home / "datasets" / "keep" / "store.db"
    before = digest(store_file)
    real_write = importing.write_store

    def write_then_die(path, parsed, metadata):
        real_write(path, parsed, metadata)
        raise KeyboardInterrupt  # killed after the temp file is complete, before the rename

    monkeypatch.setattr(importing, "write_store", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        import_dataset(tiny_tsv, name="keep", replace=True)
    assert digest(store_file) == before
    assert sorted(p.name for p in store_file.parent.iterdir()) == ["store.db"]


def test_temp_store_of_a_killed_import_is_cleaned_up(tiny_tsv, imf_home):
    import_dataset(tiny_tsv, name="keep")
    leftover = imf_home / "datasets" / "keep" / ".store.db.999999999.tmp"  # no such process
    leftover.write_bytes(b"half a store")
    import_dataset(tiny_tsv, name="keep", replace=True)
    assert not leftover.exists()


def test_existing_dataset_needs_replace(tiny_tsv):
    import_dataset(tiny_tsv)
    with pytest.raises(DatasetExistsError, match="--replace"):
        import_dataset(tiny_tsv)
    report = import_dataset(tiny_tsv, replace=True)
    assert report.train == 8


def test_unknown_source_and_bad_name(tmp_path):
    with pytest.raises(DataError, match="not a bundled dataset"):
        import_dataset(tmp_path / "nope")
    from kgdata.errors import ImfError

    with pytest.raises(ImfError, match="invalid dataset name"):
        import_dataset(tmp_path, name="../evil")


def test_the_import_summary_counts_one_of_a_kind_in_the_singular(tmp_path, imf_home):
    from typer.testing import CliRunner

    from imf_cli.main import app

    train = [("a", "r", "b"), ("a", "r", "b"), ("b", "r", "c")]
    root = write_tsv_dataset(tmp_path / "one", train=train, valid=[("a", "r", "d")], test=[("b", "r", "a")])
    result = CliRunner().invoke(app, ["import", str(root)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "4 entities, 1 relation, 2 / 1 / 1" in text
    assert "dropped 1 duplicate triple (train: 1)" in text and "1 valid entity never occurs in train" in text
