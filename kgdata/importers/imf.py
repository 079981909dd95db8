"""The ``imf`` layout of the IMF reference code and MMKB (e.g. DB15K).

``train.txt``, ``val.txt`` (or ``valid.txt``) and ``test.txt`` hold N-Triples-style lines
``<head-uri> <relation-uri> <tail-uri> .``; ``entity2id.txt`` and ``relation2id.txt`` map URIs to dense
ids (``uri id``). An optional ``entity_description.tsv`` holds ``uri<TAB>text``. Names are derived
from the URIs.
"""

from __future__ import annotations

from pathlib import Path

from kgdata.errors import DataError
from kgdata.files import optional_file
from kgdata.importers.common import (
    Advance,
    IdMap,
    ParsedDataset,
    dedupe,
    iter_lines,
    name_from_uri,
    read_key_id_map,
    split_files,
)

FORMAT = "imf"
_SUFFIXES = (".txt", ".txt.gz")


def _first_line(path: Path) -> str:
    for _, text in iter_lines(path):
        return text
    return ""


def detect(directory: Path) -> bool:
    if optional_file(directory / "entity2id.txt") is None or optional_file(directory / "train.txt") is None:
        return False
    return _first_line(directory / "train.txt").lstrip().startswith("<")


def read(directory: Path, advance: Advance | None = None) -> ParsedDataset:
    files = split_files(directory, _SUFFIXES)
    for kind in ("entity", "relation"):
        path = optional_file(directory / f"{kind}2id.txt")
        if path is None:
            raise DataError(f"missing {kind}2id.txt, required by the imf format", directory)
        files[f"{kind}2id"] = path
    entities = IdMap("entity", read_key_id_map(files["entity2id"], "entity", advance), frozen=True, source="entity2id.txt")
    relations = IdMap("relation", read_key_id_map(files["relation2id"], "relation", advance), frozen=True, source="relation2id.txt")

    descriptions: list[str | None] = [None] * len(entities)
    description_file = optional_file(directory / "entity_description.tsv")
    if description_file is not None:
        files["descriptions"] = description_file
        described: dict[int, int] = {}  # entity id → the line that described it
        for number, text in iter_lines(description_file, advance):
            key, sep, description = text.partition("\t")
            if not sep:
                raise DataError("expected '<uri><TAB><description>'", description_file, number)
            entity = entities.get(key.strip(), description_file, number)
            if entity in described:
                raise DataError(
                    f"entity {key.strip()!r} is described twice (first on line {described[entity]})", description_file, number
                )
            described[entity] = number
            descriptions[entity] = description.strip() or None

    splits, duplicates = {}, {}
    for split in ("train", "valid", "test"):
        path = files[split]
        rows = []
        for number, text in iter_lines(path, advance):
            fields = text.split()
            if len(fields) == 4 and fields[3] == ".":
                fields = fields[:3]
            if len(fields) != 3:
                raise DataError(f"expected '<head> <relation> <tail> .', got {text[:80]!r}", path, number)
            head, relation, tail = fields
            rows.append(
                (entities.get(head, path, number), relations.get(relation, path, number), entities.get(tail, path, number))
            )
        splits[split], duplicates[split] = dedupe(rows)

    return ParsedDataset(
        format=FORMAT,
        source=directory,
        entity_keys=entities.keys,
        entity_names=[name_from_uri(key) for key in entities.keys],
        entity_descriptions=descriptions,
        entity_images=[None] * len(entities),
        relation_keys=relations.keys,
        relation_names=[name_from_uri(key) for key in relations.keys],
        splits=splits,
        duplicates=duplicates,
        files=files,
    )
