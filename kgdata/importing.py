"""Build a dataset's entity store from files on disk, atomically.

The new store is written to a temporary file beside the final one and renamed into place only once
complete, so a failed or interrupted import leaves an existing store byte-identical and never leaves a
half-written one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from sqlite_utils import Database

from kgdata import locking, migrations, paths
from kgdata.errors import DataError, DatasetExistsError, EnvironmentFault, ImfError
from kgdata.importers import read_dataset
from kgdata.importers.common import ParsedDataset
from kgdata.migrations import SPLITS
from kgdata.wording import count
from models.splits import EARLIER_SPLITS, also_in

#: Datasets shipped inside the package: CLI name → directory under ``kgdata/datasets``.
BUNDLED = {"countries-mm": "countries_mm"}


@dataclass
class ImportReport:
    name: str
    path: str
    format: str
    source: str
    entities: int
    relations: int
    train: int
    valid: int
    test: int
    duplicates_dropped: dict[str, int]
    unseen_entities: dict[str, int]  # valid/test entities that never occur in train
    unseen_relations: dict[str, int]  # valid/test relations that never occur in train
    unused_relations: int  # relations listed (e.g. in relation2id.txt) without a triple in any split
    #: Triples of valid also in train, of test also in train or valid (leaks; see ``_overlaps``).
    overlapping_triples: dict[str, int]
    entities_with_description: int
    entities_with_image: int
    warnings: list[str] = field(default_factory=list)
    #: ``"imported"``, or ``"unchanged"`` when a bundled dataset was already imported as it is.
    status: str = "imported"

    def to_dict(self) -> dict:
        return asdict(self)


def bundled_path(name: str) -> Path | None:
    """The directory of a bundled dataset, or ``None`` if ``name`` is not one."""
    package = BUNDLED.get(name)
    if package is None:
        return None
    return Path(str(resources.files("kgdata.datasets") / package))


def resolve_source(source: str | Path) -> tuple[Path, str]:
    """Map a bundled dataset name or a directory to ``(directory, default dataset name)``."""
    if not str(source).strip():  # Path("") is the current directory: an empty argument imported it
        raise ImfError("no dataset given (an empty path); give a dataset directory or a bundled dataset name")
    bundled = bundled_path(str(source))
    if bundled is not None and not Path(source).exists():
        return bundled, str(source)
    directory = Path(source).expanduser()
    if not directory.exists():
        from kgdata.files import file_problem

        problem = file_problem(directory)  # a link loop or a dangling link is not "no such directory"
        if problem != "does not exist":
            raise DataError(f"expected a dataset directory; this {problem}", directory)
        raise DataError(
            f"no such directory, and not a bundled dataset (bundled: {', '.join(BUNDLED)})", directory
        )
    if not directory.is_dir():
        raise DataError("expected a dataset directory", directory)
    if not os.access(directory, os.R_OK | os.X_OK):  # bad input, as an unreadable file in it is
        raise DataError("cannot be read (permission denied)", directory)
    name = directory.resolve().name
    if not name:  # the root: no name to take
        raise ImfError(f"{directory} gives no dataset name; name it with --name")
    return directory.resolve(), name


def _stored_source(store_path: Path) -> tuple[str | None, str | None, str | None]:
    """The source directory and content hash recorded in an existing store, and why it could not be read
    (Nones but the reason if unreadable; all Nones for a readable store without them)."""
    from kgdata.store import EntityStore

    try:
        with EntityStore(store_path) as store:
            return store.metadata.get("source"), store.content_hash, None
    except KeyError:
        return None, None, None
    except ImfError as error:
        return None, None, str(error)


def content_hash(parsed: ParsedDataset) -> str:
    """SHA-256 over entity keys, relation keys and the triples of each split."""
    digest = hashlib.sha256()
    for keys in (parsed.entity_keys, parsed.relation_keys):
        digest.update("\n".join(keys).encode())
        digest.update(b"\0")
    for split in SPLITS:
        digest.update(split.encode())
        digest.update(np.ascontiguousarray(parsed.splits[split], dtype="<i8").tobytes())
    return digest.hexdigest()


def _unseen(parsed: ParsedDataset, columns: list[int], size: int) -> dict[str, int]:
    """How many distinct ids of ``columns`` (``[0, 2]``: entities, ``[1]``: relations) of valid and of
    test never occur there in train: their vectors are never trained."""
    seen = np.zeros(size, dtype=bool)
    seen[parsed.splits["train"][:, columns].ravel()] = True
    return {
        split: int((~seen[np.unique(parsed.splits[split][:, columns])]).sum()) for split in ("valid", "test")
    }


#: Characters that print as nothing: keys that differ only by them look the same.
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"))


def _lookalike_keys(keys: list[str]) -> list[tuple[str, str]]:
    """Pairs of distinct keys that are equal once in Unicode's NFC form and without invisible characters
    (``Café`` typed with a combining accent and with ``é``; ``A`` and ``A`` + zero-width space). They are
    separate entities that print alike: each key that looks like an earlier one, with that one."""
    import unicodedata

    first: dict[str, str] = {}
    pairs = []
    for key in keys:
        folded = unicodedata.normalize("NFC", key).translate(_INVISIBLE)
        other = first.setdefault(folded, key)
        if other != key:
            pairs.append((other, key))
    return pairs


def _unused_relations(parsed: ParsedDataset) -> int:
    """Relations without a triple in any split (a relation list with ids no triple uses)."""
    used = np.zeros(len(parsed.relation_keys), dtype=bool)
    for triples in parsed.splits.values():
        used[triples[:, 1]] = True
    return int((~used).sum())


def _overlaps(parsed: ParsedDataset) -> dict[str, int]:
    """How many triples of ``valid`` and ``test`` are also in an earlier split (:data:`EARLIER_SPLITS`):
    such leaks flatter the metrics."""
    return {
        split: int(also_in(parsed.splits[split], [parsed.splits[e] for e in earlier]).sum())
        for split, earlier in EARLIER_SPLITS.items()
    }


def _report(name: str, path: Path, parsed: ParsedDataset) -> ImportReport:
    unseen = _unseen(parsed, [0, 2], len(parsed.entity_keys))
    unseen_relations = _unseen(parsed, [1], len(parsed.relation_keys))
    unused_relations = _unused_relations(parsed)
    overlaps = _overlaps(parsed)
    warnings = []
    dropped = sum(parsed.duplicates.values())
    if dropped:
        per_split = ", ".join(f"{s}: {n}" for s, n in parsed.duplicates.items() if n)
        warnings.append(f"dropped {count(dropped, 'duplicate triple')} ({per_split})")
    for split, n in overlaps.items():
        if n:
            earlier = "train" if split == "valid" else "train or valid"
            warnings.append(
                f"{count(n, f'{split} triple')} {'is' if n == 1 else 'are'} also in {earlier}: a model is scored "
                "on facts it saw, which inflates its metrics"
            )
    for split, n in unseen.items():
        if n:
            warnings.append(f"{count(n, f'{split} entity', f'{split} entities')} never occur{'s' if n == 1 else ''} in train")
    for split, n in unseen_relations.items():
        if n:
            warnings.append(
                f"{count(n, f'{split} relation')} never occur{'s' if n == 1 else ''} in train: a model ranks "
                "its triples with relation vectors it never trained (imf eval --per-relation lists them as unseen)"
            )
    if unused_relations:
        warnings.append(f"{count(unused_relations, 'relation')} listed without a triple in any split")
    for kind, keys in (("entity", parsed.entity_keys), ("relation", parsed.relation_keys)):
        pairs = _lookalike_keys(keys)
        if pairs:
            a, b = pairs[0]
            warnings.append(
                f"{count(len(pairs), f'{kind} key')} differ{'s' if len(pairs) == 1 else ''} from another only in "
                f"Unicode normalisation or invisible characters, and stay{'s' if len(pairs) == 1 else ''} a "
                f"separate {kind} (first: {ascii(a)} and {ascii(b)})"
            )
    for split, use in (("valid", "imf train selects the model on it"), ("test", "imf eval --split test has nothing to rank")):
        if not len(parsed.splits[split]):
            warnings.append(f"the {split} split is empty: {use}")
    return ImportReport(
        name=name,
        path=str(path),
        format=parsed.format,
        source=str(parsed.source),
        entities=len(parsed.entity_keys),
        relations=len(parsed.relation_keys),
        train=len(parsed.splits["train"]),
        valid=len(parsed.splits["valid"]),
        test=len(parsed.splits["test"]),
        duplicates_dropped=dict(parsed.duplicates),
        unseen_entities=unseen,
        unseen_relations=unseen_relations,
        unused_relations=unused_relations,
        overlapping_triples=overlaps,
        entities_with_description=sum(1 for d in parsed.entity_descriptions if d),
        entities_with_image=sum(1 for i in parsed.entity_images if i),
        warnings=warnings,
    )


def write_store(path: Path, parsed: ParsedDataset, metadata: dict) -> None:
    """Write ``parsed`` as a new store at ``path`` (which must not exist)."""
    conn = sqlite3.connect(path)
    try:
        db = Database(conn)
        # The file is private until renamed into place, so durability is only needed at the end.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        migrations.apply(db)
        with conn:
            conn.executemany(
                "INSERT INTO entities (id, key, name, description, image) VALUES (?, ?, ?, ?, ?)",
                zip(
                    range(len(parsed.entity_keys)),
                    parsed.entity_keys,
                    parsed.entity_names,
                    parsed.entity_descriptions,
                    parsed.entity_images,
                ),
            )
            conn.executemany(
                "INSERT INTO relations (id, key, name) VALUES (?, ?, ?)",
                zip(range(len(parsed.relation_keys)), parsed.relation_keys, parsed.relation_names),
            )
            for split in SPLITS:
                conn.executemany(
                    f"INSERT INTO triples (head, relation, tail, split) VALUES (?, ?, ?, '{split}')",
                    parsed.splits[split].tolist(),
                )
            conn.executemany(
                "INSERT INTO metadata (key, value) VALUES (?, ?)",
                [(key, json.dumps(value)) for key, value in metadata.items()],
            )
        conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        conn.close()
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator:
    from rich.console import Console

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:  # a bar in a log or pipe only leaves a stray blank line
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("reading", total=total)
        yield lambda n: progress.advance(task, n)


def import_dataset(
    source: str | Path,
    *,
    name: str | None = None,
    format: str = "auto",
    replace: bool = False,
    home: str | Path | None = None,
    progress: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> ImportReport:
    """Read ``source`` (a directory or a bundled dataset name) into ``$IMF_HOME/datasets/<name>/store.db``.

    Raises :class:`DataError` for bad input (naming file and line) and :class:`DatasetExistsError`
    when the dataset exists and ``replace`` is false. Nothing is written unless the import succeeds.
    The dataset's lock is held in ``replace`` mode (:mod:`kgdata.locking`) from the existence check to
    the final rename, so two imports of one name never both succeed, and a store is never replaced
    while a training run, an evaluation or the TUI reads it. ``on_wait`` is told when the import waits.
    """
    directory, default_name = resolve_source(source)
    name = paths.check_dataset_name(default_name if name is None else name)
    final = paths.store_path(name, home)
    bundled = bundled_path(str(source)) == directory
    with locking.dataset_lock(name, "replace", home, on_wait=on_wait):
        if final.exists() and not replace and not bundled:
            raise DatasetExistsError(f"dataset {name!r} already exists at {final}; pass --replace to overwrite it")
        parsed = _read(directory, format, progress)
        report = _report(name, final, parsed)
        if final.exists() and not replace:
            # A bundled dataset is package data: the same source and content hash mean the same store.
            source, digest, unreadable = _stored_source(final)
            if (source, digest) == (str(directory), content_hash(parsed)):
                return dataclasses.replace(report, status="unchanged", warnings=[])
            if unreadable:
                raise DatasetExistsError(f"{unreadable}; pass --replace to import dataset {name!r} again")
            raise DatasetExistsError(
                f"dataset {name!r} already exists at {final} with other content; pass --replace to overwrite it"
            )
        metadata = _metadata(name, directory, parsed, report)
        dropped = _added_entities(final)
        _install(final, parsed, metadata, home)
    if dropped:
        report.warnings.append(
            f"the replaced store held {count(dropped, 'entity', 'entities')} added with imf entities add; "
            f"the source does not have {'it' if dropped == 1 else 'them'}, so {'it was' if dropped == 1 else 'they were'} "
            f"dropped (add {'it' if dropped == 1 else 'them'} again)"
        )
    return report


def _added_entities(store_file: Path) -> int:
    """How many added entities the store at ``store_file`` holds (0 when there is no readable store)."""
    from kgdata.store import EntityStore

    if not store_file.is_file():
        return 0
    try:
        with EntityStore(store_file) as store:
            return store.num_added_entities
    except ImfError:
        return 0


def _read(directory: Path, format: str, progress: bool) -> ParsedDataset:
    total = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
    with _progress(progress, total) as advance:
        parsed = read_dataset(directory, format, advance)
    if len(parsed.splits["train"]) == 0:
        raise DataError("the train split is empty", parsed.files["train"])
    return parsed


def _metadata(name: str, directory: Path, parsed: ParsedDataset, report: ImportReport) -> dict:
    return {
        "name": name,
        "source": str(directory),
        "format": parsed.format,
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {role: str(path) for role, path in parsed.files.items()},
        "counts": {
            "entities": report.entities,
            "relations": report.relations,
            "train": report.train,
            "valid": report.valid,
            "test": report.test,
            "triples": report.train + report.valid + report.test,
        },
        "duplicates_dropped": report.duplicates_dropped,
        "unseen_entities": report.unseen_entities,
        "unseen_relations": report.unseen_relations,
        "overlapping_triples": report.overlapping_triples,
        "content_hash": content_hash(parsed),
    }


def _install(final: Path, parsed: ParsedDataset, metadata: dict, home: str | Path | None) -> None:
    """Write the store to a temporary file beside ``final`` and rename it into place (under the lock)."""
    created_dir = not final.parent.exists()
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise locking.workspace_fault(error, home) from None
    locking.remove_temporaries(final.parent)  # left by killed imports: the lock says nobody else writes
    temporary = final.parent / f".store.db.{os.getpid()}.tmp"
    try:
        write_store(temporary, parsed, metadata)
        os.replace(temporary, final)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        Path(f"{temporary}-journal").unlink(missing_ok=True)
        if created_dir:
            with contextlib.suppress(OSError):
                final.parent.rmdir()
        if isinstance(error, (OSError, sqlite3.Error)):
            raise EnvironmentFault(
                f"could not write the store {final} ({_write_failure(error)}); the existing dataset, if any, "
                f"is unchanged"
            ) from None
        raise


def _write_failure(error: BaseException) -> str:
    if isinstance(error, OSError):
        reason = error.strerror or str(error)
        if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            reason += ": the disk may be full or a file-size limit reached"
        return reason
    text = str(error)
    if "full" in text or "I/O" in text:  # SQLite reports a file-size limit (EFBIG) as a disk I/O error
        return f"{text}: the disk may be full or a file-size limit reached"
    return text
