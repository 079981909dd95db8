"""IMF in pure PyTorch: representations, fusion, scoring, losses, evaluation, training.

The package knows nothing of SQLite, Typer or Textual. Its names are imported lazily, so
``from models.config import resolve`` (or ``import models``) does not import torch.

Beyond the modules that ARCHITECTURE.md proposes, four more each hold one concept:
``index.py`` (the CSR map of known tails that both training targets and evaluation filters use),
``checkpoint.py`` (the checkpoint format and RNG capture, so that inference loads a model without
importing the training loop), ``distributed.py`` (device choice and the collectives, identities
in one process) and ``calibration.py`` (the decision-fusion weights fitted on valid queries, and the
cross-fitted selection). The training loop is split over ``kg.py`` (the graph as tensors),
``sampling.py`` (the order of an epoch's queries), ``loop.py`` (progress bar and signals),
``run_files.py`` (``config.yaml`` and the strict-JSON trace) and ``training.py`` (the loop).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "IMF": "models.imf",
    "ScoreBreakdown": "models.imf",
    "BranchEmbeddings": "models.imf",
    "build_model": "models.imf",
    "FeatureRepresentation": "models.representations",
    "LearnedRepresentation": "models.representations",
    "LowRankTuckerFusion": "models.fusion",
    "TuckERScorer": "models.scorer",
    "DecisionFusion": "models.decision",
    "LossTerms": "models.losses",
    "imf_objective": "models.losses",
    "info_nce": "models.losses",
    "smoothed_bce": "models.losses",
    "TailIndex": "models.index",
    "with_inverses": "models.index",
    "build_filter": "models.evaluation",
    "evaluate": "models.evaluation",
    "evaluate_ranks": "models.evaluation",
    "realistic_ranks": "models.evaluation",
    "rank_bounds": "models.evaluation",
    "rank_metrics": "models.evaluation",
    "FrozenScorer": "models.evaluation",
    "RankResult": "models.evaluation",
    "rank_queries": "models.evaluation",
    "metrics_report": "models.evaluation",
    "fit_decision_weights": "models.calibration",
    "fit_fusion_logits": "models.calibration",
    "ConfigError": "models.config",
    "EvalConfig": "models.config",
    "ModelConfig": "models.config",
    "RunConfig": "models.config",
    "TrainConfig": "models.config",
    "load_yaml": "models.config",
    "resolve": "models.config",
    "CheckpointError": "models.checkpoint",
    "load_checkpoint": "models.checkpoint",
    "read_checkpoint": "models.checkpoint",
    "KGTensors": "models.kg",
    "TrainResult": "models.training",
    "resume": "models.training",
    "train": "models.training",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
    from models.config import ConfigError, EvalConfig, ModelConfig, RunConfig, TrainConfig, load_yaml, resolve
    from models.calibration import fit_decision_weights, fit_fusion_logits
    from models.decision import DecisionFusion
    from models.evaluation import (
        FrozenScorer,
        RankResult,
        build_filter,
        evaluate,
        evaluate_ranks,
        metrics_report,
        rank_bounds,
        rank_metrics,
        rank_queries,
        realistic_ranks,
    )
    from models.fusion import LowRankTuckerFusion
    from models.imf import IMF, BranchEmbeddings, ScoreBreakdown, build_model
    from models.index import TailIndex, with_inverses
    from models.losses import LossTerms, imf_objective, info_nce, smoothed_bce
    from models.representations import FeatureRepresentation, LearnedRepresentation
    from models.scorer import TuckERScorer
    from models.kg import KGTensors
    from models.training import TrainResult, resume, train


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
