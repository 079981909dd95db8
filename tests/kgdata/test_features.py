"""Feature files: save/load with masks, the manifest, atomic writes, shape checks and --from-file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from sqlite_utils import Database

from kgdata import features, migrations
from kgdata.errors import DataError, ImfError
from kgdata.feature_import import import_features
from kgdata.features import (
    FeatureSet,
    feature_path,
    list_features,
    load_features,
    safe_encoder_name,
    save_features,
)


def random_features(store, dim: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(store.num_entities, dim)).astype(np.float32)
    mask = np.ones(store.num_entities, dtype=bool)
    mask[[1, 4]] = False
    return matrix, mask


# ------------------------------------------------------------------------------ save and load
def test_save_load_roundtrip_zeroes_masked_rows_and_writes_manifest(mm_store):
    matrix, mask = random_features(mm_store)
    path = save_features(mm_store, "text", "toy", matrix, mask, input_hash="abc", extra={"k": 1})
    assert path == mm_store.dataset_dir / "features" / "text-toy.safetensors"

    loaded = load_features(mm_store, "text")
    assert isinstance(loaded, FeatureSet)
    assert (loaded.modality, loaded.encoder, loaded.input_hash, loaded.path) == ("text", "toy", "abc", path)
    assert loaded.matrix.dtype == np.float32 and loaded.matrix.shape == (mm_store.num_entities, 5)
    assert loaded.mask.dtype == bool and loaded.mask.tolist() == mask.tolist()
    np.testing.assert_array_equal(loaded.matrix[mask], matrix[mask])
    assert not loaded.matrix[~mask].any()  # masked rows are zeros, never a stand-in vector
    assert loaded.relation_matrix is None
    assert loaded.extra == {"k": 1}
    assert repr(loaded) == "FeatureSet(modality='text', encoder='toy', rows=10, dim=5, missing=2)"

    (entry,) = list_features(mm_store)
    assert entry["modality"] == "text" and entry["encoder"] == "toy"
    assert (entry["dim"], entry["rows"], entry["missing"], entry["covered"]) == (5, 10, 2, 8)
    assert entry["input_hash"] == "abc" and entry["status"] == "ok" and entry["created_at"]
    row = next(mm_store.db["features"].rows)
    assert row["path"] == str(path)


def test_structure_features_carry_relation_matrix(mm_store):
    matrix, mask = random_features(mm_store, dim=4)
    relations = np.arange(mm_store.num_relations * 4, dtype=np.float32).reshape(-1, 4)
    save_features(mm_store, "structure", "gat", matrix, mask, relation_matrix=relations, input_hash="h")
    loaded = load_features(mm_store, "structure", "gat")
    np.testing.assert_array_equal(loaded.relation_matrix, relations)
    with pytest.raises(DataError, match="relation matrix of shape"):
        save_features(mm_store, "structure", "gat", matrix, mask, relation_matrix=relations[:2], input_hash="h")


def test_save_accepts_a_dataset_directory(mm_store):
    matrix, mask = random_features(mm_store)
    path = save_features(mm_store.dataset_dir, "image", "toy", matrix, mask, input_hash="x")
    assert path.is_file() and load_features(mm_store, "image").encoder == "toy"


@pytest.mark.parametrize(
    ("matrix", "mask", "message"),
    [
        (np.zeros((9, 5)), np.ones(10, bool), "9 feature rows for 10 entities"),
        (np.zeros(10), np.ones(10, bool), "2-D"),
        (np.zeros((10, 5)), np.ones(9, bool), "mask of shape"),
        (np.full((10, 5), np.nan), np.ones(10, bool), "NaN"),
    ],
)
def test_save_refuses_bad_shapes_and_values(mm_store, matrix, mask, message):
    with pytest.raises(DataError, match=message):
        save_features(mm_store, "text", "toy", matrix, mask, input_hash="x")
    assert not (mm_store.dataset_dir / "features" / "text-toy.safetensors").exists()


def test_nan_rows_of_masked_entities_are_zeroed_not_refused(mm_store):
    matrix, mask = random_features(mm_store)
    matrix[~mask] = np.nan
    save_features(mm_store, "text", "toy", matrix, mask, input_hash="x")
    assert np.isfinite(load_features(mm_store, "text").matrix).all()


def test_encoder_ids_become_safe_file_names(tmp_path):
    assert safe_encoder_name("minilm") == "minilm"
    assert safe_encoder_name("bert-base-uncased") == "bert-base-uncased"
    odd = safe_encoder_name("hf:/tmp/some dir/model")
    assert odd.startswith("hf-tmp-some-dir-model-") and "/" not in odd and ":" not in odd
    assert safe_encoder_name("hf:/a/b") != safe_encoder_name("hf:/a-b")  # escaping never collides
    assert feature_path(tmp_path, "image", "vgg16") == tmp_path / "features" / "image-vgg16.safetensors"
    with pytest.raises(ImfError, match="unknown modality"):
        feature_path(tmp_path, "audio", "x")


def test_load_picks_the_most_recent_and_lists_what_exists_when_unknown(mm_store, monkeypatch):
    matrix, mask = random_features(mm_store)
    monkeypatch.setattr(features, "_now", lambda: "2030-01-01T00:00:00+00:00")
    save_features(mm_store, "text", "older", matrix, mask, input_hash="1")
    monkeypatch.setattr(features, "_now", lambda: "2030-01-02T00:00:00+00:00")
    save_features(mm_store, "text", "newer", matrix * 2, mask, input_hash="2")
    assert load_features(mm_store, "text").encoder == "newer"
    assert load_features(mm_store, "text", "older").input_hash == "1"
    with pytest.raises(ImfError, match=r"no text features from encoder 'nope'.*text/newer, text/older") as refused:
        load_features(mm_store, "text", "nope")
    # no encoder 'nope' exists to run: the advice is one that does, or an import under that name
    assert "run: imf encode tiny-mm --modality text --encoder nope" not in str(refused.value)
    assert "--from-file FILE --encoder nope" in str(refused.value) and "minilm" in str(refused.value)
    with pytest.raises(ImfError, match=r"run: imf encode tiny-mm --modality text --encoder minilm$"):
        load_features(mm_store, "text", "minilm")
    with pytest.raises(ImfError, match=r"run: imf encode tiny-mm --modality text --encoder hf:some/model$"):
        load_features(mm_store, "text", "hf:some/model")
    with pytest.raises(ImfError, match=r"no image features .*imf encode tiny-mm --modality image"):
        load_features(mm_store, "image")


def test_load_refuses_a_file_whose_rows_do_not_match_the_dataset(mm_store):
    from safetensors.numpy import save_file

    path = feature_path(mm_store.dataset_dir, "text", "bad")
    path.parent.mkdir(parents=True)
    metadata = {"format": features.FORMAT, "modality": "text", "encoder": "bad", "created_at": "x"}
    save_file({"features": np.zeros((7, 3), np.float32), "mask": np.ones(7, np.uint8)}, str(path), metadata=metadata)
    with pytest.raises(DataError, match="holds 7 rows but dataset 'tiny-mm' has 10 entities") as error:
        load_features(mm_store, "text", "bad")
    assert error.value.path == path
    (entry,) = list_features(mm_store)
    assert entry["status"].startswith("stale: holds 7 rows") and entry["missing"] is None


def test_load_refuses_features_of_other_entities(mm_store):
    matrix, mask = random_features(mm_store)
    path = save_features(mm_store, "text", "toy", matrix, mask, input_hash="x")
    header = features.read_header(path)
    header["metadata"]["entity_keys_hash"] = "0" * 64
    with pytest.raises(DataError, match="computed for other entities"):
        features._check_header(mm_store, path, header)


def test_store_imported_before_the_manifest_migration_gets_it_on_first_write(mm_store):
    db = Database(mm_store.path)
    db["features"].drop()
    db.execute(f"DELETE FROM {migrations.migrations.migrations_table} WHERE name = 'm004_feature_manifest'")
    db.conn.commit()
    db.close()
    assert "features" not in mm_store.db.table_names()
    matrix, mask = random_features(mm_store)
    save_features(mm_store, "text", "toy", matrix, mask, input_hash="x")
    assert [row["encoder"] for row in mm_store.db["features"].rows] == ["toy"]


# ------------------------------------------------------------------------------- atomic writes
def test_a_failed_write_leaves_the_old_file_intact_and_no_temp_file(mm_store, monkeypatch):
    import safetensors.numpy

    matrix, mask = random_features(mm_store)
    path = save_features(mm_store, "text", "toy", matrix, mask, input_hash="old")
    before = path.read_bytes()

    def half_write(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial garbage")
        raise RuntimeError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", half_write)
    with pytest.raises(RuntimeError, match="disk full"):
        save_features(mm_store, "text", "toy", matrix * 3, mask, input_hash="new")
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert load_features(mm_store, "text").input_hash == "old"
    assert next(mm_store.db["features"].rows)["input_hash"] == "old"


def test_an_interrupted_rename_leaves_no_temp_file(mm_store, monkeypatch):
    matrix, mask = random_features(mm_store)
    path = save_features(mm_store, "text", "toy", matrix, mask, input_hash="old")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(features.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_features(mm_store, "text", "toy", matrix, mask, input_hash="new")
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


# ------------------------------------------------------------------------------- --from-file
def _write_container(path, value):
    import torch
    from safetensors.numpy import save_file

    if path.suffix == ".npy":
        np.save(path, value)
    elif path.suffix == ".pt":
        torch.save(value, path)
    elif path.suffix == ".pkl":
        path.write_bytes(pickle.dumps(value))
    else:
        save_file(value, str(path))
    return path


def _containers(store, rng):
    """(file name, content, expected matrix, expected mask) for every supported container."""
    import torch

    n, keys = store.num_entities, store.entity_keys
    array = rng.normal(size=(n, 6)).astype(np.float32)
    subset = {keys[i]: array[i] for i in (0, 2, 5)}
    subset_mask = np.isin(np.arange(n), [0, 2, 5])
    return [
        ("feats.npy", array, array, np.ones(n, bool)),
        ("feats.pt", torch.from_numpy(array), array, np.ones(n, bool)),
        ("dict.pt", {k: torch.from_numpy(v) for k, v in subset.items()}, array * subset_mask[:, None], subset_mask),
        ("one.safetensors", {"vgg": array}, array, np.ones(n, bool)),
        ("masked.safetensors", {"features": array, "mask": subset_mask.astype(np.uint8)},
         array * subset_mask[:, None], subset_mask),
        ("dict.safetensors", dict(subset), array * subset_mask[:, None], subset_mask),
    ]


def test_from_file_reads_every_container(mm_store, tmp_path):
    rng = np.random.default_rng(1)
    for name, content, expected, expected_mask in _containers(mm_store, rng):
        source = _write_container(tmp_path / name, content)
        report = import_features(mm_store, "image", source, encoder=f"vgg16-{name}")
        assert (report.status, report.dim, report.rows) == ("written", 6, 10), name
        assert report.missing == int((~expected_mask).sum()), name
        loaded = load_features(mm_store, "image", f"vgg16-{name}")
        np.testing.assert_allclose(loaded.matrix, expected, rtol=1e-6, err_msg=name)
        assert loaded.mask.tolist() == expected_mask.tolist(), name


def test_from_file_default_encoder_name_and_no_op_rerun(mm_store, tmp_path):
    source = _write_container(tmp_path / "bert.npy", np.ones((10, 3), np.float32))
    first = import_features(mm_store, "text", source)
    assert first.encoder == "file:bert.npy" and first.status == "written"
    again = import_features(mm_store, "text", source)
    assert again.status == "unchanged" and again.input_hash == first.input_hash
    assert import_features(mm_store, "text", source, force=True).status == "written"
    np.save(source, np.full((10, 3), 2.0, np.float32))
    assert import_features(mm_store, "text", source).status == "written"


def test_from_file_with_a_keys_file(mm_store, tmp_path):
    keys = mm_store.entity_keys
    chosen = [keys[7], keys[0], keys[3]]
    array = np.arange(9, dtype=np.float32).reshape(3, 3)
    source = _write_container(tmp_path / "img.npy", array)
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("\n".join(chosen) + "\n")
    report = import_features(mm_store, "image", source, keys=keys_file)
    assert report.missing == 7
    loaded = load_features(mm_store, "image")
    np.testing.assert_array_equal(loaded.matrix[[7, 0, 3]], array)
    assert loaded.mask.nonzero()[0].tolist() == [0, 3, 7]


def test_a_keys_file_that_is_missing_empty_or_a_folder_is_refused_even_when_the_features_are_unchanged(mm_store, tmp_path):
    source = _write_container(tmp_path / "img.npy", np.ones((10, 3), dtype=np.float32))
    import_features(mm_store, "image", source, encoder="k1")
    assert import_features(mm_store, "image", source, encoder="k1").status == "unchanged"
    (tmp_path / "empty.txt").write_text("")
    for keys, message in (
        (tmp_path / "nope.txt", "keys file"),
        (tmp_path, "keys file"),
        (tmp_path / "empty.txt", "lists 0 entity keys but img.npy has 10 rows"),
    ):
        with pytest.raises(DataError, match=message) as refused:
            import_features(mm_store, "image", source, encoder="k1", keys=keys)
        assert refused.value.path == keys


@pytest.mark.parametrize(
    ("content", "keys", "message", "line"),
    [
        (np.zeros((11, 4)), None, "has 11 rows but dataset 'tiny-mm' has 10 entities", None),
        (np.zeros(10), None, "expected a 2-D array", None),
        (np.zeros((10, 2, 2)), None, "expected a 2-D array", None),
        (np.zeros((3, 4)), ["country:alpha", "country:beta", "country:nowhere"], "'country:nowhere' is not in the dataset", 3),
        (np.zeros((3, 4)), ["country:alpha", "country:beta"], "lists 2 entity keys but", None),
        (np.zeros((2, 4)), ["country:alpha", "country:alpha"], "listed twice", 2),
        (np.zeros((2, 4)), ["country:alpha", ""], "empty line", 2),
        (np.array([[1.0, np.inf]] * 10), None, "NaN or infinite", None),
    ],
)
def test_from_file_shape_and_key_errors(mm_store, tmp_path, content, keys, message, line):
    source = _write_container(tmp_path / "x.npy", np.asarray(content, dtype=np.float32))
    keys_file = None
    if keys is not None:
        keys_file = tmp_path / "keys.txt"
        keys_file.write_text("\n".join(keys) + "\n")
    with pytest.raises(DataError, match=message) as error:
        import_features(mm_store, "text", source, keys=keys_file)
    assert error.value.path == (keys_file if line is not None or "lists" in message else source)
    assert error.value.line == line
    assert list_features(mm_store) == []


def test_from_file_refuses_unknown_dict_keys_objects_and_formats(mm_store, tmp_path):
    import torch

    vectors = {"country:alpha": torch.tensor([1.0, 2.0]), "nobody": torch.tensor([0.0, 1.0])}
    bad_dict = _write_container(tmp_path / "d.pt", vectors)
    with pytest.raises(DataError, match="key 'nobody' is not an entity"):
        import_features(mm_store, "text", bad_dict)
    ragged = _write_container(tmp_path / "r.pt", {"country:alpha": torch.ones(2), "country:beta": torch.ones(1)})
    with pytest.raises(DataError, match="one length"):
        import_features(mm_store, "text", ragged)
    complex_numbers = tmp_path / "c.npy"
    np.save(complex_numbers, np.ones((10, 2), dtype=np.complex64))
    with pytest.raises(DataError, match="complex numbers"):  # numpy would drop the imaginary part with a warning
        import_features(mm_store, "text", complex_numbers)
    complex_tensor = _write_container(tmp_path / "c.pt", {"country:alpha": torch.ones(2, dtype=torch.complex64)})
    with pytest.raises(DataError, match="complex numbers"):
        import_features(mm_store, "text", complex_tensor)
    rows = mm_store.num_entities
    sparse = tmp_path / "s.pt"
    torch.save(torch.eye(rows, 2).to_sparse(), sparse)
    with pytest.raises(DataError, match=r"s\.pt: the array is a sparse_coo tensor; save a dense one"):
        import_features(mm_store, "text", sparse)
    meta = tmp_path / "m.pt"
    torch.save(torch.empty(rows, 2, device="meta"), meta)
    with pytest.raises(DataError, match="without data"):
        import_features(mm_store, "text", meta)
    garbage = tmp_path / "g.pt"
    garbage.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(DataError, match="weights_only=True") as refused:
        import_features(mm_store, "text", garbage)
    assert "weights_only` set to `False`" not in str(refused.value)  # never advise the unsafe load
    noise = tmp_path / "noise.npy"
    noise.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match="is not a .npy file"):  # numpy would call it a pickle
        import_features(mm_store, "text", noise)
    unmasked = _write_container(tmp_path / "none.pt", {"features": torch.ones(rows, 2), "mask": torch.zeros(rows, dtype=torch.bool)})
    with pytest.raises(DataError, match="gives no entity a vector"):
        import_features(mm_store, "text", unmasked)
    objects = tmp_path / "o.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="Python objects"):
        import_features(mm_store, "text", objects)
    unsafe = tmp_path / "u.pt"
    torch.save({"features": np.zeros((10, 2))}, unsafe)  # a numpy array inside: not weights-only
    with pytest.raises(DataError, match="weights_only=True"):
        import_features(mm_store, "text", unsafe)
    text = tmp_path / "f.csv"
    text.write_text("1,2\n")
    with pytest.raises(DataError, match="unsupported features file type"):
        import_features(mm_store, "text", text)
    with pytest.raises(DataError, match="no such features file"):
        import_features(mm_store, "text", tmp_path / "missing.npy")
    with pytest.raises(ImfError, match="text or image"):
        import_features(mm_store, "structure", bad_dict)
    (tmp_path / "keys.txt").write_text("country:alpha\n")
    with pytest.raises(DataError, match="drop --keys"):
        import_features(mm_store, "text", bad_dict, keys=tmp_path / "keys.txt")


def test_a_corrupt_feature_file_is_named_when_loaded_and_listed(mm_store):
    matrix, mask = random_features(mm_store)
    path = save_features(mm_store, "text", "toy", matrix, mask, input_hash="x")
    path.write_bytes(b"\x00\x01 not safetensors")
    with pytest.raises(DataError, match="not a readable safetensors feature file") as error:
        load_features(mm_store, "text", "toy")
    assert error.value.path == path
    (entry,) = list_features(mm_store)
    assert entry["status"].startswith("stale: not a readable safetensors feature file")
    assert (entry["covered"], entry["missing"]) == (0, entry["rows"])  # it covers nobody now
    path.unlink()
    (entry,) = list_features(mm_store)
    assert entry["status"] == "file missing" and (entry["covered"], entry["missing"]) == (0, entry["rows"])


@pytest.mark.parametrize(("extra", "shown"), [("{bad", "is not JSON"), ("5", "is not a JSON object"), ("[1]", "is not a JSON object")])
def test_a_feature_file_with_damaged_extra_metadata_is_named(mm_store, extra, shown):
    """A header whose 'extra' was not a JSON object crashed encode and train with a JSONDecodeError."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    matrix, mask = random_features(mm_store)
    path = save_features(mm_store, "text", "toy", matrix, mask, input_hash="x")
    with safe_open(str(path), "np") as handle:
        metadata, tensors = handle.metadata(), {key: handle.get_tensor(key) for key in handle.keys()}
    save_file(tensors, str(path), metadata={**metadata, "extra": extra})
    with pytest.raises(DataError, match=f"damaged feature file: its 'extra' metadata {shown}") as error:
        load_features(mm_store, "text", "toy")
    assert error.value.path == path
    (entry,) = list_features(mm_store)
    assert entry["status"].startswith("stale: damaged feature file")


def test_a_feature_file_whose_encoder_options_are_not_a_mapping_is_named(mm_store):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    matrix, mask = random_features(mm_store)
    path = save_features(mm_store, "text", "toy", matrix, mask, input_hash="x")
    with safe_open(str(path), "np") as handle:
        metadata, tensors = handle.metadata(), {key: handle.get_tensor(key) for key in handle.keys()}
    save_file(tensors, str(path), metadata={**metadata, "extra": '{"options": 5}'})
    with pytest.raises(DataError, match="damaged feature file: its encoder options are int, not a mapping") as error:
        load_features(mm_store, "text", "toy")
    assert error.value.path == path


@pytest.mark.parametrize("name", ["feats.pkl", "feats.PICKLE"])
def test_from_file_refuses_pickles_without_loading_them(mm_store, tmp_path, name):
    class Boom:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path('pwned').write_text('ran')",))

    source = tmp_path / name
    source.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(DataError, match="Python pickle, which imf refuses") as error:
        import_features(mm_store, "text", source)
    assert error.value.path == source
    assert not (tmp_path / "pwned").exists() and not list_features(mm_store)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (np.zeros((10, 0), np.float32), "zero-width array"),
        (np.full((10, 3), 3e38, np.float32), "as large as 3e\\+38"),
    ],
)
def test_from_file_refuses_zero_width_and_overflowing_features(mm_store, tmp_path, content, message):
    source = _write_container(tmp_path / "x.npy", content)
    with pytest.raises(DataError, match=message):
        import_features(mm_store, "image", source)
    with pytest.raises(DataError, match="zero width|as large as"):
        save_features(mm_store, "image", "toy", content, np.ones(10, bool), input_hash="h")
    assert list_features(mm_store) == []


def test_a_keys_file_in_latin_1_or_with_a_nul_names_its_line(mm_store, tmp_path):
    source = _write_container(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    keys_file = tmp_path / "keys.txt"
    keys_file.write_bytes(b"country:alpha\ncaf\xe9\n")
    with pytest.raises(DataError, match="not valid UTF-8") as error:
        import_features(mm_store, "text", source, keys=keys_file)
    assert (error.value.path, error.value.line) == (keys_file, 2)
    keys_file.write_bytes(b"country:alpha\ncountry:\x00beta\n")
    with pytest.raises(DataError, match="U\\+0000") as error:
        import_features(mm_store, "text", source, keys=keys_file)
    assert (error.value.path, error.value.line) == (keys_file, 2)


def test_a_features_file_that_is_a_fifo_is_refused_not_read(mm_store, tmp_path):
    import os

    fifo = tmp_path / "x.npy"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="FIFO") as error:
        import_features(mm_store, "text", fifo)
    assert error.value.path == fifo


def test_feature_files_get_the_mode_of_the_workspace_not_0600(mm_store):
    import os

    path = save_features(mm_store, "text", "test-bert", np.ones((mm_store.num_entities, 2)),
                         np.ones(mm_store.num_entities, dtype=bool), input_hash="t")
    assert os.stat(path).st_mode & 0o777 == path.parent.stat().st_mode & 0o666


def test_a_npy_file_with_bytes_after_its_array_is_refused(mm_store, tmp_path):
    source = _write_container(tmp_path / "img.npy", np.ones((10, 3), dtype=np.float32))
    with open(source, "ab") as handle:
        handle.write(b"\0" * 4000)
    with pytest.raises(DataError, match="holds 4,000 bytes after its 10x3 array") as refused:
        import_features(mm_store, "image", source)
    assert refused.value.path == source
    clean = _write_container(tmp_path / "clean.npy", np.ones((10, 3), dtype=np.float32))
    assert import_features(mm_store, "image", clean).status == "written"


@pytest.mark.parametrize("name", [" ", "", "x" * 201, "a\x1bb"])
def test_a_blank_or_unprintable_or_overlong_feature_name_is_refused(mm_store, tmp_path, name):
    source = _write_container(tmp_path / "img.npy", np.ones((10, 3), dtype=np.float32))
    with pytest.raises(ImfError, match="name the features with 1–200 printable characters"):
        import_features(mm_store, "image", source, encoder=name)


def test_a_long_feature_name_gets_a_short_file_name():
    from kgdata.features import safe_encoder_name

    assert safe_encoder_name("k1") == "k1"
    long = safe_encoder_name("x" * 200)
    assert len(long) <= 64 and long != safe_encoder_name("x" * 199)


def test_a_features_file_with_entries_beside_features_and_mask_is_refused(mm_store, tmp_path):
    import torch

    source = tmp_path / "f.pt"
    torch.save({"features": torch.ones(10, 3), "mask": torch.ones(10, dtype=torch.bool), "extra": torch.zeros(2)}, source)
    with pytest.raises(DataError, match="holds 'extra' beside 'features' and 'mask'"):
        import_features(mm_store, "image", source)


def test_from_file_masks_must_be_flags_and_count_with_keys(mm_store, tmp_path):
    """A NaN mask counted every entity as covered; with --keys the file's mask was ignored; dates were
    stored as day numbers."""
    import torch

    rows = mm_store.num_entities
    dates = tmp_path / "dates.npy"
    np.save(dates, np.array(["2020-01-01"] * (2 * rows), dtype="datetime64[D]").reshape(rows, 2))
    with pytest.raises(DataError, match="not numeric"):
        import_features(mm_store, "text", dates)
    nan_mask = _write_container(tmp_path / "n.pt", {"features": torch.rand(rows, 3), "mask": torch.full((rows,), float("nan"))})
    with pytest.raises(DataError, match="'mask' must hold booleans"):
        import_features(mm_store, "text", nan_mask)
    short_mask = _write_container(tmp_path / "short.pt", {"features": torch.rand(rows, 3), "mask": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(DataError, match=r"'mask' has shape \(2,\)"):
        import_features(mm_store, "text", short_mask)
    assert list_features(mm_store) == []
    keys = tmp_path / "keys.txt"
    keys.write_text("\n".join(mm_store.entity_keys[:4]) + "\n")
    masked = _write_container(tmp_path / "m.pt", {"features": torch.rand(4, 3), "mask": torch.tensor([True, False, False, True])})
    report = import_features(mm_store, "text", masked, keys=keys, encoder="masked")
    assert report.rows - report.missing == 2
    stored = load_features(mm_store, "text", "masked")
    assert stored.mask[:4].tolist() == [True, False, False, True] and not stored.mask[4:].any()


def test_a_damaged_feature_file_is_named_not_reported_as_never_encoded(mm_store):
    """A feature file cut short: training said "no text features … (stored: none)", while imf features
    listed the file with a warning."""
    matrix, mask = random_features(mm_store)
    path = save_features(mm_store, "text", "toy", matrix, mask, input_hash="abc")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match="not a readable safetensors feature file") as error:
        load_features(mm_store, "text")
    assert error.value.path == path and "imf encode" in str(error.value) and "--force" in str(error.value)
    with pytest.raises(ImfError, match="no image features"):  # another modality: still "never encoded"
        load_features(mm_store, "image")


@pytest.mark.parametrize("name", ["gat", "vgg16", "minilm", "hf:some/model"])
def test_imported_features_may_not_take_an_encoder_s_name(mm_store, tmp_path, name):
    """`--from-file f.npy --encoder vgg16` wrote image-vgg16.safetensors, the file a real vgg16 encode
    writes, and its stale hint advised `--encoder vgg16`, which then failed for want of weights."""
    source = _write_container(tmp_path / "x.npy", np.ones((mm_store.num_entities, 3), dtype=np.float32))
    with pytest.raises(ImfError, match="is the name of one of imf's encoders"):
        import_features(mm_store, "image", source, encoder=name)
    assert list_features(mm_store) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_among_the_feature_files_is_named_not_waited_on(mm_store):
    """safe_open blocked on a FIFO for good (SIGINT and SIGTERM did not end it)."""
    import signal

    fifo = feature_path(mm_store.dataset_dir, "image", "fifo")
    fifo.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(fifo)
    signal.alarm(20)  # a regression fails here instead of hanging the suite
    try:
        with pytest.raises(DataError, match="FIFO"):
            features.read_header(fifo)
        with pytest.raises(ImfError):
            load_features(mm_store, "image")
    finally:
        signal.alarm(0)


def test_a_damaged_newest_feature_file_is_named_not_passed_over_for_an_older_one(mm_store, tmp_path):
    """Two imports of text features, the newer one cut short: training used the older one without a word,
    and the hint for a damaged imported file advised an encode that would run MiniLM."""
    older = import_features(mm_store, "text", _write_container(tmp_path / "f1.npy", np.ones((mm_store.num_entities, 3),
                                                                                          dtype=np.float32)))
    newer = import_features(mm_store, "text", _write_container(tmp_path / "f2.npy", np.ones((mm_store.num_entities, 3),
                                                                                          dtype=np.float32)))
    newer_path = Path(newer.path)
    newer_path.write_bytes(newer_path.read_bytes()[:200])
    with pytest.raises(DataError, match="not a readable safetensors feature file") as error:
        load_features(mm_store, "text")  # "the most recent": it may be the damaged one
    assert error.value.path == newer_path
    assert "import its file again: imf encode" in str(error.value) and "--from-file FILE" in str(error.value)
    chosen = load_features(mm_store, "text", "file:f1.npy")  # named: the damaged one is not in the way
    assert chosen.encoder == "file:f1.npy" and older is not None


def test_a_file_name_with_control_characters_cannot_name_imported_features(mm_store, tmp_path):
    """`--from-file $'e\\e[31mred.npy'` stored the encoder "file:e\\x1b[31mred.npy", whose escape then
    reached the terminal from imf features, imf runs show and the run's config."""
    source = _write_container(tmp_path / "e\x1b[31mred.npy", np.ones((mm_store.num_entities, 3), dtype=np.float32))
    with pytest.raises(ImfError, match=r"'e%1B\[31mred.npy': a file name with control characters .* --encoder NAME"):
        import_features(mm_store, "text", source)
    assert list_features(mm_store) == []
    assert import_features(mm_store, "text", source, encoder="red").encoder == "red"  # named: fine


@pytest.mark.parametrize("suffix", [".npy", ".pt"])
def test_float64_values_beyond_float32_are_named_as_too_large_not_as_infinite(mm_store, tmp_path, suffix):
    """1e300 in a float64 file became inf in the cast: a numpy warning, then "holds NaN or infinite values"."""
    import warnings

    import torch

    matrix = np.ones((mm_store.num_entities, 3)) * 1e300
    value = torch.from_numpy(matrix) if suffix == ".pt" else matrix
    source = _write_container(tmp_path / f"big{suffix}", value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "overflow encountered in cast" beside the error
        with pytest.raises(DataError, match=r"holds values as large as 1e\+300; features must stay within"):
            import_features(mm_store, "text", source)
    fine = _write_container(tmp_path / f"fine{suffix}", value / 1e300)
    assert import_features(mm_store, "text", fine).missing == 0


def test_a_sparse_pt_is_refused_in_one_line_without_torch_s_warning(mm_store, tmp_path):
    import warnings

    import torch

    source = _write_container(tmp_path / "s.pt", torch.ones(mm_store.num_entities, 3).to_sparse())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="sparse_coo tensor; save a dense one"):
            import_features(mm_store, "text", source)


def test_a_safetensors_file_of_one_entity_vector_is_a_mapping_as_in_a_pt(mm_store, tmp_path):
    """{key: vector} with one key was read as a 1-D matrix ("expected a 2-D array") from .safetensors."""
    key = mm_store.entity_keys[0]
    source = _write_container(tmp_path / "one.safetensors", {key: np.ones(3, dtype=np.float32)})
    report = import_features(mm_store, "image", source)
    assert report.rows - report.missing == 1 and report.dim == 3


@pytest.mark.parametrize(("modality", "importable"), [("structure", False), ("text", True), ("image", True)])
def test_features_of_an_unknown_encoder_advise_only_commands_imf_runs(mm_store, modality, importable):
    """`structure_init: nope` advised `imf encode … --modality structure --from-file FILE --encoder nope`,
    which imf refuses (--from-file takes text and image features only)."""
    with pytest.raises(ImfError, match=f"'nope' is no {modality} encoder imf has") as error:
        load_features(mm_store, modality, "nope")
    assert ("--from-file FILE --encoder nope" in str(error.value)) is importable


@pytest.mark.parametrize(
    ("array", "held"),
    [
        (lambda rows: np.array([["1.5", "2"]] * rows), "text"),
        (lambda rows: np.array([(1.0, 2.0)] * rows, dtype=[("a", "f4"), ("b", "f4")]), "records"),
    ],
)
def test_text_or_records_in_a_npy_are_not_read_as_numbers(mm_store, tmp_path, array, held):
    """An .npy of digit strings or of a structured dtype was imported as numbers without a word."""
    source = tmp_path / "f.npy"
    np.save(source, array(mm_store.num_entities))
    with pytest.raises(DataError, match=f"is not numeric \\(it holds {held}"):
        import_features(mm_store, "text", source)
