"""``encode_dataset``: one feature vector per entity and modality, from the store to a feature file.

Steps: gather the inputs from the store (texts, image paths, or the train triples, see
:mod:`kgdata.inputs`), hash them together with the encoder's id and options, stop if a file with that
hash exists (unless ``force``), then encode incrementally: rows of entities whose input digest
matches a row of the stored file (written with the same encoder options) are kept, and only new or
changed entities are encoded, in batches under ``torch.inference_mode`` (texts sorted by length). The
structure encoder trains on the graph entities only, and is retrained only when the train triples
changed. The file and its manifest row are written through :func:`kgdata.features.save_features`.
"""

from __future__ import annotations

import contextlib
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
from kgdata.features import FeatureReport, StoredRows, check_modality
from kgdata.inputs import COMPUTED_FROM, Inputs, entity_text, read_inputs
from kgdata.store import EntityStore

__all__ = ["encode_dataset", "encode_items", "entity_text", "progress_bar"]


# ------------------------------------------------------------------------------------ progress
@contextlib.contextmanager
def progress_bar(
    enabled: bool | Callable[[str], None], total: int, description: str, unit: str = "items"
) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr with throughput; yields ``advance(n, **fields)``.

    ``enabled`` may instead be a function: it then receives one line per call of ``advance``
    (``"<description>: 64/492 texts"``, with the ``note`` field if given), for logs without a terminal.
    A bar is drawn only on a terminal: in a log or a pipe it would only leave a stray blank line.
    """
    if callable(enabled):
        done = 0

        def advance_line(n: int = 1, **fields) -> None:
            nonlocal done
            done += n
            note = f"  {fields['note']}" if fields.get("note") else ""
            enabled(f"{description}: {done:,}/{total:,} {unit}{note}")

        yield advance_line
        return
    from rich.console import Console

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda n=1, **fields: None
        return
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
        TextColumn("{task.description}", markup=False, style="progress.description"),  # names, never markup
        BarColumn(),
        MofNCompleteColumn(),
        SpeedColumn(""),
        TextColumn("{task.fields[note]}", markup=False),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
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


def _refuse_vanished_images(
    store: EntityStore, inputs: Inputs, previous: StoredRows | None, reuse_rows: dict[int, int]
) -> None:
    """Refuse to re-encode when image files that have stored vectors can no longer be opened.

    Imported datasets store image paths into the user's own folder: an unmounted disk or a moved folder
    would otherwise turn every such entity's stored vector into "missing" for good. A file that is there
    but changed is an input change like any other, and is encoded (or recorded missing) as usual.
    """
    if previous is None:
        return
    vanished = []
    for entity, path in enumerate(inputs.values):
        if path is None or entity in reuse_rows or entity >= len(previous.mask) or not previous.mask[entity]:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            vanished.append((path, error.strerror or type(error).__name__))
    if vanished:
        path, reason = vanished[0]
        raise ImfError(
            f"{len(vanished)} image(s) of {store.name!r} with stored features cannot be opened now (first: "
            f"{path}: {reason}); nothing was written, and the stored features are kept. Restore the files, "
            "or pass --force to encode every image again and record those as missing"
        )


def _reusable(previous: StoredRows | None, inputs: Inputs) -> dict[int, int]:
    """Entity id → the row of ``previous`` computed from the same input (same digest), for every entity
    with an input that ``previous`` already holds."""
    if previous is None or previous.row_hashes is None or len(previous.row_hashes) != len(previous.matrix):
        return {}
    first_row: dict[bytes, int] = {}
    for row, digest in enumerate(previous.row_hashes):
        if digest.any():
            first_row.setdefault(digest.tobytes(), row)
    reuse = {}
    for entity, value in enumerate(inputs.values):
        if value is not None:
            row = first_row.get(inputs.row_hashes[entity].tobytes())
            if row is not None:
                reuse[entity] = row
    return reuse


def encode_dataset(
    store: EntityStore,
    modality: str,
    encoder: str | None = None,
    *,
    options: dict[str, Any] | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool | Callable[[str], None] = False,
    threads: int | None = None,
) -> FeatureReport:
    """Encode the entities of ``store`` for one modality and store the features.

    ``encoder`` is a registry name (default: the modality's offline default) and ``options`` its
    keyword options (an option it does not take is an error). Returns a report whose ``status`` is
    ``"unchanged"`` when a file built from the same inputs and encoder options already exists. Only
    entities that are new or whose input changed since the stored file are encoded (``encoded`` and
    ``reused`` in the report say how many); ``force`` recomputes every row. ``progress`` is True for a
    progress bar, or a function that receives one line of text per step (batch or epoch), for logs.
    ``threads`` sets torch's thread count (default: every CPU).
    """
    check_modality(modality)
    name = encoder or DEFAULT_ENCODERS[modality]
    options = dict(options or {})
    if batch_size is not None and batch_size < 1:
        raise ImfError("--batch-size must be at least 1")
    if modality == "structure" and batch_size is not None:
        options["batch_size"] = batch_size  # triples per step: it changes the result, so it is hashed
    instance = create_encoder(name, modality, **options)
    inputs = read_inputs(store, modality)
    input_hash = inputs.full_hash(instance.spec)

    if not force:
        unchanged = features.current_features(store, modality, instance.id, input_hash)
        if unchanged is not None:
            return unchanged
    previous = None if force else features.previous_rows(store, modality, instance.id, instance.spec)

    torch_device = resolve_device(device)
    configure_threads(threads)
    started = time.perf_counter()
    warnings: list[str] = []
    extra: dict[str, Any] = {"options": instance.spec, "device": str(torch_device)}
    relation_matrix = None
    n, g = store.num_entities, store.num_graph_entities
    load_seconds = 0.0

    if modality == "structure":
        reuse = previous is not None and previous.graph_input_hash == inputs.graph_hash
        reuse = reuse and previous.relation_matrix is not None and len(previous.matrix) >= g
        if reuse:  # the graph is unchanged: entities were only added, and they have no triples
            entity, mask, relation_matrix = previous.matrix[:g], previous.mask[:g], previous.relation_matrix
            extra.update({k: previous.extra[k] for k in ("seed", "batch_size", "losses") if k in previous.extra})
            encoded, reused, items, unit = 0, g, 0, "triples"
            encode_seconds = 0.0
        else:
            instance.load(torch_device)
            load_seconds = time.perf_counter() - started
            graph = StructureInput(torch.from_numpy(inputs.triples), g, store.num_relations)
            epochs = instance.options["epochs"]
            encode_started = time.perf_counter()
            with progress_bar(progress, epochs, f"{instance.id} {store.name}", unit="epochs") as advance:
                result = instance.encode(graph, on_epoch=lambda epoch, loss: advance(1, note=f"loss {loss:.4f}"))
            encode_seconds = time.perf_counter() - encode_started
            entity, mask = result.entity.numpy(), result.mask.numpy()
            relation_matrix = result.relation.numpy()
            extra.update(seed=result.seed, batch_size=result.batch_size, losses=[round(x, 6) for x in result.losses])
            encoded, reused = g, 0
            items, unit = len(graph.triples) * epochs, "triples"  # one train triple in one epoch
        matrix = np.zeros((n, entity.shape[1]), dtype=np.float32)  # added entities: no structure
        matrix[:g] = entity
        mask = np.concatenate([mask.astype(bool), np.zeros(n - g, dtype=bool)])
    else:
        reuse_rows = _reusable(previous, inputs)
        if modality == "image":
            _refuse_vanished_images(store, inputs, previous, reuse_rows)
        todo = [None if i in reuse_rows else value for i, value in enumerate(inputs.values)]
        count = sum(1 for x in todo if x is not None)
        size = batch_size or instance.batch_size_for(torch_device)
        extra["batch_size"] = size
        matrix, mask = None, np.zeros(n, dtype=bool)
        encode_seconds = 0.0
        if count or previous is None:
            instance.load(torch_device)
            load_seconds = time.perf_counter() - started
            run = _encode_texts if modality == "text" else _encode_images
            encode_started = time.perf_counter()
            unit_name = "texts" if modality == "text" else "images"
            with torch.inference_mode(), progress_bar(progress, count, f"{instance.id} {store.name}", unit_name) as advance:
                matrix, mask, warnings = run(instance, todo, size, advance)
            encode_seconds = time.perf_counter() - encode_started
        dim = matrix.shape[1] if matrix is not None else previous.matrix.shape[1] if previous is not None else instance.dim
        if matrix is None:  # nothing to encode: every entity is missing or kept
            matrix = np.zeros((n, dim), dtype=np.float32)
        if reuse_rows:
            entities, rows = (np.fromiter(side, dtype=np.int64) for side in zip(*reuse_rows.items()))
            matrix[entities] = previous.matrix[rows]
            mask[entities] = previous.mask[rows]
        encoded, reused = count, len(reuse_rows)
        items, unit = count, "texts" if modality == "text" else "images"

    if modality != "structure" and not mask.any():
        warnings.append(f"no entity of {store.name!r} has {'any text' if modality == 'text' else 'a readable image'}")
    items_per_second = items / encode_seconds if encode_seconds > 0 and items else None
    extra.update(
        load_seconds=round(load_seconds, 3), encode_seconds=round(encode_seconds, 3), throughput_unit=unit,
        encoded=encoded, reused=reused,
    )
    path = features.save_features(
        store, modality, instance.id, matrix, mask,
        relation_matrix=relation_matrix, input_hash=input_hash, extra=extra,
        computed_from=COMPUTED_FROM[modality], graph_input_hash=inputs.graph_hash, row_hashes=inputs.row_hashes,
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
        encoded=encoded,
        reused=reused,
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
