"""The workspace: everything imf writes lives under one home directory.

The home is, in order of precedence, an explicit argument (the CLI's ``--home``), the ``IMF_HOME``
environment variable, or the platform's user data directory. Layout::

    $IMF_HOME/datasets/<name>/store.db
    $IMF_HOME/datasets/<name>/features/<modality>-<encoder>.safetensors
    $IMF_HOME/runs/<run-id>/
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kgdata.errors import ImfError

ENV_VAR = "IMF_HOME"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def imf_home(home: str | Path | None = None) -> Path:
    """Return the workspace directory (not created here)."""
    if home is not None:
        return Path(home).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return default_home()


def default_home() -> Path:
    """The workspace when neither ``--home`` nor ``$IMF_HOME`` gives one: the user data directory."""
    import platformdirs

    return Path(platformdirs.user_data_dir("imf", appauthor=False))


def check_dataset_name(name: str) -> str:
    """Dataset names become directory names: letters, digits, ``.``, ``_`` and ``-`` only (the whole name)."""
    if not isinstance(name, str):
        raise ImfError(f"invalid dataset name {name!r}: expected text, got {type(name).__name__}")
    if not _NAME_RE.fullmatch(name):
        raise ImfError(
            f"invalid dataset name {name!r}: use 1 to 64 letters, digits, '.', '_' and '-', "
            f"starting with a letter or digit"
        )
    return name


def datasets_dir(home: str | Path | None = None) -> Path:
    return imf_home(home) / "datasets"


def dataset_dir(name: str, home: str | Path | None = None) -> Path:
    return datasets_dir(home) / check_dataset_name(name)


def store_path(name: str, home: str | Path | None = None) -> Path:
    return dataset_dir(name, home) / "store.db"


def runs_dir(home: str | Path | None = None) -> Path:
    return imf_home(home) / "runs"


#: The checkpoints a run directory may hold; a run with neither never finished an epoch.
CHECKPOINTS = ("best.pt", "last.pt")


def latest_run(
    dataset: str | None = None, home: str | Path | None = None, *, checkpoint: str | None = None
) -> Path | None:
    """The run directory whose ``config.yaml`` was written last, or None when there is none.

    With ``dataset``, only runs trained on that dataset (``metadata.dataset`` in ``config.yaml``) count.
    Directories without a ``config.yaml`` or without a checkpoint (an interrupted or failed start) are
    skipped; with ``checkpoint`` (``"best"`` or ``"last"``), runs without that checkpoint are skipped.
    """
    wanted = (f"{checkpoint}.pt",) if checkpoint else CHECKPOINTS
    runs = runs_dir(home)
    if not runs.is_dir():
        return None
    candidates = []
    for config in runs.glob("*/config.yaml"):
        try:
            mtime = config.stat().st_mtime
        except OSError:
            continue
        candidates.append((mtime, config.parent.name, config))
    for _, _, config in sorted(candidates, reverse=True):
        if not any((config.parent / name).is_file() for name in wanted):
            continue
        if dataset is None or _run_dataset(config) == dataset:
            return config.parent
    return None


def _run_dataset(config: Path) -> str | None:
    import yaml

    try:
        document = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, RecursionError):  # unreadable, not YAML, nested too deeply
        return None
    metadata = document.get("metadata") if isinstance(document, dict) else None
    return metadata.get("dataset") if isinstance(metadata, dict) else None
