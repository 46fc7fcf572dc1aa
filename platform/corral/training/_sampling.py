"""The deterministic data plan: which units each optimizer step and each worker's micro-batches take.

Epoch ``e`` visits the units in ``randperm(n, seed + e)`` order; optimizer step ``s`` of the
epoch takes units ``[s * G, (s + 1) * G)`` of that order (``G`` the global batch, ``drop_last``),
and worker ``r`` takes micro-batch ``k`` of the step as units ``[(k * W + r) * micro, ...)``.
A :class:`DataPosition` ``(epoch, index)`` says where a checkpoint stopped, so a resumed run
continues with exactly the next unit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from corral.api.v1alpha1.finetunejob import Hyperparameters

__all__ = ["DataPosition", "batch_plan", "epoch_order", "rank_microbatches", "steps_per_epoch"]


@dataclass(frozen=True)
class DataPosition:
    """Where the sampler is: ``index`` units of epoch ``epoch`` (0-based) were consumed."""

    epoch: int = 0
    index: int = 0


def batch_plan(global_batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """Return the gradient accumulation steps for a global batch.

    Raises:
        ValueError: The global batch is not micro x workers x accumulation; the message
            names the numbers.
    """
    per_pass = micro_batch_size * world_size
    if global_batch_size % per_pass:
        raise ValueError(
            f"globalBatchSize must be a multiple of microBatchSize x workers (globalBatchSize={global_batch_size}, "
            f"microBatchSize={micro_batch_size}, workers={world_size}, microBatchSize x workers={per_pass})"
        )
    return global_batch_size // per_pass


def steps_per_epoch(units: int, global_batch_size: int) -> int:
    """Optimizer steps per epoch (``drop_last``).

    Raises:
        ValueError: Fewer units than one global batch.
    """
    if units < global_batch_size:
        raise ValueError(
            f"globalBatchSize={global_batch_size} is larger than the {units} training sequences; "
            "lower globalBatchSize or add data"
        )
    return units // global_batch_size


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order in which epoch ``epoch`` visits ``n`` units (seeded, the same on every worker)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return [int(i) for i in torch.randperm(n, generator=gen)]


def rank_microbatches(step_units: Sequence[int], rank: int, world_size: int, micro: int) -> list[list[int]]:
    """Split one global step's units into this rank's micro-batches.

    Args:
        step_units: The ``G`` units of the step, in sampler order.
        rank: This worker.
        world_size: Workers.
        micro: Micro-batch size.

    Returns:
        ``accumulation`` lists of ``micro`` unit indices.
    """
    accum = len(step_units) // (micro * world_size)
    out = []
    for k in range(accum):
        start = (k * world_size + rank) * micro
        out.append(list(step_units[start : start + micro]))
    return out


class _Plan:
    """The deterministic schedule of units over steps (the same on every worker)."""

    def __init__(self, n_units: int, hp: Hyperparameters, world_size: int) -> None:
        hp = hp.resolved()
        self.accum = batch_plan(hp.global_batch_size, hp.micro_batch_size, world_size)
        self.per_epoch = steps_per_epoch(n_units, hp.global_batch_size)
        self.total_steps = self.per_epoch * hp.epochs
        self.n_units = n_units
        self.hp = hp
        self._orders: dict[int, list[int]] = {}

    def order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(self.n_units, self.hp.seed, epoch)}
        return self._orders[epoch]

    def steps_from(self, position: DataPosition) -> Iterator[tuple[DataPosition, list[int]]]:
        g = self.hp.global_batch_size
        epoch, index = position.epoch, position.index
        if index >= self.per_epoch * g:
            epoch, index = epoch + 1, 0
        while epoch < self.hp.epochs:
            order = self.order(epoch)
            while index < self.per_epoch * g:
                yield DataPosition(epoch, index), order[index : index + g]
                index += g
            epoch, index = epoch + 1, 0
