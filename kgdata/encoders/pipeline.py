"""``encode_dataset``: one feature vector per entity and modality, from the store to a feature file.

Steps: gather the inputs from the store (texts, image paths, or the train triples), hash them together
with the encoder's id and options, stop if a file with that hash exists (unless ``force``), load the
encoder, encode in batches under ``torch.inference_mode`` (texts sorted by length), then write the
file and its manifest row through :func:`kgdata.features.save_features`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from kgdata import features
from kgdata.encoders.base import DEFAULT_ENCODERS, Encoder, configure_threads, create_encoder, resolve_device
from kgdata.encoders.image import read_image
from kgdata.encoders.structure import StructureInput
from kgdata.errors import DataError, ImfError
from kgdata.features import FeatureReport, check_modality
from kgdata.store import Entity, EntityStore

HASH_VERSION = b"imf-encode-v1\0"


def entity_text(entity: Entity) -> str | None:
    """The text of an entity: its description, else its name; None when it has neither.

    A name equal to the entity's key is the importer's placeholder (no name was given), not text.
    """
    if entity.description and entity.description.strip():
        return entity.description.strip()
    if entity.name and entity.name.strip() and entity.name != entity.key:
        return entity.name.strip()
    return None


# ------------------------------------------------------------------------------------- hashing
def _digest(modality: str, spec: dict, keys: list[str]) -> "hashlib._Hash":
    digest = hashlib.sha256(HASH_VERSION)
    digest.update(modality.encode() + b"\0")
    digest.update(json.dumps(spec, sort_keys=True, default=str).encode() + b"\0")
    digest.update(features.keys_hash(keys).encode() + b"\0")
    return digest


def text_inputs_hash(spec: dict, keys: list[str], texts: list[str | None]) -> str:
    digest = _digest("text", spec, keys)
    for text in texts:
        digest.update(b"\1" if text is None else b"\2" + text.encode() + b"\0")
    return digest.hexdigest()


def image_inputs_hash(spec: dict, keys: list[str], images: list[str | None]) -> str:
    """Hashes the bytes of every image (an unreadable file hashes as such, and so stays missing)."""
    digest = _digest("image", spec, keys)
    for path in images:
        if path is None:
            digest.update(b"\1")
            continue
        try:
            content = hashlib.sha256()
            features.hash_file(path, content)
            digest.update(b"\2" + content.digest())
        except OSError:
            digest.update(b"\3")
    return digest.hexdigest()


def structure_inputs_hash(spec: dict, keys: list[str], graph: StructureInput) -> str:
    digest = _digest("structure", spec, keys)
    digest.update(f"{graph.num_entities}\0{graph.num_relations}\0".encode())
    digest.update(np.ascontiguousarray(graph.triples.numpy(), dtype="<i8").tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------ progress
@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, description: str, unit: str = "items") -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr with throughput; yields ``advance(n, **fields)``."""
    if not enabled:
        yield lambda n=1, **fields: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class SpeedColumn(TextColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{speed:,.1f} {unit}/s", style="progress.data.speed")

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        SpeedColumn(""),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total, note="")
        yield lambda n=1, **fields: progress.update(task, advance=n, **fields)


# ------------------------------------------------------------------------------------- encoding
def _batches(order: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), size):
        yield order[start : start + size]


def _encode_texts(
    encoder: Encoder, texts: list[str | None], batch_size: int, advance: Callable[..., None]
) -> tuple[np.ndarray | None, np.ndarray, list[str]]:
    present = [i for i, text in enumerate(texts) if text is not None]
    present.sort(key=lambda i: len(texts[i]), reverse=True)  # similar lengths share a batch: less padding
    matrix = None
    for batch in _batches(present, batch_size):
        vectors = encoder.encode([texts[i] for i in batch]).numpy()
        if matrix is None:
            matrix = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        matrix[batch] = vectors
        advance(len(batch))
    mask = np.zeros(len(texts), dtype=bool)
    mask[present] = True
    return matrix, mask, []


def _encode_images(
    encoder: Encoder, images: list[str | None], batch_size: int, advance: Callable[..., None]
) -> tuple[np.ndarray | None, np.ndarray, list[str]]:
    mask = np.zeros(len(images), dtype=bool)
    present = [i for i, path in enumerate(images) if path is not None]
    failures: list[tuple[str, str]] = []
    matrix = None
    for batch in _batches(present, batch_size):
        pixels, ids = [], []
        for i in batch:
            try:
                pixels.append(encoder.preprocess(read_image(images[i])))
                ids.append(i)
            except Exception as exc:  # PIL raises OSError subclasses, DecompressionBombError, ...
                failures.append((images[i], str(exc) or type(exc).__name__))
        if ids:
            vectors = encoder.encode(pixels).numpy()
            if matrix is None:
                matrix = np.zeros((len(images), vectors.shape[1]), dtype=np.float32)
            matrix[ids] = vectors
            mask[ids] = True
        advance(len(batch))
    warnings = []
    if failures:
        path, reason = failures[0]
        warnings.append(
            f"{len(failures)} image(s) could not be read and are recorded as missing "
            f"(first: {path}: {reason})"
        )
    return matrix, mask, warnings


def encode_dataset(
    store: EntityStore,
    modality: str,
    encoder: str | None = None,
    *,
    options: dict[str, Any] | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool = False,
) -> FeatureReport:
    """Encode every entity of ``store`` for one modality and store the features.

    ``encoder`` is a registry name (default: the modality's offline default) and ``options`` its
    keyword options (an option it does not take is an error). Returns a report whose ``status`` is
    ``"unchanged"`` when a file built from the same inputs and encoder options already exists.
    """
    check_modality(modality)
    name = encoder or DEFAULT_ENCODERS[modality]
    options = dict(options or {})
    if batch_size is not None and batch_size < 1:
        raise ImfError("--batch-size must be at least 1")
    if modality == "structure" and batch_size is not None:
        options["batch_size"] = batch_size  # triples per step: it changes the result, so it is hashed
    instance = create_encoder(name, modality, **options)
    keys = store.entity_keys
    entities = store.entities() if modality != "structure" else []

    if modality == "text":
        inputs: Any = [entity_text(e) for e in entities]
        input_hash = text_inputs_hash(instance.spec, keys, inputs)
    elif modality == "image":
        inputs = [e.image for e in entities]
        input_hash = image_inputs_hash(instance.spec, keys, inputs)
    else:
        inputs = StructureInput(store.triples_tensor("train"), store.num_entities, store.num_relations)
        input_hash = structure_inputs_hash(instance.spec, keys, inputs)

    if not force:
        unchanged = features.current_features(store, modality, instance.id, input_hash)
        if unchanged is not None:
            return unchanged

    torch_device = resolve_device(device)
    configure_threads()
    started = time.perf_counter()
    instance.load(torch_device)
    load_seconds = time.perf_counter() - started
    warnings: list[str] = []
    extra: dict[str, Any] = {"options": instance.spec, "device": str(torch_device)}
    relation_matrix = None
    encode_started = time.perf_counter()

    if modality == "structure":
        epochs = instance.options["epochs"]
        with progress_bar(progress, epochs, f"{instance.id} {store.name}", unit="epochs") as advance:
            result = instance.encode(inputs, on_epoch=lambda epoch, loss: advance(1, note=f"loss {loss:.4f}"))
        matrix, mask = result.entity.numpy(), result.mask.numpy()
        relation_matrix = result.relation.numpy()
        extra.update(seed=result.seed, batch_size=result.batch_size, losses=[round(x, 6) for x in result.losses])
        items, unit = len(inputs.triples) * epochs, "triples"  # one train triple in one epoch
    else:
        size = batch_size or instance.batch_size_for(torch_device)
        extra["batch_size"] = size
        count = sum(1 for x in inputs if x is not None)
        run = _encode_texts if modality == "text" else _encode_images
        items, unit = count, "texts" if modality == "text" else "images"
        with torch.inference_mode(), progress_bar(progress, count, f"{instance.id} {store.name}", unit) as advance:
            matrix, mask, warnings = run(instance, inputs, size, advance)
        if matrix is None:  # nothing to encode: every entity is missing
            matrix = np.zeros((len(inputs), instance.dim), dtype=np.float32)

    encode_seconds = time.perf_counter() - encode_started
    if modality != "structure" and not mask.any():
        warnings.append(f"no entity of {store.name!r} has {'any text' if modality == 'text' else 'a readable image'}")
    items_per_second = items / encode_seconds if encode_seconds > 0 and items else None
    extra.update(
        load_seconds=round(load_seconds, 3), encode_seconds=round(encode_seconds, 3), throughput_unit=unit
    )
    path = features.save_features(
        store, modality, instance.id, matrix, mask,
        relation_matrix=relation_matrix, input_hash=input_hash, extra=extra,
    )
    return FeatureReport(
        dataset=store.name,
        modality=modality,
        encoder=instance.id,
        path=str(Path(path)),
        dim=int(matrix.shape[1]),
        rows=int(matrix.shape[0]),
        missing=int((~mask).sum()),
        input_hash=input_hash,
        status="written",
        seconds=round(time.perf_counter() - started, 3),
        items_per_second=None if items_per_second is None else round(items_per_second, 2),
        warnings=warnings,
        extra=extra,
    )


def encode_items(
    modality: str, spec: dict, items: list[str | Path], *, device: str = "cpu"
) -> np.ndarray:
    """Encode a few texts or image files with the encoder that ``spec`` records; ``(len(items), dim)`` float32.

    ``spec`` is what a feature file records as ``extra["options"]``: the encoder id and every option
    that changes its output (see :attr:`Encoder.spec`), so a new item is encoded exactly as the
    dataset's entities were. Used for entities given inline (``imf predict --new-text``).

    Raises:
        ImfError: For an encoder imf cannot rebuild (features imported from a file), a text that is
            empty, or an image file that cannot be read (naming it).
    """
    check_modality(modality)
    if modality == "structure":
        raise ImfError("structure features come from the training graph; a new entity has none")
    spec = dict(spec or {})
    name = spec.pop("encoder", None)
    if not name:
        raise ImfError(f"the {modality} features record no encoder, so new {modality} cannot be encoded the same way")
    instance = create_encoder(name, modality, **spec)
    if modality == "text":
        batch: list[Any] = []
        for text in items:
            if not str(text).strip():
                raise ImfError("the text of a new entity is empty")
            batch.append(str(text).strip())
    else:
        batch = []
        for path in items:
            try:
                batch.append(read_image(path))
            except Exception as exc:  # PIL raises OSError subclasses, DecompressionBombError, ...
                raise DataError(f"not a readable image ({exc or type(exc).__name__})", path) from None
    instance.load(resolve_device(device))
    with torch.inference_mode():
        if modality == "image":
            batch = [instance.preprocess(image) for image in batch]
        return instance.encode(batch).numpy().astype(np.float32)
