"""Entities added to a dataset after import (``imf entities add``): "cold-start" entities.

An added entity has a key, a name, and optionally a description and an image, but no triples. The
store keeps it apart from the training graph: its row has ``added = 1`` (migration ``m005``) and its
id follows the graph's, so the graph entities keep ids ``0 … G-1`` and added ones get ``G, G+1, …``.
Training and evaluation use the graph only, and the store's content hash (which runs record) does not
change, so every existing run keeps loading.

Entities are added in one transaction, under the dataset's write lock (:mod:`kgdata.locking`), with
the checks an import makes: keys unique and non-empty, no control characters, UTF-8 input files
(named with file:line). An image is checked to be a regular, decodable image file and is copied into
``<dataset>/images/added/`` under a name derived from its content, so the store never points at a file
outside its dataset directory; in an entities file, image paths are relative to that file's directory
and may not lead out of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from kgdata import locking, migrations, paths
from kgdata.errors import DataError, EnvironmentFault, ImfError
from kgdata.files import check_regular_file, check_text
from models.atomic import never_short, write_atomically

#: Where copies of added entities' images go, inside the dataset directory.
IMAGES_DIR = Path("images") / "added"
#: The columns of an entities file (the layout of an imported ``entities.tsv``).
COLUMNS = ("id", "name", "description", "image")


@dataclass(frozen=True)
class NewEntity:
    """One entity to add. ``image`` is a file to copy into the dataset; ``source`` says where the entity
    was given (``(file, line)``), for messages."""

    key: str
    name: str | None = None
    description: str | None = None
    image: Path | None = None
    source: tuple[Path, int] | None = None


@dataclass
class AddReport:
    """What :func:`add_entities` did: the new rows, and the store's counts after it."""

    dataset: str
    added: list[dict] = field(default_factory=list)  # id, key, name, description, image
    graph_entities: int = 0
    entities: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _stored_name(entity: NewEntity) -> str:
    """The name an entity is stored under: its name, or its key when the name is blank."""
    return entity.name if entity.name and entity.name.strip() else entity.key


def _refuse_names_in_use(conn, entities: list, dataset: str) -> None:
    """Refuse a new entity whose name (case-insensitively) another entity already has, in the dataset or
    in this batch: looking either up by name would then be ambiguous, and commands and examples that
    name the old one would stop working. One read of the stored names, folded in Python (SQLite's NOCASE
    folds ASCII letters only)."""
    taken: dict[str, str] = {}
    keys = {entity.key for entity in entities}
    for key, name in conn.execute("SELECT key, name FROM entities ORDER BY id"):
        taken.setdefault(name.casefold(), key)
        keys.add(key)
    seen: dict[str, str] = {}
    for entity in entities:
        name = _stored_name(entity)
        folded = name.casefold()
        path, line = _where(entity)
        if folded in seen:
            raise DataError(
                f"the name {name!r} is given twice (also to {seen[folded]!r}); names must differ", path, line
            )
        seen[folded] = entity.key
        if folded in taken:
            raise DataError(
                f"the name {name!r} is already the name of entity {taken[folded]!r} in dataset {dataset!r}: "
                "looking either up by name would be ambiguous; choose another name",
                path,
                line,
            )
        if name != entity.key and name in keys:  # keys are looked up first: the name would never reach it
            raise DataError(
                f"the name {name!r} is the key of another entity: keys are looked up before names, so the name "
                "would never name this one; choose another name",
                path,
                line,
            )


def _where(entity: NewEntity) -> tuple[Path | None, int | None]:
    return entity.source if entity.source is not None else (None, None)


def read_entities_file(path: str | Path) -> list[NewEntity]:
    """The entities of a file in the ``entities.tsv`` layout: a header naming ``id`` (required),
    ``name``, ``description`` and ``image`` (relative to the file's directory), one entity per line."""
    from kgdata.importers.common import dataset_image
    from kgdata.importers.tsv import read_table

    path = check_regular_file(Path(path).expanduser(), "entities file")
    entities = []
    for number, row in read_table(path, ("id",), COLUMNS):
        image = dataset_image(path.parent, row["image"], path, number) if row.get("image") else None
        entities.append(
            NewEntity(
                key=row["id"],
                name=row.get("name") or None,
                description=row.get("description") or None,
                image=Path(image) if image else None,
                source=(path, number),
            )
        )
    if not entities:
        raise DataError("lists no entities (only a header)", path)
    return entities


def _check(entity: NewEntity, seen: dict[str, NewEntity]) -> None:
    path, line = _where(entity)
    if not entity.key or not entity.key.strip():
        raise DataError("empty entity key", path, line)
    if entity.key != entity.key.strip():
        raise DataError(f"entity key {entity.key!r} has leading or trailing spaces", path, line)
    for what, value in (("the key", entity.key), ("the name", entity.name), ("the description", entity.description)):
        if value is not None:
            check_text(value, path, line, what)
    if "\t" in entity.key or (entity.name and "\t" in entity.name):
        raise DataError("a key or name may not hold a tab (it separates fields)", path, line)
    if entity.key in seen:
        first = _where(seen[entity.key])[1]
        raise DataError(
            f"entity {entity.key!r} is listed twice" + (f" (first on line {first})" if first else ""), path, line
        )
    seen[entity.key] = entity


def _check_image(image: Path, entity: NewEntity) -> None:
    """A regular file that PIL can decode; a :class:`DataError` (at the entity's file:line) otherwise."""
    path, line = _where(entity)
    problem_at = path if path is not None else image
    try:
        check_regular_file(image, "image file")
    except DataError as error:
        raise DataError(error.reason, problem_at, line) from None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image) as opened:
            opened.verify()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # A decompression bomb (more pixels than PIL's limit) is refused like any other unreadable image.
        raise DataError(f"image {image} is not a readable image ({error})", problem_at, line) from None


def _copy_image(image: Path, dataset_dir: Path) -> tuple[Path, bool]:
    """Copy ``image`` into ``dataset_dir/images/added/<sha256>.<suffix>``; return (copy, whether it is new)."""
    digest = hashlib.sha256(image.read_bytes()).hexdigest()[:32]
    suffix = image.suffix.lower() if image.suffix.lower().lstrip(".").isalnum() else ""
    target = dataset_dir / IMAGES_DIR / f"{digest}{suffix}"
    if target.is_file():
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    write_atomically(target, temporary, lambda to: shutil.copyfile(image, to), what="the image copy", short_write=never_short)
    return target, True


def _lookalikes_of(stored: list[str], new: list[str]) -> list[str]:
    """A warning for each new key that prints as a stored one or another new one (Unicode normalisation,
    invisible characters), as ``imf import`` warns: they stay separate entities that look alike."""
    from kgdata.importing import _lookalike_keys

    added = set(new)
    return [
        f"key {ascii(b)} differs from {ascii(a)} only in Unicode normalisation or invisible characters, "
        f"and stays a separate entity"
        for a, b in _lookalike_keys([*stored, *new]) if b in added
    ]


def add_entities(
    dataset: str,
    entities: list[NewEntity],
    *,
    home: str | Path | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> AddReport:
    """Append ``entities`` to ``dataset`` as added entities, in one transaction; return what was added.

    Raises :class:`DataError` (naming file and line for entities read from a file) for an empty,
    duplicate or already stored key, a control character, or an image that is missing, not a regular
    file, or not an image; nothing is added then.
    """
    if not entities:
        raise ImfError("no entities to add")
    seen: dict[str, NewEntity] = {}
    for entity in entities:
        _check(entity, seen)
        if entity.image is not None:
            _check_image(Path(entity.image).expanduser(), entity)

    store_file = paths.store_path(dataset, home)
    with locking.dataset_lock(dataset, "write", home, on_wait=on_wait):
        from kgdata.store import EntityStore

        # Read-only first: the usual "no dataset named ..." or "not a readable imf entity store" error,
        # before a write would add imf's tables to a damaged or foreign store.db (and then fail on it).
        with EntityStore.open(dataset, home) as store:
            lookalikes = _lookalikes_of(list(store.entity_keys), [e.key for e in entities])
        copied: list[Path] = []
        try:
            images = {}
            for entity in entities:
                if entity.image is not None:
                    target, new = _copy_image(Path(entity.image).expanduser(), store_file.parent)
                    images[entity.key] = str(target)
                    if new:
                        copied.append(target)
            report = _insert(store_file, dataset, entities, images)
            report.warnings += lookalikes
        except BaseException as error:
            for path in copied:  # the transaction did not happen: drop the copies it would have used
                path.unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise locking.workspace_fault(error, home) from None
            if isinstance(error, sqlite3.DatabaseError):  # as the readers say it, naming the store
                text = str(error)
                if "readonly" in text or "read-only" in text or ("disk" in text and "full" in text):
                    raise EnvironmentFault(f"{store_file}: cannot write the entity store ({text})") from None
                raise ImfError(f"{store_file}: not a readable imf entity store ({text})") from None
            raise
    return report


def _insert(store_file: Path, dataset: str, entities: list[NewEntity], images: dict[str, str]) -> AddReport:
    from sqlite_utils import Database

    conn = sqlite3.connect(store_file, timeout=30)
    try:
        db = Database(conn)
        migrations.apply(db)
        with conn:  # one transaction: every entity or none
            counts = json.loads(conn.execute("SELECT value FROM metadata WHERE key = 'counts'").fetchone()[0])
            total = conn.execute("SELECT count(*) FROM entities").fetchone()[0]
            if total != counts["entities"]:
                raise ImfError(f"{store_file}: holds {total} entities but its metadata counts {counts['entities']}")
            keys = [e.key for e in entities]
            for start in range(0, len(keys), 900):
                chunk = keys[start : start + 900]
                marks = ",".join("?" * len(chunk))
                clash = conn.execute(f"SELECT key FROM entities WHERE key IN ({marks}) LIMIT 1", chunk).fetchone()
                if clash is not None:
                    entity = entities[keys.index(clash[0])]
                    path, line = _where(entity)
                    raise DataError(f"entity {clash[0]!r} is already in dataset {dataset!r}", path, line)
                named = conn.execute(
                    f"SELECT key, name FROM entities WHERE name COLLATE NOCASE IN ({marks}) LIMIT 1", chunk
                ).fetchone()
                if named is not None:
                    entity = next(e for e in entities if e.key.casefold() == named[1].casefold())
                    path, line = _where(entity)
                    raise DataError(
                        f"key {entity.key!r} is the name of entity {named[0]!r}: keys are looked up before names, so "
                        f"{entity.key!r} would stop naming it; choose another key",
                        path,
                        line,
                    )
            _refuse_names_in_use(conn, entities, dataset)
            added = []
            for offset, entity in enumerate(entities):
                row = {
                    "id": total + offset,
                    "key": entity.key,
                    "name": _stored_name(entity),
                    "description": entity.description or None,
                    "image": images.get(entity.key),
                }
                conn.execute(
                    "INSERT INTO entities (id, key, name, description, image, added) VALUES (?, ?, ?, ?, ?, 1)",
                    [row["id"], row["key"], row["name"], row["description"], row["image"]],
                )
                added.append(row)
            counts["entities"] = total + len(entities)
            counts["added_entities"] = int(counts.get("added_entities", 0)) + len(entities)
            conn.execute("UPDATE metadata SET value = ? WHERE key = 'counts'", [json.dumps(counts)])
    finally:
        conn.close()
    return AddReport(
        dataset=dataset,
        added=added,
        graph_entities=counts["entities"] - counts["added_entities"],
        entities=counts["entities"],
    )
