"""The one place that wires the entity store, the feature files and the model together.

Commands call these functions; :mod:`models` never sees SQLite and :mod:`kgdata` never sees the model.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from imf_cli.run_loading import pick_device
from imf_cli.runs import (
    BRANCH_FEATURES,
    check_same_dataset,
    read_trace,
    run_config,
    run_metadata,
    training_lock,
)
from kgdata import paths
from kgdata.errors import EnvironmentFault, ImfError, is_out_of_memory
from kgdata.wording import count

if TYPE_CHECKING:
    import torch

    from kgdata.features import FeatureSet
    from kgdata.store import EntityStore
    from models.config import RunConfig
    from models.training import KGTensors, TrainResult

BRANCHES = ("structure", "visual", "text")


@dataclass(frozen=True)
class PreparedData:
    tensors: "KGTensors"
    modalities: tuple[str, ...]
    manifests: list[dict]  # one per feature file used: modality, encoder, dim, missing, input_hash, path
    #: One line per modality whose features were picked as the newest of several files (say which).
    notes: tuple[str, ...] = ()


def available_branches(store: "EntityStore") -> tuple[str, ...]:
    """Structure, plus each modality branch whose features have been encoded."""
    from kgdata.features import list_features

    stored = {row["modality"] for row in list_features(store)}
    return ("structure", *(b for b, m in BRANCH_FEATURES.items() if m in stored))


def prepare_data(
    store: "EntityStore",
    modalities: tuple[str, ...],
    *,
    text_encoder: str | None = None,
    image_encoder: str | None = None,
    structure_init: str | None = None,
) -> PreparedData:
    """Load the splits and the frozen features the chosen branches need, as :class:`KGTensors`.

    ``structure_init`` names a structure encoder (``"gat"``) whose entity and relation vectors
    initialise the structure branch, or None for a random initialisation. The model sees the graph
    entities only (``store.num_graph_entities``); entities added after import are left out, and the
    feature matrices are cut to the graph's rows. Stale features (computed from other inputs than the
    store holds now) are refused by :func:`kgdata.features.load_features`.
    """
    import torch

    from kgdata.features import load_features
    from models.training import KGTensors

    unknown = [m for m in modalities if m not in BRANCHES]
    if unknown:
        raise ImfError(f"unknown modality {unknown[0]!r}; choose from {', '.join(BRANCHES)}")
    encoders = {"text": text_encoder, "image": image_encoder}
    graph = store.num_graph_entities
    features, manifests, notes = {}, [], []
    for branch in modalities:
        if branch == "structure":
            continue
        modality = BRANCH_FEATURES[branch]
        feature_set = load_features(store, modality, encoders[modality])
        matrix, mask = feature_set.matrix[:graph], feature_set.mask[:graph]
        features[branch] = (torch.from_numpy(matrix), torch.from_numpy(mask))
        manifests.append(_manifest(feature_set))
        if feature_set.others:
            flag = "--text-encoder" if modality == "text" else "--image-encoder"
            others = ", ".join(feature_set.others[:4]) + (" …" if len(feature_set.others) > 4 else "")
            notes.append(f"{branch.capitalize()} features: encoder {feature_set.encoder!r}, the newest of "
                         f"{len(feature_set.others) + 1} ({others}); {flag} ENCODER picks another.")

    entity_init = relation_init = None
    if structure_init and "structure" in modalities:
        feature_set = load_features(store, "structure", structure_init)
        if feature_set.relation_matrix is None:
            raise ImfError(f"{feature_set.path}: structure features hold no relation vectors")
        entity_init = torch.from_numpy(feature_set.matrix[:graph])
        relation_init = torch.from_numpy(feature_set.relation_matrix)
        manifests.append(_manifest(feature_set))

    tensors = KGTensors(
        num_entities=graph,
        num_relations=store.num_relations,
        train=store.triples_tensor("train"),
        valid=store.triples_tensor("valid"),
        test=store.triples_tensor("test"),
        features=features,
        structure_entity_init=entity_init,
        structure_relation_init=relation_init,
    )
    return PreparedData(tensors, tuple(modalities), manifests, tuple(notes))


def _manifest(feature_set: "FeatureSet") -> dict:
    return {
        "modality": feature_set.modality,
        "encoder": feature_set.encoder,
        "dim": feature_set.dim,
        "missing": feature_set.missing,
        "input_hash": feature_set.input_hash,
        "computed_from": feature_set.computed_from,
        "graph_input_hash": feature_set.graph_input_hash,
        "options": feature_set.extra.get("options"),  # see imf_cli.runs.check_feature_options
        "path": str(feature_set.path),
    }


#: The presets shipped with imf: ``--config NAME`` finds ``NAME.yaml`` here when no file NAME exists.
PRESETS = Path(__file__).resolve().parent / "presets"


def preset_names() -> list[str]:
    return sorted(path.stem for path in PRESETS.glob("*.yaml"))


def config_path(config_file: Path) -> Path:
    """``config_file``, or the bundled preset it names (``db15k``, ``countries-mm-quick.yaml``) when there
    is no such file: the README's ``imf_cli/presets/…`` paths exist only in a checkout of the source."""
    path = Path(config_file)
    if path.exists() or len(path.parts) != 1:
        return path
    preset = PRESETS / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    return preset if preset.is_file() else path


def read_config_file(config_file: Path | None) -> dict:
    """The values of a YAML config file (empty without one), or of a bundled preset named instead
    (:func:`config_path`). Errors become :class:`ImfError`."""
    from models.config import ConfigError, load_yaml

    from kgdata.errors import DataError
    from kgdata.files import read_text

    if config_file is None:
        return {}
    config_file = config_path(config_file)
    try:
        read_text(config_file, "config file")
    except DataError as error:
        if Path(config_file).exists():
            raise
        raise DataError(f"{error.reason}; or name a preset: {', '.join(preset_names())}", config_file) from None  # a FIFO, a directory or non-UTF-8 bytes: one line with file:line
    try:
        return load_yaml(config_file)
    except ConfigError as error:
        raise ImfError(str(error)) from error
    except OSError as error:
        raise ImfError(f"cannot read config file {config_file}: {error.strerror}") from error


#: The config keys that ``imf train`` sets from a flag of the same name (``train.lr`` ← ``--lr``): an
#: error in one names the flag the user typed.
FLAG_KEYS = (
    "model.dim", "model.fusion", "model.feature_mode", "model.modalities", "model.structure_init", "train.epochs",
    "train.batch_size", "train.lr", "train.contrastive_weight", "train.fused_loss_weight", "train.eval_every",
    "train.patience", "train.checkpoint_every", "train.max_minutes", "train.device", "train.precision", "train.seed",
)


def flag_of(key: str) -> str:
    """``--batch-size`` for ``train.batch_size``."""
    return "--" + key.split(".", 1)[1].replace("_", "-")


def resolve_config(file_values: Mapping[str, Any], flags: Mapping[str, Any], *, typed: bool = False) -> "RunConfig":
    """Defaults ← file values ← flags (None flags are skipped). Config errors become :class:`ImfError`,
    naming the file and line where the file set the key at fault; with ``typed`` (the flags are
    ``imf train``'s own), a bad flag's error names the flag too (:data:`FLAG_KEYS`)."""
    from models.config import ConfigError, ConfigValues, resolve

    overridden = {key for key, value in flags.items() if value is not None}
    try:
        if overridden:  # the file alone: a bad value stays an error when a flag overrides it
            resolve(file_values, {})
    except ConfigError as error:
        if error.key in overridden:
            where = file_values.locate(error) if isinstance(file_values, ConfigValues) else ""
            raise ImfError(f"{where}{error} (a flag overrides it, but the file must be valid on its own)") from error
    try:
        return resolve(file_values, flags)
    except ConfigError as error:
        # A key the config file set (and no flag overrode) is named with the file and its line.
        from_file = isinstance(file_values, ConfigValues) and error.key not in overridden
        where = file_values.locate(error) if from_file else ""
        typed_flag = typed and error.key in overridden and error.key in FLAG_KEYS
        given = f" (given by {flag_of(error.key)})" if typed_flag else ""
        raise ImfError(where + str(error) + given) from error


def _sets_modalities(file_values: Mapping[str, Any]) -> bool:
    model = file_values.get("model")
    return "model.modalities" in file_values or (isinstance(model, Mapping) and "modalities" in model)


def git_commit() -> str | None:
    """The commit of the imf source tree, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def new_run_dir(dataset: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return paths.runs_dir() / f"{dataset}-{stamp}"


@dataclass(frozen=True)
class BranchPlan:
    """Which input branches a training run gets, and which it skips for lack of features.

    Attributes:
        trained: The model's input branches (``structure``, ``visual``, ``text``).
        skipped: Branch → the command that would encode its features, for the branches left out
            because nothing was encoded (empty when the branches were chosen explicitly).
        chosen: True when ``--modalities`` or the config file chose the branches.
    """

    trained: tuple[str, ...]
    skipped: dict[str, str]
    chosen: bool

    def describe(self) -> list[str]:
        """The plan in words, one line each."""
        lines = [f"Training branches: {', '.join(self.trained)}{' (as chosen)' if self.chosen else ''}."]
        for branch, command in self.skipped.items():
            lines.append(f"Skipped {branch}: no {BRANCH_FEATURES[branch]} features; add them with: {command}")
        return lines


def plan_branches(store: "EntityStore", modalities: tuple[str, ...] | None, file_values: Mapping[str, Any]) -> BranchPlan:
    """The branches to train: ``modalities``, else the config file's, else structure plus every encoded one."""
    if modalities is not None:
        return BranchPlan(tuple(modalities), {}, True)
    if _sets_modalities(file_values):
        model = file_values.get("model") if isinstance(file_values.get("model"), Mapping) else {}
        chosen = file_values.get("model.modalities", model.get("modalities"))
        if isinstance(chosen, str):  # "text" or "structure,text", as the config resolver reads it
            chosen = [item.strip() for item in chosen.split(",")]
        return BranchPlan(tuple(chosen or ()), {}, True)
    trained = available_branches(store)
    skipped = {
        branch: f"imf encode {store.name} --modality {modality}"
        for branch, modality in BRANCH_FEATURES.items()
        if branch not in trained
    }
    return BranchPlan(trained, skipped, False)


#: Bytes per trainable parameter while training with Adam: the weight, its gradient and two moments (float32).
TRAINING_BYTES_PER_PARAMETER = 16


def check_model_fits(config: "RunConfig", tensors: "KGTensors", device: "torch.device") -> None:
    """Refuse a model that cannot fit in ``device``'s free memory, saying what was asked and what it needs.

    The parameters are counted on PyTorch's ``meta`` device, which allocates nothing; that costs a
    second or two the first time, so it runs only when a rough count (a ``dim³`` core per branch, the
    fusions' ``rank × dim²`` factors, the embedding tables) could take an eighth of the free memory.
    """
    import torch

    from kgdata.encoders.base import available_memory, require_memory
    from models.imf import build_model

    available = available_memory(device)
    dim, branches = config.model.dim, len(config.model.modalities)
    rough = (
        branches * dim**3
        + (4 * config.model.fusion_rank * dim * (dim + 1) if branches > 1 else 0)
        + branches * (tensors.num_entities + 2 * tensors.num_relations) * dim
    )
    if available is None or TRAINING_BYTES_PER_PARAMETER * rough <= available / 8:
        return
    feature_dims = {m: tensors.feature_dims[m] for m in config.model.modalities if m != "structure"}
    try:
        import torch.fx.experimental._config as fx_config  # lets boolean indexing run on meta tensors

        with fx_config.patch(meta_nonzero_assume_all_nonzero=True), torch.device("meta"):
            model = build_model(
                config.model,
                num_entities=tensors.num_entities,
                num_relations=tensors.num_relations,
                feature_dims=feature_dims,
            )
        parameters = sum(p.numel() for p in model.parameters())
        buffers = sum(b.numel() * b.element_size() for b in model.buffers())
        fusion = sum(p.numel() for name, p in model.named_parameters() if "fusion" in name.split(".")[0])
        count = _how_many(parameters)
    except Exception:  # too large even to describe (the sizes overflow): one dim³ core is a lower bound
        parameters, buffers, fusion = dim**3, 0, 0
        count = f"at least {_how_many(parameters)}"
    if 2 * fusion > parameters:  # the fusion's factors, not the cores, are what does not fit
        asked = f"model.fusion_rank {config.model.fusion_rank} at model.dim {dim}"
        advice = "choose a smaller model.fusion_rank (the default is 2) or --dim"
    else:
        asked, advice = f"model.dim {dim}", "choose a smaller --dim"
    require_memory(
        TRAINING_BYTES_PER_PARAMETER * parameters + buffers,
        device,
        f"{asked} asks for a model of {count} parameters, which to train (weights, gradients and "
        f"Adam's two moments, float32)",
        advice,
    )


def _how_many(number: int) -> str:
    """``1,234,567``, or ``10^42`` past 10^15: a count of 300 digits is no help in an error line."""
    return f"{number:,}" if number < 10**15 else f"10^{len(str(number)) - 1}"


def _check_options_apply(
    branches, structure_init: str | None, text_encoder: str | None, image_encoder: str | None
) -> None:
    """Refuse a command-line option for a branch the run does not train: it was accepted and ignored
    (and ``--structure-init`` recorded in the run as if it had been used)."""
    for flag, value, branch in (
        ("--structure-init", structure_init, "structure"),
        ("--text-encoder", text_encoder, "text"),
        ("--image-encoder", image_encoder, "visual"),
    ):
        if value is not None and branch not in branches:
            raise ImfError(
                f"{flag} {value} applies to the {branch} branch, which this run does not train "
                f"(branches: {', '.join(branches)}); leave it out or add {branch} to --modalities"
            )


def _check_run_dir(run_dir: Path, *, given: bool = False) -> None:
    """Refuse a run directory that cannot be a new run: a file, a non-empty directory, an unwritable place.

    Whether it can be created is tried (and what the try created removed again), since permission bits
    say nothing for root, on a read-only file system or in ``/proc``. ``given``: the directory came
    from ``--run-dir`` (the message names the flag), else it is the workspace's (and an unwritable
    workspace is reported as such).
    """
    if os.path.lexists(run_dir) and not run_dir.is_dir():
        raise ImfError(f"run directory {run_dir} is not a directory (a file is in the way)")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise ImfError(f"run directory {run_dir} is not empty; runs are write-once (use --resume to continue one)")
    for above in Path(os.path.abspath(run_dir)).parents:  # inside a run, it made that run unremovable
        ran = any((above / name).exists() for name in ("trace.jsonl", "last.pt", "best.pt"))
        if ran and (above / "config.yaml").is_file():
            raise ImfError(f"run directory {run_dir} is inside the run {above}; put a run beside the others, not in one")
    parent = run_dir.parent
    while not os.path.lexists(parent):  # lexists, not exists: below a file every path "does not exist"
        parent = parent.parent
    # a --run-dir that cannot be is bad input (exit 2); an unusable workspace is a fault of the machine (1)
    fault = ImfError if given else EnvironmentFault
    if not parent.is_dir():  # the workspace (or the --run-dir given) lies below a file: the place is broken
        raise fault(f"cannot create run directory {run_dir}: {parent} is a file, not a directory")
    created = [p for p in (run_dir, *run_dir.parents) if not os.path.lexists(p)]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as error:
        if not given:
            from kgdata.locking import workspace_fault

            raise workspace_fault(error) from None
        reason = error.strerror or type(error).__name__
        raise fault(
            f"cannot create the run directory {run_dir} given by --run-dir: {reason}; choose a writable place"
        ) from None
    finally:
        for directory in created:  # deepest first
            try:
                directory.rmdir()
            except OSError:
                break


#: What a start writes before its first checkpoint (and the temporary files of checkpoint writes).
_START_FILES = ("config.yaml", "trace.jsonl", "best.pt.tmp", "last.pt.tmp")


def _remove_failed_start(run_dir: Path, existed: bool) -> None:
    """After a failed start, remove what it wrote: a run without a checkpoint is no run."""
    if not run_dir.is_dir() or any((run_dir / name).exists() for name in paths.CHECKPOINTS):
        return
    for name in _START_FILES:
        (run_dir / name).unlink(missing_ok=True)
    if not existed:
        try:
            run_dir.rmdir()
        except OSError:
            pass  # something else is in it: leave it


def train_model(
    dataset: str,
    *,
    config_file: Path | None = None,
    config_values: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
    modalities: tuple[str, ...] | None = None,
    text_encoder: str | None = None,
    image_encoder: str | None = None,
    structure_init: str | None = None,
    run_dir: Path | None = None,
    progress: bool = True,
    on_epoch: "EpochLogger | None" = None,
    log: Callable[[str], None] | None = None,
    place_unseen: bool = True,
    typed_flags: bool = False,
) -> "TrainResult":
    """Train IMF on an imported dataset into a new, write-once run directory.

    With ``place_unseen`` (and a text or image branch), the last step fits the placement of entities
    outside the graph (:func:`_place_unseen`); without, a service fits it on first use.

    The config is layered as defaults ← ``config_file`` (or ``config_values``, a mapping of the same
    shape) ← ``flags``. ``progress`` shows a rich progress bar; ``on_epoch`` is called with each
    epoch's line of text (for logs, when there is no terminal); ``log`` receives the branch plan
    (:class:`BranchPlan`). ``typed_flags``: ``flags`` are ``imf train``'s options, and an error names them.

    Everything that can be checked is checked before the run directory is created (the config, the
    device, the features, that the model fits in memory, the run directory itself); if training still
    fails before its first checkpoint, the directory is removed, so no run without a checkpoint is left.
    The dataset is read under its read lock (:mod:`kgdata.locking`).
    """
    from kgdata.locking import locked_store

    flags = dict(flags or {})
    file_values = dict(config_values) if config_values is not None else read_config_file(config_file)
    given = run_dir is not None
    run_dir = Path(run_dir) if given else new_run_dir(dataset)
    if _main_process():
        _check_run_dir(run_dir, given=given)
    with locked_store(dataset, "read") as store:
        plan = plan_branches(store, modalities, file_values)
        if modalities is not None or not plan.chosen:
            flags["model.modalities"] = list(plan.trained)
        if structure_init is not None:
            flags["model.structure_init"] = structure_init
        config = resolve_config(file_values, flags, typed=typed_flags)
        _check_options_apply(config.model.modalities, structure_init, text_encoder, image_encoder)
        # a config file's structure_init (the paper preset's) has nothing to initialise without the branch
        structure_init = config.model.structure_init if "structure" in config.model.modalities else None
        device = pick_device(config.train.device)
        prepared = prepare_data(
            store,
            tuple(config.model.modalities),
            text_encoder=text_encoder,
            image_encoder=image_encoder,
            structure_init=structure_init,
        )
        metadata = {
            "dataset": store.name,
            "dataset_hash": store.content_hash,
            "store": str(store.path),
            "features": prepared.manifests,
            "structure_init": structure_init,
            "git_commit": git_commit(),
        }
    check_model_fits(config, prepared.tensors, device)
    if log is not None:
        for line in (*plan.describe(), *prepared.notes):
            log(line)
    from models.training import train

    existed = run_dir.exists()

    def start() -> "TrainResult":
        if _main_process():
            run_dir.mkdir(parents=True, exist_ok=True)
        with _lock(run_dir):
            result = train(
                prepared.tensors,
                config,
                run_dir,
                metadata=metadata,
                progress=progress,
                on_epoch_end=_epoch_lines(on_epoch, config.train.epochs),
            )
            if place_unseen:
                _place_unseen(result, prepared, progress=progress, log=log)
            return result

    return _run_training(run_dir, start, config, existed=existed)


#: Said before the placement fit (it can take minutes on a large graph, after the training's budget).
PLACEMENT_NOTE = (
    "Fitting how entities added later are placed in each branch (for imf predict --new-text); "
    "Ctrl+C skips this step: the run is already saved."
)
#: Said when Ctrl+C skipped it.
PLACEMENT_SKIPPED = (
    "Skipped the placement of new entities (interrupted): the run is complete and saved; imf predict "
    "--new-text and imf explore fit the placement on first use."
)


def _place_unseen(
    result: "TrainResult", prepared: PreparedData, *, progress: bool, log: Callable[[str], None] | None = None
) -> None:
    """The step after training: fit and store the placement of entities outside the graph, for the best
    checkpoint (``inductive-best.safetensors``; see :mod:`imf_cli.unseen`). Only the main process writes it.

    With ``log`` (the CLI's notes), the step is announced, and Ctrl+C during it skips it (the run is
    complete; a service fits the placement on first use) instead of ending the command as interrupted.
    """
    import torch

    from imf_cli.unseen import write_run_placement

    if not (_main_process() and (Path(result.run_dir) / "best.pt").is_file()):
        return
    if not prepared.tensors.features:  # structure only: nothing to place
        return
    facts = torch.cat([prepared.tensors.train, prepared.tensors.valid])
    if log is not None:
        log(PLACEMENT_NOTE)
    try:
        write_run_placement(result.run_dir, prepared.tensors.features, facts, progress=progress)
    except KeyboardInterrupt:
        if log is None:
            raise
        log(PLACEMENT_SKIPPED)


def _run_training(
    run_dir: Path, start: Callable[[], "TrainResult"], config: "RunConfig | None" = None, *, existed: bool = True
) -> "TrainResult":
    """Run ``start()`` (a training or a resume), turning its failures into :class:`ImfError`; a new run
    (``config`` given; ``existed``: whether its directory was there before) that fails before its
    first checkpoint is removed (only by rank 0 under torchrun)."""
    import torch

    from models.checkpoint import CheckpointError

    main_process = _main_process()
    try:
        return start()
    except BaseException as error:
        if config is not None and main_process:
            _remove_failed_start(run_dir, existed)
        if isinstance(error, (FileExistsError, ValueError, CheckpointError)):
            raise ImfError(str(error)) from error
        if isinstance(error, torch.linalg.LinAlgError):
            raise ImfError(
                f"a linear-algebra step failed on the features ({str(error).splitlines()[0]}); check them for "
                f"extreme values (imf features NAME) and re-encode"
            ) from None
        if is_out_of_memory(error):
            dims = f" (model.dim {config.model.dim}, batch size {config.train.batch_size})" if config else ""
            raise EnvironmentFault(f"out of memory while training{dims}; choose a smaller --dim or --batch-size") from None
        if isinstance(error, OSError) and not isinstance(error, FileExistsError):
            from kgdata.locking import workspace_fault

            raise workspace_fault(error) from None
        raise


def _main_process() -> bool:
    """True outside torchrun, and on its rank 0, the process that writes the run directory."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def _lock(run_dir: Path):
    """The run's :func:`~imf_cli.runs.training_lock`, held by the main process only (under torchrun
    every rank trains the same run)."""
    import contextlib

    return training_lock(run_dir) if _main_process() else contextlib.nullcontext()


#: Receives one line of text per finished epoch.
EpochLogger = Callable[[str], None]


def epoch_line(record: Mapping[str, Any], epochs: int) -> str:
    """One finished epoch of a trace, as a log line: epoch, loss, valid MRR when evaluated, best, seconds."""
    loss = (record.get("loss") or {}).get("total")
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {loss:.4f}" if loss is not None else "loss n/a"]
    valid = record.get("valid")
    if isinstance(valid, Mapping) and "fused" in valid:
        parts.append(f"valid MRR {valid['fused']['mrr']:.4f}")
    if record.get("best_valid_mrr") is not None:
        parts.append(f"best {record['best_valid_mrr']:.4f} at epoch {record['best_epoch']}")
    seconds = sum((record.get("seconds") or {}).values())
    parts.append(f"{seconds:.1f} s")
    return "  ".join(parts)


def _epoch_lines(on_epoch: EpochLogger | None, epochs: int) -> Callable[[dict], None] | None:
    if on_epoch is None:
        return None
    return lambda record: on_epoch(epoch_line(record, epochs))


def resume_model(
    run_dir: Path,
    *,
    progress: bool = True,
    on_epoch: "EpochLogger | None" = None,
    place_unseen: bool = True,
    max_minutes: float | None = None,
    changes: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    log: Callable[[str], None] | None = None,
) -> "TrainResult":
    """Continue a killed run with the dataset and features it recorded (``place_unseen``: see :func:`train_model`).

    A run killed before it wrote any ``last.pt`` starts again from epoch 0 with its recorded config
    and seed, which gives the run it would have been. ``max_minutes`` gives this invocation a time
    budget in place of the recorded ``train.max_minutes`` (None keeps it). ``changes`` sets schedule
    keys (:data:`models.config.RESUME_KEYS`, e.g. ``{"train.epochs": 300}`` to train a finished run
    further); any other key is refused. ``dataset``, when given, must be the run's dataset.
    """
    from kgdata.locking import locked_store
    from models.config import ConfigError
    from models.training import restart, resume

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ImfError(f"--resume {run_dir} is not a run directory")
    document = run_metadata(run_dir)
    meta = document["metadata"]
    if dataset is not None and dataset != meta["dataset"]:
        raise ImfError(f"run {run_dir} was trained on dataset {meta['dataset']!r}, not {dataset!r}")
    try:  # checked before any data loads
        config = run_config(run_dir, document).resumed_with(changes).with_max_minutes(max_minutes)
    except ConfigError as error:
        raise ImfError(f"--resume {run_dir}: {error}") from None
    pick_device(config.train.device)
    _check_best_checkpoint(run_dir, document)
    with locked_store(meta["dataset"], "read") as store:
        check_same_dataset(store, meta, run_dir)
        prepared = prepare_data(store, tuple(config.model.modalities), **_recorded_encoders(meta))
    lines = _epoch_lines(on_epoch, config.train.epochs)

    def start() -> "TrainResult":
        with _lock(run_dir):
            if not (run_dir / "last.pt").exists():
                trained = len(read_trace(run_dir))
                if trained and log is not None:
                    log(
                        f"{run_dir / 'last.pt'} is missing: the {count(trained, 'epoch')} that trace.jsonl records "
                        "are trained again from epoch 0, with the run's config and seed"
                    )
                result = restart(run_dir, prepared.tensors, config, progress=progress, on_epoch_end=lines)
            else:
                try:
                    result = resume(
                        run_dir,
                        prepared.tensors,
                        progress=progress,
                        on_epoch_end=lines,
                        max_minutes=max_minutes,
                        changes=changes,
                        expected=config,
                    )
                except ConfigError as error:
                    raise ImfError(f"--resume {run_dir}: {error}") from None
            if place_unseen:
                _place_unseen(result, prepared, progress=progress, log=log)
            return result

    return _run_training(run_dir, start)


def _check_best_checkpoint(run_dir: Path, document: dict) -> None:
    """Refuse to resume a run whose ``best.pt`` is there but cannot be loaded, or is another run's (other
    data, or a config beyond the schedule): training on would report success while the run's best model
    stays one that ``imf eval`` refuses (a later epoch rewrites it only if it is better)."""
    from imf_cli.run_loading import check_checkpoint_is_the_runs
    from models.checkpoint import CheckpointError, check_same_data, verify_checkpoint

    best = run_dir / "best.pt"
    if not os.path.lexists(best):
        return  # none yet (or removed): the next better validation writes it
    advice = (
        "Move best.pt aside to resume (the next better validation writes a new one), or evaluate the last "
        f"weights: imf eval {run_dir} --checkpoint last"
    )
    try:
        payload = verify_checkpoint(best)
    except CheckpointError as error:
        raise ImfError(f"--resume {run_dir}: {error}; the run's best model is lost. {advice}") from None
    fingerprint = (document.get("data") or {}).get("fingerprint")
    try:
        check_same_data(best, payload, fingerprint if isinstance(fingerprint, str) else None)
        check_checkpoint_is_the_runs(payload["config"], run_dir, document, "best")
    except (CheckpointError, ImfError) as error:
        raise ImfError(f"--resume {run_dir}: {error}. {advice}") from None


def _recorded_encoders(meta: dict) -> dict:
    by_modality = {m.get("modality"): m.get("encoder") for m in meta.get("features", [])}
    return {
        "text_encoder": by_modality.get("text"),
        "image_encoder": by_modality.get("image"),
        "structure_init": meta.get("structure_init"),
    }
