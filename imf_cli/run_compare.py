"""Compare training runs side by side: what differs in their configs, and their valid curves aligned by epoch.

``imf runs compare`` prints what :func:`compare_runs` returns. The curves come from each run's
``trace.jsonl``: a run's valid metric at each epoch it was evaluated, and how many minutes of training
(the ``train`` seconds of the trace, summed; validation and checkpoints left out) it had taken to get
there, so that runs whose epochs cost different times (another batch size, another machine) can be
compared by time as well as by epoch.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imf_cli.evidence import Stat, verdict
from models.config import RESUME_KEYS
from imf_cli.runs import RunInfo, read_trace, run_info, run_metadata
from kgdata.errors import ImfError

#: The valid metrics a comparison can show, and whether a larger value is better.
METRICS = {"mrr": True, "hits@1": True, "hits@3": True, "hits@10": True, "mr": False}


@dataclass(frozen=True)
class CurvePoint:
    """One evaluated epoch of a comparison.

    Attributes:
        epoch: The epoch.
        values: Each run's valid metric at that epoch (None where a run was not evaluated there).
        minutes: Each run's training minutes up to the end of that epoch (None where it has no such epoch).
    """

    epoch: int
    values: tuple[float | None, ...]
    minutes: tuple[float | None, ...]


@dataclass(frozen=True)
class SeedGroup:
    """Runs whose configs differ only in the seed and the schedule (:data:`IGNORED_IN_GROUPS`).

    Attributes:
        label: ``A``, ``B``, … in the order the groups' first runs were given.
        members: Indexes of the group's runs in :attr:`RunComparison.runs`.
        best: The best valid value of each run's curve (the comparison's metric and score), over the runs.
        test_mrr: The fused test MRR of the runs that have one (``imf eval --split test``).
        curve: For each epoch of :attr:`RunComparison.curve`, the value over the runs evaluated there.
    """

    label: str
    members: tuple[int, ...]
    best: Stat | None
    test_mrr: Stat | None
    curve: tuple[Stat | None, ...]

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "members": list(self.members),
            "best": None if self.best is None else self.best.to_dict(),
            "test_mrr": None if self.test_mrr is None else self.test_mrr.to_dict(),
            "curve": [None if stat is None else stat.to_dict() for stat in self.curve],
        }


#: Config keys that do not tell groups of seeds apart: the seed, and what a resume may change (how long
#: a run goes on, how often it evaluates and saves, where it runs; :data:`models.config.RESUME_KEYS`).
IGNORED_IN_GROUPS: tuple[str, ...] = ("train.seed", *RESUME_KEYS)


@dataclass(frozen=True)
class RunComparison:
    """Runs side by side (:func:`compare_runs`).

    Attributes:
        runs: The runs, in the order asked.
        epoch_seconds: Each run's median training seconds per epoch (None before its first epoch).
        differences: ``{dotted config key: one value per run}`` for the keys whose values differ.
        metric: The valid metric of the curve (a key of :data:`METRICS`).
        score: The branch or fused score of the curve (``fused``, ``structure``, …).
        curve: The evaluated epochs of any run, in order.
        datasets: The distinct datasets of the runs (more than one: the figures do not compare).
        groups: With ``by_seed``, the runs grouped by config (seed and schedule aside); else empty.
        group_differences: ``{dotted config key: one value per group}`` for the keys that tell the
            groups apart.
    """

    runs: tuple[RunInfo, ...]
    epoch_seconds: tuple[float | None, ...]
    differences: dict[str, tuple[Any, ...]]
    metric: str
    score: str
    curve: tuple[CurvePoint, ...]
    datasets: tuple[str, ...]
    groups: tuple[SeedGroup, ...] = ()
    group_differences: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric]

    def verdict(self) -> str | None:
        """Whether the groups' best valid values differ by more than the seed spread, in one sentence;
        None without two or more groups that have a best value."""
        rated = [group for group in self.groups if group.best is not None]
        if len(rated) < 2 or len(self.datasets) > 1:  # across datasets the figures do not compare
            return None
        pick = max if self.higher_is_better else min
        top = pick(rated, key=lambda group: group.best.mean)
        runner_up = pick([group for group in rated if group is not top], key=lambda group: group.best.mean)
        return verdict(
            (runner_up.label, runner_up.best),
            (top.label, top.best),
            what=f"best valid {metric_label(self.metric)} ({self.score})",
            decimals=1 if self.metric == "mr" else 4,
        )

    def to_dict(self) -> dict:
        return {
            "runs": [
                {**info.to_dict(), "median_epoch_seconds": None if s is None else round(s, 3)}
                for info, s in zip(self.runs, self.epoch_seconds)
            ],
            "differences": {key: list(values) for key, values in self.differences.items()},
            "metric": self.metric,
            "score": self.score,
            "curve": [
                {
                    "epoch": point.epoch,
                    "values": list(point.values),
                    "minutes": [None if m is None else round(m, 2) for m in point.minutes],
                }
                for point in self.curve
            ],
            "datasets": list(self.datasets),
            "groups": [group.to_dict() for group in self.groups],
            "group_differences": {key: list(values) for key, values in self.group_differences.items()},
            "verdict": self.verdict(),
        }


def metric_label(metric: str) -> str:
    """How a metric is written in text: MRR, MR, Hits@10."""
    return metric.upper() if metric in ("mrr", "mr") else metric.capitalize()


def flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.003}}`` → ``{"train.lr": 0.003}``; lists become tuples (comparable, hashable)."""
    if not isinstance(values, dict):
        return {prefix: tuple(values) if isinstance(values, list) else values}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_differences(configs: list[dict]) -> dict[str, tuple[Any, ...]]:
    """The dotted keys whose values are not the same in every config, with each config's value (None
    where a config lacks the key), in the order the keys first appear."""
    flat = [flatten(config or {}) for config in configs]
    keys: dict[str, None] = {}
    for values in flat:
        keys.update(dict.fromkeys(values))
    differences = {}
    for key in keys:
        row = tuple(values.get(key) for values in flat)
        if any(value != row[0] for value in row[1:]):
            differences[key] = row
    return differences


def compare_runs(
    run_dirs: list[Path], *, metric: str = "mrr", score: str = "fused", by_seed: bool = False
) -> RunComparison:
    """Compare the runs in ``run_dirs`` (two or more distinct directories, already resolved).

    With ``by_seed``, runs whose configs are the same but for the seed and the schedule
    (:data:`IGNORED_IN_GROUPS`) form a group, and each group's figures are mean ± sd over its runs.

    Raises:
        ImfError: Fewer than two runs, an unknown metric, or a score none of the runs has.
    """
    metric, score = metric.lower(), score.strip().lower()  # branch names are lower case, as metrics are
    if metric not in METRICS:
        raise ImfError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    from imf_cli.runs import run_identity

    first_of: dict[Path, Path] = {}
    for path in run_dirs:  # one run named twice (a symlink to it, say) is one run
        first_of.setdefault(run_identity(path), Path(path))
    distinct = list(first_of.values())
    if len(distinct) < 2:
        raise ImfError("imf runs compare needs at least two different runs")
    for path in distinct:
        run_metadata(path)  # a directory without a readable config.yaml is refused, as imf runs show refuses it
    infos = tuple(run_info(path) for path in distinct)
    traces = [read_trace(path, strict=True) for path in distinct]  # runs asked for: a damaged line is named

    scores = {name for trace in traces for record in trace for name in _valid(record)}
    if traces and any(traces) and score not in scores:
        available = ", ".join(sorted(scores)) or "none (no run has been evaluated yet)"
        raise ImfError(f"no run has a {score!r} score; the runs have: {available}")

    by_run = [_curve(trace, metric, score) for trace in traces]
    epochs = sorted({epoch for curve in by_run for epoch in curve})
    minutes = [_training_minutes(trace) for trace in traces]
    curve = tuple(
        CurvePoint(
            epoch,
            tuple(curve.get(epoch) for curve in by_run),
            tuple(elapsed.get(epoch) for elapsed in minutes),
        )
        for epoch in epochs
    )
    epoch_seconds = tuple(_median_epoch_seconds(trace) for trace in traces)
    datasets = tuple(dict.fromkeys(str(info.dataset) for info in infos))
    differences = config_differences([info.config for info in infos])
    groups, group_differences = (), {}
    if by_seed:
        groups, group_differences = _seed_groups(infos, by_run, epochs, METRICS[metric])
    return RunComparison(
        infos, epoch_seconds, differences, metric, score, curve, datasets, groups, group_differences
    )


def _seed_groups(
    infos: tuple[RunInfo, ...], by_run: list[dict[int, float]], epochs: list[int], higher_is_better: bool
) -> tuple[tuple[SeedGroup, ...], dict[str, tuple[Any, ...]]]:
    """The runs grouped by their config without :data:`IGNORED_IN_GROUPS` (and the dataset), with each
    group's statistics, and the config keys that differ between the groups."""
    keys: dict[str, list[int]] = {}
    kept: list[dict] = []
    for index, info in enumerate(infos):
        flat = {k: v for k, v in flatten(_normalised(info.config)).items() if k not in IGNORED_IN_GROUPS}
        flat["dataset"] = str(info.dataset)
        # As JSON: a hand-edited config may hold values (a mapping in a list) that cannot be hashed.
        keys.setdefault(json.dumps(flat, sort_keys=True, default=repr), []).append(index)
        kept.append(flat)
    pick = max if higher_is_better else min
    groups = []
    for number, members in enumerate(keys.values()):
        curves = [by_run[i] for i in members]
        groups.append(
            SeedGroup(
                label=_label(number),
                members=tuple(members),
                best=Stat.of([pick(curve.values()) for curve in curves if curve]),
                test_mrr=Stat.of([infos[i].test_mrr for i in members if infos[i].test_mrr is not None]),
                curve=tuple(Stat.of([curve[epoch] for curve in curves if epoch in curve]) for epoch in epochs),
            )
        )
    firsts = [kept[group.members[0]] for group in groups]
    return tuple(groups), config_differences(firsts) if len(groups) > 1 else {}


def _normalised(config: dict | None) -> dict:
    """A run's config as it resolves today (keys added since it was recorded get the values that
    reproduce it), so that an older run and an identical newer one fall in one group; a config that
    does not resolve is compared as written."""
    from models.config import ConfigError, RunConfig

    try:
        return RunConfig.from_dict(config or {}).to_dict()
    except (ConfigError, TypeError, AttributeError, ValueError):
        return config or {}


def _label(number: int) -> str:
    letters = ""
    number += 1
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _valid(record: dict) -> dict:
    valid = record.get("valid")
    return {name: m for name, m in valid.items() if isinstance(m, dict)} if isinstance(valid, dict) else {}


def _curve(trace: list[dict], metric: str, score: str) -> dict[int, float]:
    curve = {}
    for record in trace:
        value = _valid(record).get(score, {}).get(metric)
        if isinstance(value, (int, float)) and isinstance(record.get("epoch"), int):
            curve[record["epoch"]] = float(value)
    return curve


def _train_seconds(record: dict) -> float | None:
    seconds = record.get("seconds")
    value = seconds.get("train") if isinstance(seconds, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def _training_minutes(trace: list[dict]) -> dict[int, float]:
    elapsed, total = {}, 0.0
    for record in trace:
        total += _train_seconds(record) or 0.0
        if isinstance(record.get("epoch"), int):
            elapsed[record["epoch"]] = total / 60
    return elapsed


def _median_epoch_seconds(trace: list[dict]) -> float | None:
    seconds = [s for s in (_train_seconds(record) for record in trace) if s is not None]
    return statistics.median(seconds) if seconds else None
