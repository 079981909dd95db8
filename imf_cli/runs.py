"""Runs: the one home for finding, describing, checking and removing the run directories of ``imf train``.

A run directory (``$IMF_HOME/runs/<dataset>-<time>/``) holds ``config.yaml``, ``trace.jsonl``,
``best.pt``, ``last.pt`` and any ``metrics-<split>.json`` that ``imf eval`` wrote. This module reads
them without torch, so ``imf runs`` is quick; :mod:`imf_cli.run_loading` loads a run's model.

A run reference, as every command that takes a run accepts it (:func:`resolve_run`):

- ``latest``: the newest run that has a checkpoint; ``DATASET@latest``: the newest of that dataset;
- a directory (absolute or relative);
- a run name, or a unique prefix of one (``countries-mm-2026112``).

A run's status (:data:`STATUSES`), from its files alone:

- ``running``: a process is training it now (it holds the run's :func:`training_lock`);
- ``finished``: it trained every epoch of its budget; ``stopped early``: its patience ran out;
- ``resumable``: it was killed after writing ``last.pt``; ``imf train --resume RUN`` continues it;
- ``failed``: it has no ``last.pt`` (it died before its first checkpoint) or an unreadable ``config.yaml``;
- ``orphan``: its dataset is gone or was re-imported, so it can no longer be loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgdata import paths
from kgdata.errors import ImfError
from kgdata.wording import count

#: Model branch → the feature modality that feeds it.
BRANCH_FEATURES = {"visual": "image", "text": "text"}

if TYPE_CHECKING:
    from kgdata.features import FeatureSet
    from kgdata.store import EntityStore
    from models.config import RunConfig

FINISHED, STOPPED, RESUMABLE, RUNNING, FAILED, ORPHAN = (
    "finished", "stopped early", "resumable", "running", "failed", "orphan"
)
STATUSES = (FINISHED, STOPPED, RESUMABLE, RUNNING, FAILED, ORPHAN)
#: Statuses of runs whose training is over (their ``best.pt`` is the model chosen on valid).
DONE = (FINISHED, STOPPED)
LATEST = "latest"
CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class RunInfo:
    """What ``imf runs`` shows of one run directory.

    Attributes:
        path: The run directory.
        status: One of :data:`STATUSES`.
        reason: Why a run is failed or orphan (empty otherwise).
        dataset: The dataset it was trained on (None if ``config.yaml`` is unreadable).
        modalities: The model's input branches (``structure``, ``visual``, ``text``).
        seed: The run's seed.
        epochs: Epochs trained so far; ``max_epochs`` the budget.
        best_epoch, valid_mrr: The epoch of ``best.pt`` and its valid fused MRR (train + valid filter).
        test_mrr: The fused test MRR, if ``imf eval --split test`` was run.
        seconds: Training wall time (training and validation, summed over the trace).
        size: Bytes on disk.
        created: When training started (UTC, ISO 8601), or "".
        mtime: ``config.yaml``'s modification time; runs sort by it.
    """

    path: Path
    status: str
    reason: str = ""
    dataset: str | None = None
    modalities: tuple[str, ...] = ()
    seed: int | None = None
    epochs: int = 0
    max_epochs: int | None = None
    best_epoch: int | None = None
    valid_mrr: float | None = None
    test_mrr: float | None = None
    seconds: float = 0.0
    size: int = 0
    created: str = ""
    mtime: float = 0.0
    config: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def branches(self) -> tuple[str, ...]:
        """The model's scoring branches: the modalities, plus ``multimodal`` when there are several."""
        return self.modalities + (("multimodal",) if len(self.modalities) > 1 else ())

    @property
    def has_checkpoint(self) -> bool:
        return any((self.path / f"{name}.pt").is_file() for name in CHECKPOINTS)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "status": self.status,
            "reason": self.reason,
            "dataset": self.dataset,
            "modalities": list(self.modalities),
            "branches": list(self.branches),
            "seed": self.seed,
            "epochs": self.epochs,
            "max_epochs": self.max_epochs,
            "best_epoch": self.best_epoch,
            "valid_mrr": self.valid_mrr,
            "test_mrr": self.test_mrr,
            "seconds": round(self.seconds, 3),
            "size": self.size,
            "created": self.created,
        }


# --------------------------------------------------------------------------------- metadata
def run_metadata(run_dir: str | Path) -> dict:
    """The ``config.yaml`` document of a run directory, checked: a mapping whose ``metadata.dataset`` is a
    dataset name and whose ``config`` is a mapping. Anything else is one :class:`ImfError` naming the file."""
    from kgdata.files import exists, read_text
    from models.config import ConfigError, parse_yaml

    path = Path(run_dir) / "config.yaml"
    if not exists(path):
        raise ImfError(f"{run_dir}: not a run directory (no config.yaml); runs are in {paths.runs_dir()}")
    text = read_text(path, "run config")
    try:
        document = parse_yaml(text, path, written_by_imf=True)
    except ConfigError as error:
        raise ImfError(str(error)) from None
    if not isinstance(document, dict):
        raise ImfError(f"{path}: expected a mapping (config, metadata, …), got {type(document).__name__}")
    meta = document.get("metadata")
    if not isinstance(meta, dict):
        raise ImfError(f"{path}: 'metadata' must be a mapping, got {type(meta).__name__}")
    dataset = meta.get("dataset")
    if dataset is None:
        raise ImfError(f"{path}: records no dataset (metadata.dataset)")
    if not isinstance(dataset, str):
        raise ImfError(f"{path}: metadata.dataset must be a dataset name, got {dataset!r}")
    try:
        paths.check_dataset_name(dataset)
    except ImfError as error:
        raise ImfError(f"{path}: metadata.dataset: {error}") from None
    if not isinstance(document.get("config"), dict):
        raise ImfError(f"{path}: 'config' must be a mapping of model/train/eval sections")
    features = meta.get("features", [])
    if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
        raise ImfError(f"{path}: metadata.features must be a list of mappings")
    return document


def run_config(run_dir: Path, document: dict) -> "RunConfig":
    """The :class:`RunConfig` a run recorded; a bad one is an :class:`ImfError` naming ``config.yaml``."""
    from models.config import ConfigError, RunConfig

    try:
        return RunConfig.from_dict(document["config"])
    except (ConfigError, TypeError, AttributeError) as error:
        raise ImfError(f"{Path(run_dir) / 'config.yaml'}: {error}") from None


def read_trace(run_dir: str | Path, *, strict: bool = False) -> list[dict]:
    """The records of ``trace.jsonl``, one per epoch, in order. Unreadable lines are skipped (listing runs
    must survive a damaged one), or, with ``strict``, are an :class:`ImfError` naming the file and line
    (a torn last line, which a killed run leaves, is skipped either way)."""
    from models.run_files import TraceError
    from models.run_files import read_trace as read

    try:
        return read(Path(run_dir) / "trace.jsonl", strict=strict)
    except TraceError as error:
        raise ImfError(str(error)) from None


def read_metrics(run_dir: str | Path, split: str) -> dict | None:
    """The report that ``imf eval --split SPLIT`` wrote, or None. Its metrics (``fused``,
    ``mean_fusion``, each of ``branches``) hold only finite numbers: a damaged or hand-edited value
    is left out."""
    from models.run_files import finite_numbers

    path = metrics_path(run_dir, split)
    if not path.is_file():  # nothing, or a FIFO, whose read would block
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(report, dict):
        return None
    for key in ("fused", "mean_fusion"):
        if key in report:
            report[key] = finite_numbers(report[key])
    if "branches" in report:
        branches = report["branches"]
        report["branches"] = {b: finite_numbers(m) for b, m in branches.items()} if isinstance(branches, dict) else {}
    return report


def metrics_path(run_dir: str | Path, split: str, *, no_overlap: bool = False, checkpoint: str = "best") -> Path:
    """Where ``imf eval`` writes the metrics of ``split`` (``--drop-overlap``: of its triples that are in
    no earlier split) for ``checkpoint``: ``metrics-test.json`` is best.pt's, which ``imf runs`` shows;
    last.pt's goes beside it (``metrics-test-last.json``) instead of replacing it."""
    if checkpoint not in CHECKPOINTS:
        raise ImfError(f"unknown checkpoint {checkpoint!r}; choose best or last")
    suffix = ("-no-overlap" if no_overlap else "") + ("" if checkpoint == "best" else f"-{checkpoint}")
    return Path(run_dir) / f"metrics-{split}{suffix}.json"


def check_same_dataset(store: "EntityStore", meta: dict, run_dir: str | Path) -> None:
    """Refuse a store that is not the one the run was trained on, or whose feature inputs changed since.

    The graph's content hash covers keys and triples; each recorded feature file's graph input hash
    covers what those features were computed from (texts, images, train triples).
    """
    from kgdata.inputs import graph_input_hash

    if store.content_hash != meta.get("dataset_hash"):
        raise ImfError(
            f"dataset {store.name!r} changed since run {run_dir} was trained (it was re-imported); "
            f"re-import the original data or train a new run"
        )
    for manifest in meta.get("features", []):
        source, recorded = manifest.get("computed_from"), manifest.get("graph_input_hash")
        if not source or not recorded or graph_input_hash(store, source) == recorded:
            continue
        modality = manifest.get("modality", "?")
        unreadable = _unreadable_images(store) if source == "images" else []
        if unreadable:  # moved or unmounted, not edited: re-encoding would fail on the same files
            raise ImfError(
                f"{count(len(unreadable), 'image')} that dataset {store.name!r} names cannot be read now (first: "
                f"{unreadable[0]}), so run {run_dir}'s image features no longer match them; was the source folder "
                f"moved or unmounted? imf import records where the images are: put them back, or re-import "
                f"from the new place and train a new run"
            )
        raise ImfError(
            f"run {run_dir} was trained on {modality} features computed from other {source} than dataset "
            f"{store.name!r} holds now (re-imported or edited since); re-run imf encode {store.name} "
            f"--modality {modality} and train a new run"
        )


def check_feature_options(feature_set: "FeatureSet", metadata: dict | None, run: str | Path = "the run") -> None:
    """Refuse features encoded with other options (pooling, length, …) than the run recorded for its
    modality: ``imf encode --force`` with other options rewrote the file, and the run went on scoring
    new entities, or its frozen features, from vectors of another kind without a word. Runs that
    recorded no options (older ones) are not checked."""
    for manifest in (metadata or {}).get("features", []) or []:
        if manifest.get("modality") != feature_set.modality or "options" not in manifest:
            continue
        recorded, now = manifest["options"], feature_set.extra.get("options")
        if recorded != now:
            changed = sorted(k for k in {*(recorded or {}), *(now or {})} if (recorded or {}).get(k) != (now or {}).get(k))
            raise ImfError(
                f"{feature_set.path}: encoded with other options than {run} was trained on "
                f"({', '.join(f'{k}: {(recorded or {}).get(k)!r} then, {(now or {}).get(k)!r} now' for k in changed[:3])}); "
                f"encode again with the run's options (imf encode --force) or train a new run"
            )


def _unreadable_images(store: "EntityStore") -> list[str]:
    """The image paths of the graph's entities that are not readable files now."""
    graph = store.num_graph_entities
    return [e.image for e in store.entities()[:graph] if e.image and not os.access(e.image, os.R_OK)]


# ----------------------------------------------------------------------------------- status
@contextlib.contextmanager
def training_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the run's lock while training it, so that :func:`run_info` reports it as running.

    The lock is an ``flock`` on the run directory itself (no file is added to it); the system releases
    it when the process ends, however it ends. Raises :class:`ImfError` if another process holds it.
    """
    import fcntl

    descriptor = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ImfError(f"run {run_dir} is being trained by another process") from None
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _is_running(run_dir: Path) -> bool:
    """True while another process holds the run's :func:`training_lock`."""
    import fcntl

    try:
        descriptor = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)
    return False


def _disk_size(run_dir: Path) -> int:
    total = 0
    for path in run_dir.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total


def _section(config: dict, name: str) -> dict:
    """``config[name]`` if it is a mapping, else ``{}``: listing a run with a damaged config.yaml
    shows what can be read (``imf eval`` and resume name the bad key)."""
    section = config.get(name)
    return section if isinstance(section, dict) else {}


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _training_state(config: dict, trace: list[dict]) -> str | None:
    """FINISHED or STOPPED when the trace shows the end of training, else None.

    Training ends after ``train.epochs`` epochs, or when ``train.patience`` evaluations in a row did not
    improve the best valid MRR (:mod:`models.training`).
    """
    if not trace:
        return None
    train = _section(config, "train")
    last = trace[-1]
    if isinstance(train.get("epochs"), int) and last["epoch"] >= train["epochs"]:
        return FINISHED
    patience = train.get("patience")
    best = last.get("best_epoch") or 0
    misses = sum(1 for record in trace if "valid" in record and record["epoch"] > best)
    if isinstance(patience, int) and patience > 0 and misses >= patience:
        return STOPPED
    return None


def run_info(run_dir: str | Path, *, dataset_hashes: dict[str, str | None] | None = None) -> RunInfo:
    """Describe one run directory (see :class:`RunInfo`); never raises for a damaged run, nor for one
    that cannot be read (listed as failed: one unreadable run hid every other from ``imf runs``).

    ``dataset_hashes`` caches dataset name → content hash (None: not imported) across calls.
    """
    try:
        return _run_info(Path(run_dir), dataset_hashes)
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        return RunInfo(Path(run_dir), FAILED, f"cannot be read: {error.strerror or error}{where}", size=0, mtime=0.0)


def _run_info(run_dir: Path, dataset_hashes: dict[str, str | None] | None) -> RunInfo:
    config_path = run_dir / "config.yaml"
    mtime = config_path.stat().st_mtime if config_path.is_file() else run_dir.stat().st_mtime
    size = _disk_size(run_dir)
    try:
        document = run_metadata(run_dir)
    except ImfError as error:
        status = RUNNING if _is_running(run_dir) else FAILED
        return RunInfo(run_dir, status, str(error) if status == FAILED else "", size=size, mtime=mtime)
    config = document.get("config") if isinstance(document.get("config"), dict) else {}
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
    environment = document.get("environment") if isinstance(document.get("environment"), dict) else {}
    try:
        trace, problem = read_trace(run_dir, strict=True), ""
    except ImfError as error:  # listed, and failed with the line that eval, --resume and runs show refuse
        trace, problem = read_trace(run_dir), str(error)
    last = trace[-1] if trace else {}
    test = read_metrics(run_dir, "test")
    dataset = metadata.get("dataset")

    reason = ""
    if _is_running(run_dir):
        status = RUNNING
    else:
        status = _training_state(config, trace) or (RESUMABLE if (run_dir / "last.pt").is_file() else FAILED)
        if status == FAILED:
            reason = "no checkpoint: it stopped before its first epoch ended"
        damaged = _config_problem(run_dir, document) or problem or _checkpoint_problem(run_dir, trace)
        if damaged:
            status, reason = FAILED, damaged
        orphan = _orphan_reason(dataset, metadata.get("dataset_hash"), dataset_hashes)
        if orphan:
            status, reason = ORPHAN, orphan
    model, train = _section(config, "model"), _section(config, "train")
    modalities = model.get("modalities")
    return RunInfo(
        path=run_dir,
        status=status,
        reason=reason,
        dataset=dataset,
        modalities=tuple(m for m in modalities if isinstance(m, str)) if isinstance(modalities, list) else (),
        seed=_integer(document.get("seed", train.get("seed"))),
        epochs=int(last.get("epoch", 0)),
        max_epochs=_integer(train.get("epochs")),
        best_epoch=last.get("best_epoch") or None,
        valid_mrr=last.get("best_valid_mrr"),
        test_mrr=((test or {}).get("fused") or {}).get("mrr"),
        seconds=sum(sum((r.get("seconds") or {}).values()) for r in trace),
        size=size,
        created=str(environment.get("created") or ""),
        mtime=mtime,
        config=config,
    )


def _config_problem(run_dir: Path, document: dict) -> str:
    """Why the run's ``config.yaml`` would stop ``imf eval`` and ``--resume`` (a value out of range); ""
    when it reads. The listing showed such runs as finished, and every other command refused them."""
    try:
        run_config(run_dir, document)
    except ImfError as error:
        return str(error)
    return ""


def _checkpoint_problem(run_dir: Path, trace: list[dict]) -> str:
    """What is wrong with a run's checkpoints, from cheap checks only (a listing must stay fast): a
    ``best.pt`` missing though validations wrote one, or a checkpoint that is not the zip archive
    ``torch.save`` writes; "" otherwise."""
    import zipfile

    from kgdata.files import file_problem

    for name in ("best", "last"):
        path = run_dir / f"{name}.pt"
        if path.is_file() and not zipfile.is_zipfile(path):
            damaged = f"{name}.pt is damaged (not the zip archive torch.save writes)"
            if name == "best" and other_checkpoint_reads(run_dir, "best"):
                damaged += "; its last.pt reads: --checkpoint last (imf eval, predict, explore) uses it"
            return damaged
        problem = file_problem(path)
        if problem is not None and problem != "does not exist":  # a directory or a FIFO in its place
            return f"{name}.pt {problem}"
    if not (run_dir / "best.pt").exists() and any("valid" in record for record in trace):
        return "best.pt is missing, though trace.jsonl records validations (imf eval RUN --checkpoint last)"
    return ""


def _orphan_reason(dataset: str | None, recorded: str | None, cache: dict[str, str | None] | None) -> str:
    """Why the run's dataset cannot serve it any more, or ""."""
    from kgdata.store import EntityStore

    if not dataset:
        return "its config.yaml records no dataset"
    cache = {} if cache is None else cache
    if dataset not in cache:
        try:
            with EntityStore.open(dataset) as store:
                cache[dataset] = store.content_hash
        except ImfError:
            cache[dataset] = None
    if cache[dataset] is None:
        return f"dataset {dataset!r} is not imported"
    if recorded is not None and cache[dataset] != recorded:
        return f"dataset {dataset!r} was re-imported since"
    return ""


def list_runs(dataset: str | None = None) -> list[RunInfo]:
    """Every run directory under ``$IMF_HOME/runs`` (of ``dataset``, if given), oldest first."""
    root = paths.runs_dir()
    if not root.is_dir():
        return []
    hashes: dict[str, str | None] = {}
    runs = [run_info(path, dataset_hashes=hashes) for path in root.iterdir() if path.is_dir()]
    if dataset is not None:
        runs = [run for run in runs if run.dataset == dataset]
    return sorted(runs, key=lambda run: (run.mtime, run.name))


# ------------------------------------------------------------------------------- references
def latest_run(dataset: str | None = None) -> Path | None:
    """The newest run that has a checkpoint (of ``dataset``, if given), or None."""
    for run in reversed(list_runs(dataset)):
        if run.has_checkpoint and run.status != FAILED:
            return run.path
    return None


def _missing_checkpoint(run_dir: Path, checkpoint: str) -> str | None:
    """What to do when ``run_dir`` lacks ``checkpoint``.pt but has the other one; None otherwise."""
    others = [name for name in CHECKPOINTS if name != checkpoint and (run_dir / f"{name}.pt").is_file()]
    if os.path.lexists(run_dir / f"{checkpoint}.pt") or not others:
        return None  # there (loading says what is wrong with it, if anything), or no checkpoint at all
    if checkpoint == "best":
        validated = [record["epoch"] for record in read_trace(run_dir) if "valid" in record and "epoch" in record]
        if validated:  # it was written, and is gone
            return (
                f"run {run_dir.name} has no best.pt, though trace.jsonl records {count(len(validated), 'validation')} "
                f"(the last after epoch {validated[-1]}): it was removed or moved. Use the last weights with "
                "--checkpoint last; the next better validation of imf train --resume writes a new best.pt"
            )
        return (
            f"run {run_dir.name} has no best.pt yet: it stopped before its first validation. Continue it with "
            f"imf train --resume {run_dir}, or use its last weights with --checkpoint last"
        )
    return f"run {run_dir.name} has no {checkpoint}.pt; use --checkpoint {others[0]}"


def resolve_run(ref: str | os.PathLike) -> Path:
    """The run directory that ``ref`` names: ``latest``, ``DATASET@latest``, a directory, or a unique
    prefix of a run name (see the module docstring).

    Raises:
        ImfError: If nothing or several runs match, naming them and where runs are.
    """
    text = str(ref).strip()
    if not text:
        raise ImfError("no run given; name one as imf runs lists it, or latest")
    root = paths.runs_dir()
    if text == LATEST or text.endswith("@" + LATEST):
        dataset = None if text == LATEST else text[: -len("@" + LATEST)]
        if dataset is not None:
            try:
                paths.check_dataset_name(dataset)
            except ImfError as error:
                raise ImfError(f"{text!r}: DATASET@latest needs a dataset name; {error}") from None
        found = latest_run(dataset)
        if found is None:
            raise ImfError(_no_runs_yet(dataset))
        return found
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise ImfError(f"{path} is not a run directory (no config.yaml); runs are in {root}")
        return Path(os.path.abspath(path))  # "." and ".." as the directories they are (names, removal)
    if os.sep in text or not root.is_dir():
        raise ImfError(f"{text} is not a run directory, nor the name of one; runs are in {root} (see imf runs)")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(text))
    if text in names:
        names = [text]
    if len(names) == 1:
        return root / names[0]
    if not names:
        raise ImfError(f"no run matches {text!r} in {root}; see imf runs, or use latest or DATASET@latest")
    shown = ", ".join(names[:5]) + (" …" if len(names) > 5 else "")
    raise ImfError(f"{text!r} matches {len(names)} runs: {shown}; give more of the name")


def _no_runs_yet(dataset: str | None) -> str:
    """Why there is no run to take: none trained yet, or (for a dataset not imported) no such dataset, for
    which "train one first: imf train NAME" would fail too."""
    if dataset and not paths.store_path(dataset).is_file():
        return (f"no dataset {dataset!r} in {paths.imf_home()} (see imf datasets); import it first: "
                f"imf import SOURCE --name {dataset}")
    of = f" of {dataset}" if dataset else ""
    return f"no runs{of} in {paths.runs_dir()} yet; train one first: imf train {dataset or 'countries-mm'}"


def default_run(dataset: str | None = None) -> tuple[Path, str]:
    """The run ``imf explore`` opens without one: the newest finished run with the most branches.

    Returns:
        ``(run directory, why it was chosen)``, the reason in words for the user.

    Raises:
        ImfError: If there is no run with a checkpoint (of ``dataset``).
    """
    every = list_runs(dataset)
    runs = [run for run in every if run.has_checkpoint and run.status not in (FAILED, ORPHAN)]
    if not runs:
        of = f" of {dataset}" if dataset else ""
        orphans = [run for run in every if run.status == ORPHAN and run.has_checkpoint]
        if orphans:  # there are runs: their datasets are gone or were re-imported with other content
            newest = orphans[-1]
            raise ImfError(
                f"no run{of} in {paths.runs_dir()} can be opened: the {count(len(orphans), 'run')} with a checkpoint "
                f"{'is an orphan' if len(orphans) == 1 else 'are orphans'}, the newest {newest.name}: {newest.reason}; "
                f"import the dataset again as it was, or train a new run"
            )
        raise ImfError(_no_runs_yet(dataset))
    done = [run for run in runs if run.status in DONE and (run.path / "best.pt").is_file()]
    pool = done or runs
    chosen = max(pool, key=lambda run: (len(run.branches), run.mtime, run.name))
    kind = "finished run" if done else "run (none has finished)"
    reason = f"the newest {kind} with the most branches ({len(chosen.branches)}: {', '.join(chosen.branches)})"
    newer = [run for run in runs if (run.mtime, run.name) > (chosen.mtime, chosen.name)]
    if newer:
        newest = newer[-1]
        reason += f"; newer: {newest.name} ({newest.status}, {', '.join(newest.branches) or 'no branches'})"
    return chosen.path, reason


# --------------------------------------------------------------------------------- removing
#: The files a run directory holds: what ``imf train``, ``imf eval`` and ``imf ablate`` write into one.
RUN_FILES = ("config.yaml", "trace.jsonl", "best.pt", "last.pt", "result.json", "metrics-*.json", "inductive-*.safetensors")
#: The temporary name of one while it is written (``best.pt.tmp``, ``.inductive-best.safetensors.123.tmp``);
#: a killed write leaves it behind.
_TEMPORARY = re.compile(r"\.?(?P<name>.+?)(?:\.\d+)?\.tmp")


def _written_by_a_run(name: str) -> bool:
    import fnmatch

    temporary = _TEMPORARY.fullmatch(name)
    name = temporary.group("name") if temporary else name
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in RUN_FILES)


def other_checkpoint_reads(run_dir: Path, checkpoint: str) -> str | None:
    """``"last"`` for ``"best"`` (and the other way round) when that other checkpoint is a zip archive, as
    ``torch.save`` writes: a way on when ``checkpoint`` is damaged; None otherwise (a cheap check)."""
    import zipfile

    other = "last" if checkpoint == "best" else "best"
    path = Path(run_dir) / f"{other}.pt"
    return other if path.is_file() and zipfile.is_zipfile(path) else None


def run_identity(run_dir: str | Path) -> Path:
    """The path that tells one run directory from another: a run named through a symlink or ``..`` is
    the run listed under its own path (a symlink loop: only its spelling)."""
    try:
        return Path(run_dir).resolve()
    except OSError:
        return Path(run_dir)


def check_removable(run_dir: str | Path) -> None:
    """Raise an :class:`ImfError` unless ``run_dir`` may be deleted as a whole: a run directory holding
    only the files a run writes, not being trained. Outside the workspace's runs directory its
    ``config.yaml`` must also be a run's: ``--run-dir`` puts runs anywhere, and a project directory
    that merely has a config.yaml is never a run to delete. A symbolic link is refused (deleting
    through it would delete what it points to, wherever that is)."""
    run_dir = Path(os.path.abspath(run_dir))  # "." names the directory, which rmtree cannot take as "."
    if run_dir.is_symlink():
        raise ImfError(f"{run_dir} is a symbolic link; not removed (name the run directory it points to)")
    inside = run_dir.parent.resolve() == paths.runs_dir().resolve()
    if not inside:
        if not (run_dir / "config.yaml").is_file():
            raise ImfError(f"{run_dir} is not a run directory; not removed")
        try:
            run_metadata(run_dir)
        except ImfError as error:
            raise ImfError(f"{error}; not removed") from None
    try:
        entries = list(run_dir.iterdir())
    except OSError as error:
        raise ImfError(f"cannot read {run_dir}: {error.strerror}") from None
    foreign = sorted(
        entry.name for entry in entries if entry.is_dir() or entry.is_symlink() or not _written_by_a_run(entry.name)
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (" …" if len(foreign) > 5 else "")
        raise ImfError(
            f"{run_dir} holds files that no run writes ({shown}); not removed. Delete it yourself if you mean to"
        )
    if _is_running(run_dir):
        raise ImfError(f"run {run_dir.name} is being trained; stop it first")


def remove_run(run_dir: str | Path) -> None:
    """Delete a run directory, after :func:`check_removable`."""
    run_dir = Path(os.path.abspath(run_dir))
    check_removable(run_dir)
    try:
        shutil.rmtree(run_dir)
    except OSError as error:
        raise ImfError(f"cannot remove {run_dir}: {error.strerror or error}") from error


def trace_series(trace: list[dict[str, Any]]) -> dict[str, Any]:
    """The curves of a trace: ``{"epochs", "loss", "valid_epochs", "valid": {score: [mrr…]}}``.

    ``loss`` is the total training loss of each epoch; ``valid`` maps ``fused`` and each branch to its
    valid MRR at each evaluated epoch. ``trace`` is as :func:`read_trace` gives it: a value that is not
    a finite number is already gone, so it is None here.
    """
    epochs = [record["epoch"] for record in trace]
    loss = [((record.get("loss") or {}).get("total")) for record in trace]
    evaluated = [record for record in trace if isinstance(record.get("valid"), dict)]
    valid: dict[str, list[float | None]] = {}
    for record in evaluated:
        for score, metrics in record["valid"].items():
            if isinstance(metrics, dict) and "mrr" in metrics:
                valid.setdefault(score, [None] * len(evaluated))
    for index, record in enumerate(evaluated):
        for score in valid:
            valid[score][index] = (record["valid"].get(score) or {}).get("mrr")
    return {"epochs": epochs, "loss": loss, "valid_epochs": [r["epoch"] for r in evaluated], "valid": valid}
