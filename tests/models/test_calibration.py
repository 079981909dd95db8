import json

import pytest
import torch

from models.calibration import fit_decision_weights, fit_fusion_logits
from models.checkpoint import load_checkpoint
from models.config import ConfigError, resolve
from models.evaluation import build_filter
from models.imf import IMF
from models.training import train


def test_the_informative_branch_gets_the_weight():
    generator = torch.Generator().manual_seed(0)
    answers = torch.randint(0, 50, (200,), generator=generator)
    noise = torch.randn(200, 50, generator=generator)
    good = noise.clone()
    good[torch.arange(200), answers] += 3.0  # the answer stands out, but not always at the top
    weights = torch.softmax(fit_fusion_logits([noise, good], answers, torch.empty(0, dtype=torch.long),
                                              torch.empty(0, dtype=torch.long)), dim=0)
    assert weights[1] > 0.9


def test_filtered_candidates_do_not_count():
    # Branch 0 ranks a known other answer (column 1) above the target; filtered, it is perfect.
    # Branch 1 ranks an unknown candidate (column 2) above the target.
    queries = 40
    answers = torch.zeros(queries, dtype=torch.long)
    first = torch.zeros(queries, 4)
    first[:, 0], first[:, 1] = 5.0, 9.0
    second = torch.zeros(queries, 4)
    second[:, 0], second[:, 2] = 5.0, 9.0
    rows = torch.arange(queries)
    cols = torch.ones(queries, dtype=torch.long)
    weights = torch.softmax(fit_fusion_logits([first, second], answers, rows, cols), dim=0)
    assert weights[0] > 0.9
    unfiltered = torch.softmax(fit_fusion_logits([first, second], answers, rows[:0], cols[:0]), dim=0)
    assert unfiltered[0] < 0.9  # without the filter both branches look equally wrong


def test_fit_writes_weights_into_the_model(kg):
    model = IMF(kg.num_entities, kg.num_relations, dim=8, feature_dims={"visual": 12, "text": 8})
    for modality in ("visual", "text"):
        model.set_features(modality, *kg.features[modality])
    index = build_filter([kg.train, kg.valid], num_entities=kg.num_entities, num_relations=kg.num_relations)
    weights = fit_decision_weights(model, kg.valid, index, num_relations=kg.num_relations)
    assert weights.shape == (4,) and torch.isclose(weights.sum(), torch.tensor(1.0))
    assert torch.allclose(model.decision.weights(torch.zeros(1, dtype=torch.long)), weights)
    assert model.training  # the train/eval mode is restored


def test_training_fits_weights_on_valid_and_keeps_them_out_of_the_optimizer(tmp_path, kg):
    config = resolve(
        {
            "model": {"dim": 16, "detach_fusion_inputs": True},
            "train": {"epochs": 4, "eval_every": 2, "patience": 0, "lr": 0.01, "batch_size": 16,
                      "seed": 3, "device": "cpu"},
        }
    )
    train(kg, config, tmp_path / "run", progress=False)
    trace = [json.loads(line) for line in (tmp_path / "run" / "trace.jsonl").read_text().splitlines()]
    fitted = [record["fusion_weights"] for record in trace if "valid" in record]
    assert len(fitted) == 2 and all(set(w) == {"structure", "visual", "text", "multimodal"} for w in fitted)
    assert "fusion_weights" not in trace[0]  # epoch 1 has no evaluation
    model, _ = load_checkpoint(tmp_path / "run" / "best.pt")
    best = next(r for r in trace if r["epoch"] == trace[-1]["best_epoch"])
    stored = model.decision.weights(torch.zeros(1, dtype=torch.long))
    assert stored.tolist() == pytest.approx(list(best["fusion_weights"].values()), abs=1e-6)


def test_joint_fusion_learns_weights_by_gradient(tmp_path, kg):
    config = resolve(
        {
            "model": {"dim": 16},
            "train": {"epochs": 2, "eval_every": 2, "patience": 0, "lr": 0.05, "batch_size": 16, "seed": 3,
                      "device": "cpu", "fit_fusion_on_valid": False, "fused_loss_weight": 1.0},
        }
    )
    train(kg, config, tmp_path / "run", progress=False)
    trace = [json.loads(line) for line in (tmp_path / "run" / "trace.jsonl").read_text().splitlines()]
    assert all("fusion_weights" not in record for record in trace)
    model, _ = load_checkpoint(tmp_path / "run" / "last.pt")
    assert not torch.allclose(model.decision.logits, torch.zeros(4))


def test_boolean_config_values():
    flags = {"train.fit_fusion_on_valid": "false", "train.fused_loss_weight": 1}
    assert resolve({}, flags).train.fit_fusion_on_valid is False
    assert resolve({"model": {"detach_fusion_inputs": True}}).model.detach_fusion_inputs is True
    with pytest.raises(ConfigError, match="expects bool"):
        resolve({}, {"train.fit_fusion_on_valid": "maybe"})
    with pytest.raises(ConfigError, match="expects bool"):
        resolve({}, {"model.detach_fusion_inputs": 1})


def test_weights_that_nothing_would_train_are_a_config_error():
    with pytest.raises(ConfigError, match="fused_loss_weight is 0; set it above 0 or set train.fit_fusion"):
        resolve({}, {"train.fit_fusion_on_valid": False})
    with pytest.raises(ConfigError, match="'learned-per-relation' learns its weights"):
        resolve({}, {"model.fusion": "learned-per-relation", "train.fit_fusion_on_valid": False})
    # Per-relation weights fitted on valid need no fused loss.
    assert resolve({}, {"model.fusion": "learned-per-relation"}).train.fit_fusion_on_valid
    assert resolve({}, {"model.fusion": "mean"}).train.fused_loss_weight == 0.0


def test_per_relation_weights_are_fitted_per_relation_and_shrunk_to_shared_ones():
    torch.manual_seed(0)
    q, n = 400, 30
    answers = torch.randint(0, n, (q,))
    relations = torch.arange(q) % 2
    good = torch.randn(q, n)
    good[torch.arange(q), answers] += 4.0
    noise = torch.randn(q, n)
    # Relation 0's answers are in branch 0, relation 1's in branch 1; relation 2 has no queries.
    first = torch.where(relations[:, None] == 0, good, noise)
    second = torch.where(relations[:, None] == 1, good, noise)
    empty = torch.empty(0, dtype=torch.long)
    logits = fit_fusion_logits([first, second], answers, empty, empty, groups=relations, num_groups=3)
    weights = torch.softmax(logits, dim=-1)
    assert logits.shape == (3, 2)
    assert weights[0, 0] > 0.8 and weights[1, 1] > 0.8
    torch.testing.assert_close(weights[2], torch.full((2,), 0.5), atol=0.1, rtol=0)  # no queries: the shared mix
