"""What every importer shares: the parsed-dataset record, line reading, id maps and split files."""

from __future__ import annotations

import gzip
import io
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import unquote

import numpy as np

from kgdata.errors import DataError
from kgdata.files import check_regular_file, check_text, escape_controls, exists, file_problem
from kgdata.migrations import SPLITS

# Accepted file names per split, in order of preference.
SPLIT_STEMS = {"train": ("train",), "valid": ("valid", "val", "dev"), "test": ("test",)}
SUFFIXES = (".txt", ".tsv", ".txt.gz", ".tsv.gz")

#: Called with the number of bytes read since the last call; used for progress bars.
Advance = Callable[[int], None]


@dataclass
class ParsedDataset:
    """A dataset read from disk, with dense ids, ready to be written to a store.

    ``splits[s]`` is an int64 array of shape ``(n_s, 3)`` (head, relation, tail), duplicates removed.
    """

    format: str
    source: Path
    entity_keys: list[str]
    entity_names: list[str]
    entity_descriptions: list[str | None]
    entity_images: list[str | None]
    relation_keys: list[str]
    relation_names: list[str]
    splits: dict[str, np.ndarray]
    duplicates: dict[str, int] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


class IdMap:
    """Keys to dense ids. ``frozen`` maps reject unknown keys; open ones grow on first sight."""

    def __init__(self, kind: str, keys: list[str] | None = None, frozen: bool = False, source: str = ""):
        self.kind = kind
        self.source = source or f"the {kind} id map"
        self.keys: list[str] = []
        self.ids: dict[str, int] = {}
        self.frozen = False
        for key in keys or []:
            self.add(key)
        self.frozen = frozen

    def add(self, key: str) -> int:
        self.ids[key] = len(self.keys)
        self.keys.append(key)
        return len(self.keys) - 1

    def get(self, key: str, path: Path, line: int) -> int:
        found = self.ids.get(key)
        if found is not None:
            return found
        if self.frozen:
            raise DataError(f"{self.kind} {key!r} is not listed in {self.source}", path, line)
        return self.add(key)

    def __len__(self) -> int:
        return len(self.keys)


def find_file(directory: Path, stems: tuple[str, ...], suffixes: tuple[str, ...] = SUFFIXES) -> Path | None:
    """The one ``stem + suffix`` present in ``directory``, or None.

    Something present that is not a regular file (a FIFO, a symbolic-link loop, a directory) is a
    :class:`DataError` naming it, not a file to skip. Two candidates (``train.txt`` and
    ``train.tsv``, ``valid.txt`` and ``dev.txt``) are a :class:`DataError` too: reading one of them
    silently would leave the user guessing which.
    """
    present = [directory / f"{stem}{suffix}" for stem in stems for suffix in suffixes]
    present = [candidate for candidate in present if exists(candidate)]
    if len(present) > 1:
        names = " and ".join(candidate.name for candidate in present)
        raise DataError(f"{names} are both here; keep one file for this split", directory)
    return check_regular_file(present[0]) if present else None


def split_files(directory: Path, suffixes: tuple[str, ...] = SUFFIXES) -> dict[str, Path]:
    """The train/valid/test files of ``directory``; a missing one is an error naming what was looked for."""
    found = {}
    for split in SPLITS:
        path = find_file(directory, SPLIT_STEMS[split], suffixes)
        if path is None:
            names = ", ".join(f"{s}{x}" for s in SPLIT_STEMS[split] for x in suffixes[:2])
            raise DataError(f"missing {split} split file (looked for {names})", directory)
        found[split] = path
    return found


#: The longest line a dataset file may have (a description is a few kilobytes).
MAX_LINE_BYTES = 1 << 20


def iter_lines(path: Path, advance: Advance | None = None, *, skip_blank: bool = True) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each non-blank line (each line, without ``skip_blank``), decoded
    as UTF-8, newline stripped.

    Lines are decoded one at a time so that an encoding error names its line. A line holding a control
    character other than tab (NUL, a lone carriage return, escape, ...) is a :class:`DataError` at its
    line: such bytes are corruption, not data; so is a line longer than :data:`MAX_LINE_BYTES`, found
    without reading the rest of it. Only regular files are read (a FIFO would block).
    """
    check_regular_file(path)
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror or exc}", path) from exc
    stream: io.BufferedIOBase = gzip.open(raw) if path.name.endswith(".gz") else raw  # type: ignore[assignment]
    pending = 0
    try:
        for number, data in enumerate(iter(lambda: stream.readline(MAX_LINE_BYTES + 1), b""), start=1):
            if len(data) > MAX_LINE_BYTES:  # read no further: a field of 300 million characters is not data
                raise DataError(f"the line is longer than {MAX_LINE_BYTES:,} bytes", path, number)
            pending += len(data)
            if advance is not None and pending >= 1 << 20:
                advance(pending)
                pending = 0
            try:
                text = data.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise DataError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})", path, number) from None
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            check_text(text, path, number)
            if text.strip(" ") or not skip_blank:  # a line of tabs has empty fields: it is not blank
                yield number, text
    except (OSError, EOFError, zlib.error) as exc:  # gzip's BadGzipFile is an OSError; a corrupt stream, zlib.error
        raise DataError(f"cannot read file: {exc}", path) from exc
    finally:
        if advance is not None and pending:
            advance(pending)
        stream.close()
        raw.close()


def dedupe(rows: list[tuple[int, int, int]]) -> tuple[np.ndarray, int]:
    """Drop repeated triples, keeping first occurrences in order. Returns ``(array (n, 3), dropped)``."""
    unique = list(dict.fromkeys(rows))
    return np.asarray(unique, dtype=np.int64).reshape(-1, 3), len(rows) - len(unique)


def name_from_uri(uri: str) -> str:
    """A readable name from a URI: ``<http://dbpedia.org/resource/Pocatello,_Idaho>`` → ``Pocatello, Idaho``."""
    text = uri.strip().removeprefix("<").removesuffix(">")
    text = text.rstrip("/")
    for sep in ("#", "/"):
        if sep in text:
            text = text.rsplit(sep, 1)[1]
            break
    # Percent escapes are decoded (%C3%A9 is é), but not into control characters: %1B stays %1B.
    text = escape_controls(unquote(text)).replace("_", " ").strip()
    return text or uri


_INTEGER = re.compile(r"-?[0-9]+")


def parse_id(text: str) -> int:
    """``text`` as an integer id: ASCII digits only, optionally negative (range checks come later).

    ``int()`` alone also takes ``1_0`` (10), ``+3``, and other scripts' digits (``١`` is 1), which would
    import a file that says something else than it seems to.

    Raises:
        ValueError: anything else.
    """
    if not _INTEGER.fullmatch(text):
        raise ValueError(text)
    return int(text)


def read_key_id_map(path: Path, kind: str, advance: Advance | None = None) -> list[str]:
    """Read an ``entity2id.txt``-style file (``key id`` per line) into keys ordered by id.

    Ids must be the dense range ``0..n-1``, each used once.
    """
    pairs: list[tuple[str, int, int]] = []
    for number, text in iter_lines(path, advance):
        parts = text.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise DataError(f"expected '<{kind}> <id>', got {text!r}", path, number)
        key, raw_id = parts
        try:
            pairs.append((key.strip(), parse_id(raw_id), number))
        except ValueError:
            raise DataError(f"{kind} id {raw_id!r} is not an integer", path, number) from None
    keys: list[str | None] = [None] * len(pairs)
    seen: dict[str, int] = {}
    for key, index, number in pairs:
        if not 0 <= index < len(pairs):
            raise DataError(
                f"{kind} id {index} out of range 0..{len(pairs) - 1} (ids must be dense)", path, number
            )
        if keys[index] is not None:
            raise DataError(f"{kind} id {index} is used twice", path, number)
        if key in seen:
            raise DataError(f"{kind} {key!r} is listed twice (first on line {seen[key]})", path, number)
        keys[index] = key
        seen[key] = number
    return keys  # type: ignore[return-value]


def dataset_image(directory: Path, value: str, path: Path, line: int) -> str:
    """The absolute path of an image named in a dataset file (``path:line``), relative to ``directory``.

    The image must be a regular file inside ``directory`` once symbolic links are followed: an
    absolute path, a ``..`` that climbs out, or a link that leads outside is a :class:`DataError`.
    """
    if Path(value).is_absolute():
        raise DataError(f"image path {value!r} is absolute; give it relative to {directory}", path, line)
    root = Path(os.path.realpath(directory))
    image = Path(os.path.realpath(root / value))
    if not image.is_relative_to(root):
        raise DataError(f"image path {value!r} leads outside {root}, the folder of {Path(path).name}", path, line)
    problem = file_problem(image)
    if problem is not None:
        raise DataError(f"image file {value!r} {problem}", path, line)
    return str(image)
