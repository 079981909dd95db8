"""``benchmarks/bench_train.py``'s cost model, checked against torch's own FLOP counter on IMF's real loop."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from models.config import resolve
from models.kg import KGTensors

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


def bench_train():
    spec = importlib.util.spec_from_file_location("bench_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_kg(*, text: bool) -> KGTensors:
    generator = torch.Generator().manual_seed(0)
    n, r = 60, 6
    triples = torch.stack(
        [torch.randint(n, (600,), generator=generator), torch.randint(r, (600,), generator=generator),
         torch.randint(n, (600,), generator=generator)], dim=1,
    ).unique(dim=0)
    features = {"text": (torch.randn(n, 24, generator=generator), torch.ones(n, dtype=torch.bool))} if text else {}
    return KGTensors(n, r, triples[:-40], triples[-40:-20], triples[-20:], features=features)


@pytest.mark.parametrize("text", [False, True], ids=["structure", "structure+text"])
@pytest.mark.parametrize("relations_per_batch", [0, 3])
def test_the_cost_model_counts_the_matmul_flops_torch_counts(text, relations_per_batch):
    bench = bench_train()
    kg = random_kg(text=text)
    dim, batch = 16, 32
    config = resolve({
        "model": {"dim": dim, "modalities": ["structure", "text"] if text else ["structure"]},
        "train": {"epochs": 1, "batch_size": batch, "relations_per_batch": relations_per_batch, "eval_every": 1,
                  "patience": 0, "seed": 0, "device": "cpu", "checkpoint_minutes": 1e6},
    })
    cost = bench.cost_model(kg, dim=dim, batch_size=batch, relations_per_batch=relations_per_batch,
                            branches=3 if text else 1, fusion_inputs=2 if text else 0)
    counted = bench.counted_matmul_flops(kg, config, steps=10_000)  # the whole epoch
    assert counted["steps"] == cost["steps"]  # every step of the epoch
    per_step = {name: flops / cost["steps"] for name, flops in cost["flops"].items()}
    # The head products run as one zero-padded batched matmul per branch: at least the model's FLOPs.
    assert counted["by_operator"]["aten.bmm"] >= 0.95 * per_step["head products"]
    # Everything else (core, 1-N scoring, fusion, contrastive term) to within the sampling's spread of distinct
    # relations and heads (the model averages three sampled epochs; the run trains on another).
    others = counted["per_step"] - counted["by_operator"]["aten.bmm"]
    modelled = bench.model_matmul_flops(cost) - per_step["head products"]
    assert others == pytest.approx(modelled, rel=0.03)
