"""Estimate and placement through ``corral.scheduler``: what a reconciler needs, from API objects.

Besides one object's placement, this builds the scheduler's view of everyone else: the
GPUs admitted objects hold (:func:`allocation_of`) and the queue of objects waiting for
GPUs (:func:`waiting_request`), each with its priority and its place in FIFO order (the
object's creation time, :func:`seq_of`). Every reconciler of a pass is given the same view,
so their decisions agree whatever order the runner visits them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from corral.api.v1alpha1 import Dataset, FineTuneJob, GPUPool, Model, ModelDeployment
from corral.api.v1alpha1.finetunejob import GPU_HOLDING_PHASES
from corral.scheduler import (
    Allocation,
    Decision,
    ModelProfile,
    PlacementRequest,
    request_for_deployment,
    request_for_job,
)

from ._conditions import get_condition
from ._plan import decide

__all__ = [
    "WAITING_REASONS",
    "allocation_of",
    "job_request",
    "object_key",
    "place_deployment",
    "place_job",
    "profile_of",
    "seq_of",
    "train_tokens",
    "waiting_request",
]

WAITING_REASONS = frozenset(
    {"InsufficientCapacity", "QuotaExceeded", "WaitingForEarlierRequests", "Preempting", "Preempted"}
)
"""Reasons (``Admitted`` of a FineTuneJob, ``Ready`` of a ModelDeployment) of an object queued for GPUs."""


def object_key(obj: FineTuneJob | ModelDeployment) -> str:
    """``Kind/namespace/name``: the key of the object's placement request and allocation.

    The kind is part of it: a FineTuneJob and a ModelDeployment may share a name in one namespace.
    """
    kind = "FineTuneJob" if isinstance(obj, FineTuneJob) else "ModelDeployment"
    return f"{kind}/{obj.metadata.namespace or 'default'}/{obj.metadata.name}"


def seq_of(obj: FineTuneJob | ModelDeployment) -> int:
    """FIFO rank within a priority: the creation time in microseconds (0 when unknown; the key breaks ties)."""
    created = obj.metadata.creation_timestamp
    return int(created.timestamp() * 1_000_000) if created is not None else 0


def profile_of(model: Model) -> ModelProfile | None:
    """The model's shape for the estimator, from its status (None while unknown)."""
    status = model.status
    if not status.parameters:
        return None
    return ModelProfile.from_catalog_params(status.parameters, status.architecture or "llama", status.context_length)


def train_tokens(job: FineTuneJob, datasets: Mapping[str, Dataset]) -> int | None:
    """Tokens trained over all epochs, from the datasets' reports (median example x examples)."""
    total = 0
    for ref in job.spec.datasets:
        dataset = datasets.get(ref.name)
        report = dataset.status.report if dataset is not None else None
        if report is None:
            return None
        stats = {s.role: s for s in report.token_stats}
        per_example = stats["all"].median if "all" in stats else None
        if per_example is None:
            return None
        total += report.examples * min(per_example, job.spec.hyperparameters.max_seq_len)
    chosen = job.status.hyperparameters
    epochs = chosen.epochs if chosen is not None else job.spec.hyperparameters.resolved().epochs
    return total * epochs or None


def job_request(job: FineTuneJob, profile: ModelProfile, datasets: Mapping[str, Dataset]) -> PlacementRequest:
    """The fine-tune's placement request, with its FIFO rank and the tokens its datasets hold."""
    return request_for_job(job, profile, seq=seq_of(job), train_tokens=train_tokens(job, datasets))


def place_job(
    job: FineTuneJob,
    base: Model,
    datasets: Mapping[str, Dataset],
    pools: Iterable[GPUPool],
    allocations: Sequence[Allocation],
    *,
    queue: Sequence[PlacementRequest] = (),
) -> Decision:
    """Where the fine-tune runs (or why it waits): ``corral.scheduler.place``.

    Args:
        job: The fine-tune.
        base: Its base Model.
        datasets: Its Datasets by name.
        pools: Every GPUPool.
        allocations: GPUs held now (its own, if any, is ignored).
        queue: Everything waiting for GPUs; those ahead of the job are placed first.
    """
    profile = profile_of(base)
    key = object_key(job)
    if profile is None:
        if job.spec.resources.gpus_per_worker == 0 and job.spec.resources.pool is None:
            return Decision(
                key=key,
                admitted=True,
                reason="Admitted",
                message="runs on CPUs; no GPUPool needed",
                replicas=job.spec.resources.workers,
            )
        return Decision(
            key=key,
            admitted=False,
            reason="ModelSizeUnknown",
            message=f"the size of base Model {base.metadata.name} is unknown; cannot place GPU work",
        )
    return decide(job_request(job, profile, datasets), pools, tuple(allocations), tuple(queue))


def place_deployment(
    deployment: ModelDeployment,
    model: Model,
    pools: Iterable[GPUPool],
    allocations: Sequence[Allocation],
    *,
    queue: Sequence[PlacementRequest] = (),
) -> Decision:
    """Where the deployment's replicas run (or why they wait); ``queue`` as in :func:`place_job`."""
    profile = profile_of(model)
    key = object_key(deployment)
    replicas = max(deployment.spec.replica_range[0], 1)
    if profile is None:
        if deployment.spec.resources.gpus_per_replica == 0 and deployment.spec.resources.pool is None:
            return Decision(
                key=key, admitted=True, reason="Admitted", message="runs on CPUs; no GPUPool needed", replicas=replicas
            )
        return Decision(
            key=key,
            admitted=False,
            reason="ModelSizeUnknown",
            message=f"the size of Model {model.metadata.name} is unknown; cannot place GPU work",
        )
    request = request_for_deployment(deployment, profile, seq=seq_of(deployment))
    return decide(request, pools, tuple(allocations), tuple(queue))


def allocation_of(obj: FineTuneJob | ModelDeployment) -> Allocation | None:
    """The GPUs an admitted job or deployment holds, from its ``status.placement`` (None: none).

    A preempted fine-tune holds its GPUs until its Ray job has stopped (the reconciler then
    zeroes ``status.placement.gpus``), so nobody is placed on GPUs still in use.
    """
    placement = obj.status.placement
    if placement is None or placement.pool is None or placement.gpus == 0:
        return None
    if isinstance(obj, FineTuneJob):
        if obj.status.phase not in GPU_HOLDING_PHASES:
            return None
        priority, preemptible, kind = obj.spec.resources.priority, obj.spec.resources.preemptible, "FineTuneJob"
    else:
        priority, preemptible, kind = obj.spec.resources.priority, False, "ModelDeployment"
    namespace = obj.metadata.namespace or "default"
    return Allocation(
        key=object_key(obj),
        namespace=namespace,
        pool=placement.pool,
        replicas=placement.replicas,
        gpus_per_replica=placement.gpus_per_replica,
        priority=priority,
        preemptible=preemptible,
        seq=seq_of(obj),
        kind=kind,
    )


def waiting_request(
    obj: FineTuneJob | ModelDeployment, models: Mapping[str, Model], datasets: Mapping[str, Dataset]
) -> PlacementRequest | None:
    """The placement request of an object queued for GPUs, or None when it is not waiting for GPUs.

    Queued: it is new (never reconciled: it takes its place in FIFO order at once), its
    last placement attempt found no room (or must preempt first), or it was preempted and
    has released its GPUs. Objects waiting for something else (a Model that is not Ready,
    a license) are not queued: they hold nobody up.

    Args:
        obj: A FineTuneJob or ModelDeployment.
        models: Models of its namespace by name.
        datasets: Datasets of its namespace by name.
    """
    if obj.metadata.deletion_timestamp is not None or allocation_of(obj) is not None:
        return None
    if isinstance(obj, FineTuneJob):
        condition = get_condition(obj.status.conditions, "Admitted")
        if obj.spec.suspend or obj.status.phase not in (None, "Pending", "Preempted"):
            return None
        model = models.get(obj.spec.base_model.name)
    else:
        condition = get_condition(obj.status.conditions, "Ready")
        if obj.status.phase not in (None, "Pending"):
            return None
        model = models.get(obj.spec.model.name)
    new = obj.status.phase is None and not obj.status.conditions
    if not new and (condition is None or condition.status != "False" or condition.reason not in WAITING_REASONS):
        return None
    profile = profile_of(model) if model is not None else None
    if profile is None:
        return None
    if isinstance(obj, FineTuneJob):
        return job_request(obj, profile, datasets)
    return request_for_deployment(obj, profile, seq=seq_of(obj))
