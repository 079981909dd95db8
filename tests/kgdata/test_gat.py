"""The GAT structure encoder: module shapes, the TransE training direction, seeds and stored output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kgdata.encoders import RelationalGAT, StructureInput, create_encoder, encode_dataset, train_gat
from kgdata.encoders.structure import corrupt, margin_loss, message_graph, transe_distance
from kgdata.errors import ImfError
from kgdata.features import load_features


def tiny_graph() -> torch.Tensor:
    """11 entities, 3 relations: cities in countries, countries in continents, countries' capitals."""
    rows = [(city, 0, 6 + city // 2) for city in range(6)]  # city located_in country
    rows += [(6, 1, 9), (7, 1, 9), (8, 1, 10)]  # country part_of continent
    rows += [(6 + k, 2, 2 * k) for k in range(3)]  # country has_capital city
    return torch.tensor(rows)


N, R = 11, 3


def test_message_graph_adds_typed_inverse_edges():
    triples = torch.tensor([[0, 1, 2], [3, 0, 4]])
    edge_index, edge_type = message_graph(triples, num_relations=2)
    assert edge_index.tolist() == [[0, 3, 2, 4], [2, 4, 0, 3]]
    assert edge_type.tolist() == [1, 0, 3, 2]


def test_relational_gat_shapes_norms_and_repr():
    model = RelationalGAT(N, R, 16, heads=2, num_layers=2)
    assert repr(model) == "RelationalGAT(11, 3, hidden_channels=16, heads=2, num_layers=2)"
    edge_index, edge_type = message_graph(tiny_graph(), R)
    entity, relation = model(edge_index, edge_type)
    assert entity.shape == (N, 16) and relation.shape == (R, 16)
    torch.testing.assert_close(entity.norm(dim=-1), torch.ones(N))
    assert model.convs[0].edge_dim == 32  # relation embeddings reach the attention as edge_attr
    with pytest.raises(ImfError, match="divisible"):
        RelationalGAT(10, 3, 15, heads=2)


def test_corruptions_replace_exactly_one_side():
    triples = tiny_graph()
    negative = corrupt(triples, N, 4, torch.Generator().manual_seed(0))
    assert negative.shape == (len(triples) * 4, 3)
    repeated = triples.repeat_interleave(4, dim=0)
    assert (negative[:, 1] == repeated[:, 1]).all()
    assert ((negative[:, 0] == repeated[:, 0]) | (negative[:, 2] == repeated[:, 2])).all()


def test_training_lowers_the_loss_and_positives_outscore_negatives():
    triples = tiny_graph()
    result = train_gat(triples, N, R, dim=16, epochs=60, lr=0.01, negatives=4, seed=0)
    assert len(result.losses) == 60 and result.losses[-1] < 0.5 * result.losses[0]
    assert result.entity.shape == (N, 16) and result.relation.shape == (R, 16)
    negative = corrupt(triples, N, 1, torch.Generator().manual_seed(1))
    keep = ~(negative[:, None, :] == triples[None, :, :]).all(-1).any(-1)  # drop accidental positives
    d_pos = transe_distance(result.entity[triples[:, 0]], result.relation[triples[:, 1]], result.entity[triples[:, 2]])
    d_neg = transe_distance(result.entity[negative[:, 0]], result.relation[negative[:, 1]], result.entity[negative[:, 2]])
    assert d_pos.mean() < d_neg[keep].mean()
    assert margin_loss(result.entity, result.relation, triples, negative, 1.0) < result.losses[0]


def test_training_loss_falls_on_countries_mm(countries_store):
    triples = countries_store.triples_tensor("train")
    result = train_gat(
        triples, countries_store.num_entities, countries_store.num_relations, dim=32, epochs=4, seed=0
    )
    assert result.losses[-1] < result.losses[0]
    assert result.mask.sum() == len(torch.unique(triples[:, [0, 2]]))


def test_same_seed_same_embeddings():
    triples = tiny_graph()
    first = train_gat(triples, N, R, dim=8, epochs=2, seed=3)
    second = train_gat(triples, N, R, dim=8, epochs=2, seed=3)
    other = train_gat(triples, N, R, dim=8, epochs=2, seed=4)
    torch.testing.assert_close(first.entity, second.entity)
    assert not torch.allclose(first.entity, other.entity)


def test_bad_training_arguments_are_clear():
    with pytest.raises(ImfError, match="shape"):
        train_gat(torch.zeros((0, 3), dtype=torch.long), 3, 1)
    with pytest.raises(ImfError, match="--epochs must be at least 1"):
        train_gat(tiny_graph(), N, R, dim=8, epochs=0)
    with pytest.raises(ImfError, match="divisible"):
        create_encoder("gat", "structure", dim=7)


def test_encode_structure_stores_entity_and_relation_features(mm_store):
    report = encode_dataset(mm_store, "structure", options={"dim": 16, "epochs": 3, "seed": 5})
    assert (report.encoder, report.dim, report.rows) == ("gat", 16, 10)
    assert report.extra["seed"] == 5 and len(report.extra["losses"]) == 3
    assert report.extra["options"]["epochs"] == 3
    loaded = load_features(mm_store, "structure")
    assert loaded.relation_matrix.shape == (mm_store.num_relations, 16)
    in_train = np.zeros(mm_store.num_entities, bool)
    train = mm_store.triples("train")
    in_train[train[:, 0]] = in_train[train[:, 2]] = True
    assert loaded.mask.tolist() == in_train.tolist()  # country:zeta only occurs in test
    assert report.missing == 1 and not loaded.matrix[~loaded.mask].any()
    assert encode_dataset(mm_store, "structure", options={"dim": 16, "epochs": 3, "seed": 5}).status == "unchanged"
    assert encode_dataset(mm_store, "structure", options={"dim": 16, "epochs": 3, "seed": 6}).status == "written"


def test_a_drawn_seed_is_recorded_and_reruns_stay_no_ops(mm_store):
    first = encode_dataset(mm_store, "structure", options={"dim": 8, "epochs": 1})
    assert isinstance(first.extra["seed"], int)
    assert load_features(mm_store, "structure").extra["seed"] == first.extra["seed"]
    assert encode_dataset(mm_store, "structure", options={"dim": 8, "epochs": 1}).status == "unchanged"
    assert encode_dataset(mm_store, "structure", options={"dim": 8, "epochs": 1}, batch_size=4).status == "written"


def test_structure_input_is_a_plain_tuple():
    graph = StructureInput(tiny_graph(), N, R)
    encoder = create_encoder("gat", "structure", dim=8, epochs=1, seed=0)
    encoder.load(torch.device("cpu"))
    result = encoder.encode(graph)
    assert result.entity.shape == (N, 8) and result.seed == 0 and encoder.dim == 8


def test_a_batch_size_beyond_the_train_triples_is_counted_as_the_triples_in_the_memory_check(monkeypatch):
    """`imf encode -m structure --batch-size 100000000` on 5 triples was refused as needing 1.8 TB."""
    import kgdata.encoders.base as base

    monkeypatch.setattr(base, "available_memory", lambda device: 10**9)
    result = train_gat(tiny_graph(), N, R, dim=4, epochs=1, batch_size=100_000_000, seed=0)
    assert result.entity.shape == (N, 4)
