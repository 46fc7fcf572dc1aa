"""Preemption in the control plane: who is in the way of higher-priority work, and what everyone is told.

The scheduler decides; nobody writes to anybody else. A higher-priority FineTuneJob or
ModelDeployment that fits only by preempting waits (``Preempting``) in the queue every
reconciler is given. The reconciler of each running preemptible fine-tune replays the
scheduling pass of the queued requests that outrank it (:func:`preemptor_of`) -- the same
pass the waiting object's own :func:`~corral.scheduler.place` runs -- and, when a decision
names it as a victim, stops its Ray job, keeps holding its GPUs until the job has stopped,
then releases them and queues again (FIFO by creation within its priority). The waiting
object is admitted once the GPUs are actually free, never while they are still in use.

A preempted fine-tune is re-submitted under a new submission id (``-r<preemptions>``) with
the same job file: same checkpoint folder and Ray Train run name, so ``resume: auto``
continues from its newest checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from corral.api.v1alpha1 import FineTuneJob, GPUPool
from corral.api.v1alpha1.common import Placement
from corral.api.v1alpha1.finetunejob import FineTuneJobStatus
from corral.scheduler import Allocation, Decision, PlacementRequest

from ._placement import allocation_of
from ._plan import queue_plan

__all__ = ["preempted_message", "preemptor_of", "preempting_message", "released", "resume_note"]


def preemptor_of(
    job: FineTuneJob,
    pools: Iterable[GPUPool],
    allocations: Sequence[Allocation],
    queue: Sequence[PlacementRequest],
) -> PlacementRequest | None:
    """The queued request that preempts ``job`` now, or None.

    Only a preemptible job that holds GPUs can be preempted, and only by a request of
    strictly higher priority. The answer is the decision each outranking request gets from
    its own ``place()`` (same allocations in the same order, same queue before it), so the
    victim and the preemptor agree without talking to each other.

    Args:
        job: A fine-tune (its ``status.placement`` says what it holds).
        pools: Every GPUPool.
        allocations: Every allocation, as the runner lists them (the job's own among them).
        queue: Requests waiting for GPUs.
    """
    mine = allocation_of(job)
    if mine is None or not mine.preemptible:
        return None
    key = mine.key
    ahead = [r for r in queue if r.priority > mine.priority and r.key != key]
    if not ahead:
        return None
    held = tuple(allocations)
    if all(a.key != key for a in held):
        held = (*held, mine)
    # Those that outrank the job come first in a pass, so the whole queue's plan decides them as place() does.
    plan = queue_plan(pools, held, tuple(queue))
    for request in ahead:
        request_, decision = plan[request.key]
        if key in decision.preempt:
            return request_
    return None


def _gpus(placement: Placement | None) -> str:
    if placement is None or not placement.gpus:
        return "its GPUs"
    return f"{placement.gpus} x {placement.accelerator_type or 'GPU'} in pool {placement.pool}"


def resume_note(job: FineTuneJob, status: FineTuneJobStatus) -> str:
    """How the next run starts: from the newest checkpoint, or over (``resume: never``, no checkpoint yet)."""
    if job.spec.checkpointing.resume == "never":
        return "starts over (checkpointing.resume is never)"
    steps = [c.step for c in status.checkpoints]
    if steps:
        return f"resumes from checkpoint step {max(steps)}"
    return f"restarts from step 0 (no checkpoint yet; one is written every {job.spec.checkpointing.every_steps} steps)"


def preempted_message(job: FineTuneJob, status: FineTuneJobStatus, by: PlacementRequest) -> str:
    """The victim's condition and event message: who preempted it, what was freed, how it comes back."""
    return (
        f"preempted by {by.key} (priority {by.priority}) to free {_gpus(status.placement)}; "
        f"{resume_note(job, status)} when capacity returns"
    )


def preempting_message(decision: Decision) -> str:
    """The preemptor's Pending message while its victims stop."""
    what = f"{decision.gpus} x {decision.accelerator_type} in pool {decision.pool}"
    return (
        f"preempting lower-priority preemptible {', '.join(decision.preempt)} to free {what}; "
        "starts once their Ray jobs have stopped and released the GPUs"
    )


def released(placement: Placement | None, message: str) -> Placement | None:
    """``placement`` with no GPUs held (the pool and accelerator kept for ``corral describe``)."""
    if placement is None:
        return None
    return placement.model_copy(update={"replicas": 0, "gpus_per_replica": 0, "gpus": 0, "message": message})
