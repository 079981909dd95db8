"""``imf demo``: the whole pipeline on the bundled Countries-MM, offline, in about two minutes on a CPU.

1. Import the bundled dataset (skipped when it is already imported).
2. Encode text and images with the offline default encoders (a no-op when up to date).
3. Train IMF with the preset in ``imf_cli/presets/``.
4. Train a structure-only model with the same preset and seed, as a baseline.
5. Evaluate both on the test split, once, with the checkpoints chosen on valid.

The preset is a plain config file, so ``imf train countries-mm --config <preset>`` repeats a run.
This module imports neither Typer nor Textual; the command only prints what it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
import time

DATASET = "countries-mm"
PRESETS = Path(__file__).resolve().parent / "presets"
ENCODERS = {"text": "minilm", "image": "efficientnet-lite0"}


def preset_path(quick: bool = False) -> Path:
    """The config file of the full demo, or of ``--quick``."""
    return PRESETS / ("countries-mm-quick.yaml" if quick else "countries-mm.yaml")


@dataclass(frozen=True)
class DemoRow:
    """One line of the results table: ``kind`` is ``"branch"``, ``"fusion"`` or ``"baseline"``."""

    name: str
    kind: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class DemoResult:
    """What the demo trained and measured.

    Attributes:
        run_dir: The IMF run.
        baseline_dir: The structure-only run.
        rows: Test metrics: every IMF branch, the learned fusion, the mean fusion, the baseline.
        weights: The learned decision-fusion weights of the IMF run.
        seconds: Step name → wall seconds.
        seed: The seed of both runs.
    """

    run_dir: Path
    baseline_dir: Path
    rows: list[DemoRow]
    weights: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
    seed: int = 1

    @property
    def explore_command(self) -> str:
        return f"imf explore {self.run_dir.name}"

    def row(self, name: str) -> DemoRow:
        return next(r for r in self.rows if r.name == name)


def run_demo(
    *,
    quick: bool = False,
    seed: int = 1,
    progress: bool = True,
    log: Callable[[str], None] = print,
    lines: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> DemoResult:
    """Run the demo (see the module docstring) and return its test metrics.

    ``progress`` shows progress bars; ``lines`` instead receives one line per finished encoding step
    and training epoch (for logs). ``threads`` is torch's thread count for encoding (training uses the
    process's setting, :func:`imf_cli.runtime.set_threads`).
    """
    from imf_cli.output import minutes_seconds
    from kgdata.encoders import encode_dataset
    from kgdata.importing import import_dataset
    from kgdata.locking import locked_store
    from kgdata.store import list_datasets
    from imf_cli.pipeline import read_config_file, resolve_config, train_model
    from imf_cli.run_eval import evaluate_run

    # the seed (and the preset) checked first: a bad --seed was refused only after import and encoding
    resolve_config(read_config_file(preset_path(quick)), {"train.seed": seed})
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    if DATASET in list_datasets():
        log(f"1/5 {DATASET} is already imported.")
    else:
        report = import_dataset(DATASET)
        log(f"1/5 Imported {DATASET}: {report.entities} entities, {report.train:,} training triples.")
    seconds["import"] = time.perf_counter() - started

    with locked_store(DATASET, "write") as store:
        for modality, encoder in ENCODERS.items():
            mark = time.perf_counter()
            report = encode_dataset(store, modality, encoder, progress=lines or progress, threads=threads)
            seconds[f"encode {modality}"] = time.perf_counter() - mark
            took = minutes_seconds(seconds[f"encode {modality}"])
            state = "up to date" if report.status == "unchanged" else f"encoded in {took}"
            log(f"2/5 {modality} features from {encoder}: {state}.")

    preset = preset_path(quick)
    runs = {}
    for step, (label, modalities) in enumerate((("IMF", None), ("structure-only baseline", ("structure",))), 3):
        mark = time.perf_counter()
        log(f"{step}/5 Training {label} ({preset.name}, seed {seed})…")
        result = train_model(
            DATASET,
            config_file=preset,
            flags={"train.seed": seed},
            modalities=modalities,
            # the baseline has no feature branch for the encoders to apply to
            text_encoder=ENCODERS["text"] if modalities is None else None,
            image_encoder=ENCODERS["image"] if modalities is None else None,
            progress=progress,
            on_epoch=lines,
        )
        seconds[f"train {label}"] = time.perf_counter() - mark
        runs[label] = result.run_dir

    mark = time.perf_counter()
    imf = evaluate_run(runs["IMF"], split="test")
    baseline = evaluate_run(runs["structure-only baseline"], split="test")
    seconds["evaluate"] = time.perf_counter() - mark
    log("5/5 Evaluated both on the test split.")

    rows = [DemoRow(name, "branch", metrics) for name, metrics in imf["branches"].items()]
    rows.append(DemoRow("IMF (learned fusion)", "fusion", imf["fused"]))
    rows.append(DemoRow("IMF (mean fusion)", "fusion", imf["mean_fusion"]))
    rows.append(DemoRow("structure-only baseline", "baseline", baseline["fused"]))
    weights = imf["fusion_weights"]
    return DemoResult(runs["IMF"], runs["structure-only baseline"], rows, weights, seconds, seed)
