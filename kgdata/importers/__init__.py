"""Readers of dataset layouts on disk. Each yields a :class:`ParsedDataset`; none writes SQL.

A new layout is one module with ``FORMAT``, ``detect(directory) -> bool`` and
``read(directory, advance) -> ParsedDataset``, added to :data:`READERS`.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from kgdata.errors import DataError
from kgdata.importers import ids, imf, tsv
from kgdata.importers.common import Advance, ParsedDataset

# Detection order matters: imf and ids both carry entity2id.txt; tsv is the fallback.
READERS: dict[str, ModuleType] = {"imf": imf, "ids": ids, "tsv": tsv}
FORMATS = ("auto", *READERS)


def detect_format(directory: Path) -> str:
    for name, reader in READERS.items():
        if reader.detect(directory):
            return name
    raise DataError(
        "unknown dataset format: expected train/valid/test triple files "
        "(tsv), or entity2id.txt with URI triples (imf) or integer triples (ids)",
        directory,
    )


def read_dataset(directory: Path, format: str = "auto", advance: Advance | None = None) -> ParsedDataset:
    """Read the dataset in ``directory`` in the given (or detected) format."""
    if not directory.is_dir():
        raise DataError("no such dataset directory", directory)
    if format == "auto":
        format = detect_format(directory)
    if format not in READERS:
        raise DataError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}", directory)
    return READERS[format].read(directory, advance)


__all__ = ["FORMATS", "ParsedDataset", "detect_format", "read_dataset"]
