"""The ``ids`` layout of MyGO / MMRNS (e.g. MKG-W): integer triples plus ``entity2id.txt``.

Split files hold ``head_id<TAB>relation_id<TAB>tail_id``. ``entity2id.txt`` (``key id``) is required;
``relation2id.txt`` is optional, and without it relations are ``0..max`` as seen in the triples.
"""

from __future__ import annotations

from pathlib import Path

from kgdata.errors import DataError
from kgdata.importers.common import (
    Advance,
    ParsedDataset,
    dedupe,
    find_file,
    iter_lines,
    name_from_uri,
    read_key_id_map,
    split_files,
    SPLIT_STEMS,
)

FORMAT = "ids"


def detect(directory: Path) -> bool:
    train = find_file(directory, SPLIT_STEMS["train"])
    if train is None or not (directory / "entity2id.txt").is_file():
        return False
    for _, text in iter_lines(train):
        return all(field.lstrip("-").isdigit() for field in text.split())
    return False


def read(directory: Path, advance: Advance | None = None) -> ParsedDataset:
    files = split_files(directory)
    files["entity2id"] = directory / "entity2id.txt"
    if not files["entity2id"].is_file():
        raise DataError("missing entity2id.txt, required by the ids format", directory)
    entity_keys = read_key_id_map(files["entity2id"], "entity", advance)
    relation_keys: list[str] | None = None
    if (directory / "relation2id.txt").is_file():
        files["relation2id"] = directory / "relation2id.txt"
        relation_keys = read_key_id_map(files["relation2id"], "relation", advance)

    num_entities = len(entity_keys)
    max_relation = -1
    splits, duplicates = {}, {}
    for split in ("train", "valid", "test"):
        path = files[split]
        rows = []
        for number, text in iter_lines(path, advance):
            fields = text.split()
            if len(fields) != 3:
                raise DataError(f"expected 3 integer fields (head, relation, tail), got {len(fields)}", path, number)
            try:
                head, relation, tail = (int(f) for f in fields)
            except ValueError:
                raise DataError(f"expected integer ids, got {text[:80]!r}", path, number) from None
            for kind, value in (("head", head), ("tail", tail)):
                if not 0 <= value < num_entities:
                    raise DataError(
                        f"{kind} entity id {value} out of range 0..{num_entities - 1} "
                        f"({files['entity2id'].name} lists {num_entities} entities)",
                        path,
                        number,
                    )
            if relation < 0 or (relation_keys is not None and relation >= len(relation_keys)):
                top = f"0..{len(relation_keys) - 1}" if relation_keys is not None else "0.."
                raise DataError(f"relation id {relation} out of range {top}", path, number)
            max_relation = max(max_relation, relation)
            rows.append((head, relation, tail))
        splits[split], duplicates[split] = dedupe(rows)

    if relation_keys is None:
        relation_keys = [str(i) for i in range(max_relation + 1)]
        relation_names = [f"relation {i}" for i in range(max_relation + 1)]
    else:
        relation_names = [name_from_uri(key) for key in relation_keys]
    return ParsedDataset(
        format=FORMAT,
        source=directory,
        entity_keys=entity_keys,
        entity_names=[name_from_uri(key) for key in entity_keys],
        entity_descriptions=[None] * num_entities,
        entity_images=[None] * num_entities,
        relation_keys=relation_keys,
        relation_names=relation_names,
        splits=splits,
        duplicates=duplicates,
        files=files,
    )
