"""A small trained run whose store also holds entities outside the training graph, for the new-entity tests.

The dataset ``places`` has text (a tiny random BERT) and images (a tiny random CNN) for most entities.
After training, two entities are added with ``imf entities add``'s library call and encoded: ``lyon``
(text and image) and ``blank`` (neither). They have no triples and ids after the graph's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import TINY_TEST, TINY_TRAIN, TINY_VALID, make_tiny_bert, tiny_cnn_class, write_tsv_dataset

DATASET = "places"
TRAIN = TINY_TRAIN + [("lisbon", "capital_of", "portugal"), ("portugal", "borders", "spain"),
                      ("spain", "borders", "portugal"), ("portugal", "in", "europe")]
#: key → (name, description, image colour or None)
ENTITIES = {
    "paris": ("Paris", "capital city of france", (200, 40, 40)),
    "berlin": ("Berlin", "capital city of germany", (40, 40, 200)),
    "madrid": ("Madrid", "capital city of spain", (200, 200, 40)),
    "lisbon": ("Lisbon", "capital city of portugal", (40, 200, 40)),
    "france": ("France", "republic in western europe", (220, 60, 60)),
    "germany": ("Germany", "republic in central europe", (60, 60, 220)),
    "spain": ("Spain", "kingdom in southern europe", (220, 220, 60)),
    "portugal": ("Portugal", "republic in southern europe", (60, 220, 60)),
    "europe": ("Europe", "", None),
    "lyon": ("Lyon", "city in france", (210, 50, 50)),  # added: no triples
    "blank": ("blank", "", None),  # added: no text (a name equal to the key is no text), no image
}
ADDED = ("lyon", "blank")
FLAGS = {"model.dim": 8, "train.epochs": 3, "train.batch_size": 4, "train.eval_every": 1, "train.seed": 3,
         "train.device": "cpu"}


def write_image(path: Path, colour: tuple[int, int, int]) -> Path:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (24, 24), colour)
    ImageDraw.Draw(image).rectangle([6, 6, 17, 17], fill=tuple(255 - c for c in colour))
    image.save(path)
    return path


def write_dataset(root: Path) -> Path:
    """The graph entities of ``places`` (not the :data:`ADDED` ones), with their images."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    entities = []
    for key, (name, description, colour) in ENTITIES.items():
        image = None
        if colour is not None:
            write_image(root / "images" / f"{key}.png", colour)
            image = f"images/{key}.png"
        if key not in ADDED:
            entities.append({"id": key, "name": name, "description": description, "image": image})
    return write_tsv_dataset(root, train=TRAIN, valid=TINY_VALID, test=TINY_TEST, entities=entities)


def build_run(home: Path, data: Path, patch: pytest.MonkeyPatch, *, feature_mode: str = "finetune") -> Path:
    """Import ``places``, encode, train a 4-branch run, then add and encode the :data:`ADDED` entities."""
    from imf_cli.pipeline import train_model
    from kgdata.encoders import REGISTRY, encode_dataset
    from kgdata.entities import NewEntity, add_entities
    from kgdata.importing import import_dataset
    from kgdata.store import EntityStore

    bert = make_tiny_bert(data / "bert")
    encoder = tiny_cnn_class()
    patch.setitem(REGISTRY, encoder.name, encoder)
    source = write_dataset(data / "places")
    import_dataset(source)

    def encode() -> None:
        with EntityStore.open(DATASET) as store:
            encode_dataset(store, "text", f"hf:{bert}", device="cpu")
            encode_dataset(store, "image", "tiny-cnn", device="cpu")

    encode()
    flags = {**FLAGS, "model.feature_mode": feature_mode}
    run_dir = home / "runs" / f"places-{feature_mode}"
    train_model(DATASET, flags=flags, modalities=("structure", "visual", "text"), run_dir=run_dir, progress=False)
    added = []
    for key in ADDED:
        name, description, colour = ENTITIES[key]
        image = source / "images" / f"{key}.png" if colour is not None else None
        added.append(NewEntity(key, name if name != key else None, description or None, image))
    add_entities(DATASET, added)
    encode()  # the added entities' rows
    return run_dir
