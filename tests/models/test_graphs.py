"""The fixed-shape batches of the CUDA-graph step (models.graphs), checked on the CPU.

The capture itself needs a GPU (tests/models/test_cuda.py). What can go wrong without one is the
padding: it must change neither the loss nor any gradient, and every full batch of an epoch must fit.
"""

import pytest
import torch

from models.config import RunConfig, resolve
from models.graphs import StepShape, epoch_shape, hold_learning_rates, pack_batch, plain_learning_rates, unpack_batch
from models.imf import IMF
from models.index import TailIndex, with_inverses
from models.losses import Positives
from models.sampling import epoch_batches
from models.scorer import RelationGroups
from models.losses import Objective

from .conftest import make_kg


def _setup(missing: float = 0.3):
    kg = make_kg(missing=missing)
    model = IMF(
        kg.num_entities,
        kg.num_relations,
        dim=8,
        modalities=("structure", "visual", "text"),
        feature_dims={"visual": 12, "text": 8},
        input_dropout=0.0,
        relation_dropout=0.0,
        hidden_dropout=0.0,
        fusion_dropout=0.0,
    )
    for modality in ("visual", "text"):
        model.set_features(modality, *kg.features[modality])
    objective = Objective(
        model, label_smoothing=0.1, smoothing_mode="tucker", contrastive_weight=0.5, fused_weight=1.0, temperature=0.1
    )
    index = TailIndex.from_triples(
        with_inverses(kg.train.long(), kg.num_relations), num_entities=kg.num_entities, num_relations=2 * kg.num_relations
    )
    return kg, model, objective, index


def _loss_and_gradients(model, objective, *inputs):
    model.zero_grad(set_to_none=True)
    total, terms = objective(*inputs)
    total.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return total.detach(), terms, gradients


@pytest.mark.parametrize("spare", [0, 1, 5])
def test_padding_changes_neither_the_loss_nor_any_gradient(spare):
    kg, model, objective, index = _setup()
    model.train()
    heads_all, relations_all = index.pairs()
    generator = torch.Generator().manual_seed(spare)
    batch = torch.randperm(heads_all.numel(), generator=generator)[:24]
    heads, relations = heads_all[batch], relations_all[batch]
    rows, tails = index.lookup(heads, relations)
    groups = RelationGroups.of(relations)
    entities = torch.unique(heads)
    expected = _loss_and_gradients(model, objective, heads, relations, Positives(rows, tails), groups, entities)

    shape = StepShape(
        batch=24,
        groups=min(len(groups.counts) + spare, 2 * kg.num_relations),
        width=min(groups.width + spare, 24),
        positives=rows.numel() + 7 * spare + (kg.num_entities + 3) * (spare == 5),  # past one row of cells
    )
    padded = unpack_batch(pack_batch(heads, relations, rows, tails, shape, num_entities=kg.num_entities), shape)
    assert padded.entity_mask.sum() == entities.numel()
    # The padding lies on distinct cells (CUDA adds a run of equal indices serially).
    cells = padded.positives.rows[rows.numel():] * kg.num_entities + padded.positives.cols[rows.numel():]
    assert cells.unique().numel() == cells.numel()
    got = _loss_and_gradients(model, objective, *padded)

    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-6)
    for name, value in expected[1].items():
        torch.testing.assert_close(got[1][name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert expected[1]["contrastive"] > 0
    assert got[2].keys() == expected[2].keys()
    for name, gradient in expected[2].items():
        torch.testing.assert_close(got[2][name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_every_full_batch_of_an_epoch_fits_its_shape():
    kg, _, _, index = _setup()
    _, relations = index.pairs()
    counts = index.tail_counts()
    heads, _ = index.pairs()
    for per_batch in (0, 2):
        batches = epoch_batches(relations, batch_size=16, relations_per_batch=per_batch,
                                generator=torch.Generator().manual_seed(3))
        shape = epoch_shape(batches, relations, counts, batch_size=16, relation_ids=2 * kg.num_relations)
        assert shape.batch == 16
        for field in (shape.groups, shape.width, shape.positives):
            assert field & (field - 1) == 0 or field in (2 * kg.num_relations, 16)  # a power of two, or a bound
        assert shape.groups <= 2 * kg.num_relations and shape.width <= 16
        full = [b for b in batches if b.numel() == 16]
        assert len(full) < len(batches)  # the short last batch is left to the eager step
        for batch in full:
            rows, tails = index.lookup(heads[batch], relations[batch])
            packed = pack_batch(heads[batch], relations[batch], rows, tails, shape, num_entities=kg.num_entities)
            assert packed.shape == (shape.length,)
            assert int(unpack_batch(packed, shape).positives.weight.sum()) == rows.numel()


def test_an_epoch_without_a_full_batch_has_no_shape_and_shapes_only_grow():
    relations = torch.tensor([0, 1, 1, 2])
    counts = torch.tensor([1, 2, 3, 4])
    assert epoch_shape([torch.arange(4)], relations, counts, batch_size=8, relation_ids=6) is None
    shape = epoch_shape([torch.arange(4)], relations, counts, batch_size=4, relation_ids=6)
    assert shape == StepShape(batch=4, groups=4, width=2, positives=16)
    wider = StepShape(4, 2, 4, 32).covering(shape)
    assert wider == StepShape(4, 4, 4, 32)
    assert StepShape(8, 1, 1, 1).covering(shape) == StepShape(8, 1, 1, 1)  # another batch size: not merged


def test_a_batch_that_does_not_fit_is_refused():
    shape = StepShape(batch=4, groups=2, width=2, positives=4)
    heads = torch.tensor([0, 1, 2, 3])
    rows, tails = torch.tensor([0, 1]), torch.tensor([5, 6])
    packed = unpack_batch(pack_batch(heads, torch.tensor([0, 0, 1, 1]), rows[:1], tails[:1], shape, num_entities=2), shape)
    assert packed.positives.rows.tolist() == [0, 0, 0, 1] and packed.positives.cols.tolist() == [5, 0, 1, 0]
    assert packed.positives.weight.tolist() == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="3 relations"):
        pack_batch(heads, torch.tensor([0, 1, 2, 2]), rows, tails, shape, num_entities=9)
    with pytest.raises(ValueError, match="up to 3 rows"):
        pack_batch(heads, torch.tensor([0, 1, 1, 1]), rows, tails, shape, num_entities=9)
    with pytest.raises(ValueError, match="5 known tails"):
        pack_batch(heads, torch.tensor([0, 0, 1, 1]), torch.arange(5) % 4, torch.arange(5), shape, num_entities=9)
    with pytest.raises(ValueError, match="3 queries"):
        pack_batch(heads[:3], torch.tensor([0, 0, 1]), rows, tails, shape, num_entities=9)


def test_checkpoints_hold_learning_rates_as_plain_numbers():
    optimizer_state = {"state": {}, "param_groups": [{"lr": torch.tensor(0.003), "params": [0]}]}
    scheduler_state = {"base_lrs": [0.003], "_last_lr": [torch.tensor(0.002)], "last_epoch": 4}
    plain = plain_learning_rates(optimizer_state, "param_groups")
    assert plain["param_groups"][0] == {"lr": pytest.approx(0.003), "params": [0]}
    assert type(plain["param_groups"][0]["lr"]) is float
    assert isinstance(optimizer_state["param_groups"][0]["lr"], torch.Tensor)  # the live state is untouched
    plain = plain_learning_rates(scheduler_state, None)
    assert type(plain["_last_lr"][0]) is float and plain["last_epoch"] == 4


def test_cuda_graphs_are_on_by_default_and_off_for_runs_recorded_before_them():
    assert resolve({}).train.cuda_graphs is True
    stored = resolve({}).to_dict()
    del stored["train"]["cuda_graphs"]
    assert RunConfig.from_dict(stored).train.cuda_graphs is False


def test_learning_rates_are_plain_floats_without_the_graphed_step():
    """A run resumed on the CPU from a graphed run's state: capturable off, lr a float again."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=0.1, fused=True)
    optimizer.param_groups[0].update(lr=torch.tensor(0.05), capturable=True)
    assert hold_learning_rates(optimizer, False, torch.device("cpu")) == []
    group = optimizer.param_groups[0]
    assert group["capturable"] is False and type(group["lr"]) is float and group["lr"] == pytest.approx(0.05)
