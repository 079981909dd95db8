"""The training step as one CUDA graph: fixed shapes, one replay per batch.

On a GPU the eager step is bound by the host: about 2,600 operator calls (forward, backward and the
optimizer, for three or four branches), each a few microseconds of Python and dispatch, took 15 ms a
step on an H200 while the kernels need a fraction of that (issue 11). A CUDA graph records the kernels
of one whole step once and replays them with one call.

A graph replays fixed shapes, and a batch's contents decide several of them: how many distinct
relations it has and how many rows each (the padded ``W_r`` layout of :class:`RelationGroups`), how
many known tails its queries have, and how many distinct heads the contrastive term aligns. Each is
padded to a capacity (:class:`StepShape`) that every full batch of the epoch fits: relations with
``RelationGroups.of(..., capacity=...)``, tails with zero-weight :class:`Positives`, heads with a mask.
The padding changes no value of the loss or of its gradient (``tests/models/test_graphs.py``). The
capacities are the epoch's largest, rounded up to powers of two and never lowered, so a run captures
its graph once or a few times.

A batch is packed on the CPU into one int64 vector (:func:`pack_batch`), sent with one copy into the
graph's input buffer, and unpacked inside the graph (:func:`unpack_batch`).

Dropout masks stay random in every replay (PyTorch's CUDA generator is graph-safe). The optimizer must
be built with ``capturable=True`` and a tensor learning rate, so that the schedule's changes reach the
captured kernels (:func:`hold_learning_rates`). Batches of another size (an epoch's last) and DDP runs
take the eager step.

Measured on an H200 (docs/benchmarks.md, "The training step as one CUDA graph"): a DB15K structure +
text epoch in 3.29 s against 8.78 s eager, with the same losses and valid MRR curve.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from models.losses import Positives
from models.scorer import RelationGroups


def _power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@dataclass(frozen=True)
class StepShape:
    """The fixed shapes of a graphed step.

    Attributes:
        batch: ``B``, the queries per batch.
        groups: The distinct relations a batch may hold (``U`` of the padded layout).
        width: The rows one relation may have in a batch.
        positives: The known tails a batch's queries may have together (``M``).
    """

    batch: int
    groups: int
    width: int
    positives: int

    @property
    def length(self) -> int:
        """The length of a packed batch (see :func:`pack_batch`)."""
        return 6 * self.batch + self.groups + 3 * self.positives

    def covering(self, other: StepShape | None) -> StepShape:
        """The smallest shape that fits both this one and ``other`` (of the same batch size)."""
        if other is None or other.batch != self.batch:
            return self
        return StepShape(self.batch, max(self.groups, other.groups), max(self.width, other.width),
                         max(self.positives, other.positives))


def epoch_shape(
    batches: Sequence[Tensor], relations: Tensor, tail_counts: Tensor, *, batch_size: int, relation_ids: int
) -> StepShape | None:
    """The shape that fits every full batch of an epoch; None when it has none.

    Args:
        batches: The epoch's batches, each ``(b,)`` query indices.
        relations: ``(G,)`` the relation id of every query.
        tail_counts: ``(G,)`` how many known tails every query has.
        batch_size: ``B``; shorter batches are left to the eager step.
        relation_ids: ``2R``, a bound on the distinct relations of a batch.
    """
    groups = width = positives = 0
    for batch in batches:
        if batch.numel() != batch_size:
            continue
        _, counts = torch.unique(relations[batch], return_counts=True)
        groups = max(groups, counts.numel())
        width = max(width, int(counts.max()))
        positives = max(positives, int(tail_counts[batch].sum()))
    if not groups:
        return None
    return StepShape(
        batch_size,
        min(_power_of_two(groups), relation_ids, batch_size),
        min(_power_of_two(width), batch_size),
        _power_of_two(max(positives, 1)),
    )


class StaticInputs(NamedTuple):
    """A packed batch, unpacked: the arguments of the training objective."""

    heads: Tensor
    relations: Tensor
    positives: Positives
    groups: RelationGroups
    entities: Tensor
    entity_mask: Tensor


def pack_batch(
    heads: Tensor, relations: Tensor, rows: Tensor, tails: Tensor, shape: StepShape, *, num_entities: int
) -> Tensor:
    """One batch as one int64 vector of ``shape.length`` (CPU tensors in, a CPU tensor out).

    Layout: heads ``B``, relations ``B``, distinct relations ``U``, each row's group ``B``, each row's
    slot ``B``, positive rows ``M``, positive tails ``M``, positive weights ``M`` (1 or 0), the distinct
    heads padded to ``B`` (with distinct ids, masked out), and their mask ``B`` (1 or 0).

    The padding positives (weight 0) lie on distinct cells of the ``(B, num_entities)`` scores, taken
    in order: the loss's gradient adds them with an accumulating ``index_put_``, which on CUDA adds a
    run of equal indices one after the other (thousands of paddings on one cell would be a serial run
    every step; on DB15K a batch has about 255 positives and the capacity is 16,384).

    Raises:
        ValueError: When the batch does not fit ``shape``.
    """
    size = shape.batch
    if heads.numel() != size:
        raise ValueError(f"a batch of {heads.numel()} queries does not fit a step of {size}")
    if rows.numel() > shape.positives:
        raise ValueError(f"{rows.numel()} known tails do not fit a step of {shape.positives}")
    groups = RelationGroups.of(relations, capacity=(shape.groups, shape.width))
    entities = torch.unique(heads)
    packed = torch.zeros(shape.length, dtype=torch.int64)
    parts = packed.split([size, size, shape.groups, size, size] + [shape.positives] * 3 + [size, size])
    parts[0].copy_(heads)
    parts[1].copy_(relations)
    parts[2].copy_(groups.distinct)
    parts[3].copy_(groups.inverse)
    parts[4].copy_(groups.slots)
    count = rows.numel()
    parts[5][:count] = rows
    parts[6][:count] = tails
    parts[7][:count] = 1
    spread = torch.arange(shape.positives - count)
    parts[5][count:] = (spread // num_entities) % size
    parts[6][count:] = spread % num_entities
    parts[8][: entities.numel()] = entities
    parts[8][entities.numel():] = torch.arange(size - entities.numel()) % num_entities  # masked; distinct ids
    parts[9][: entities.numel()] = 1
    return packed


def unpack_batch(packed: Tensor, shape: StepShape) -> StaticInputs:
    """The objective's arguments from a :func:`pack_batch` vector, on its device; only views and casts."""
    size = shape.batch
    parts = packed.split([size, size, shape.groups, size, size] + [shape.positives] * 3 + [size, size])
    groups = RelationGroups(
        distinct=parts[2],
        inverse=parts[3],
        counts=(0,) * shape.groups,  # only their number is read on this path
        contiguous=False,
        slots=parts[4],
        width=shape.width,
    )
    positives = Positives(parts[5], parts[6], parts[7].float())
    return StaticInputs(parts[0], parts[1], positives, groups, parts[8], parts[9].bool())


StepOutputs = tuple[Tensor, dict[str, Tensor]]


class GraphedStep:
    """Runs training steps from packed batches: a few eager warm-up steps, then one captured graph.

    Args:
        run_step: Takes :class:`StaticInputs` and performs one whole step (forward, backward,
            ``optimizer.step()``), returning the detached loss and its detached terms. It must leave no gradient
            to zero: the caller's optimizer gradients are set to None before capture.
        zero_grad: Sets every gradient to None.
        device: The CUDA device.
        warmup: Eager steps before the capture (they train, like any step).

    After a failed capture :attr:`failure` names the error and the caller goes back to the eager step.
    """

    def __init__(
        self,
        run_step: Callable[[StaticInputs], StepOutputs],
        zero_grad: Callable[[], None],
        device: torch.device,
        *,
        warmup: int = 3,
    ):
        self.run_step = run_step
        self.zero_grad = zero_grad
        self.device = device
        self.warmup = warmup
        self.shape: StepShape | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.buffer: Tensor | None = None
        self.outputs: StepOutputs | None = None
        self.captures = 0
        self.failure: str | None = None
        # Warm-up and capture share one side stream, so autograd makes its nodes on the stream it captures.
        self.stream = torch.cuda.Stream(device)

    def __call__(self, packed: Tensor, shape: StepShape) -> StepOutputs:
        """One step on ``packed`` (a pinned CPU vector from :func:`pack_batch`)."""
        if shape != self.shape or self.buffer is None:
            self.graph, self.outputs, self.shape = None, None, shape
            self.buffer = torch.empty(shape.length, dtype=torch.int64, device=self.device)
        self.buffer.copy_(packed, non_blocking=True)
        if self.graph is not None:
            self.graph.replay()
            return self.outputs
        if self.warmup > 0:  # on a side stream, as torch.cuda.graphs asks of warm-up iterations
            self.warmup -= 1
            current = torch.cuda.current_stream(self.device)
            self.stream.wait_stream(current)
            with torch.cuda.stream(self.stream):
                self.zero_grad()
                outputs = self.run_step(unpack_batch(self.buffer, shape))
            current.wait_stream(self.stream)
            return outputs
        graph = torch.cuda.CUDAGraph()
        self.zero_grad()
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                outputs = self.run_step(unpack_batch(self.buffer, shape))
        except Exception as error:  # noqa: BLE001 - any capture failure falls back to the eager step
            self.failure = f"{type(error).__name__}: {error}"
            self.zero_grad()
            warnings.warn(f"CUDA graph capture failed ({self.failure}); training goes on with the eager step",
                          RuntimeWarning, stacklevel=2)
            raise GraphCaptureFailed(self.failure) from error
        self.graph, self.outputs = graph, outputs
        self.captures += 1
        graph.replay()  # the capture recorded the step without running it
        return outputs


class GraphCaptureFailed(RuntimeError):
    """The step could not be captured; nothing of the batch was trained."""


def hold_learning_rates(
    optimizer: torch.optim.Optimizer, graphed: bool, device: torch.device, tensors: list[Tensor] | None = None
) -> list[Tensor]:
    """Keep each parameter group's learning rate where the step reads it; the tensors that hold them.

    With the graphed step (``graphed``), each group's ``lr`` is one device tensor for the whole run:
    the captured optimizer reads that tensor's memory, so a new value (a float or another tensor, as a
    scheduler step or a loaded state leaves it) is copied into it, and the group is ``capturable``.
    Otherwise ``lr`` becomes a plain float again and the group is not capturable. Call it after
    building the optimizer (``tensors`` None), and after every ``scheduler.step()`` and
    ``load_state_dict`` with the tensors it returned.
    """
    if not graphed:
        for group in optimizer.param_groups:
            group["capturable"] = False
            group["lr"] = float(group["lr"])
        return []
    if not tensors:
        tensors = [torch.zeros((), device=device) for _ in optimizer.param_groups]
    for group, tensor in zip(optimizer.param_groups, tensors):
        group["capturable"] = True
        value = group["lr"]
        if value is not tensor:
            if isinstance(value, Tensor):
                tensor.copy_(value)
            else:
                tensor.fill_(float(value))
            group["lr"] = tensor
    return tensors


def plain_learning_rates(state: dict[str, Any], groups: str | None) -> dict[str, Any]:
    """An optimizer's (``groups="param_groups"``) or scheduler's state dict with learning rates as floats.

    The graphed step keeps them in device tensors; a checkpoint holds plain numbers, so that it resumes
    on any device. The live state is not changed.
    """

    def plain(value: Any) -> Any:
        return float(value) if isinstance(value, Tensor) else value

    state = dict(state)
    if groups is not None:
        state[groups] = [{**group, "lr": plain(group["lr"])} for group in state[groups]]
    for key in ("_last_lr", "base_lrs"):
        if isinstance(state.get(key), list):
            state[key] = [plain(value) for value in state[key]]
    return state
