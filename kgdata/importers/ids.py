"""The ``ids`` layout of MyGO / MMRNS (e.g. MKG-W): integer triples plus ``entity2id.txt``.

Split files hold ``head_id<TAB>relation_id<TAB>tail_id``. ``entity2id.txt`` (``key id``) is required;
``relation2id.txt`` is optional, and without it relations are ``0..max`` as seen in the triples.
"""

from __future__ import annotations

from pathlib import Path

from kgdata.errors import DataError
from kgdata.files import optional_file
from kgdata.wording import count
from kgdata.importers.common import (
    Advance,
    ParsedDataset,
    dedupe,
    find_file,
    iter_lines,
    name_from_uri,
    parse_id,
    read_key_id_map,
    split_files,
    SPLIT_STEMS,
)

FORMAT = "ids"


def detect(directory: Path) -> bool:
    train = find_file(directory, SPLIT_STEMS["train"])
    if train is None or optional_file(directory / "entity2id.txt") is None:
        return False
    for _, text in iter_lines(train):
        return all(field.lstrip("-").isdigit() for field in text.split())
    return False


def read(directory: Path, advance: Advance | None = None) -> ParsedDataset:
    files = split_files(directory)
    entity_file = optional_file(directory / "entity2id.txt")
    if entity_file is None:
        raise DataError("missing entity2id.txt, required by the ids format", directory)
    files["entity2id"] = entity_file
    entity_keys = read_key_id_map(files["entity2id"], "entity", advance)
    relation_keys: list[str] | None = None
    relation_file = optional_file(directory / "relation2id.txt")
    if relation_file is not None:
        files["relation2id"] = relation_file
        relation_keys = read_key_id_map(files["relation2id"], "relation", advance)

    num_entities = len(entity_keys)
    max_relation, max_relation_at = -1, (files["train"], 0)
    used_relations: set[int] = set()
    total_rows = 0
    splits, duplicates = {}, {}
    for split in ("train", "valid", "test"):
        path = files[split]
        rows = []
        for number, text in iter_lines(path, advance):
            fields = text.split()
            if len(fields) != 3:
                raise DataError(f"expected 3 integer fields (head, relation, tail), got {len(fields)}", path, number)
            try:
                head, relation, tail = (parse_id(f) for f in fields)
            except ValueError:
                raise DataError(f"expected integer ids, got {text[:80]!r}", path, number) from None
            for kind, value in (("head", head), ("tail", tail)):
                if not 0 <= value < num_entities:
                    raise DataError(
                        f"{kind} entity id {value} out of range 0..{num_entities - 1} "
                        f"({files['entity2id'].name} lists {count(num_entities, 'entity', 'entities')})",
                        path,
                        number,
                    )
            if relation < 0 or (relation_keys is not None and relation >= len(relation_keys)):
                n = None if relation_keys is None else len(relation_keys)
                allowed = (
                    "ids count from 0"
                    if n is None
                    else f"{files['relation2id'].name} lists {count(n, 'relation')}, ids 0..{n - 1}"
                )
                raise DataError(f"relation id {relation} is out of range ({allowed})", path, number)
            if relation > max_relation:
                max_relation, max_relation_at = relation, (path, number)
            used_relations.add(relation)
            rows.append((head, relation, tail))
        total_rows += len(rows)
        splits[split] = rows

    if relation_keys is None:  # before anything sizes arrays by the largest id
        _check_dense_relations(max_relation, max_relation_at, len(used_relations), total_rows)
    for split, rows in splits.items():
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


def _check_dense_relations(max_relation: int, at: tuple[Path, int], used: int, rows: int) -> None:
    """Without ``relation2id.txt`` the ids ``0..max`` become relations: refuse ids that leave most unused.

    Ids must be dense or declared. ``max + 1 - used`` ids would be relations without a triple; more
    such gaps than there are triples means a typo (one extra digit makes millions of empty relations).
    """
    unused = max_relation + 1 - used
    if unused > rows:
        path, line = at
        raise DataError(
            f"relation id {max_relation} would leave {unused:,} of the ids 0..{max_relation} without a triple "
            f"({rows:,} triples use {used:,} relations); relation ids must be dense, or declared in "
            f"relation2id.txt",
            path,
            line,
        )
