"""Text and image encoders: registry, batching, pooling, masks, hashing, offline failures, real defaults."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from kgdata.encoders import (
    DEFAULT_ENCODERS,
    REGISTRY,
    WeightsNotFoundError,
    available,
    create_encoder,
    encode_dataset,
    entity_text,
    read_image,
)
from kgdata.errors import ImfError
from kgdata.features import feature_path, list_features, load_features
from kgdata.store import Entity, EntityStore

TEXTS = ["the red flag of alpha", "a small island", "north sea country with a blue and green flag", "zeta"]


# ------------------------------------------------------------------------------------ registry
def test_registry_names_defaults_and_prefixes():
    assert {"minilm", "bert-base-uncased", "efficientnet-lite0", "vgg16", "resnet50", "gat"} <= set(REGISTRY)
    assert DEFAULT_ENCODERS == {"text": "minilm", "image": "efficientnet-lite0", "structure": "gat"}
    assert available("text") == ["minilm", "bert-base-uncased", "hf:"]
    # Encoders registered by other tests' session fixtures (tiny-cnn) are not the package's.
    shipped = {name for name in available("image") if REGISTRY[name].__module__.startswith("kgdata.")}
    assert shipped == {"efficientnet-lite0", "vgg16", "resnet50"}
    for name, cls in REGISTRY.items():
        assert cls.name == name and cls.modality in ("text", "image", "structure")


def test_create_encoder_checks_names_modalities_and_options():
    assert create_encoder("vgg16").spec == {"encoder": "vgg16", "weights": None}
    assert create_encoder("minilm").spec == {
        "encoder": "minilm", "max_length": 256, "normalize": True, "pooling": "mean"
    }
    with pytest.raises(ImfError, match=r"unknown encoder 'clip' for image; known: .*efficientnet-lite0"):
        create_encoder("clip", "image")
    with pytest.raises(ImfError, match="encodes text, not image; use --modality text"):
        create_encoder("minilm", "image")
    with pytest.raises(ImfError, match=r"option --pooling does not apply to encoder 'vgg16' \(its options: --download, --weights\)"):
        create_encoder("vgg16", "image", pooling="mean")
    # only options `imf encode` has flags for are offered (not --max-length or --normalize)
    with pytest.raises(ImfError, match=r"option --weights does not apply to encoder 'minilm' \(its options: --pooling\)"):
        create_encoder("minilm", "text", weights="w.pt")
    with pytest.raises(ImfError, match="needs a model after 'hf:'"):
        create_encoder("hf:", "text")
    with pytest.raises(ImfError, match="unknown pooling 'max'"):
        create_encoder("hf:x/y", "text", pooling="max")


def test_entity_text_prefers_description_then_a_real_name():
    assert entity_text(Entity(0, "k", "Name", "A description. ")) == "A description."
    assert entity_text(Entity(0, "k", "Name", None)) == "Name"
    assert entity_text(Entity(0, "k", "k", None)) is None  # the importer's placeholder name
    assert entity_text(Entity(0, "k", "  ", "")) is None


def test_read_image_composites_transparency_on_white(tmp_path):
    from PIL import Image

    path = tmp_path / "clear.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(path)
    image = read_image(path)
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(OSError):
        read_image(tmp_path / "bad.png")


# ------------------------------------------------------------------------------------ text (hf:)
def test_hf_text_encoder_pooling_modes_differ_and_have_the_model_dim(tiny_bert_dir):
    outputs = {}
    for pooling in ("cls", "mean", "pooler"):
        encoder = create_encoder(f"hf:{tiny_bert_dir}", "text", pooling=pooling)
        encoder.load(torch.device("cpu"))
        assert encoder.dim == 32
        with torch.inference_mode():
            outputs[pooling] = encoder.encode(TEXTS)
        assert outputs[pooling].shape == (len(TEXTS), 32) and outputs[pooling].dtype == torch.float32
    assert not torch.allclose(outputs["cls"], outputs["mean"])
    assert not torch.allclose(outputs["cls"], outputs["pooler"])
    assert not torch.allclose(outputs["mean"], outputs["pooler"])
    assert outputs["pooler"].abs().max() <= 1.0  # BERT's pooler ends in tanh


def test_pooler_pooling_is_refused_when_the_checkpoint_has_no_pooler_weights(tiny_bert_dir, tmp_path):
    """transformers fills missing pooler weights at random (its warning silenced): --pooling pooler
    stored random projections, different at each encode."""
    import shutil

    from safetensors.torch import load_file, save_file

    copy = tmp_path / "no-pooler"
    shutil.copytree(tiny_bert_dir, copy)
    weights = load_file(copy / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "pooler" not in k}, copy / "model.safetensors", metadata={"format": "pt"})
    create_encoder(f"hf:{copy}", "text", pooling="mean").load(torch.device("cpu"))  # the rest is whole
    with pytest.raises(ImfError, match="holds no pooler weights; use --pooling cls or mean"):
        create_encoder(f"hf:{copy}", "text", pooling="pooler").load(torch.device("cpu"))


def test_a_model_directory_without_config_json_is_named_as_such(tmp_path):
    """It failed in the tokenizer with transformers' words about a hub id."""
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ImfError, match=f"{tmp_path} holds no config.json"):
        create_encoder(f"hf:{tmp_path}", "text").load(torch.device("cpu"))


def test_hf_text_encoder_id_is_the_resolved_directory(tiny_bert_dir, monkeypatch):
    monkeypatch.chdir(tiny_bert_dir.parent)
    encoder = create_encoder(f"hf:{tiny_bert_dir.name}", "text")
    assert encoder.id == f"hf:{tiny_bert_dir}"
    assert repr(encoder).startswith(f"HFTextEncoder('hf:{tiny_bert_dir}'")


def test_text_batching_gives_the_same_features(mm_store, tiny_bert_dir):
    name = f"hf:{tiny_bert_dir}"
    one = encode_dataset(mm_store, "text", name, batch_size=1, force=True)
    single = load_features(mm_store, "text", one.encoder).matrix
    encode_dataset(mm_store, "text", name, batch_size=7, force=True)
    seven = load_features(mm_store, "text", one.encoder).matrix
    np.testing.assert_allclose(single, seven, atol=1e-5)


def test_text_mask_and_report(mm_store, tiny_bert_dir, mm_entities):
    report = encode_dataset(mm_store, "text", f"hf:{tiny_bert_dir}", options={"pooling": "cls"})
    assert (report.status, report.dim, report.rows, report.missing) == ("written", 32, 10, 1)
    assert report.extra["options"]["pooling"] == "cls" and report.items_per_second > 0
    loaded = load_features(mm_store, "text")
    without_text = [i for i, e in enumerate(mm_entities) if e[0] == e[1] and not e[2]]
    assert np.flatnonzero(~loaded.mask).tolist() == without_text
    assert not loaded.matrix[~loaded.mask].any()
    assert np.abs(loaded.matrix[loaded.mask]).sum(axis=1).min() > 0


def test_rerun_is_a_no_op_until_inputs_options_or_force_change(mm_store, mm_dataset_dir, tiny_bert_dir):
    from kgdata.importing import import_dataset

    name = f"hf:{tiny_bert_dir}"
    first = encode_dataset(mm_store, "text", name)
    path = Path(first.path)
    stamp = path.stat().st_mtime_ns
    again = encode_dataset(mm_store, "text", name)
    assert again.status == "unchanged" and again.input_hash == first.input_hash
    assert path.stat().st_mtime_ns == stamp
    assert encode_dataset(mm_store, "text", name, force=True).status == "written"
    other = encode_dataset(mm_store, "text", name, options={"pooling": "cls"})
    assert other.status == "written" and other.input_hash != first.input_hash
    assert encode_dataset(mm_store, "text", name, batch_size=3, options={"pooling": "cls"}).status == "unchanged"

    tsv = mm_dataset_dir / "entities.tsv"
    tsv.write_text(tsv.read_text().replace("with a red flag", "with a green flag"))
    import_dataset(mm_dataset_dir, name="tiny-mm", replace=True)
    with EntityStore.open("tiny-mm") as store:  # the replaced store.db is a new file
        (status,) = [e["status"] for e in list_features(store)]
        assert status.startswith("stale: computed from other texts") and "re-run imf encode tiny-mm" in status
        changed = encode_dataset(store, "text", name, options={"pooling": "cls"})
        assert changed.status == "written" and changed.input_hash != other.input_hash
        assert (changed.encoded, changed.reused) == (1, 8)  # only alpha's description changed
        (entry,) = list_features(store)  # one file per (modality, encoder)
        assert entry["status"] == "ok" and entry["input_hash"] == changed.input_hash


# ------------------------------------------------------------------------------------ images
def test_image_masks_corrupt_images_and_batching(mm_store, tiny_cnn, mm_entities):
    report = encode_dataset(mm_store, "image", "tiny-cnn", batch_size=1)
    assert (report.dim, report.rows) == (8, 10)
    with_image = [i for i, e in enumerate(mm_entities) if e[3] is not None and e[3] != "corrupt"]
    corrupt = [i for i, e in enumerate(mm_entities) if e[3] == "corrupt"]
    assert report.missing == 10 - len(with_image)
    (warning,) = report.warnings
    assert warning.startswith("1 image(s) could not be read and are recorded as missing (first: ")
    assert "country_gamma.png" in warning
    loaded = load_features(mm_store, "image", "tiny-cnn")
    assert np.flatnonzero(loaded.mask).tolist() == with_image
    assert not loaded.matrix[corrupt].any()
    encode_dataset(mm_store, "image", "tiny-cnn", batch_size=7, force=True)
    np.testing.assert_allclose(load_features(mm_store, "image", "tiny-cnn").matrix, loaded.matrix, atol=1e-5)


def test_an_image_gone_from_its_folder_does_not_erase_its_stored_vector(mm_store, mm_dataset_dir, tiny_cnn):
    first = encode_dataset(mm_store, "image", "tiny-cnn")
    path = feature_path(mm_store.dataset_dir, "image", "tiny-cnn")
    before = path.read_bytes()
    image = mm_dataset_dir / "images" / "country_delta.png"
    image.rename(image.with_suffix(".moved"))
    with pytest.raises(ImfError, match=r"1 image\(s\) of 'tiny-mm' with stored features cannot be opened now") as caught:
        encode_dataset(mm_store, "image", "tiny-cnn")
    assert "country_delta.png" in str(caught.value) and "--force" in str(caught.value)
    assert path.read_bytes() == before
    image.with_suffix(".moved").rename(image)  # back: nothing changed, nothing to do
    assert encode_dataset(mm_store, "image", "tiny-cnn").status == "unchanged"
    image.rename(image.with_suffix(".moved"))
    forced = encode_dataset(mm_store, "image", "tiny-cnn", force=True)  # asked for: recorded missing
    assert forced.missing == first.missing + 1


def test_image_hash_covers_image_bytes(mm_store, mm_dataset_dir, tiny_cnn):
    from PIL import Image

    first = encode_dataset(mm_store, "image", "tiny-cnn")
    assert encode_dataset(mm_store, "image", "tiny-cnn").status == "unchanged"
    Image.new("RGB", (40, 30), (1, 2, 3)).save(mm_dataset_dir / "images" / "country_delta.png")
    second = encode_dataset(mm_store, "image", "tiny-cnn")
    assert second.status == "written" and second.input_hash != first.input_hash
    other = encode_dataset(mm_store, "image", "tiny-cnn", options={"width": 6})
    assert other.status == "written" and other.input_hash != second.input_hash


def test_efficientnet_weights_option_must_exist(mm_store, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no weights file"):
        encode_dataset(mm_store, "image", "efficientnet-lite0", options={"weights": str(tmp_path / "none.pth")})


def test_cuda_device_without_a_gpu_is_a_clear_error(mm_store, tiny_cnn):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ImfError, match="no CUDA device"):
        encode_dataset(mm_store, "image", "tiny-cnn", device="cuda")


# ------------------------------------------------------------------------------------ offline
@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


@pytest.mark.parametrize(
    ("modality", "encoder", "expected"),
    [
        ("text", "bert-base-uncased", ["'bert-base-uncased'", "hub cache", "HF_HUB_OFFLINE", "--encoder hf:"]),
        ("image", "vgg16", ["vgg16-397923af.pth", "torch hub cache", "--weights PATH"]),
        ("image", "resnet50", ["resnet50-11ad3fa6.pth", "--weights PATH"]),
    ],
)
def test_paper_encoders_fail_fast_offline_with_a_clear_message(mm_store, empty_caches, modality, encoder, expected):
    started = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as error:
        encode_dataset(mm_store, modality, encoder, options={"download": True})
    assert time.perf_counter() - started < 5
    message = str(error.value)
    for part in expected:
        assert part in message
    assert list_features(mm_store) == []


def test_vgg16_loads_weights_from_the_hub_cache_without_network(mm_store, empty_caches, tmp_path, monkeypatch):
    # A small stand-in for the real checkpoint: the architecture check is what matters here.
    from torchvision.models import vgg16

    from kgdata.encoders.image import VGG16Encoder

    encoder = VGG16Encoder()
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "vgg16-397923af.pth").write_bytes(b"")
    assert encoder.state_dict_path() == checkpoints / "vgg16-397923af.pth"
    head = encoder.head(vgg16(weights=None))
    with torch.inference_mode():
        assert head(torch.zeros(1, 3, 224, 224)).shape == (1, 4096)


def test_local_hf_directory_missing_is_clear(mm_store, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no such model directory"):
        encode_dataset(mm_store, "text", f"hf:{tmp_path / 'nowhere'}")


# ------------------------------------------------------------------------------------ real models
@pytest.mark.slow
def test_real_offline_defaults_on_countries_mm(countries_store):
    store = countries_store
    n = store.num_entities
    text = encode_dataset(store, "text")
    image = encode_dataset(store, "image")
    assert (text.encoder, text.rows, text.dim) == ("minilm", n, 384)
    assert (image.encoder, image.rows, image.dim) == ("efficientnet-lite0", n, 1280)
    with_image = sum(1 for e in store.entities() if e.image)
    assert image.missing == n - with_image

    # Countries of one subregion are closer in text space than random pairs of countries.
    features = load_features(store, "text")
    vectors = features.matrix / np.linalg.norm(features.matrix, axis=1, keepdims=True)
    subregion = store.relation("located_in_subregion").id
    triples = np.concatenate([store.triples(s) for s in ("train", "valid", "test")])
    located = triples[triples[:, 1] == subregion]
    groups: dict[int, list[int]] = {}
    for head, _, tail in located:
        groups.setdefault(int(tail), []).append(int(head))
    same = [vectors[a] @ vectors[b] for members in groups.values() for i, a in enumerate(members) for b in members[i + 1 :]]
    rng = np.random.default_rng(0)
    pairs = rng.choice(located[:, 0], size=(2000, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    random_mean = float(np.mean([vectors[a] @ vectors[b] for a, b in pairs]))
    assert float(np.mean(same)) > random_mean + 0.05  # measured: 0.39 vs 0.21

    images = load_features(store, "image")
    assert np.isfinite(images.matrix).all() and images.matrix[images.mask].std() > 0


def test_weights_that_do_not_fit_say_which_keys(tmp_path):
    from torch import nn

    from kgdata.encoders.image import load_weights
    from kgdata.wording import gist

    path = tmp_path / "wrong.pth"
    torch.save({"a": torch.zeros(2)}, path)
    with pytest.raises(ImfError) as caught:
        load_weights(nn.Linear(2, 3), path, "tiny")
    message = str(caught.value)
    # torch's text starts with a heading ending in ":"; the keys come on the next lines.
    assert "\n" not in message and "Missing key(s)" in message and '"weight"' in message and '"a"' in message
    assert gist("Heading:\n\n  first detail\n  second\n") == "Heading: first detail second"
    assert gist("one line\nmore") == "one line" and gist("  \n") == ""
    assert len(gist("x:\n" + "y " * 500, 50)) == 50


def test_an_image_that_is_a_fifo_is_unreadable_not_waited_on(tmp_path):
    import os

    from kgdata.encoders import read_image

    fifo = tmp_path / "flag.png"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="is a FIFO"):
        read_image(fifo)


@pytest.mark.parametrize(
    ("count", "shown"),
    [(512, "512 B"), (22_000_000_000, "22.0 GB"), (16 * 10**15, "16.0 PB"), (10**18, "10^18 B"), (10**331, "10^331 B")],
)
def test_byte_counts_read_in_decimal_units_and_huge_ones_as_a_power_of_ten(count, shown):
    """A --dim of 300 digits overflowed the float division here: "unexpected OverflowError (a bug in imf)"."""
    from kgdata.encoders.base import format_bytes

    assert format_bytes(count) == shown
