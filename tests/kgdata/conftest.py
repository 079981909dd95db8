"""Fixtures for the feature and encoder tests: a tiny multimodal KG, a tiny BERT and a tiny CNN.

Everything is generated in the test's temporary directories; nothing is downloaded. The workspace
(IMF_HOME) and HF_HUB_OFFLINE come from the autouse ``imf_home`` fixture of ``tests/conftest.py``;
``mm_env`` repeats them so these fixtures stand on their own.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from helpers import REPO, make_tiny_bert, tiny_cnn_class, write_tsv_dataset

COUNTRIES_MM = REPO / "kgdata" / "datasets" / "countries_mm"

#: Entities of the tiny KG: key, name, description, image (a generated PNG, "corrupt", or None).
MM_ENTITIES = [
    ("country:alpha", "Alpha", "Alpha is an island country in the north sea with a red flag", "stripes"),
    ("country:beta", "Beta", "Beta is a country in the south with a blue and green flag", "rgba"),
    ("country:gamma", "Gamma", "Gamma is a small country of the north", "corrupt"),
    ("country:delta", "Delta", "", "stripes"),
    ("country:eps", "Epsilon", "Epsilon is a sea country in the south", "palette"),
    ("region:north", "North", "", None),
    ("region:south", "South", "the south region", None),
    ("lang:x", "lang:x", "", None),  # no name and no description: no text
    ("org:un", "United Nations", "an organisation of countries", None),
    ("country:zeta", "Zeta", "Zeta is a country only seen in the test split", "stripes"),
]
MM_TRAIN = [
    ("country:alpha", "in", "region:north"),
    ("country:gamma", "in", "region:north"),
    ("country:beta", "in", "region:south"),
    ("country:delta", "in", "region:south"),
    ("country:eps", "in", "region:south"),
    ("country:alpha", "borders", "country:gamma"),
    ("country:gamma", "borders", "country:alpha"),
    ("country:beta", "borders", "country:delta"),
    ("country:delta", "borders", "country:eps"),
    ("country:alpha", "speaks", "lang:x"),
    ("country:gamma", "speaks", "lang:x"),
    ("country:alpha", "member_of", "org:un"),
    ("country:beta", "member_of", "org:un"),
    ("country:delta", "member_of", "org:un"),
    ("country:eps", "member_of", "org:un"),
]
MM_VALID = [("country:eps", "borders", "country:beta")]
MM_TEST = [("country:zeta", "in", "region:north")]  # zeta never occurs in train

def _write_image(path: Path, kind: str, rng: random.Random) -> None:
    from PIL import Image, ImageDraw

    if kind == "corrupt":
        path.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
        return
    width, height = 40, 30
    mode = "RGBA" if kind == "rgba" else "RGB"
    image = Image.new(mode, (width, height), (255, 255, 255, 0) if mode == "RGBA" else (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for stripe in range(3):
        colour = tuple(rng.randrange(256) for _ in range(3)) + ((255,) if mode == "RGBA" else ())
        draw.rectangle([0, stripe * 10, width, stripe * 10 + 9], fill=colour)
    if kind == "palette":
        image = image.convert("P")
    image.save(path)


def write_mm_dataset(root: Path, *, seed: int = 0) -> Path:
    """Write the tiny multimodal KG (tsv layout with entities.tsv and images) under ``root``."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    entities = []
    for key, name, description, image in MM_ENTITIES:
        row = {"id": key, "name": name, "description": description}
        if image is not None:
            relative = f"images/{key.replace(':', '_')}.png"
            _write_image(root / relative, image, rng)
            row["image"] = relative
        entities.append(row)
    return write_tsv_dataset(root, train=MM_TRAIN, valid=MM_VALID, test=MM_TEST, entities=entities)


@pytest.fixture
def mm_env(imf_home, monkeypatch) -> Path:
    """A temporary IMF_HOME with the hubs offline (as the autouse fixture, explicitly)."""
    monkeypatch.setenv("IMF_HOME", str(imf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return imf_home


@pytest.fixture
def mm_dataset_dir(tmp_path) -> Path:
    return write_mm_dataset(tmp_path / "tiny-mm")


@pytest.fixture
def mm_store(mm_dataset_dir, mm_env):
    """The tiny multimodal KG imported as dataset ``tiny-mm`` into the temporary IMF_HOME."""
    from kgdata.importing import import_dataset
    from kgdata.store import EntityStore

    import_dataset(mm_dataset_dir, name="tiny-mm", home=mm_env)
    store = EntityStore.open("tiny-mm", mm_env)
    yield store
    store.close()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT (hidden size 32) with a word-piece tokenizer, saved to disk."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def tiny_cnn(monkeypatch):
    """Register ``tiny-cnn``: a small randomly initialised CNN image encoder (8-d, 16×16 inputs)."""
    from kgdata.encoders import REGISTRY

    encoder = tiny_cnn_class()
    monkeypatch.setitem(REGISTRY, encoder.name, encoder)
    return encoder


@pytest.fixture
def mm_entities() -> list[tuple]:
    """The rows of the tiny KG's entities: (key, name, description, image kind), in id order."""
    return list(MM_ENTITIES)


@pytest.fixture
def countries_store(mm_env):
    """Countries-MM imported into the temporary IMF_HOME; skips when the bundled data is not built."""
    if not (COUNTRIES_MM / "entities.tsv").is_file():
        pytest.skip(f"Countries-MM is not built ({COUNTRIES_MM / 'entities.tsv'} is absent)")
    from kgdata.importing import import_dataset
    from kgdata.store import EntityStore

    import_dataset("countries-mm", home=mm_env)
    store = EntityStore.open("countries-mm", mm_env)
    yield store
    store.close()
