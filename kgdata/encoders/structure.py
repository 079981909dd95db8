"""The ``gat`` structure encoder: a relation-aware graph attention network trained with TransE.

After KBGAT (Nathani et al., ACL 2019): entity embeddings are refined by ``GATConv`` layers whose
attention sees the relation of each edge (relation embeddings as ``edge_attr``, ``edge_dim``); every
train triple ``(h, r, t)`` gives a message ``h → t`` typed ``r`` and an inverse message ``t → h`` typed
``r⁻¹``. The output entity embedding is the attention output plus a linear map of the input embedding,
L2-normalised; relation embeddings pass through their own linear map. Training minimises the TransE
margin loss ``max(0, γ + ‖h + r − t‖ − ‖h' + r − t'‖)`` against corrupted heads or tails, on the
TRAIN split only.

:func:`train_gat` takes plain tensors and returns the entity ``(N, D)`` and relation ``(R, D)``
embeddings; :class:`GATEncoder` is its registry entry.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Callable, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from kgdata.encoders.base import Encoder, register, require_memory
from kgdata.errors import ImfError

#: The largest seed: torch's generators take a signed 64-bit integer.
MAX_SEED = 2**63 - 1


class StructureInput(NamedTuple):
    """What a structure encoder reads: the train triples ``(n, 3)`` and the id ranges."""

    triples: torch.Tensor
    num_entities: int
    num_relations: int


@dataclass
class GATResult:
    entity: torch.Tensor  # float32 (N, D), L2-normalised rows
    relation: torch.Tensor  # float32 (R, D)
    mask: torch.Tensor  # bool (N,): entities that occur in a train triple
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    seed: int = 0
    batch_size: int = 0


def message_graph(triples: torch.Tensor, num_relations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges for message passing: ``h → t`` typed ``r`` and ``t → h`` typed ``r + R``.

    Returns ``edge_index`` ``(2, 2n)`` and ``edge_type`` ``(2n,)``.
    """
    h, r, t = triples.long().T
    edge_index = torch.stack([torch.cat([h, t]), torch.cat([t, h])])
    edge_type = torch.cat([r, r + num_relations])
    return edge_index, edge_type


def _gat_conv_class():
    import warnings

    with warnings.catch_warnings():  # torch_geometric scripts helpers with the deprecated torch.jit.script
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.script.*")
        from torch_geometric.nn import GATConv
    return GATConv


class RelationalGAT(nn.Module):
    """Entity and relation embeddings refined by relation-aware graph attention.

    Args:
        num_entities: ``N``.
        num_relations: ``R`` (inverse relations are added internally).
        hidden_channels: the embedding size ``D`` (divisible by ``heads``).
        heads: attention heads per layer (their outputs are concatenated).
        num_layers: stacked ``GATConv`` layers.
        edge_channels: size of the edge features: relation embeddings are projected to it once per
            relation type, then gathered per edge (a D-wide ``edge_attr`` would cost ``E × D²`` per layer).
        dropout: attention dropout.
    """

    def __init__(
        self,
        num_entities: int,
        num_relations: int,
        hidden_channels: int,
        *,
        heads: int = 2,
        num_layers: int = 2,
        edge_channels: int = 32,
        dropout: float = 0.0,
    ):
        super().__init__()
        GATConv = _gat_conv_class()

        if hidden_channels % heads:
            raise ImfError(f"--dim {hidden_channels} must be divisible by the number of heads ({heads})")
        if num_layers < 1:
            raise ImfError("the GAT needs at least one layer")
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.hidden_channels = hidden_channels
        self.heads = heads
        self.entity = nn.Embedding(num_entities, hidden_channels)
        self.relation = nn.Embedding(2 * num_relations, hidden_channels)  # forward and inverse
        self.edge = nn.Linear(hidden_channels, edge_channels)
        self.convs = nn.ModuleList(
            GATConv(
                hidden_channels,
                hidden_channels // heads,
                heads=heads,
                edge_dim=edge_channels,
                dropout=dropout,
                add_self_loops=True,
                fill_value="mean",
            )
            for _ in range(num_layers)
        )
        self.skip = nn.Linear(hidden_channels, hidden_channels, bias=False)
        self.relation_out = nn.Linear(hidden_channels, hidden_channels, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.entity.weight)
        nn.init.xavier_uniform_(self.relation.weight)
        self.edge.reset_parameters()
        for conv in self.convs:
            conv.reset_parameters()
        nn.init.eye_(self.skip.weight)
        nn.init.eye_(self.relation_out.weight)

    def forward(self, edge_index: torch.Tensor, edge_type: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Entity ``(N, D)`` (L2-normalised) and forward-relation ``(R, D)`` embeddings."""
        initial = self.entity.weight
        edge_attr = self.edge(self.relation.weight)[edge_type]
        x = initial
        for conv in self.convs:
            x = F.elu(conv(x, edge_index, edge_attr=edge_attr))
        entity = F.normalize(x + self.skip(initial), dim=-1)
        relation = self.relation_out(self.relation.weight[: self.num_relations])
        return entity, relation

    def __repr__(self) -> str:
        return (
            f"RelationalGAT({self.num_entities}, {self.num_relations}, hidden_channels={self.hidden_channels}, "
            f"heads={self.heads}, num_layers={len(self.convs)})"
        )


def transe_distance(head: torch.Tensor, relation: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
    """``‖h + r − t‖₂`` per row."""
    return (head + relation - tail).norm(p=2, dim=-1)


def corrupt(triples: torch.Tensor, num_entities: int, negatives: int, generator: torch.Generator) -> torch.Tensor:
    """``negatives`` corruptions per triple: a random head or (with equal chance) a random tail."""
    repeated = triples.repeat_interleave(negatives, dim=0)
    random = torch.randint(num_entities, (len(repeated),), generator=generator, device=triples.device)
    replace_head = torch.rand(len(repeated), generator=generator, device=triples.device) < 0.5
    corrupted = repeated.clone()
    corrupted[:, 0] = torch.where(replace_head, random, repeated[:, 0])
    corrupted[:, 2] = torch.where(replace_head, repeated[:, 2], random)
    return corrupted


def margin_loss(
    entity: torch.Tensor, relation: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float
) -> torch.Tensor:
    """Mean of ``max(0, margin + d(positive) − d(negative))``, each positive repeated per negative."""
    negatives = len(negative) // len(positive)
    d_pos = transe_distance(entity[positive[:, 0]], relation[positive[:, 1]], entity[positive[:, 2]])
    d_neg = transe_distance(entity[negative[:, 0]], relation[negative[:, 1]], entity[negative[:, 2]])
    return F.relu(margin + d_pos.repeat_interleave(negatives) - d_neg).mean()


def default_batch_size(num_triples: int) -> int:
    return max(2048, -(-num_triples // 8))


def gat_training_bytes(
    num_entities: int, num_relations: int, num_triples: int, *, dim: int, layers: int, batch_size: int, negatives: int
) -> int:
    """A rough count of the bytes :func:`train_gat` needs: the parameters with their gradients and Adam's
    two moments, and each layer's per-edge messages (with self loops) forward and backward."""
    parameters = (layers + 2) * dim * dim + (num_entities + 2 * num_relations) * dim
    edges = 2 * num_triples + num_entities
    activations = 3 * layers * edges * dim + 2 * batch_size * (negatives + 1) * dim
    return 4 * (4 * parameters + activations)


def check_float_options(lr: float, margin: float) -> None:
    """Refuse a learning rate that is not a positive finite number and a margin that is not a finite
    number of at least 0 (the margin must also fit the float32 the GAT trains in)."""
    if not (math.isfinite(lr) and lr > 0):
        raise ImfError(f"--lr must be a positive finite number, got {lr:g}")
    largest = torch.finfo(torch.float32).max
    if not (math.isfinite(margin) and 0 <= margin <= largest):
        raise ImfError(f"--margin must be a finite number from 0 to {largest:.3g}, got {margin:g}")


def _diverged(epoch: int, lr: float, what: str) -> ImfError:
    return ImfError(
        f"the GAT training diverged in epoch {epoch}: {what} not finite (nan or inf), and no new features were "
        f"stored. Encode again with a lower learning rate than --lr {lr:g} (e.g. --lr {lr / 10:g})"
    )


def train_gat(
    triples: torch.Tensor,
    num_entities: int,
    num_relations: int,
    *,
    dim: int = 256,
    heads: int = 2,
    layers: int = 2,
    epochs: int = 30,
    lr: float = 0.01,
    margin: float = 1.0,
    negatives: int = 8,
    batch_size: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, float], None] | None = None,
) -> GATResult:
    """Train a :class:`RelationalGAT` on ``triples`` (the TRAIN split, ``(n, 3)`` int) with TransE.

    Each step runs the GAT over the whole train graph and scores one minibatch of triples; without
    ``batch_size``, a batch is ``max(2048, ceil(n / 8))`` triples (at most 8 steps per epoch, since every
    step costs a full-graph pass). ``on_epoch(epoch, mean_loss)`` is called after every epoch.
    """
    if triples.ndim != 2 or triples.shape[1] != 3 or len(triples) == 0:
        raise ImfError(f"the GAT encoder needs train triples of shape (n, 3), got {tuple(triples.shape)}")
    if batch_size is None:
        batch_size = default_batch_size(len(triples))
    for name, value in (("epochs", epochs), ("negatives", negatives), ("batch_size", batch_size), ("dim", dim)):
        if value < 1:
            raise ImfError(f"--{name.replace('_', '-')} must be at least 1")
    check_float_options(lr, margin)
    device = torch.device(device)
    # a batch holds at most the train triples, whatever --batch-size asked (1e8 was refused as 1.8 TB)
    needed = gat_training_bytes(
        num_entities, num_relations, len(triples), dim=dim, layers=layers, batch_size=min(batch_size, len(triples)),
        negatives=negatives,
    )
    asked = f"the GAT at --dim {dim} with batches of {batch_size:,} triples × {negatives:,} negatives"
    require_memory(needed, device, f"{asked} ({len(triples):,} train triples)", "choose a smaller --dim, --batch-size or --negatives")
    torch.manual_seed(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    triples = triples.long().to(device)
    edge_index, edge_type = message_graph(triples, num_relations)
    model = RelationalGAT(num_entities, num_relations, dim, heads=heads, num_layers=layers).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    losses: list[float] = []
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(triples), generator=generator, device=device)
        total, count = 0.0, 0
        for start in range(0, len(triples), batch_size):
            positive = triples[order[start : start + batch_size]]
            negative = corrupt(positive, num_entities, negatives, generator)
            entity, relation = model(edge_index, edge_type)
            loss = margin_loss(entity, relation, positive, negative, margin)
            value = loss.item()
            if not math.isfinite(value):
                raise _diverged(epoch + 1, lr, "the loss is")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            try:
                optimizer.step()
            except RuntimeError as error:  # Adam's step size overflows float32 at a huge --lr
                if "without overflow" not in str(error):
                    raise
                raise _diverged(epoch + 1, lr, "the update is") from None
            total += value * len(positive)
            count += len(positive)
        losses.append(total / count)
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])

    model.eval()
    with torch.inference_mode():
        entity, relation = model(edge_index, edge_type)
    if not (torch.isfinite(entity).all() and torch.isfinite(relation).all()):
        raise _diverged(epochs, lr, "the embeddings are")
    mask = torch.zeros(num_entities, dtype=torch.bool)
    mask[triples[:, 0].cpu()] = True
    mask[triples[:, 2].cpu()] = True
    entity = entity.float().cpu().clone()
    entity[~mask] = 0.0
    return GATResult(
        entity=entity, relation=relation.float().cpu().clone(), mask=mask, losses=losses, seed=seed,
        batch_size=batch_size,
    )


@register
class GATEncoder(Encoder):
    """The ``gat`` structure encoder. Its output: entity and relation embeddings of size ``dim``."""

    name: ClassVar[str] = "gat"
    modality: ClassVar[str] = "structure"

    def __init__(
        self,
        *,
        dim: int = 256,
        heads: int = 2,
        layers: int = 2,
        epochs: int = 30,
        lr: float = 0.01,
        margin: float = 1.0,
        negatives: int = 8,
        batch_size: int | None = None,
        seed: int | None = None,
    ):
        super().__init__(
            dim=dim, heads=heads, layers=layers, epochs=epochs, lr=lr, margin=margin,
            negatives=negatives, batch_size=batch_size, seed=seed,
        )
        check_float_options(lr, margin)
        if dim % heads:
            raise ImfError(f"--dim {dim} must be divisible by the number of heads ({heads})")
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise ImfError(f"--seed {seed} is out of range: give an integer from 0 to {MAX_SEED} (2^63 - 1)")

    @property
    def dim(self) -> int:
        return self.options["dim"]

    def load(self, device: torch.device) -> None:
        self.device = device

    def encode(self, batch: StructureInput, on_epoch: Callable[[int, float], None] | None = None) -> GATResult:
        """Train on ``batch`` (the whole train graph) and return the embeddings.

        Without a seed one is drawn, used and returned in the result (``GATResult.seed``).
        """
        options = dict(self.options)
        seed = options.pop("seed")
        if seed is None:
            seed = secrets.randbelow(2**31)
        return train_gat(
            batch.triples, batch.num_entities, batch.num_relations,
            seed=seed, device=self.device, on_epoch=on_epoch, **options,
        )
