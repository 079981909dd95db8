"""The entity store: one SQLite file per dataset, read through a small library API.

The schema (see :mod:`kgdata.migrations`) holds entities with dense ids ``0..N-1``, relations with
dense ids ``0..R-1``, triples tagged with their split, a key/value metadata table and an FTS5 index
over entity names and descriptions. Writing happens only in :mod:`kgdata.importing`; this module reads.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import sqlite3
import unicodedata
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
from sqlite_utils import Database

from kgdata import paths
from kgdata.errors import DatasetNotFoundError, ImfError, UnknownEntityError
from kgdata.migrations import SPLITS

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Entity:
    id: int
    key: str
    name: str
    description: str | None = None
    image: str | None = None  # absolute path of the entity's image file, if any
    added: bool = False  # added after import with `imf entities add`: not in the training graph

    def __post_init__(self) -> None:
        object.__setattr__(self, "added", bool(self.added))  # SQLite gives 0/1

    @property
    def text(self) -> str:
        """The text that represents the entity: its description, else its name."""
        return self.description if self.description else self.name

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Relation:
    id: int
    key: str
    name: str


class KnownTriples:
    """Every known ``(h, r, t)`` of some splits, indexed for filtered ranking.

    Two CSR indexes are built once with numpy: tails by ``(h, r)`` and heads by ``(r, t)``.
    Lookups are ``O(log n)``.

    Args:
        triples: int64 array of shape ``(n, 3)``.
        num_entities: ``N``.
        num_relations: ``R``.
    """

    def __init__(self, triples: np.ndarray, num_entities: int, num_relations: int):
        self.triples = np.ascontiguousarray(triples, dtype=np.int64).reshape(-1, 3)
        self.num_entities = num_entities
        self.num_relations = num_relations
        h, r, t = self.triples.T
        self._hr_keys, self._hr_order = self._index(h * num_relations + r)
        self._rt_keys, self._rt_order = self._index(r * num_entities + t)

    @staticmethod
    def _index(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(keys, kind="stable")
        return keys[order], order

    def tails(self, head: int, relation: int) -> np.ndarray:
        """Known tails of ``(head, relation, ?)``, sorted and unique, shape ``(k,)``."""
        key = head * self.num_relations + relation
        lo, hi = np.searchsorted(self._hr_keys, [key, key + 1])
        return np.unique(self.triples[self._hr_order[lo:hi], 2])

    def heads(self, relation: int, tail: int) -> np.ndarray:
        """Known heads of ``(?, relation, tail)``, sorted and unique, shape ``(k,)``."""
        key = relation * self.num_entities + tail
        lo, hi = np.searchsorted(self._rt_keys, [key, key + 1])
        return np.unique(self.triples[self._rt_order[lo:hi], 0])

    def __contains__(self, triple: tuple[int, int, int]) -> bool:
        h, r, t = triple
        return bool(np.isin(t, self.tails(h, r)).item())

    def __len__(self) -> int:
        return len(self.triples)


#: bm25 weight of a name match relative to a description match.
NAME_WEIGHT = 10.0
_WORD_RE = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str) -> str | None:
    """Turn free text into a safe FTS5 query: every word must match, the last one as a prefix."""
    words = _WORD_RE.findall(text)
    if not words:
        return None
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " ".join(quoted)


def fold(text: str) -> str:
    """``text`` without case or diacritics ("São Tomé" → "sao tome"), as the full-text index's
    ``unicode61`` tokenizer compares words: what a user typing without accents means."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def named_by(entity: Entity, text: str, *, whole_words: bool = False) -> bool:
    """Whether every word of ``text`` begins (with ``whole_words``: is) a word of ``entity``'s name or key,
    ignoring case and diacritics (:func:`fold`): a :meth:`EntityStore.search` hit matched by its name,
    not only by its description."""
    words = set(_WORD_RE.findall(fold(f"{entity.name or ''} {entity.key}")))
    if whole_words:
        return set(_WORD_RE.findall(fold(text))) <= words
    return all(any(word.startswith(part) for word in words) for part in _WORD_RE.findall(fold(text)))


#: Query text longer than this is checked against the longest stored name or key before a ``LIKE``.
LONG_QUERY = 1000


def like_prefix(text: str) -> str:
    """``text%`` for SQL ``LIKE … ESCAPE '\\'``, with ``%``, ``_`` and ``\\`` in ``text`` taken literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


#: The largest value SQLite's ``LIMIT`` takes (a signed 64-bit integer).
_SQL_MAX = 2**63 - 1


def _sql_limit(limit: int | None) -> int:
    """``limit`` for SQL ``LIMIT ?``: None (no limit) becomes SQLite's -1; a huge limit is clamped."""
    if limit is None:
        return -1
    limit = int(limit)
    if limit < 0:
        raise ImfError(f"a limit must be zero or more, not {limit}")
    return min(limit, _SQL_MAX)


class EntityStore:
    """Read access to one dataset's ``store.db``.

    Open by path, or by dataset name with :meth:`open`. Use as a context manager or call
    :meth:`close`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetNotFoundError(f"no entity store at {self.path}")
        try:
            self._connect()
        except sqlite3.OperationalError as exc:  # raised only with a journal beside the store
            if not _roll_back_hot_journal(self.path):
                raise ImfError(f"{self.path}: not a readable imf entity store ({exc})") from None
            try:
                self._connect()  # the journal of a killed writer is rolled back: the store is as before it
            except sqlite3.OperationalError as again:
                raise ImfError(f"{self.path}: not a readable imf entity store ({again})") from None
        counts = self._meta.get("counts")
        usable = isinstance(counts, dict) and all(
            isinstance(counts.get(key), int) and counts[key] >= 0 for key in ("entities", "relations")
        )
        if not usable or not isinstance(self._meta.get("content_hash"), str):
            self.db.conn.close()
            raise ImfError(
                f"{self.path}: not a readable imf entity store (its metadata lacks the counts or the content hash); "
                f"re-import the dataset"
            )

    def _connect(self) -> None:
        """Open read-only and read the metadata; a failure closes the connection again."""
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        try:
            self.db = Database(conn)
            self._meta, self._manifest = self._read_meta(), self._read_manifest()
        except (sqlite3.DatabaseError, json.JSONDecodeError) as exc:
            conn.close()
            if isinstance(exc, sqlite3.OperationalError) and _journal(self.path).exists():
                raise
            raise ImfError(f"{self.path}: not a readable imf entity store ({exc})") from exc

    def _read_meta(self) -> dict:
        # data_version changes when another connection commits (imf entities add while a TUI is open)
        self._data_version = self.db.execute("PRAGMA data_version").fetchone()[0]
        return {row["key"]: json.loads(row["value"]) for row in self.db["metadata"].rows}

    def _read_manifest(self) -> tuple:
        """The feature manifest's rows (one per feature file ``imf encode`` wrote), to tell a new encode."""
        if "features" not in self.db.table_names():
            return ()
        return tuple(map(tuple, self.db.execute("SELECT * FROM features ORDER BY modality, encoder").fetchall()))

    def refresh(self) -> bool:
        """Read the metadata and the feature manifest again if another process has written to the store
        since they were read (``imf entities add`` or ``imf encode`` while this store is open); returns
        whether either changed.

        Raises:
            ImfError: If the store can no longer be read.
        """
        try:
            if self.db.execute("PRAGMA data_version").fetchone()[0] == self._data_version:
                return False
            meta, manifest = self._read_meta(), self._read_manifest()
        except (sqlite3.DatabaseError, json.JSONDecodeError) as exc:
            raise ImfError(f"{self.path}: not a readable imf entity store ({exc})") from None
        if (meta, manifest) == (self._meta, self._manifest):
            return False
        self._meta, self._manifest = meta, manifest
        self.__dict__.pop("entity_keys", None)  # the cached key list ends before the added entities
        return True

    @classmethod
    def open(cls, name: str, home: str | Path | None = None) -> "EntityStore":
        path = paths.store_path(name, home)
        if os.path.lexists(path) and not path.is_file():
            raise ImfError(
                f"{path} is not a file (a directory, or a broken link): dataset {name!r} is damaged; remove it, "
                f"then re-import with imf import SOURCE --name {name}"
            )
        if not path.is_file():
            known = ", ".join(list_datasets(home)) or "none"
            raise DatasetNotFoundError(
                f"no dataset named {name!r} in {paths.datasets_dir(home)} (imported: {known}); "
                f"run `imf import` first"
            )
        return cls(path)

    def __enter__(self) -> "EntityStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.conn.close()

    def __repr__(self) -> str:
        return (
            f"EntityStore(name={self.name!r}, entities={self.num_entities}, "
            f"relations={self.num_relations}, triples={self.counts['triples']})"
        )

    # ----------------------------------------------------------------- metadata
    @property
    def dataset_dir(self) -> Path:
        return self.path.parent

    @property
    def name(self) -> str:
        return self._meta.get("name", self.dataset_dir.name)

    @property
    def metadata(self) -> dict:
        """Source path, format, import time, counts, duplicates dropped, content hash, ..."""
        return dict(self._meta)

    @property
    def counts(self) -> dict:
        return self._meta["counts"]

    @property
    def num_entities(self) -> int:
        return int(self.counts["entities"])

    @property
    def num_graph_entities(self) -> int:
        """``G``: the entities of the training graph, ids ``0 … G-1``; added entities follow them."""
        return self.num_entities - self.num_added_entities

    @property
    def num_added_entities(self) -> int:
        """Entities added after import with ``imf entities add`` (ids ``G … N-1``)."""
        return int(self.counts.get("added_entities", 0))

    def is_added(self, entity_id: int) -> bool:
        """True for an entity added after import (not in the training graph, no triples)."""
        entity_id = int(entity_id)
        if not 0 <= entity_id < self.num_entities:
            raise UnknownEntityError(f"unknown entity id {entity_id} in dataset {self.name!r}")
        return entity_id >= self.num_graph_entities

    def added_entity_ids(self) -> list[int]:
        """The ids of the added entities, ascending: ``G … N-1``."""
        return list(range(self.num_graph_entities, self.num_entities))

    @property
    def num_relations(self) -> int:
        return int(self.counts["relations"])

    @property
    def content_hash(self) -> str:
        """A hash of the graph (entity keys, relation keys and split triples), fixed at import.

        Entities added later do not change it, so runs trained before keep loading.
        """
        return self._meta["content_hash"]

    # ------------------------------------------------------------------ lookups
    def entity(self, ref: int | str) -> Entity:
        """An entity by dense id (int) or by key (str)."""
        return Entity(**self._row("entities", ref, "entity"))

    def relation(self, ref: int | str) -> Relation:
        """A relation by dense id (int) or by key (str)."""
        return Relation(**self._row("relations", ref, "relation"))

    def _row(self, table: str, ref: int | str, kind: str) -> dict:
        by_id = isinstance(ref, (int, np.integer))
        column, value = ("id", int(ref)) if by_id else ("key", ref)
        for row in self.db[table].rows_where(f"{column} = ?", [value], limit=1):
            return row
        raise UnknownEntityError(f"unknown {kind} {ref!r} in dataset {self.name!r}")

    def entities(self, ids: Iterable[int] | None = None) -> list[Entity]:
        """All entities in id order, or those of ``ids`` in the order given."""
        if ids is None:
            return [Entity(**row) for row in self.db["entities"].rows_where(order_by="id")]
        ids = [int(i) for i in ids]
        by_id = {}
        for start in range(0, len(ids), 900):  # SQLite's bound-parameter limit
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for row in self.db["entities"].rows_where(f"id in ({marks})", chunk):
                by_id[row["id"]] = Entity(**row)
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise UnknownEntityError(f"unknown entity id {missing[0]} in dataset {self.name!r}")
        return [by_id[i] for i in ids]

    def relations(self) -> list[Relation]:
        return [Relation(**row) for row in self.db["relations"].rows_where(order_by="id")]

    @cached_property
    def entity_keys(self) -> list[str]:
        """Entity keys in id order (``entity_keys[i]`` is the key of id ``i``)."""
        return [row[0] for row in self.db.execute("SELECT key FROM entities ORDER BY id")]

    @cached_property
    def relation_keys(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT key FROM relations ORDER BY id")]

    def search(self, query: str, limit: int = 10) -> list[Entity]:
        """Entities whose key, name or description match ``query``, best first.

        An exact key or name match comes first; then FTS5 matches ranked by bm25 with name matches
        weighted above description matches. Every word must occur, and the last word may be a
        prefix, so a half-typed name finds its entity.
        """
        limit = min(_sql_limit(limit), max(self.num_entities, 1))
        found: dict[int, Entity] = {}
        for row in self.db.execute(
            "SELECT * FROM entities WHERE key = ? OR name = ? COLLATE NOCASE ORDER BY id LIMIT ?",
            [query, query, limit],
        ):
            entity = Entity(*row)
            found[entity.id] = entity
        match = fts_query(query)
        if match is not None and len(found) < limit:
            try:
                rows = self.db.execute(
                    "SELECT entities.* FROM entities JOIN entities_fts ON entities.rowid = entities_fts.rowid "
                    "WHERE entities_fts MATCH ? ORDER BY bm25(entities_fts, ?, 1.0), entities.id LIMIT ?",
                    [match, NAME_WEIGHT, limit + len(found)],
                ).fetchall()
            except sqlite3.DatabaseError as error:
                raise ImfError(
                    f"{self.path}: the full-text index (entities_fts) is missing or damaged ({error}); "
                    f"re-import the dataset with imf import SOURCE --name {self.name} --replace"
                ) from None
            for row in rows:
                found.setdefault(row[0], Entity(*row))
        return list(found.values())[:limit]

    def entities_named(self, name: str, limit: int | None = None) -> list[Entity]:
        """Entities whose name is exactly ``name``, ignoring case, in id order; at most ``limit`` (None: all).

        Names need not be unique, so several entities may come back. Case is ignored as SQLite's
        ``NOCASE`` does, for ASCII letters only.
        """
        rows = self.db.execute(
            "SELECT * FROM entities WHERE name = ? COLLATE NOCASE ORDER BY id LIMIT ?", [name, _sql_limit(limit)]
        )
        return [Entity(*row) for row in rows]

    def entities_with_prefix(self, prefix: str, limit: int | None = None) -> list[Entity]:
        """Entities whose name or key starts with ``prefix``, shortest name first, then by id; at most ``limit``.

        Case is ignored as SQL ``LIKE`` does, for ASCII letters only. ``%``, ``_`` and ``\\`` in
        ``prefix`` are taken literally. An empty prefix matches every entity.
        """
        if len(prefix) > LONG_QUERY and len(prefix) > self._longest_label():
            return []  # no name or key is that long; and SQLite refuses LIKE patterns over 50,000 bytes
        pattern = like_prefix(prefix)
        rows = self.db.execute(
            "SELECT * FROM entities WHERE name LIKE ? ESCAPE '\\' OR key LIKE ? ESCAPE '\\' "
            "ORDER BY length(name), id LIMIT ?",
            [pattern, pattern, _sql_limit(limit)],
        )
        return [Entity(*row) for row in rows]

    def _longest_label(self) -> int:
        """The length of the longest entity name or key, in characters (read each time: entities may be added)."""
        row = self.db.execute(
            "SELECT max(coalesce(max(length(name)), 0), coalesce(max(length(key)), 0)) FROM entities"
        ).fetchone()
        return int(row[0] or 0)

    def entities_with_close_names(
        self, text: str, limit: int = 5, cutoff: float = 0.6, *, prefixes: bool = False
    ) -> list[Entity]:
        """Entities whose names are most like ``text`` (for "did you mean" hints), most similar first.

        Names are compared lower-cased with :class:`difflib.SequenceMatcher` (whose ratio falls by about
        ``2 / (len(a) + len(b))`` per edited character): a name must score at least ``cutoff`` (0–1).
        With ``prefixes``, a name also scores as its first ``len(text)`` characters, so that text still
        being typed ("Untied Sta") finds its name ("United States"). Of entities that share a
        lower-cased name only the lowest id is returned. Every name is read and compared, so the cost
        grows with the number of entities.
        """
        first_id: dict[str, int] = {}
        for entity_id, name in self.db.execute("SELECT id, lower(name) FROM entities ORDER BY id"):
            first_id.setdefault(name, entity_id)
        needle = text.lower()
        if not prefixes:
            close = difflib.get_close_matches(needle, list(first_id), n=limit, cutoff=cutoff)
            return self.entities([first_id[name] for name in close])
        matcher = difflib.SequenceMatcher()
        matcher.set_seq2(needle)
        scored = []
        for name, entity_id in first_id.items():
            best = 0.0
            for candidate in {name, name[: len(needle)]}:
                matcher.set_seq1(candidate)
                if matcher.real_quick_ratio() >= cutoff and matcher.quick_ratio() >= cutoff:
                    best = max(best, matcher.ratio())
            if best >= cutoff:
                scored.append((-best, len(name), entity_id))
        return self.entities([entity_id for *_, entity_id in sorted(scored)[:limit]])

    # ------------------------------------------------------------------ triples
    def triples(self, split: str) -> np.ndarray:
        """The triples of one split as an int64 array of shape ``(n, 3)``: head, relation, tail."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        rows = self.db.execute(
            "SELECT head, relation, tail FROM triples WHERE split = ? ORDER BY rowid", [split]
        ).fetchall()
        return np.asarray(rows, dtype=np.int64).reshape(-1, 3)

    def triples_tensor(self, split: str) -> "torch.Tensor":
        """The triples of one split as a ``torch.long`` tensor of shape ``(n, 3)``."""
        import torch

        return torch.from_numpy(self.triples(split))

    def known_triples(self, splits: Iterable[str] = SPLITS) -> KnownTriples:
        """The union of ``splits``, indexed for filtered ranking (filter with all three by default)."""
        arrays = [self.triples(split) for split in splits]
        return KnownTriples(np.concatenate(arrays), self.num_entities, self.num_relations)


def _journal(path: Path) -> Path:
    return path.with_name(path.name + "-journal")


def _roll_back_hot_journal(path: Path) -> bool:
    """Roll back the journal a killed writer left beside ``path`` (SIGKILL, a full disk, a power cut
    during ``imf entities add``); True if the store then opens.

    A read-only connection cannot roll a hot journal back, so every reader failed with "attempt to
    write a readonly database" until some writer happened to open the store. A read-write connection
    does the rollback itself on its first read, under SQLite's own locks, and only when no live writer
    holds the journal: exactly SQLite's recovery, run here rather than by chance later.
    """
    if not _journal(path).exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(str(path))) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError:
        return False
    return True


def list_datasets(home: str | Path | None = None) -> list[str]:
    """Names of the imported datasets (those with a ``store.db``), sorted."""
    root = paths.datasets_dir(home)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if os.path.lexists(p / "store.db"))  # a damaged one too


def dataset_summaries(home: str | Path | None = None) -> list[dict]:
    """One dict per imported dataset: name, counts, format, source and import time; a dataset whose
    store cannot be read is ``{"name", "error"}`` (the listing goes on: one broken store does not hide
    the others)."""
    summaries = []
    for name in list_datasets(home):
        try:
            summaries.append(_summary(name, home))
        except ImfError as error:
            summaries.append({"name": name, "error": str(error)})
    return summaries


def _summary(name: str, home: str | Path | None) -> dict:
    with EntityStore.open(name, home) as store:
        meta = store.metadata
        return {
            "name": name,
            **meta["counts"],
            "format": meta.get("format"),
            "source": meta.get("source"),
            "imported_at": meta.get("imported_at"),
        }
