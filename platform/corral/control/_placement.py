"""Estimate and placement through ``corral.scheduler``: what a reconciler needs, from API objects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from corral.api.v1alpha1 import Dataset, FineTuneJob, GPUPool, Model, ModelDeployment
from corral.scheduler import (
    Allocation,
    Decision,
    ModelProfile,
    place,
    pools_from,
    request_for_deployment,
    request_for_job,
)

__all__ = ["allocation_of", "place_deployment", "place_job", "profile_of", "train_tokens"]


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
    return total * job.spec.hyperparameters.epochs or None


def place_job(
    job: FineTuneJob,
    base: Model,
    datasets: Mapping[str, Dataset],
    pools: Iterable[GPUPool],
    allocations: Iterable[Allocation],
) -> Decision:
    """Where the fine-tune runs (or why it waits): ``corral.scheduler.place``."""
    profile = profile_of(base)
    key = f"{job.metadata.namespace or 'default'}/{job.metadata.name}"
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
    request = request_for_job(job, profile, train_tokens=train_tokens(job, datasets))
    others = [a for a in allocations if a.key != key]
    return place(request, pools_from(pools), others)


def place_deployment(
    deployment: ModelDeployment, model: Model, pools: Iterable[GPUPool], allocations: Iterable[Allocation]
) -> Decision:
    """Where the deployment's replicas run (or why they wait)."""
    profile = profile_of(model)
    key = f"{deployment.metadata.namespace or 'default'}/{deployment.metadata.name}"
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
    others = [a for a in allocations if a.key != key]
    return place(request_for_deployment(deployment, profile), pools_from(pools), others)


def allocation_of(obj: FineTuneJob | ModelDeployment, seq: int = 0) -> Allocation | None:
    """The GPUs an admitted job or deployment holds, from its ``status.placement`` (None: none)."""
    placement = obj.status.placement
    if placement is None or placement.pool is None or placement.gpus == 0:
        return None
    if isinstance(obj, FineTuneJob):
        if obj.status.phase not in ("Admitted", "Running"):
            return None
        priority, preemptible, kind = obj.spec.resources.priority, obj.spec.resources.preemptible, "FineTuneJob"
    else:
        priority, preemptible, kind = obj.spec.resources.priority, False, "ModelDeployment"
    namespace = obj.metadata.namespace or "default"
    return Allocation(
        key=f"{namespace}/{obj.metadata.name}",
        namespace=namespace,
        pool=placement.pool,
        replicas=placement.replicas,
        gpus_per_replica=placement.gpus_per_replica,
        priority=priority,
        preemptible=preemptible,
        seq=seq,
        kind=kind,
    )
