"""Run configuration: one frozen dataclass per concern, merged strictly from layers.

All defaults live here, as class-level defaults that follow the IMF reference where it has one
(dim 256, Adam at 5e-4, batch 256, TuckER's dropouts and label smoothing, fusion rank 2, patience 5
evaluations, evaluation every 10 epochs). :func:`resolve` layers defaults ← a YAML file's mapping ←
CLI flags. An unknown key raises :class:`ConfigError` naming it. A run directory and a checkpoint
store :meth:`RunConfig.to_dict`, a plain dict, never a pickled object.

This module imports neither torch nor anything heavy, so the CLI can validate a config cheaply.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import reprlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FEATURE_MODES = ("finetune", "project")
#: The largest seed: torch's generators take a signed 64-bit integer.
MAX_SEED = 2**63 - 1
#: The largest batch size: torch splits index tensors with 32-bit sizes.
MAX_SIZE = 2**31 - 1
FUSION_MODES = ("learned", "learned-per-relation", "mean")
#: How the decision fusion combines the branches: their logits, or their probabilities (the reference).
DECISION_SPACES = ("logit", "probability")
#: How the TuckER core is drawn: ``xavier`` (the IMF reference) or ``uniform`` U(-1, 1) (TuckER, PyKEEN).
CORE_INITS = ("xavier", "uniform")
#: How feature vectors become ``dim``-vectors: PCA, or the reference's average pooling of L2-normalised features.
FEATURE_REDUCTIONS = ("pca", "avgpool")
#: Label smoothing: ``tucker`` gives ``(1-ε)·y + 1/N`` when ε > 0; ``pykeen`` gives ``(1-ε)·y + ε·(1-y)/(N-1)``.
SMOOTHING_MODES = ("tucker", "pykeen")
#: The branches ``model.modalities`` can name (the fused multimodal branch comes with two or more).
MODALITY_BRANCHES = ("structure", "visual", "text")

#: Which views the contrastive term aligns: the modalities with each other (the paper), each modality
#: with the fused (multimodal) vector, or both.
CONTRASTIVE_PAIRS = ("modalities", "fused", "all")
#: The matmul precision of the training step: ``auto`` is bf16 autocast on CUDA and float32 on the CPU.
PRECISIONS = ("auto", "fp32", "bf16")


class ConfigError(ValueError):
    """An unknown key, or a value of the wrong type or out of range; ``key`` is the dotted key at fault
    (``"train.lr"``, or a section such as ``"model"``) where one is."""

    def __init__(self, message: str, *, key: str | None = None):
        super().__init__(message)
        self.key = key


class ConfigValues(dict):
    """The values of a config file (:func:`load_yaml`), with where each key was written: ``path`` and
    ``lines`` (dotted key or section → its line, from 1), so that an error can name the file and line."""

    def __init__(self, values: Mapping[str, Any], path: str | Path, lines: Mapping[str, int]):
        super().__init__(values)
        self.path = Path(path)
        self.lines = dict(lines)

    def locate(self, error: ConfigError) -> str:
        """``"FILE, line N: "`` for an error about a key this file set (a key merged in with ``<<: *anchor``
        has no line of its own: its section's); ``""`` otherwise."""
        line = self.lines.get(error.key) if error.key else None
        section = error.key.partition(".")[0] if error.key else ""
        if line is None and f"{section}.<<" in self.lines:  # perhaps merged in: the section's line
            line = self.lines.get(section)
        return f"{self.path}, line {line}: " if line else ""


@dataclass(frozen=True)
class ModelConfig:
    """The model's shape; see :class:`models.imf.IMF`.

    ``detach_fusion_inputs`` stops the multimodal branch's gradient at the modality vectors it fuses.
    Trained jointly (False, as the paper does) its loss pulls on every modality branch and holds them
    back; see ``docs/benchmarks.md`` for the Countries-MM runs behind the default. ``fusion_residual``
    adds the mean of the fused vectors to the fusion's output (see :mod:`models.fusion`).

    The switches that restore the IMF reference code (``imf_cli/presets/paper.yaml`` sets them all):
    ``fusion_relu`` (a ReLU after each Mutan projection and after the sum), ``decision_space:
    probability`` (the branches' sigmoid probabilities are mixed, not their logits),
    ``relation_dropout_per_query`` (each query draws its own dropout mask on ``W_r``),
    ``feature_reduction: avgpool`` (features are L2-normalised and average-pooled to ``dim``, not
    reduced by PCA), ``core_init: xavier`` and ``structure_init: gat`` (the structure branch starts
    from the GAT encoder's vectors; ``imf encode NAME --modality structure`` makes them).
    ``interactive: false`` drops the multimodal branch (the ablation without interactive fusion).
    ``fusion_gradient_scale`` scales the multimodal loss's gradient where it reaches the modality
    vectors, when the inputs are not detached (1: joint training, as the paper; between 0 and 1, a
    damped coupling).
    """

    dim: int = 256
    modalities: tuple[str, ...] = ("structure", "visual", "text")
    feature_mode: str = "finetune"
    fusion: str = "learned"
    fusion_rank: int = 2
    fusion_dropout: float = 0.2
    detach_fusion_inputs: bool = True
    fusion_residual: bool = True
    input_dropout: float = 0.3
    relation_dropout: float = 0.4
    hidden_dropout: float = 0.5
    fusion_relu: bool = False
    decision_space: str = "logit"
    relation_dropout_per_query: bool = False
    feature_reduction: str = "pca"
    core_init: str = "xavier"
    structure_init: str | None = None
    interactive: bool = True
    fusion_gradient_scale: float = 1.0

    def __post_init__(self) -> None:
        _check(self.dim > 0, "model.dim must be positive")
        _check(self.fusion_rank > 0, "model.fusion_rank must be positive")
        _check(
            len(self.modalities) > 0 and len(set(self.modalities)) == len(self.modalities),
            f"model.modalities must be distinct and non-empty, got {list(self.modalities)}",
        )
        unknown = [m for m in self.modalities if m not in MODALITY_BRANCHES]
        _check(
            not unknown,
            f"model.modalities holds the unknown branch {unknown[0] if unknown else ''!r}; "
            f"choose from {', '.join(MODALITY_BRANCHES)}",
        )
        _check(self.feature_mode in FEATURE_MODES, f"model.feature_mode must be one of {FEATURE_MODES}")
        _check(self.fusion in FUSION_MODES, f"model.fusion must be one of {FUSION_MODES}")
        _check(self.decision_space in DECISION_SPACES, f"model.decision_space must be one of {DECISION_SPACES}")
        _check(self.core_init in CORE_INITS, f"model.core_init must be one of {CORE_INITS}")
        _check(
            self.feature_reduction in FEATURE_REDUCTIONS,
            f"model.feature_reduction must be one of {FEATURE_REDUCTIONS}",
        )
        _check(
            self.structure_init is None or (isinstance(self.structure_init, str) and self.structure_init.strip() != ""),
            "model.structure_init must name a structure encoder (e.g. gat) or be null",
        )
        for name in ("fusion_dropout", "input_dropout", "relation_dropout", "hidden_dropout"):
            _check(0.0 <= getattr(self, name) < 1.0, f"model.{name} must be in [0, 1)")
        _check(0.0 <= self.fusion_gradient_scale <= 1.0, "model.fusion_gradient_scale must be in [0, 1]")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop; see :func:`models.training.train`.

    ``patience`` counts evaluations (every ``eval_every`` epochs) without a better valid MRR; 0 turns
    early stopping off. ``lr_decay`` is the per-epoch factor of an ``ExponentialLR`` (1.0: constant).
    ``last.pt`` (what :func:`models.training.resume` continues from) is written at the end of the
    epoch in which ``checkpoint_minutes`` have passed since the last write (PyKEEN's
    ``checkpoint_frequency`` also counts minutes), every ``checkpoint_every`` epochs when that is
    above 0, on SIGINT/SIGTERM, and always at the end. With the optimizer state a four-branch model's
    checkpoint is about ``3 × 4 × 4 d³`` bytes at dim ``d`` (800 MB at 256), so writing it every epoch
    can cost more than the epoch. A run killed before its first ``last.pt`` resumes from epoch 0 with
    its recorded seed. ``seed`` None draws one, which the run records. ``device`` is ``"auto"``,
    ``"cpu"`` or ``"cuda[:i]"``.
    ``label_smoothing_mode`` picks how ``label_smoothing`` (ε) is applied (see :data:`SMOOTHING_MODES`);
    ε = 0 turns smoothing off in both.
    ``relations_per_batch`` (K > 0) builds each batch from at most K relations: every epoch, each
    relation's queries are shuffled and cut into pieces of ``batch_size / K``, the pieces are shuffled,
    and K of them make a batch. Every training query is still seen once per epoch; a batch then
    builds ``K`` relation matrices ``W_r`` instead of one per distinct relation (about 68 of 128 queries
    on DB15K), which dominates the step's arithmetic on graphs with many relations. 0 draws batches
    uniformly.
    ``max_minutes`` (above 0) is a wall-clock budget for one invocation of the loop (a run, or each
    resume of it): at the end of the first epoch that ends after it, the run evaluates valid if that
    epoch had no evaluation, writes ``last.pt`` and stops without being finished, so ``imf train
    --resume`` continues it. 0: no budget.
    ``precision`` is the autocast of the training step: ``bf16`` (bfloat16 matmuls, float32 weights,
    losses and optimizer), ``fp32``, or ``auto`` (bf16 on CUDA, fp32 on the CPU). Evaluation always
    runs in float32.
    ``cuda_graphs`` runs the training step on CUDA as one captured graph, replayed per batch (see
    :mod:`models.graphs`): the eager step is bound by the host's dispatch there. It changes no value
    of the loss; False keeps the eager step. Ignored on the CPU and under DDP.
    ``contrastive_weight`` and ``temperature`` are our choices: the reference never calls its contrastive
    loss, so it gives no values. ``contrastive_pairs`` picks the views it aligns (:data:`CONTRASTIVE_PAIRS`). ``fit_fusion_on_valid`` (with ``model.fusion: learned``) refits the
    decision-fusion weights on the valid queries at every evaluation and holds them fixed in between
    (see :mod:`models.calibration`); False learns them by gradient on the training loss, as the paper does.
    The valid MRR that selects the epoch is then cross-fitted: the valid triples are split in two
    halves, each half is ranked with the weights fitted on the other, so no query selects the epoch
    with weights fitted on itself. Valid is always filtered with the train and valid triples (never
    test), in training and in ``imf eval --split valid`` alike.
    ``valid_drop_overlap`` selects on the valid triples that are not also in train (all of them still
    filter): what the epoch, ``best.pt`` and the fitted decision weights are chosen on is then no fact the
    model trained on (:mod:`models.splits`; DB15K's IMF split has 1,241 such valid triples). ``imf eval
    --split valid --drop-overlap`` ranks the same triples.
    ``fused_loss_weight`` weighs the BCE of the fused score in the loss. The paper uses 1; its gradient
    couples the branches, and with weights fitted on valid it has nothing of its own to train, so the
    default is 0: each branch learns from its own loss (and the contrastive term), and the fusion
    combines them. ``imf_cli/presets/paper.yaml`` restores the paper's joint training.
    """

    epochs: int = 1000
    batch_size: int = 256
    lr: float = 5e-4
    lr_decay: float = 1.0
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    label_smoothing_mode: str = "tucker"
    contrastive_weight: float = 0.1
    contrastive_pairs: str = "modalities"
    fused_loss_weight: float = 0.0
    temperature: float = 0.1
    eval_every: int = 10
    patience: int = 5
    checkpoint_every: int = 0
    checkpoint_minutes: float = 10.0
    max_minutes: float = 0.0
    relations_per_batch: int = 8
    precision: str = "auto"
    cuda_graphs: bool = True
    fit_fusion_on_valid: bool = True
    valid_drop_overlap: bool = False
    seed: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_every"):
            _check(getattr(self, name) > 0, f"train.{name} must be positive")
        for name in ("epochs", "eval_every", "patience", "checkpoint_every"):
            value = getattr(self, name)
            _check(value <= MAX_SIZE, f"train.{name} must be at most {MAX_SIZE}, got {value}")
        _check(self.batch_size > 1, "train.batch_size must be at least 2 (batch norm needs two rows)")
        _check(self.batch_size <= MAX_SIZE, f"train.batch_size must be at most {MAX_SIZE}, got {self.batch_size}")
        _check(self.lr > 0, "train.lr must be positive")
        _check(0 < self.lr_decay <= 1, "train.lr_decay must be in (0, 1]")
        _check(self.weight_decay >= 0, "train.weight_decay must be non-negative")
        _check(0 <= self.label_smoothing < 1, "train.label_smoothing must be in [0, 1)")
        _check(
            self.label_smoothing_mode in SMOOTHING_MODES,
            f"train.label_smoothing_mode must be one of {SMOOTHING_MODES}",
        )
        _check(self.contrastive_weight >= 0, "train.contrastive_weight must be non-negative")
        _check(self.contrastive_pairs in CONTRASTIVE_PAIRS, f"train.contrastive_pairs must be one of {CONTRASTIVE_PAIRS}")
        _check(self.fused_loss_weight >= 0, "train.fused_loss_weight must be non-negative")
        _check(self.temperature > 0, "train.temperature must be positive")
        _check(self.patience >= 0, "train.patience must be non-negative")
        _check(self.checkpoint_every >= 0, "train.checkpoint_every must be non-negative (0: by time only)")
        _check(self.checkpoint_minutes > 0, "train.checkpoint_minutes must be positive")
        _check(self.max_minutes >= 0, "train.max_minutes must be non-negative (0: no time budget)")
        _check(self.relations_per_batch >= 0, "train.relations_per_batch must be non-negative (0: uniform batches)")
        _check(self.precision in PRECISIONS, f"train.precision must be one of {PRECISIONS}")
        _check(
            re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
            f"train.device must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}",
        )
        _check(
            self.seed is None or 0 <= self.seed <= MAX_SEED,
            f"train.seed must be an integer from 0 to {MAX_SEED} (2^63 - 1), got {self.seed}",
        )


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation; see :func:`models.evaluation.evaluate`."""

    batch_size: int = 512

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "eval.batch_size must be positive")
        _check(self.batch_size <= MAX_SIZE, f"eval.batch_size must be at most {MAX_SIZE}, got {self.batch_size}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run, one section per concern."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        fitted = self.model.fusion in ("learned", "learned-per-relation") and self.train.fit_fusion_on_valid
        _check(
            self.model.fusion == "mean" or fitted or self.train.fused_loss_weight > 0,
            f"model.fusion {self.model.fusion!r} learns its weights from the fused loss, but "
            "train.fused_loss_weight is 0; set it above 0"
            + (" or set train.fit_fusion_on_valid: true" if self.model.fusion != "mean" else ""),
        )

    def fits_fusion_on_valid(self, num_branches: int) -> bool:
        """Whether training fits the decision weights on valid (by :mod:`models.calibration`, not by
        gradient): learned fusion with ``train.fit_fusion_on_valid``, and more than one branch. Valid
        figures of the fused score are then cross-fitted, never ranked with weights fitted on them."""
        return (
            self.train.fit_fusion_on_valid
            and self.model.fusion in ("learned", "learned-per-relation")
            and num_branches > 1
        )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """A plain nested dict (lists, not tuples), safe for YAML and ``torch.load(weights_only=True)``."""
        return {
            section.name: {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(getattr(self, section.name)).items()
            }
            for section in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """The inverse of :meth:`to_dict`; as strict as :func:`resolve`.

        A stored config written before a key of :data:`ADDED_KEYS` existed gets the value that key's
        behaviour had then, so an older checkpoint rebuilds (and resumes) as the model it was trained as.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a config is a mapping of sections, not a {type(data).__name__}")
        for section, values in data.items():
            if values is not None and not isinstance(values, Mapping):
                raise ConfigError(f"section {section!r} is a {type(values).__name__}, not a mapping", key=str(section))
        data = {section: dict(values or {}) for section, values in data.items()}
        for key, value in ADDED_KEYS.items():
            section, name = key.split(".")
            if isinstance(data.get(section), dict):
                data[section].setdefault(name, value)
        return resolve(data)

    def with_seed(self, seed: int) -> RunConfig:
        return dataclasses.replace(self, train=dataclasses.replace(self.train, seed=seed))

    def with_max_minutes(self, minutes: float | None) -> RunConfig:
        """This config with ``train.max_minutes`` set (None: unchanged); checked like any other value."""
        if minutes is None:
            return self
        return dataclasses.replace(self, train=dataclasses.replace(self.train, max_minutes=float(minutes)))

    def changed_from(self, other: RunConfig) -> dict[str, Any]:
        """The keys (``section.name``) whose values in this config differ from ``other``'s, with this
        config's values."""
        theirs = other.to_dict()
        return {
            f"{section}.{key}": value
            for section, values in self.to_dict().items()
            for key, value in values.items()
            if theirs.get(section, {}).get(key) != value
        }

    def differences_beyond_schedule(self, other: RunConfig) -> list[str]:
        """The keys (``section.name``) whose values differ between this config and ``other``, apart from
        the schedule keys a resume may change (:data:`RESUME_KEYS`): non-empty means two runs, not one."""
        return [key for key in self.changed_from(other) if key not in RESUME_KEYS]

    def resumed_with(self, changes: Mapping[str, Any] | None) -> RunConfig:
        """This config with the schedule keys of a resumed run changed (``{"train.epochs": 300}``).

        Only the keys of :data:`RESUME_KEYS` may change: they decide how long and where a run goes
        on, not what it trains. None values are skipped; the result is checked like any config.

        Raises:
            ConfigError: For any other key, or a value out of range.
        """
        given = {key: value for key, value in (changes or {}).items() if value is not None}
        fixed = sorted(set(given) - set(RESUME_KEYS))
        if fixed:
            raise ConfigError(
                f"{', '.join(fixed)} cannot change when a run is resumed: a run keeps the model and "
                f"training settings it started with; only {', '.join(RESUME_KEYS)} can",
                key=fixed[0],
            )
        return resolve(self.to_dict(), given) if given else self


SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}

#: What ``imf train --resume`` may change: how long a run goes on, how often it evaluates and saves,
#: and where it runs. Everything else (the model, the optimiser, the data, the seed) is the run's own.
RESUME_KEYS: tuple[str, ...] = (
    "train.epochs",
    "train.patience",
    "train.eval_every",
    "train.checkpoint_every",
    "train.checkpoint_minutes",
    "train.max_minutes",
    "train.device",
)

#: Keys added after runs were first recorded → the value that reproduces what the code did before the
#: key existed (the paper's scheme: joint fusion inputs, no residual, fused BCE, weights by gradient).
#: Only :meth:`RunConfig.from_dict` uses them, for stored configs that lack the key.
ADDED_KEYS: dict[str, Any] = {
    "model.detach_fusion_inputs": False,
    "model.fusion_residual": False,
    "model.fusion_relu": False,
    "model.decision_space": "logit",
    "model.relation_dropout_per_query": False,
    "model.feature_reduction": "pca",
    "model.core_init": "xavier",
    "model.structure_init": None,
    "model.interactive": True,
    "model.fusion_gradient_scale": 1.0,
    "train.contrastive_pairs": "modalities",
    "train.valid_drop_overlap": False,
    "train.fused_loss_weight": 1.0,
    "train.fit_fusion_on_valid": False,
    "train.label_smoothing_mode": "tucker",
    "train.relations_per_batch": 0,
    "train.checkpoint_minutes": 10.0,
    "train.precision": "auto",
    "train.max_minutes": 0.0,
    "train.cuda_graphs": False,
}


def resolve(file_values: Mapping[str, Any] | None = None, flags: Mapping[str, Any] | None = None) -> RunConfig:
    """Defaults ← ``file_values`` ← ``flags``, checked strictly.

    Both layers are nested by section (``{"train": {"lr": 0.001}}``) or use dotted keys
    (``{"train.lr": 0.001}``). In ``flags``, a None value means "flag not given" and is skipped. In
    ``file_values``, None is a value (``seed: null`` draws a seed). Strings are converted to the
    field's type, so ``"5e-4"`` (which YAML reads as a string) is accepted for a float.

    Raises:
        ConfigError: For an unknown section or key (naming it and suggesting a near match), or a
            value that has the wrong type or is out of range.
    """
    merged: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for layer, skip_none in ((file_values, False), (flags, True)):
        for key, value in _flatten(layer or {}):
            if value is None and skip_none:
                continue
            section, _, name = key.partition(".")
            merged[section][name] = value
    return RunConfig(**{section: _build(SECTIONS[section], section, values) for section, values in merged.items()})


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error: PyYAML keeps the last
    silently, so a second ``model:`` section would drop the first one's settings without a word."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor" merges keys that may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"


class _UserConfigLoader(_UniqueKeyLoader):
    """The loader of what people write (``--config`` files, ``--grid`` values): numbers as YAML 1.2 reads
    them. PyYAML follows YAML 1.1, where ``dim: 010`` is octal 8, ``dim: 1:0`` base-60 60, and ``1e-1``
    a string while ``0.1`` is a float: a config trained other numbers than the ones written. Here a
    decimal is decimal (``010`` is 10), ``0o``/``0x`` mark octal and hexadecimal, and an exponent needs
    no dot. Booleans stay PyYAML's. Files imf writes itself (``yaml.safe_dump``) are read back with the
    loader that wrote them."""

    yaml_implicit_resolvers = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag not in (_INT, _FLOAT)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_core_int(self, node) -> int:
        text = self.construct_scalar(node)
        sign, digits = (-1, text[1:]) if text[0] == "-" else (1, text.lstrip("+"))
        base = {"0o": 8, "0x": 16}.get(digits[:2], 10)
        return sign * int(digits[2:] if base != 10 else digits, base)


_UserConfigLoader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_UserConfigLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+.0123456789"),
)
_UserConfigLoader.add_constructor(_INT, _UserConfigLoader.construct_core_int)


def parse_scalar(text: str) -> Any:
    """One value as a ``--config`` file would read it (see :class:`_UserConfigLoader`); raises yaml.YAMLError."""
    return yaml.load(text, Loader=_UserConfigLoader)  # noqa: S506 (a SafeLoader)


def parse_yaml(text: str, path: str | Path, *, written_by_imf: bool = False) -> Any:
    """The YAML document ``text`` (read from ``path``), loaded safely with no key given twice in a
    mapping; a :class:`ConfigError` naming the file, line and column of what is wrong otherwise.

    Numbers are read as YAML 1.2 reads them (:class:`_UserConfigLoader`); ``written_by_imf``: a file
    ``yaml.safe_dump`` wrote (a run's ``config.yaml``), read back as it was written (YAML 1.1).
    """
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader if written_by_imf else _UserConfigLoader)  # noqa: S506
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(f"{path}: not valid YAML: collections nested too deeply") from None
    except (ValueError, IndexError) as error:  # an explicit tag on a value it cannot be: `dim: !!int abc`
        raise ConfigError(f"{path}: not valid YAML: a tagged value does not read ({error})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        if mark is None:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
        problem = " ".join(filter(None, (getattr(error, "context", None), getattr(error, "problem", None))))
        raise ConfigError(f"{path}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {problem}") from None


def load_yaml(path: str | Path) -> ConfigValues:
    """Read a YAML config file into a mapping for :func:`resolve` (an empty file is an empty mapping),
    with the line of every section and key in it."""
    text = Path(path).read_text(encoding="utf-8")
    data = parse_yaml(text, path)
    if data is None:
        return ConfigValues({}, path, {})
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return ConfigValues(data, path, _key_lines(yaml.compose(text, Loader=yaml.SafeLoader)))


def _key_lines(root: Any) -> dict[str, int]:
    """Dotted key or section → the line (from 1) where a composed YAML document writes it."""
    lines: dict[str, int] = {}
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key_node, value_node in root.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        lines.setdefault(key_node.value, key_node.start_mark.line + 1)
        if isinstance(value_node, yaml.MappingNode):
            for inner, _ in value_node.value:
                if isinstance(inner, yaml.ScalarNode):
                    lines.setdefault(f"{key_node.value}.{inner.value}", inner.start_mark.line + 1)
    return lines


_EXAMPLE_KEYS = {"model": "dim: 200", "train": "lr: 0.003", "eval": "batch_size: 512"}


def _kind(value: Any) -> str:
    """What a YAML value is, in words: "a list", "text 'x'", "the number 3"."""
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {reprlib.repr(value)}"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _flatten(layer: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``section.key`` → value pairs of a nested or dotted layer, with unknown keys rejected."""
    pairs = []
    for key, value in layer.items():
        if not isinstance(key, str):  # YAML reads `1:`, `~:` and `yes:` as a number, None and a bool
            raise ConfigError(f"unknown config key {key!r}: keys are names such as 'model' or 'train.lr'", key=str(key))
        if "." in key:
            pairs.append((key, value))
        elif key in SECTIONS:
            if value is None:  # `model:` with nothing under it (yet): sets nothing
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"config section {key!r} must hold its keys (as `{key}: {{{_EXAMPLE_KEYS[key]}}}`), "
                    f"got {_kind(value)}", key=key)
            pairs.extend((f"{key}.{name}", item) for name, item in value.items())
        else:
            raise ConfigError(f"unknown config key {key!r}{_suggest(key, SECTIONS)}", key=key)
    given: set[str] = set()
    for key, _ in pairs:
        if key in given:  # `train: {lr: …}` and `train.lr: …` in one layer: which one wins would be a guess
            raise ConfigError(f"config key {key!r} is given twice (dotted and in its section)", key=key)
        given.add(key)
        section, _, name = key.partition(".")
        if section not in SECTIONS:
            raise ConfigError(f"unknown config key {key!r}{_suggest(section, SECTIONS)}", key=key)
        known = {f.name for f in dataclasses.fields(SECTIONS[section])}
        if name not in known:
            raise ConfigError(f"unknown config key {key!r}{_suggest(name, known, prefix=section + '.')}", key=key)
    return pairs


def _build(cls: type, section: str, values: Mapping[str, Any]):
    hints = typing.get_type_hints(cls)
    converted = {name: _convert(f"{section}.{name}", value, hints[name]) for name, value in values.items()}
    return cls(**converted)


#: Values quoted in error messages: a few levels and items of each collection. A YAML file's aliases can
#: make a collection that prints as gigabytes from a few hundred bytes (the "billion laughs").
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 1, 80, 80
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6


def _convert(key: str, value: Any, hint: Any) -> Any:
    try:
        return _coerce(value, hint)
    except (TypeError, ValueError, OverflowError):
        expected = "a finite float" if hint is float else getattr(hint, "__name__", str(hint))
        raise ConfigError(f"config key {key!r} expects {expected}, got {_SHORT.repr(value)}", key=key) from None


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint``: bool, int, float, str, ``X | None``, or ``tuple[str, ...]`` (from a list or "a,b")."""
    if isinstance(hint, types.UnionType):  # X | None
        if value is None:
            return None
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
            raise TypeError
        return tuple(item.strip() for item in items)
    if hint is bool:
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.lower()]
        if not isinstance(value, bool):
            raise TypeError
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError
    if hint is str:
        if not isinstance(value, str):
            raise TypeError
        return value
    if hint is int and isinstance(value, float) and not value.is_integer():
        raise TypeError
    converted = hint(value)
    if hint is float and not math.isfinite(converted):  # nan, inf: never a meaningful setting
        raise ValueError
    return converted


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _check(condition: bool, message: str) -> None:
    """Raise a :class:`ConfigError` with ``message``, which starts with the key at fault (``train.lr …``)."""
    if not condition:
        raise ConfigError(message, key=message.split(" ", 1)[0])


def _suggest(name: str, candidates, *, prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    if close:
        return f" (did you mean {prefix + close[0]!r}?)"
    return f" (known: {', '.join(prefix + c for c in sorted(candidates))})"
