"""Entities added after import: the store interface, `imf entities add/list`, and incremental encoding."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from PIL import Image

from helpers import cli as invoke
from helpers import cli_ok as ok
from helpers import error_line, shared_dataset
from kgdata.entities import NewEntity, add_entities
from kgdata.features import load_features
from kgdata.importing import import_dataset
from kgdata.inputs import graph_input_hash
from kgdata.locking import DatasetBusyError, dataset_lock
from kgdata.store import EntityStore

SMALL = ["--dim", "8", "--batch-size", "4", "--eval-every", "1", "--seed", "3", "--device", "cpu", "--no-progress"]


@pytest.fixture
def tiny(tiny_tsv, imf_home):
    import_dataset(tiny_tsv)
    return "tiny"


def png(path, colour=(200, 10, 10)):
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def test_add_one_entity_keeps_the_graph_and_its_hash(tiny, tmp_path, imf_home):
    with EntityStore.open(tiny) as store:
        content_hash, texts_hash = store.content_hash, graph_input_hash(store, "texts")
    image = png(tmp_path / "rome.png")
    result = ok("entities", "add", tiny, "rome", "--name", "Rome", "--description", "Capital of Italy",
                "--image", str(image), "--json")
    report = json.loads(result.stdout)
    assert report["added"][0]["id"] == 7 and (report["graph_entities"], report["entities"]) == (7, 8)

    with EntityStore.open(tiny) as store:
        assert (store.num_entities, store.num_graph_entities, store.num_added_entities) == (8, 7, 1)
        assert store.added_entity_ids() == [7] and store.is_added(7) and not store.is_added(6)
        rome = store.entity("rome")
        assert rome.added and rome.id == 7 and rome.description == "Capital of Italy"
        assert not store.entity("paris").added
        copy = imf_home / "datasets" / "tiny" / "images" / "added"
        assert rome.image.startswith(str(copy)) and open(rome.image, "rb").read() == image.read_bytes()
        assert store.content_hash == content_hash  # runs trained before keep loading
        assert graph_input_hash(store, "texts") == texts_hash  # features of the graph are not stale
        assert [e.key for e in store.search("italy")] == ["rome"]  # the full-text index follows
        assert len(store.triples("train")) == 8 and store.known_triples().num_entities == 8

    listed = json.loads(ok("entities", "list", tiny, "--added", "--json").stdout)
    assert [(e["key"], e["added"]) for e in listed] == [("rome", True)]
    table = ok("entities", "list", tiny).stdout
    assert "no (added)" in table and "rome" in table


def test_add_many_from_a_file_in_one_transaction(tiny, tmp_path, imf_home):
    (tmp_path / "pics").mkdir()
    png(tmp_path / "pics" / "a.png")
    good = tmp_path / "new.tsv"
    good.write_text("id\tname\tdescription\timage\nrome\tRome\tCapital of Italy\tpics/a.png\nlisbon\tLisbon\t\t\n")
    report = json.loads(ok("entities", "add", tiny, "--from", str(good), "--json").stdout)
    assert [(row["key"], row["id"]) for row in report["added"]] == [("rome", 7), ("lisbon", 8)]
    with EntityStore.open(tiny) as store:
        assert store.entity("lisbon").name == "Lisbon" and store.entity("lisbon").description is None
        assert store.added_entity_ids() == [7, 8]

    bad = tmp_path / "bad.tsv"
    bad.write_text("id\tname\nvienna\tVienna\nbern\tBe\x00rn\n")
    line = error_line(invoke("entities", "add", tiny, "--from", str(bad)))
    assert f"{bad}:3:" in line and "U+0000" in line
    with EntityStore.open(tiny) as store:
        assert store.num_entities == 9  # vienna was not added either


def bomb_png() -> bytes:
    """A 30,000 × 30,000 PNG of a few bytes: more pixels than PIL's decompression-bomb limit."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["paris", "--name", "Paris again"], "entity 'paris' is already in dataset 'tiny'"),
        (["", "--name", "Nothing"], "empty entity key"),
        (["oslo", "--name", "Os\x1blo"], "the name holds the control character U+001B (escape) at column 3"),
        (["oslo", "--name", "Oslo", "--description", "two\nlines"], "the description holds the control character U+000A"),
        (["oslo"], "give the name of 'oslo' with --name"),
        (["oslo", "--name", "  "], "give the name of 'oslo' with --name (it is blank)"),
        ([], "give the new entity's KEY and --name, or --from FILE"),
        (["oslo", "--name", "Oslo", "--image", "{tmp}/missing.png"], "does not exist"),
        (["oslo", "--name", "Oslo", "--image", "{tmp}/fake.png"], "not a readable image"),
        (["oslo", "--name", "Oslo", "--image", "{tmp}/bomb.png"], "not a readable image"),
        (["oslo", "--name", "Oslo", "--from", "{tmp}/x.tsv"], "cannot be combined with --from"),
        (["--from", "{tmp}/escape.tsv"], "leads outside"),
        (["--from", "{tmp}/escape.tsv"], "the folder of escape.tsv"),
        (["--from", "{tmp}/dupes.tsv"], "listed twice (first on line 2)"),
        (["PARIS", "--name", "Lutetia"], "key 'PARIS' is the name of entity 'paris': keys are looked up before names"),
        (["lutetia", "--name", "paris"], "the name 'paris' is already the name of entity 'paris' in dataset 'tiny'"),
        (["--from", "{tmp}/samename.tsv"], "the name 'OSLO' is given twice (also to 'oslo')"),
        (["--from", "{tmp}/keyname.tsv"], "the name 'bergen' is the key of another entity"),
    ],
)
def test_bad_additions_are_one_line_and_add_nothing(tiny, tmp_path, args, message):
    (tmp_path / "fake.png").write_bytes(b"not an image at all")
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    (tmp_path / "x.tsv").write_text("id\nx\n")
    (tmp_path / "escape.tsv").write_text("id\timage\noslo\t../../../../etc/hostname\n")
    (tmp_path / "dupes.tsv").write_text("id\noslo\noslo\n")
    (tmp_path / "samename.tsv").write_text("id\tname\noslo\tOslo\nkristiania\tOSLO\n")
    (tmp_path / "keyname.tsv").write_text("id\tname\noslo\tbergen\nbergen\tBergen City\n")
    line = error_line(invoke("entities", "add", tiny, *[a.replace("{tmp}", str(tmp_path)) for a in args]))
    assert message in line and "between fields" not in line  # a value, not a line of a file
    with EntityStore.open(tiny) as store:
        assert store.num_entities == 7 and store.added_entity_ids() == []


def test_a_blank_name_in_a_file_falls_back_to_the_key(tiny, tmp_path):
    (tmp_path / "new.tsv").write_text("id\tname\noslo\t  \nbergen\t\n")
    ok("entities", "add", tiny, "--from", str(tmp_path / "new.tsv"))
    with EntityStore.open(tiny) as store:
        assert [store.entity(i).name for i in store.added_entity_ids()] == ["oslo", "bergen"]


def test_a_replace_says_that_it_drops_added_entities(tiny, tiny_tsv):
    add_entities(tiny, [NewEntity("oslo", "Oslo")])
    result = ok("import", str(tiny_tsv), "--replace")
    assert "held 1 entity added with imf entities add" in result.output and "dropped" in result.output
    with EntityStore.open(tiny) as store:
        assert store.num_entities == 7 and store.added_entity_ids() == []


def test_add_waits_for_the_write_lock(tiny, monkeypatch):
    monkeypatch.setenv("IMF_LOCK_TIMEOUT", "0.2")
    with dataset_lock(tiny, "write"):
        with pytest.raises(DatasetBusyError):
            add_entities(tiny, [NewEntity("oslo", "Oslo")])
    assert add_entities(tiny, [NewEntity("oslo", "Oslo")]).entities == 8


def test_a_store_from_before_the_added_flag_gets_it_on_the_first_add(tiny, imf_home):
    store_file = imf_home / "datasets" / "tiny" / "store.db"
    with sqlite3.connect(store_file) as conn:  # as imported before migration m005
        conn.execute("ALTER TABLE entities DROP COLUMN added")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm005_added_entities'")
    with EntityStore.open(tiny) as store:
        assert not store.entity(0).added and store.num_graph_entities == 7
    add_entities(tiny, [NewEntity("oslo", "Oslo")])
    with EntityStore.open(tiny) as store:
        assert store.entity("oslo").added and not store.entity(0).added


def test_training_uses_the_graph_entities_and_old_runs_keep_loading(tiny, fake_text_encoder):
    ok("encode", tiny, "-m", "text", "-e", "fake-text")
    before = json.loads(ok("train", tiny, "--modalities", "structure,text", "--epochs", "1", *SMALL, "--json").stdout)
    ok("entities", "add", tiny, "rome", "--name", "Rome", "--description", "Capital of Italy")

    with EntityStore.open(tiny) as store:  # the file predates rome: rome loads as missing until encoded
        features = load_features(store, "text", "fake-text")
        assert features.matrix.shape == (8, 8) and not features.mask[7] and features.mask[:7].sum() == 7
    listing = ok("features", tiny).output
    assert "partial: 1 entity added since it was written, missing until run imf encode tiny --modality text" in listing
    ok("eval", before["run_dir"])  # trained before the addition: still loads
    after = json.loads(ok("train", tiny, "--modalities", "structure,text", "--epochs", "1", *SMALL, "--json").stdout)
    from models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(f"{after['run_dir']}/best.pt")
    assert model.num_entities == 7  # the graph only
    ok("eval", after["run_dir"])


def test_encoding_after_an_addition_encodes_only_the_new_entity(tiny, fake_text_encoder):
    first = json.loads(ok("encode", tiny, "-m", "text", "-e", "fake-text", "--json").stdout)
    assert (first["encoded"], first["reused"]) == (7, 0) and len(fake_text_encoder.encoded) == 7
    ok("entities", "add", tiny, "rome", "--name", "Rome", "--description", "Capital of Italy")

    fake_text_encoder.encoded.clear()
    again = json.loads(ok("encode", tiny, "-m", "text", "-e", "fake-text", "--json").stdout)
    assert fake_text_encoder.encoded == ["Capital of Italy"]
    assert (again["status"], again["encoded"], again["reused"], again["rows"]) == ("written", 1, 7, 8)
    with EntityStore.open(tiny) as store:
        features = load_features(store, "text", "fake-text")
        assert features.mask.all()
        fake_text_encoder.encoded.clear()
        forced = json.loads(ok("encode", tiny, "-m", "text", "-e", "fake-text", "--force", "--json").stdout)
        assert forced["encoded"] == 8 and len(fake_text_encoder.encoded) == 8
        np.testing.assert_allclose(load_features(store, "text", "fake-text").matrix, features.matrix)
    assert json.loads(ok("encode", tiny, "-m", "text", "-e", "fake-text", "--json").stdout)["status"] == "unchanged"


def test_structure_features_are_kept_when_only_entities_were_added(tiny):
    first = json.loads(ok("encode", tiny, "-m", "structure", "--epochs", "1", "--dim", "8", "--seed", "1", "--json").stdout)
    assert first["encoded"] == 7
    add_entities(tiny, [NewEntity("rome", "Rome")])
    again = json.loads(ok("encode", tiny, "-m", "structure", "--epochs", "1", "--dim", "8", "--seed", "1", "--json").stdout)
    assert (again["status"], again["encoded"], again["reused"], again["rows"], again["missing"]) == (
        "written", 0, 7, 8, first["missing"] + 1,
    )
    with EntityStore.open(tiny) as store:
        features = load_features(store, "structure", "gat")
        assert not features.mask[7] and not features.matrix[7].any()


@pytest.mark.shared_data
@pytest.mark.slow
def test_adding_one_entity_to_db15k_re_encodes_one_text(imf_home, fake_text_encoder):
    import_dataset(shared_dataset("db15k"), name="db15k")
    first = json.loads(ok("encode", "db15k", "-m", "text", "-e", "fake-text", "--json").stdout)
    assert first["encoded"] > 12_000
    ok("entities", "add", "db15k", "atlantis", "--name", "Atlantis", "--description", "A sunken island")
    fake_text_encoder.encoded.clear()
    again = json.loads(ok("encode", "db15k", "-m", "text", "-e", "fake-text", "--json").stdout)
    assert fake_text_encoder.encoded == ["A sunken island"]
    assert (again["encoded"], again["reused"]) == (1, first["encoded"])


def test_image_encoding_after_an_addition_reads_only_the_new_image(mm_store, tiny_cnn, tmp_path):
    from kgdata.encoders import encode_dataset

    first = encode_dataset(mm_store, "image", "tiny-cnn")
    assert (first.encoded, first.reused) == (6, 0)  # six image files, one of them corrupt
    before = load_features(mm_store, "image", "tiny-cnn")
    add_entities("tiny-mm", [NewEntity("country:theta", "Theta", image=png(tmp_path / "theta.png"))])
    with EntityStore.open("tiny-mm") as store:
        again = encode_dataset(store, "image", "tiny-cnn")
        assert (again.encoded, again.reused, again.rows, again.missing) == (1, 6, 11, first.missing)
        after = load_features(store, "image", "tiny-cnn")
    np.testing.assert_array_equal(after.matrix[:10], before.matrix)
    assert after.mask[10] and after.mask[:10].tolist() == before.mask.tolist()


def test_adding_to_a_damaged_store_names_it(tiny):
    from kgdata import paths
    from kgdata.errors import EnvironmentFault, ImfError

    store_file = paths.store_path(tiny)
    data = store_file.read_bytes()
    store_file.write_bytes(data[:4096] + b"\x00" * 4096 + data[8192:])  # a damaged page
    with pytest.raises(ImfError) as damaged:
        add_entities(tiny, [NewEntity("oslo", "Oslo")])
    assert str(store_file) in str(damaged.value) and not isinstance(damaged.value, EnvironmentFault)


@pytest.mark.parametrize("content", [b"", "foreign"])
def test_adding_to_a_store_that_is_not_imf_s_leaves_it_untouched(tiny, content):
    """An empty or foreign store.db got imf's tables written into it, then the add crashed on its
    missing metadata (a TypeError); now the read-only check refuses it first."""
    from kgdata import paths
    from kgdata.errors import ImfError

    store_file = paths.store_path(tiny)
    store_file.unlink()
    if content == "foreign":
        with sqlite3.connect(store_file) as conn:
            conn.execute("CREATE TABLE user_table (x)")
    else:
        store_file.write_bytes(content)
    before = store_file.read_bytes()
    with pytest.raises(ImfError, match="not a readable imf entity store"):
        add_entities(tiny, [NewEntity("oslo", "Oslo")])
    assert store_file.read_bytes() == before


def test_a_name_that_is_a_stored_key_is_refused(tiny):
    """Keys are looked up before names: `--head lut` always meant the entity keyed lut."""
    from kgdata.errors import DataError

    add_entities(tiny, [NewEntity("lut", "Lutetia")])
    with pytest.raises(DataError, match="the name 'lut' is the key of another entity"):
        add_entities(tiny, [NewEntity("x", "lut")])


def test_the_advice_after_adding_names_image_encoding_when_an_image_was_given(tiny, tmp_path):
    plain = ok("entities", "add", tiny, "oslo", "--name", "Oslo").stdout
    assert "imf encode tiny --modality text" in plain and "--modality image" not in plain
    pictured = ok("entities", "add", tiny, "rome", "--name", "Rome", "--image", str(png(tmp_path / "r.png"))).stdout
    assert "imf encode tiny --modality text and imf encode tiny --modality image" in " ".join(pictured.split())


def test_a_key_that_prints_as_a_stored_one_is_added_with_a_warning(tiny):
    """`imf import` warned of keys differing only by invisible characters; `entities add` did not."""
    stored = EntityStore.open("tiny")
    key = stored.entity_keys[0]
    stored.close()
    report = add_entities("tiny", [NewEntity(key + "\u200b", name="Lookalike")])
    assert len(report.warnings) == 1 and "only in Unicode normalisation or invisible characters" in report.warnings[0]
    result = invoke("entities", "add", "tiny", "fresh-key", "--name", "x" * 5000)
    assert result.exit_code == 0 and len(result.output) < 2000  # the long name is cut in the echo
