"""What each modality's features are computed from, and three hashes of it.

- ``text``: each entity's description, else its name (:func:`entity_text`);
- ``image``: the bytes of each entity's image file;
- ``structure``: the train triples, over the graph entities and the relations.

The hashes:

``row_hashes``
    ``uint8 (N, 16)``, one per entity: a digest of its text or image bytes (all zeros: no input).
    Stored in each feature file; ``imf encode`` re-encodes only the rows whose hash no stored row
    has, so adding or editing a few entities encodes just those.
``graph_hash`` (:func:`graph_input_hash`)
    Exactly what training reads: the keys of the graph entities ``0 … G-1`` and their inputs (for
    structure, the train triples). Entities added with ``imf entities add`` do not change it, so
    they never make the features of a run stale; a changed description of a graph entity, a
    changed image or a re-split train set does. ``train`` and ``eval`` compare it with the hash a
    feature file (or a run) recorded.
``full_hash``
    The encoder's options, every entity key and every input: a re-run of ``imf encode`` with the same
    full hash does nothing.

This module imports neither torch nor transformers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from kgdata.store import Entity, EntityStore

#: Bytes per row hash (a truncated SHA-256).
ROW_HASH_BYTES = 16
#: What a feature file was computed from, per modality; ``entity-keys`` for features imported from a file,
#: whose source imf cannot see.
COMPUTED_FROM = {"text": "texts", "image": "images", "structure": "train-triples", "file": "entity-keys"}
_FULL_VERSION = b"imf-encode-v1\0"
_GRAPH_VERSION = b"imf-graph-inputs-v1\0"


def entity_text(entity: "Entity") -> str | None:
    """The text of an entity: its description, else its name; None when it has neither.

    A name equal to the entity's key is the importer's placeholder (no name was given), not text.
    """
    if entity.description and entity.description.strip():
        return entity.description.strip()
    if entity.name and entity.name.strip() and entity.name != entity.key:
        return entity.name.strip()
    return None


def keys_hash(keys: list[str]) -> str:
    """SHA-256 of entity keys in id order: ties a feature file to one row order."""
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def hash_file(path, digest: "hashlib._Hash") -> None:
    """Feed the bytes of ``path`` to ``digest``, 1 MiB at a time."""
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)


@dataclass(frozen=True)
class Inputs:
    """One modality's inputs for every entity of a store (see the module docstring).

    Attributes:
        modality: ``text``, ``image`` or ``structure``.
        keys: All ``N`` entity keys, in id order.
        num_graph_entities: ``G``; ids ``0 … G-1`` are the graph entities.
        num_relations: ``R``.
        values: Text or image path per entity (None: no input); None for structure.
        row_hashes: ``uint8 (N, 16)`` for text and image; None for structure.
        triples: The train triples ``(n, 3)`` int64 for structure; else None.
    """

    modality: str
    keys: list[str]
    num_graph_entities: int
    num_relations: int
    values: list[str | None] | None = None
    row_hashes: np.ndarray | None = None
    triples: np.ndarray | None = None
    _full_parts: tuple[bytes, ...] = ()

    @property
    def graph_hash(self) -> str:
        digest = hashlib.sha256(_GRAPH_VERSION + self.modality.encode() + b"\0")
        g = self.num_graph_entities
        digest.update(keys_hash(self.keys[:g]).encode() + b"\0")
        if self.triples is not None:
            digest.update(f"{g}\0{self.num_relations}\0".encode())
            digest.update(np.ascontiguousarray(self.triples, dtype="<i8").tobytes())
        else:
            digest.update(np.ascontiguousarray(self.row_hashes[:g]).tobytes())
        return digest.hexdigest()

    def full_hash(self, spec: dict) -> str:
        """The hash of ``spec`` (the encoder id and options), every key and every input."""
        digest = hashlib.sha256(_FULL_VERSION)
        digest.update(self.modality.encode() + b"\0")
        digest.update(json.dumps(spec, sort_keys=True, default=str).encode() + b"\0")
        digest.update(keys_hash(self.keys).encode() + b"\0")
        for part in self._full_parts:
            digest.update(part)
        return digest.hexdigest()


def _per_entity_inputs(store: "EntityStore", modality: str, values: list, digest_of) -> Inputs:
    """:class:`Inputs` of one value per entity; ``digest_of(value)`` gives ``(bytes for the full hash, digest)``."""
    hashes = np.zeros((len(values), ROW_HASH_BYTES), dtype=np.uint8)
    parts = []
    for row, value in enumerate(values):
        if value is None:
            parts.append(b"\1")
            continue
        part, digest = digest_of(value)
        parts.append(part)
        hashes[row] = np.frombuffer(digest[:ROW_HASH_BYTES], dtype=np.uint8)
    return Inputs(modality, store.entity_keys, store.num_graph_entities, store.num_relations, values, hashes, None, tuple(parts))


def _text_digest(text: str) -> tuple[bytes, bytes]:
    encoded = text.encode()
    return b"\2" + encoded + b"\0", hashlib.sha256(b"text\0" + encoded).digest()


def _image_digest(path: str) -> tuple[bytes, bytes]:
    """The bytes of the image; an unreadable file hashes as such (and so stays missing)."""
    try:
        content = hashlib.sha256()
        hash_file(path, content)
    except OSError:
        return b"\3", hashlib.sha256(b"unreadable\0" + path.encode()).digest()
    return b"\2" + content.digest(), content.digest()


def text_inputs(store: "EntityStore") -> Inputs:
    return _per_entity_inputs(store, "text", [entity_text(e) for e in store.entities()], _text_digest)


def image_inputs(store: "EntityStore") -> Inputs:
    return _per_entity_inputs(store, "image", [e.image for e in store.entities()], _image_digest)


def structure_inputs(store: "EntityStore") -> Inputs:
    triples = store.triples("train")
    sizes = f"{store.num_graph_entities}\0{store.num_relations}\0".encode()
    parts = (sizes, np.ascontiguousarray(triples, dtype="<i8").tobytes())
    return Inputs(
        "structure", store.entity_keys, store.num_graph_entities, store.num_relations, None, None, triples, parts
    )


def read_inputs(store: "EntityStore", modality: str) -> Inputs:
    """The inputs of ``modality`` (``text``, ``image`` or ``structure``) for every entity of ``store``."""
    readers = {"text": text_inputs, "image": image_inputs, "structure": structure_inputs}
    return readers[modality](store)


def keys_graph_hash(store: "EntityStore") -> str:
    """The graph hash of features imported from a file: only the graph entities' keys are known."""
    digest = hashlib.sha256(_GRAPH_VERSION + b"file\0")
    digest.update(keys_hash(store.entity_keys[: store.num_graph_entities]).encode())
    return digest.hexdigest()


def graph_input_hash(store: "EntityStore", computed_from: str) -> str:
    """The current graph hash of ``store`` for features computed from ``computed_from`` (a value of
    :data:`COMPUTED_FROM`, or a modality name)."""
    by_source = {value: key for key, value in COMPUTED_FROM.items()}
    modality = by_source.get(computed_from, computed_from)
    if modality == "file":
        return keys_graph_hash(store)
    return read_inputs(store, modality).graph_hash
