"""The files of a run directory that the training loop writes: ``config.yaml`` and ``trace.jsonl``.

``trace.jsonl`` is strict JSON, one object per line: a non-finite number (nan, ±inf) is written as
``null``, never as the ``NaN``/``Infinity`` tokens that other JSON readers refuse. A run killed while
writing may leave a torn last line; :func:`read_trace` skips it, and :func:`truncate_trace` drops it
when a run resumes. Any other unreadable line is an error that names the file and the line. A value
of the wrong type or not finite (a hand-edited line, a ``NaN`` token from another writer) is dropped
as it is read, so that every reader sees numbers where it expects them.
"""

from __future__ import annotations

import json
import math
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.atomic import write_text_atomically

if TYPE_CHECKING:
    import torch


class TraceError(ValueError):
    """A line of ``trace.jsonl`` that is not a JSON object (other than a torn last line)."""


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, so that ``json.dumps(allow_nan=False)`` accepts it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def append_trace(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one strict-JSON line."""
    with open(path, "a", encoding="utf-8") as trace:
        trace.write(json.dumps(strict_json(record), allow_nan=False) + "\n")


def read_trace(path: Path, *, strict: bool = True) -> list[dict[str, Any]]:
    """Every record of ``path``; a torn (unterminated, unparsable) last line is skipped.

    This module imports neither torch nor yaml at load time, so listing runs stays cheap.

    Raises:
        TraceError: With ``strict``, for any other line that is not a JSON object, naming the file and
            the line; without it such lines are skipped.
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO would block the read for good
        if strict:
            raise TraceError(f"{path}: not a regular file")
        return []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as error:
        if strict:
            raise TraceError(f"{path}: cannot read ({error.strerror})") from error
        return []
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        torn = number == len(lines) and not text.endswith("\n")
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if torn or not strict:
                continue
            raise TraceError(f"{path}:{number}: not a trace record (not JSON: {error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int) or isinstance(record["epoch"], bool):
            if not strict:
                continue
            raise TraceError(f"{path}:{number}: not a trace record (a JSON object with an integer 'epoch')")
        records.append(_clean(record))
    return records


def _number(value: Any) -> float | int | None:
    """``value`` if it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def finite_numbers(value: Any) -> dict[str, Any]:
    """The entries of a ``{name: number}`` mapping that are finite numbers (``{}`` for a non-mapping);
    a rank metric out of its range (an MRR or Hits@k outside [0, 1], an MR below 1: a damaged or
    edited file) is left out too."""
    if not isinstance(value, dict):
        return {}
    kept = {key: number for key, number in ((k, _number(v)) for k, v in value.items()) if number is not None}
    return {key: number for key, number in kept.items() if _in_range(key, number)}


def _in_range(key: Any, number: float) -> bool:
    name = str(key).lower()
    if name.endswith("mrr") or name.startswith("hits@"):
        return 0.0 <= number <= 1.0
    if name == "mr" or name.endswith("_mr"):
        return number >= 1.0
    return True


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with only the values the training loop writes, of its types: a hand-edited or damaged
    line (a string loss, a NaN token, a list for the seconds) loses those values, not the listing of
    the run. ``seconds`` and ``loss`` map names to finite numbers; ``valid`` maps each score to such a
    mapping; ``lr`` and ``best_valid_mrr`` are finite or None; ``best_epoch`` an integer or None."""
    clean = dict(record)
    for key in ("seconds", "loss"):
        if key in clean:
            clean[key] = finite_numbers(clean[key])
    if "valid" in clean:
        valid = clean["valid"]
        clean["valid"] = {score: finite_numbers(m) for score, m in valid.items() if isinstance(m, dict)} if isinstance(valid, dict) else {}
        if not clean["valid"]:
            del clean["valid"]
    for key in ("lr", "best_valid_mrr"):
        if key in clean:
            clean[key] = _number(clean[key])
    if "best_epoch" in clean and (isinstance(clean["best_epoch"], bool) or not isinstance(clean["best_epoch"], int)):
        clean["best_epoch"] = None
    return clean


def record_resume_changes(run_dir: Path, *, config: dict[str, Any], epoch: int, changes: dict[str, Any]) -> None:
    """Rewrite ``config.yaml`` for a run resumed with changed schedule keys (``imf train --resume --epochs``).

    Its ``config`` becomes the one the run now follows, and ``resumed`` lists each change with the epoch
    it took effect after, so the file still says how the run was trained. Written atomically.
    """
    import yaml

    path = run_dir / "config.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        document = {}
    document["config"] = config
    history = document.get("resumed")
    history = list(history) if isinstance(history, list) else []
    history.append({"after_epoch": epoch, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "set": dict(changes)})
    document["resumed"] = history
    write_text_atomically(path, yaml.safe_dump(document, sort_keys=False), what="the run's config")


def truncate_trace(path: Path, epoch: int) -> None:
    """Keep the trace lines of epochs up to ``epoch`` (a torn last line goes too)."""
    if not path.exists():
        return
    kept = [record for record in read_trace(path) if record["epoch"] <= epoch]
    write_text_atomically(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept), what="the trace")


def write_config(
    run_dir: Path,
    *,
    config: dict[str, Any],
    seed: int,
    data: dict[str, Any],
    metadata: dict[str, Any],
    device: torch.device,
    world_size: int,
) -> None:
    """Write ``config.yaml``: the resolved config, the seed, the data sizes and fingerprint, metadata, environment."""
    import torch
    import yaml

    document = {
        "config": config,
        "seed": seed,
        "data": data,
        "metadata": metadata,
        "environment": {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "device": str(device),
            "world_size": world_size,
            "threads": torch.get_num_threads(),
        },
    }
    write_text_atomically(run_dir / "config.yaml", yaml.safe_dump(document, sort_keys=False), what="the run's config")


def read_config_document(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.yaml`` as a mapping (empty when the file holds something else)."""
    import yaml

    document = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"))
    return document if isinstance(document, dict) else {}
