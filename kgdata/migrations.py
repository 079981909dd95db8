"""Numbered schema migrations of the entity store (sqlite-utils ``Migrations``).

Append new migrations at the end; never edit one that has shipped. ``apply(db)`` brings any store
up to the current schema and is idempotent.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("imf")

SPLITS = ("train", "valid", "test")


@migrations(name="m001_initial_schema")
def m001_initial_schema(db: Database) -> None:
    db["entities"].create(
        {"id": int, "key": str, "name": str, "description": str, "image": str},
        pk="id",
        not_null={"key", "name"},
    )
    db["entities"].create_index(["key"], unique=True)
    db["relations"].create({"id": int, "key": str, "name": str}, pk="id", not_null={"key", "name"})
    db["relations"].create_index(["key"], unique=True)
    db.execute(
        """
        CREATE TABLE triples (
            head INTEGER NOT NULL REFERENCES entities(id),
            relation INTEGER NOT NULL REFERENCES relations(id),
            tail INTEGER NOT NULL REFERENCES entities(id),
            split TEXT NOT NULL CHECK (split IN ('train', 'valid', 'test'))
        )
        """
    )
    db["metadata"].create({"key": str, "value": str}, pk="key")


@migrations(name="m002_lookup_indexes")
def m002_lookup_indexes(db: Database) -> None:
    db["triples"].create_index(["split"])
    db["triples"].create_index(["head", "relation"])
    db["triples"].create_index(["relation", "tail"])


@migrations(name="m003_entity_fts")
def m003_entity_fts(db: Database) -> None:
    # Triggers keep the index in step with later edits; a bulk import rebuilds it once instead.
    db["entities"].enable_fts(["name", "description"], fts_version="FTS5", create_triggers=True)


def apply(db: Database) -> None:
    """Apply every pending migration to ``db``."""
    migrations.apply(db)


@migrations(name="m004_feature_manifest")
def m004_feature_manifest(db: Database) -> None:
    # One row per feature file (kgdata.features): which encoder, its shape, coverage and input hash.
    db["features"].create(
        {
            "modality": str,
            "encoder": str,
            "dim": int,
            "rows": int,
            "missing": int,
            "input_hash": str,
            "path": str,
            "created_at": str,
            "extra": str,  # JSON: encoder options, seed, source file, ...
        },
        pk=("modality", "encoder"),
        not_null={"modality", "encoder", "dim", "rows", "missing", "input_hash", "path", "created_at"},
    )


@migrations(name="m005_added_entities")
def m005_added_entities(db: Database) -> None:
    # 1 marks an entity added after import (`imf entities add`): not in the training graph, no triples.
    # Graph entities keep ids 0..G-1; added ones are appended (G, G+1, ...).
    db["entities"].add_column("added", int, not_null_default=0)
