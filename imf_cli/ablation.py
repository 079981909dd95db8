"""``imf ablate``: the paper's ablation study, every variant trained with every seed, summarised.

Two studies:

``ablation`` (the paper's Table 4)
    The full model; without the contrastive term; without interactive fusion (no multimodal branch);
    without decision fusion (the reference's mean of the branches' probabilities); and each modality
    alone.
``departures``
    The full model, and the same model with each of imf's defaults that departs from the IMF paper
    set back to the paper's value (one variant per key of ``imf_cli/presets/paper.yaml``), and the
    whole paper preset.
``grid``
    Every combination of the values given for some config keys (``--grid model.core_init=xavier,uniform``).

Each run is an ordinary run directory under ``$IMF_HOME/ablations/<dataset>-<study>-<hash>/<variant>/
seed-<s>``; the hash covers the base config and the budget, so another config never reuses them. A
finished run is reused, a killed one resumed, so the study is resumable. Model selection reads only
valid (the trace's best epoch, cross-fitted where the decision weights are fitted on valid); test is
evaluated once per finished run, after training, and shown in its own columns.

This module imports neither typer nor textual.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgdata import paths
from kgdata.errors import ImfError

STUDIES = ("ablation", "departures", "grid")
#: The metrics the summary reports, for valid and for test.
METRICS = ("mrr", "hits@1", "hits@10")
PAPER_PRESET = Path(__file__).resolve().parent / "presets" / "paper.yaml"

#: Most seeds per variant: each is a full training run.
MAX_SEEDS = 100


@dataclass(frozen=True)
class Variant:
    """One row of the study: a name, what it tests, and the config keys it overrides (dotted)."""

    name: str
    description: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    """One finished run of a variant and a seed: its valid metrics (the selected epoch) and test metrics."""

    variant: str
    seed: int
    run_dir: Path
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    seconds: float


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation over seeds of each metric, for one variant."""

    variant: Variant
    cells: list[Cell]

    def stat(self, split: str, metric: str) -> tuple[float, float | None]:
        """``(mean, sample sd)`` over the seeds; sd None for one seed, and ``(nan, None)`` for none."""
        values = [getattr(cell, split)[metric] for cell in self.cells if getattr(cell, split).get(metric) is not None]
        if not values:
            return math.nan, None
        from imf_cli.evidence import sample_sd

        return statistics.fmean(values), sample_sd(values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant.name,
            "description": self.variant.description,
            "overrides": dict(self.variant.overrides),
            "seeds": [cell.seed for cell in self.cells],
            **{
                split: {metric: dict(zip(("mean", "sd"), self.stat(split, metric))) for metric in METRICS}
                for split in ("valid", "test")
            },
            "runs": [
                {"seed": c.seed, "run_dir": str(c.run_dir), "best_epoch": c.best_epoch, "valid": c.valid, "test": c.test,
                 "seconds": c.seconds}
                for c in self.cells
            ],
        }


def ablation_variants(modalities: Sequence[str], *, contrastive: bool = True) -> list[Variant]:
    """The paper's ablation rows for a model of ``modalities``."""
    variants = [Variant("full", "the full model")]
    if len(modalities) > 1:
        if contrastive:
            variants.append(Variant("no-contrastive", "without the contrastive term", {"train.contrastive_weight": 0.0}))
        variants.append(
            Variant("no-interactive", "without interactive fusion (no multimodal branch)", {"model.interactive": False})
        )
        variants.append(
            Variant(
                "mean-fusion",
                "without decision fusion: the reference's mean of the branch probabilities",
                {"model.fusion": "mean", "model.decision_space": "probability", "train.fit_fusion_on_valid": False},
            )
        )
        variants += [Variant(f"only-{m}", f"the {m} branch alone", {"model.modalities": [m]}) for m in modalities]
    return variants


#: Paper switches that are no valid config alone, and the paper switches that come with them. Without
#: fitting on valid, learned decision weights learn from the fused loss, so its weight must be above 0.
COUPLED_DEPARTURES: Mapping[str, tuple[str, ...]] = {"train.fit_fusion_on_valid": ("train.fused_loss_weight",)}


def departure_variants(base: Mapping[str, Mapping[str, Any]], paper: Mapping[str, Mapping[str, Any]]) -> list[Variant]:
    """The full model, then each key of the paper preset that differs from ``base`` set to the paper's value.

    A key that is no valid config alone brings the paper's value of the keys it needs
    (:data:`COUPLED_DEPARTURES`); the last variant is the whole preset.
    """
    variants = [Variant("full", "imf's defaults")]
    flat_paper = {f"{section}.{key}": value for section, values in paper.items() for key, value in values.items()}
    for section, values in paper.items():
        for key, value in values.items():
            if base.get(section, {}).get(key) != value:
                dotted = f"{section}.{key}"
                overrides = {dotted: value}
                for other in COUPLED_DEPARTURES.get(dotted, ()):
                    if other in flat_paper:
                        overrides[other] = flat_paper[other]
                description = "; ".join(f"{k}: {v!r}" for k, v in overrides.items()) + " (the paper's)"
                name = "paper:" + "+".join(k.split(".")[-1] for k in overrides)
                variants.append(Variant(name, description, overrides))
    flat = {f"{section}.{key}": value for section, values in paper.items() for key, value in values.items()}
    variants.append(Variant("paper", "every switch set to the paper's (imf_cli/presets/paper.yaml)", flat))
    return variants


def grid_variants(grid: Mapping[str, Sequence[Any]]) -> list[Variant]:
    """One variant per combination of the values of ``grid`` (dotted key → values), in order."""
    import itertools

    keys = list(grid)
    variants = []
    for values in itertools.product(*(grid[key] for key in keys)):
        overrides = dict(zip(keys, values))
        name = ",".join(f"{key.split('.')[-1]}={value}" for key, value in overrides.items())
        variants.append(Variant(name, "; ".join(f"{k}: {v!r}" for k, v in overrides.items()), overrides))
    return variants


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["model.core_init=xavier,uniform", …]`` as ``{"model.core_init": ["xavier", "uniform"]}`` (YAML scalars,
    numbers as a ``--config`` file reads them: ``010`` is 10, and ``1e-1`` and ``0.1`` are one value)."""
    import yaml

    from models.config import parse_scalar

    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or "." not in key or not values:
            raise ImfError(f"--grid takes SECTION.KEY=VALUE[,VALUE…], not {item!r}")
        key = key.strip()
        if key in grid:
            raise ImfError(f"--grid {key} is given twice; give all its values once: --grid {key}=A,B")
        if key == "train.seed":  # each cell sets its seed from --seeds, after the grid's values
            raise ImfError("--grid cannot vary train.seed: every variant is trained with each seed of --seeds")
        if any(not v.strip() for v in values.split(",")):
            raise ImfError(f"--grid {item[:80]!r} has an empty value; list values like --grid {key}=A,B")
        try:
            parsed = [parse_scalar(v.strip()) for v in values.split(",")]
        except (yaml.YAMLError, RecursionError, ValueError, IndexError) as error:  # ValueError: `!!int abc`
            problem = " ".join(str(getattr(error, "problem", None) or (
                "nested too deeply" if isinstance(error, RecursionError) else f"a tagged value does not read: {error}"
            )).split())
            raise ImfError(f"--grid {item[:80]!r}: a value is not a YAML scalar ({problem})") from None
        if any(v is None for v in parsed):  # `null` or `~`: to the config, "not given", i.e. the base value
            raise ImfError(f"--grid {item[:80]!r}: null is not a setting; list the values to try")
        repeated = sorted({str(v) for v in parsed if parsed.count(v) > 1})
        if repeated:
            raise ImfError(f"--grid {key} lists {', '.join(repeated)} twice; each value once")
        grid[key] = parsed
    return grid


def study_dir(dataset: str, study: str, base: Mapping[str, Any], data_hash: str) -> Path:
    """Where a study's runs live: the hash covers the base config (seed excluded), the study and the
    dataset's content hash, so that a re-imported dataset gets new cells instead of the old data's."""
    identity = {"study": study, "config": base, "data": data_hash}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    return paths.imf_home() / "ablations" / f"{dataset}-{study}-{digest}"


def choose_study(study: str | None, grid: Mapping[str, Sequence[Any]] | None) -> str:
    """The study to run: ``study``, or for None the grid study when ``grid`` is given, else the ablation.

    Raises:
        ImfError: For an unknown study, or a grid given to another study (it would be ignored, and the
            wrong study trained for hours).
    """
    if study is None:
        study = "grid" if grid else "ablation"
    if study not in STUDIES:
        raise ImfError(f"unknown study {study!r}; choose {' or '.join(STUDIES)}")
    if grid and study != "grid":
        raise ImfError(f"--grid belongs to the grid study, not the {study} study; leave out --study {study}")
    return study


def run_study(
    dataset: str,
    *,
    study: str | None = None,
    config_file: Path | None = None,
    seeds: int = 3,
    first_seed: int = 1,
    budget: int | None = None,
    variants: Sequence[str] | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    progress: bool = True,
    on_cell: Callable[[Cell], None] | None = None,
) -> tuple[Path, list[Summary]]:
    """Train (or reuse, or resume) every variant of ``study`` with ``seeds`` seeds and summarise them.

    Args:
        dataset: An imported dataset.
        study: ``"ablation"``, ``"departures"`` or ``"grid"``; None: ``"grid"`` when ``grid`` is given,
            else ``"ablation"``.
        config_file: The base config (YAML); the defaults when None.
        seeds: Seeds ``first_seed … first_seed + seeds - 1``.
        budget: ``train.epochs`` for every run; the config's when None.
        variants: Keep only these variant names.
        grid: The keys and values of the ``"grid"`` study.
        progress: A rich progress bar over the runs.
        on_cell: Called with each finished cell (for a log line per run).

    Returns:
        The study's directory and one :class:`Summary` per variant.
    """
    from kgdata.store import EntityStore
    from imf_cli.pipeline import available_branches, read_config_file, resolve_config
    from imf_cli.runs import BRANCH_FEATURES

    study = choose_study(study, grid)
    if not 1 <= seeds <= MAX_SEEDS:
        raise ImfError(f"--seeds must be from 1 to {MAX_SEEDS}, not {seeds}")
    base_values = read_config_file(config_file)
    flags: dict[str, Any] = {"train.seed": None}
    if budget is not None:
        if budget < 1:
            raise ImfError(f"--budget must be at least 1 epoch, not {budget}")
        if grid and "train.epochs" in grid:  # the grid's values won over the budget, silently
            raise ImfError("--budget and a --grid over train.epochs both set the epochs; give one of them")
        flags["train.epochs"] = budget
    with EntityStore.open(dataset) as store:
        data_hash = store.content_hash
        base = resolve_config(base_values, flags)
        if not _sets_modalities(base_values):
            base = resolve_config(base_values, {**flags, "model.modalities": list(available_branches(store))})
    base_dict = base.to_dict()
    base_dict["train"].pop("seed", None)
    if study == "ablation":
        chosen = ablation_variants(base.model.modalities, contrastive=base.train.contrastive_weight > 0)
    elif study == "grid":
        if not grid:
            raise ImfError("the grid study needs --grid SECTION.KEY=VALUE[,VALUE…]")
        chosen = grid_variants(grid)
        base_dict = {**base_dict, "grid": {key: list(values) for key, values in grid.items()}}
    else:
        from models.config import load_yaml

        chosen = departure_variants(base_dict, load_yaml(PAPER_PRESET))
    if variants:
        unknown = sorted(set(variants) - {v.name for v in chosen})
        if unknown:
            raise ImfError(f"unknown variant {unknown[0]!r}; this study has {', '.join(v.name for v in chosen)}")
        chosen = [v for v in chosen if v.name in variants]
    config_values = {key: value for key, value in base_dict.items() if key != "grid"}
    resolved = [resolve_config(config_values, dict(variant.overrides)) for variant in chosen]  # fail before training
    with EntityStore.open(dataset) as store:  # features missing: refused before the study directory exists
        encoded = set(available_branches(store))
    for variant, config in zip(chosen, resolved):
        lacking = [b for b in config.model.modalities if b in BRANCH_FEATURES and b not in encoded]
        if lacking:
            raise ImfError(
                f"variant {variant.name} trains the {', '.join(lacking)} branch, but dataset {dataset!r} has no "
                f"{', '.join(BRANCH_FEATURES[b] for b in lacking)} features: run imf encode {dataset} --modality "
                f"{BRANCH_FEATURES[lacking[0]]} first (or leave the variant out with --variant)"
            )
    initialisers = {config.model.structure_init for config in resolved} - {None}
    if initialisers:  # the paper's GAT start needs `imf encode --modality structure` first
        from kgdata.features import load_features

        with EntityStore.open(dataset) as store:
            for encoder in sorted(initialisers):
                try:
                    load_features(store, "structure", encoder)
                except ImfError as error:
                    users = ", ".join(v.name for v, c in zip(chosen, resolved) if c.model.structure_init == encoder)
                    raise ImfError(
                        f"the variants {users} start the structure branch from {encoder} features: {error} "
                        f"(or leave them out with --variant)"
                    ) from error
    root = study_dir(dataset, study, base_dict, data_hash)
    root.mkdir(parents=True, exist_ok=True)
    (root / "study.json").write_text(
        json.dumps({"dataset": dataset, "study": study, "config": base_dict,
                    "variants": [{"name": v.name, "overrides": dict(v.overrides)} for v in chosen]}, indent=2) + "\n",
        encoding="utf-8",
    )
    cells: dict[str, list[Cell]] = {v.name: [] for v in chosen}
    jobs = [(v, first_seed + k) for v in chosen for k in range(seeds)]
    with _RunsProgress(progress, len(jobs)) as bar:
        for variant, seed in jobs:
            bar.describe(f"{variant.name} seed {seed}")
            cell = _run_cell(dataset, config_values, variant, seed, root / _safe(variant.name) / f"seed-{seed}")
            cells[variant.name].append(cell)
            bar.advance()
            if on_cell is not None:
                on_cell(cell)
    summaries = [Summary(v, cells[v.name]) for v in chosen]
    (root / "summary.json").write_text(json.dumps([s.to_dict() for s in summaries], indent=2) + "\n", encoding="utf-8")
    return root, summaries


def _sets_modalities(values: Mapping[str, Any]) -> bool:
    model = values.get("model")
    return "model.modalities" in values or (isinstance(model, Mapping) and "modalities" in model)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "-" for c in name)


def _run_cell(dataset: str, base: dict, variant: Variant, seed: int, run_dir: Path) -> Cell:
    """Train, resume or reuse one run, then read its selected valid metrics and evaluate test once."""
    from imf_cli.pipeline import resume_model, train_model
    from imf_cli.run_eval import evaluate_run
    from imf_cli.runs import read_metrics, read_trace

    done = run_dir / "result.json"
    if (run_dir / "config.yaml").is_file():
        _check_cell_data(dataset, run_dir)
    record = _read_result(done)
    if record is not None:
        return _cell_from(record, variant.name, run_dir)
    overrides = {**variant.overrides, "train.seed": seed}
    if (run_dir / "config.yaml").is_file():
        result = resume_model(run_dir, progress=False, place_unseen=False)  # metrics only: no new entities
    else:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        result = train_model(
            dataset, config_values=base, flags=overrides, run_dir=run_dir, progress=False, place_unseen=False
        )
    trace = read_trace(run_dir, strict=True)
    best = next((r for r in trace if r["epoch"] == result.best_epoch and "valid" in r), None)
    if best is None:
        raise ImfError(f"{run_dir}: no valid evaluation was recorded; give a budget of at least train.eval_every epochs")
    valid = {metric: best["valid"]["fused"][metric] for metric in METRICS}
    test_report = read_metrics(run_dir, "test")
    if test_report is None or not all(metric in test_report.get("fused", {}) for metric in METRICS):
        test_report = evaluate_run(run_dir, split="test")  # never read, or damaged: read test again
    test = {metric: test_report["fused"][metric] for metric in METRICS}
    seconds = sum(sum((r.get("seconds") or {}).values()) for r in trace)
    record = {"seed": seed, "best_epoch": result.best_epoch, "valid": valid, "test": test, "seconds": seconds}
    done.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return _cell_from(record, variant.name, run_dir)


def _check_cell_data(dataset: str, run_dir: Path) -> None:
    """Refuse to reuse or resume a cell trained on features computed from other inputs than the dataset
    holds now (re-encoded since): its figures would be averaged with cells trained on the new ones."""
    from imf_cli.runs import check_same_dataset, run_metadata
    from kgdata.store import EntityStore

    meta = run_metadata(run_dir).get("metadata") or {}
    with EntityStore.open(dataset) as store:
        try:
            check_same_dataset(store, meta, run_dir)
        except ImfError as error:
            raise ImfError(
                f"{error}; this study's cells would mix the two: remove {run_dir.parent.parent} to train the study anew"
            ) from None


def _read_result(path: Path) -> dict | None:
    """A finished cell's ``result.json``, or None if it is missing or damaged: then the cell is read
    again from its run (a finished run resumes at once) and the file written anew."""
    from models.run_files import finite_numbers

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    whole = all(
        isinstance(record.get(key), int) and not isinstance(record.get(key), bool) for key in ("seed", "best_epoch")
    ) and all(set(METRICS) <= set(finite_numbers(record.get(split))) for split in ("valid", "test"))
    seconds = record.get("seconds")
    return record if whole and isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else None


def _cell_from(record: dict, variant: str, run_dir: Path) -> Cell:
    return Cell(variant, record["seed"], run_dir, record["best_epoch"], record["valid"], record["test"], record["seconds"])


def verdicts(summaries: Sequence[Summary], *, metric: str = "mrr") -> list[str]:
    """Each variant's valid ``metric`` against the first variant's (the full model, where it is run),
    in the words of :func:`imf_cli.evidence.verdict`: whether the difference exceeds the seed spread."""
    from imf_cli.evidence import Stat, verdict

    def stat(summary: Summary) -> Stat | None:
        return Stat.of([cell.valid.get(metric) for cell in summary.cells])

    if len(summaries) < 2 or stat(summaries[0]) is None:
        return []
    first = (summaries[0].variant.name, stat(summaries[0]))
    label = metric.upper() if metric in ("mrr", "mr") else metric.capitalize()
    return [
        verdict(first, (summary.variant.name, stat(summary)), what=f"valid {label}")
        for summary in summaries[1:]
        if stat(summary) is not None
    ]


def markdown_table(summaries: Sequence[Summary], *, title: str | None = None) -> str:
    """The summary as a Markdown table: valid mean ± sd, then test mean ± sd, per variant."""
    header = ["variant", *(f"valid {m}" for m in METRICS), *(f"test {m}" for m in METRICS), "seeds"]
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for summary in summaries:
        cells = [f"{summary.variant.name}"]
        for split in ("valid", "test"):
            cells += [format_stat(*summary.stat(split, metric)) for metric in METRICS]
        cells.append(str(len(summary.cells)))
        lines.append("| " + " | ".join(cells) + " |")
    judged = verdicts(summaries)
    if judged:
        lines += ["", *(f"- {line[0].upper() + line[1:]}." for line in judged)]
    return "\n".join(lines) + "\n"


def format_stat(mean: float, sd: float | None) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.4f}" if sd is None else f"{mean:.4f} ± {sd:.4f}"  # one seed: no spread to show


class _RunsProgress:
    """A rich progress bar over the runs of a study, or nothing."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total
        self.bar = self.task = None

    def __enter__(self) -> _RunsProgress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self.bar.start()
            self.task = self.bar.add_task("runs", total=self.total)
        return self

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=text)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.stop()
