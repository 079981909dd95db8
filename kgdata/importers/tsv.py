"""The ``tsv`` layout: ``train``/``valid``/``test`` files of ``head<TAB>relation<TAB>tail``.

Optional beside them:

- ``entities.tsv``: a header line naming the columns ``id`` (required), ``name``, ``description`` and
  ``image`` (a path relative to the dataset directory). When present it is the entity id map: ids
  follow its row order and every entity in a triple must be listed.
- ``relations.tsv``: a header line with ``id`` and ``name``.

Without ``entities.tsv``, ids are given in order of first appearance (train, valid, then test).
"""

from __future__ import annotations

from pathlib import Path

from kgdata.errors import DataError
from kgdata.files import optional_file
from kgdata.importers.common import (
    SPLIT_STEMS,
    Advance,
    IdMap,
    ParsedDataset,
    dataset_image,
    dedupe,
    find_file,
    iter_lines,
    split_files,
)

FORMAT = "tsv"


def detect(directory: Path) -> bool:
    return find_file(directory, SPLIT_STEMS["train"]) is not None


def read_table(path: Path, required: tuple[str, ...], known: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Read a headed TSV file into ``(line_number, {column: value})`` rows."""
    lines = iter_lines(path)
    first = next(lines, None)
    if first is None:
        raise DataError("empty file; expected a header line", path, 1)
    header = [column.strip().lower() for column in first[1].split("\t")]
    if not set(header) & set(known):  # data where the header should be: say what the first line must be
        raise DataError(
            f"the first line must be a header naming the columns ({', '.join(known)}), not data: "
            f"{first[1][:80]!r}",
            path,
            first[0],
        )
    for column in required:
        if column not in header:
            raise DataError(f"header has no {column!r} column (found: {', '.join(header)})", path, first[0])
    unknown = [c for c in header if c not in known]
    if unknown:
        raise DataError(f"unknown column(s) {', '.join(unknown)}; expected {', '.join(known)}", path, first[0])
    repeated = next((c for i, c in enumerate(header) if c in header[:i]), None)
    if repeated is not None:  # read into a dict, the last one won: every name was an empty column's
        raise DataError(f"the header names the column {repeated!r} twice", path, first[0])
    rows = []
    for number, text in lines:
        fields = text.split("\t")
        if len(fields) != len(header):
            raise DataError(f"expected {len(header)} tab-separated fields, got {len(fields)}", path, number)
        rows.append((number, {c: f.strip() for c, f in zip(header, fields)}))
    return rows


def read(directory: Path, advance: Advance | None = None) -> ParsedDataset:
    files = split_files(directory)
    entities = IdMap("entity", source="entities.tsv")
    names: dict[int, str] = {}
    descriptions: dict[int, str] = {}
    images: dict[int, str] = {}

    entity_file = optional_file(directory / "entities.tsv")
    if entity_file is not None:
        files["entities"] = entity_file
        for number, row in read_table(entity_file, ("id",), ("id", "name", "description", "image")):
            key = row["id"]
            if not key:
                raise DataError("empty entity id", entity_file, number)
            if key in entities.ids:
                raise DataError(f"entity {key!r} is listed twice", entity_file, number)
            index = entities.add(key)
            if row.get("name"):
                names[index] = row["name"]
            if row.get("description"):
                descriptions[index] = row["description"]
            if row.get("image"):
                images[index] = dataset_image(directory, row["image"], entity_file, number)
        entities.frozen = True

    relations = IdMap("relation", source="relations.tsv")
    relation_names: dict[int, str] = {}
    relation_file = optional_file(directory / "relations.tsv")
    if relation_file is not None:
        files["relations"] = relation_file
        for number, row in read_table(relation_file, ("id",), ("id", "name")):
            if not row["id"]:
                raise DataError("empty relation id", relation_file, number)
            if row["id"] in relations.ids:
                raise DataError(f"relation {row['id']!r} is listed twice", relation_file, number)
            index = relations.add(row["id"])
            if row.get("name"):
                relation_names[index] = row["name"]
        relations.frozen = True

    splits, duplicates = {}, {}
    for split, path in files.items():
        if split not in ("train", "valid", "test"):
            continue
        rows = []
        for number, text in iter_lines(path, advance):
            fields = text.split("\t")
            if len(fields) != 3:
                raise DataError(
                    f"expected 3 tab-separated fields (head, relation, tail), got {len(fields)}: {text[:80]!r}",
                    path,
                    number,
                )
            empty = [name for name, field in zip(("head", "relation", "tail"), fields) if not field.strip()]
            if empty:
                fields_are = "field is" if len(empty) == 1 else "fields are"
                raise DataError(f"the {' and '.join(empty)} {fields_are} empty: {text[:80]!r}", path, number)
            head, relation, tail = (f.strip() for f in fields)
            rows.append(
                (entities.get(head, path, number), relations.get(relation, path, number), entities.get(tail, path, number))
            )
        splits[split], duplicates[split] = dedupe(rows)

    return ParsedDataset(
        format=FORMAT,
        source=directory,
        entity_keys=entities.keys,
        entity_names=[names.get(i, key) for i, key in enumerate(entities.keys)],
        entity_descriptions=[descriptions.get(i) for i in range(len(entities))],
        entity_images=[images.get(i) for i in range(len(entities))],
        relation_keys=relations.keys,
        relation_names=[relation_names.get(i, key) for i, key in enumerate(relations.keys)],
        splits=splits,
        duplicates=duplicates,
        files=files,
    )
