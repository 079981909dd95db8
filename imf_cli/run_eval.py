"""Evaluating a run: load its checkpoint and store, rank a split, write ``metrics-<split>.json``.

``imf eval``, ``imf ablate`` and the benchmarks call these; the ranking itself is
:mod:`models.evaluation`'s.
"""

from __future__ import annotations

import os

from pathlib import Path
from typing import TYPE_CHECKING, Any

from imf_cli.run_loading import load_run
from imf_cli.runs import metrics_path
from kgdata.errors import ImfError

if TYPE_CHECKING:
    from imf_cli.run_loading import LoadedRun


def evaluate_run(
    run_dir: Path,
    *,
    split: str = "valid",
    checkpoint: str = "best",
    batch_size: int | None = None,
    device: str = "auto",
    per_relation: bool = False,
    write: bool = True,
    drop_overlap: bool = False,
) -> dict:
    """Filtered ranking metrics of a run's checkpoint on ``split``: each branch, fused, and mean fusion.

    Filtering removes the known triples other than the one being ranked, with the filter training
    used for the same split (:func:`models.evaluation.filter_splits`): valid is filtered with train
    and valid, test with all three splits. Ties get the realistic rank (the mean of the optimistic
    and pessimistic ranks). With ``write``, the report is also written to ``<run_dir>/metrics-<split>.json``.

    Returns:
        ``{"split", "checkpoint", "run", "dataset", "triples", "filter", "device", "chunk_size", "seconds",
        "fusion_weights", "fused", "branches", "mean_fusion", "per_relation"}``; ``per_relation``
        maps relation keys to their metrics and category (1-1, 1-N, N-1, N-N from the training
        split, or unseen without a training triple), or is None unless asked for; with it comes
        ``per_category``, the metrics of each category's triples
        (:func:`models.evaluation.relation_categories`). ``fusion_weights`` maps branch names to the
        decision weights, or, with per-relation fusion, relation keys (inverse relations as ``"← key"``)
        to such maps. On test also ``read_at``, ``test_reads`` (the reads of this run's test split
        written so far, this one included) and ``first_test_read_at``. ``not_written`` says why the
        report could not be written (a read-only run directory), when it could not.

    With ``drop_overlap`` only the triples of ``split`` that are not also in an earlier split are
    ranked (:data:`models.splits.EARLIER_SPLITS`: a test triple also in train or valid is a leak the
    model has seen); the report then has ``overlap_left_out`` and is written to
    ``metrics-<split>-no-overlap.json``.
    """
    if split not in ("valid", "test"):
        raise ImfError(f"unknown split {split!r}; choose valid or test")
    if batch_size is not None and batch_size < 1:
        raise ImfError(f"the batch size must be at least 1, not {batch_size}")
    with load_run(run_dir, checkpoint=checkpoint, device=device) as loaded:
        report = evaluate_loaded(
            loaded, split, batch_size=batch_size, per_relation=per_relation, drop_overlap=drop_overlap
        )
    report = {"split": split, "checkpoint": checkpoint, "run": str(run_dir), **report}
    if split == "test":
        report.update(_test_reads(run_dir, count_this=write))
    if write:
        try:
            _write_json(metrics_path(run_dir, split, no_overlap=drop_overlap, checkpoint=checkpoint), report)
        except ImfError as error:  # the figures are computed: the caller shows them, then says this
            report["not_written"] = str(error)
    return report


def _test_reads(run_dir: Path, *, count_this: bool) -> dict:
    """``{"read_at", "test_reads", "first_test_read_at"}``: when this read of test happened, how many reads
    of this run's test split ``metrics-test*.json`` record with it (one per written ``imf eval --split
    test``, either file; ``count_this`` False: the earlier ones only), and when the first was.

    The number is what a reader of a test figure needs: the best of several test reads is a figure
    chosen on test.
    """
    import json
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    earlier, first = 0, None
    for no_overlap, checkpoint in ((False, "best"), (True, "best"), (False, "last"), (True, "last")):
        path = metrics_path(run_dir, "test", no_overlap=no_overlap, checkpoint=checkpoint)
        if not os.path.lexists(path):
            continue  # none yet
        try:
            old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, ValueError):
            old = None
        if not isinstance(old, dict):  # damaged, but there: test was read at least once (the count goes on)
            earlier = max(earlier, 1)
            continue
        reads = old.get("test_reads", 1)
        earlier = max(earlier, reads if isinstance(reads, int) and reads > 0 else 1)
        stamp = old.get("first_test_read_at") or old.get("read_at")
        if isinstance(stamp, str) and (first is None or stamp < first):
            first = stamp
    return {"read_at": now, "test_reads": earlier + int(count_this), "first_test_read_at": first or now}


def evaluate_loaded(
    loaded: "LoadedRun", split: str, *, batch_size: int | None = None, per_relation: bool = False,
    drop_overlap: bool = False,
) -> dict:
    """The metrics of :func:`evaluate_run` for a run already loaded (its store open), without writing.

    ``seconds`` is the time spent ranking, after the model and the splits were loaded.
    """
    import time

    import torch

    from models.evaluation import (
        CATEGORIES,
        FrozenScorer,
        build_filter,
        filter_splits,
        metrics_report,
        rank_queries,
        relation_categories,
    )

    store = loaded.store
    splits = {name: store.triples_tensor(name) for name in ("train", "valid", "test")}
    relations = store.relations()
    triples = splits[split]
    left_out = None
    if drop_overlap:
        from models.splits import EARLIER_SPLITS, also_in

        seen = also_in(triples.numpy(), [splits[name].numpy() for name in EARLIER_SPLITS[split]])
        left_out = int(seen.sum())
        triples = triples[torch.from_numpy(~seen)]
    if not len(triples):
        raise ImfError(f"the {split} split of dataset {store.name!r} holds no triples{' outside the earlier splits' if drop_overlap else ''}")
    model = loaded.model
    started = time.perf_counter()
    filtered_by = filter_splits(split)
    index = build_filter(
        [splits[name] for name in filtered_by], num_entities=model.num_entities, num_relations=model.num_relations
    )
    scorer = FrozenScorer(model)
    if batch_size is not None:
        batch_size = min(batch_size, 2 * len(triples))  # every query of both directions at once, at most
    crossfit = _crossfit_seed(loaded, split)
    if crossfit is not None:
        # The weights were fitted on valid: ranked with them, valid's fused figure was in-sample (above
        # every branch where the cross-fitted one training selected with was below them).
        from models.calibration import crossfit_valid

        ranks = crossfit_valid(
            scorer, triples, index, batch_size=crossfit[1], seed=crossfit[0], chunk_size=batch_size,
            per_relation=model.decision.mode == "learned-per-relation",
        ).ranks
    else:
        ranks = rank_queries(scorer, triples, index, chunk_size=batch_size)
    categories = relation_categories(splits["train"], model.num_relations) if per_relation else None
    report = metrics_report(ranks, per_relation=per_relation, categories=categories)
    seconds = time.perf_counter() - started
    if report["per_relation"] is not None:
        report["per_relation"] = {
            relations[r].key: {"name": relations[r].name, "category": CATEGORIES[int(categories[r])], **values}
            for r, values in report["per_relation"].items()
        }
    return {
        "split": split,
        "checkpoint": loaded.checkpoint,
        "dataset": store.name,
        "triples": int(len(triples)),
        **({"overlap_left_out": left_out} if drop_overlap else {}),
        "filter": list(filtered_by),
        "device": str(scorer.device),
        "chunk_size": ranks.chunk_size,
        "seconds": round(seconds, 3),
        "fusion_weights": _fusion_weights(model, relations),
        **({"fused_cross_fitted": True} if crossfit is not None else {}),
        **report,
    }


def _crossfit_seed(loaded: "LoadedRun", split: str) -> tuple[int, int] | None:
    """``(seed, batch size)`` of the cross-fitting training used on valid, when the run fits its decision
    weights there and ``split`` is valid; None otherwise (test is never fitted on)."""
    from imf_cli.runs import run_config

    if split != "valid":
        return None
    try:
        config = run_config(loaded.run_dir, loaded.document or {})
    except (ImfError, KeyError):
        return None
    if not config.fits_fusion_on_valid(len(loaded.model.branch_names)):
        return None
    return (config.train.seed if config.train.seed is not None else 0), config.eval.batch_size


def _fusion_weights(model, relations: list) -> dict:
    """Branch → decision weight; with per-relation fusion, relation key (``"← key"`` inverse) → such a map."""
    import torch

    count = len(relations)
    device = next(model.parameters()).device
    with torch.inference_mode():
        weights = model.decision.weights(torch.arange(2 * count, device=device)).cpu()
    names = tuple(model.branch_names)
    if weights.dim() == 1:
        return dict(zip(names, weights.tolist()))
    keys = [r.key for r in relations] + [f"← {r.key}" for r in relations]
    return {key: dict(zip(names, row)) for key, row in zip(keys, weights.tolist())}


def _write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON atomically, so a reader never sees half a file."""
    import json

    from models.atomic import write_text_atomically

    try:
        write_text_atomically(path, json.dumps(value, indent=2) + "\n", what="the metrics report")
    except OSError as error:
        raise ImfError(f"cannot write {path}: {error.strerror}") from error
