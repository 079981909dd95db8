"""Compare training runs side by side: what differs in their configs, and their valid curves aligned by epoch.

``imf runs compare`` prints what :func:`compare_runs` returns. The curves come from each run's
``trace.jsonl``: a run's valid metric at each epoch it was evaluated, and how many minutes of training
(the ``train`` seconds of the trace, summed; validation and checkpoints left out) it had taken to get
there, so that runs whose epochs cost different times (another batch size, another machine) can be
compared by time as well as by epoch.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imf_cli.runs import RunInfo, read_trace, run_info
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
    """

    runs: tuple[RunInfo, ...]
    epoch_seconds: tuple[float | None, ...]
    differences: dict[str, tuple[Any, ...]]
    metric: str
    score: str
    curve: tuple[CurvePoint, ...]
    datasets: tuple[str, ...]

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric]

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
        }


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


def compare_runs(run_dirs: list[Path], *, metric: str = "mrr", score: str = "fused") -> RunComparison:
    """Compare the runs in ``run_dirs`` (two or more distinct directories, already resolved).

    Raises:
        ImfError: Fewer than two runs, an unknown metric, or a score none of the runs has.
    """
    metric = metric.lower()
    if metric not in METRICS:
        raise ImfError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    distinct = list(dict.fromkeys(Path(path) for path in run_dirs))
    if len(distinct) < 2:
        raise ImfError("imf runs compare needs at least two different runs")
    infos = tuple(run_info(path) for path in distinct)
    traces = [read_trace(path) for path in distinct]

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
    return RunComparison(infos, epoch_seconds, config_differences([info.config for info in infos]), metric, score, curve, datasets)


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
