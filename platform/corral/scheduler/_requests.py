"""Build placement requests from ``FineTuneJob`` and ``ModelDeployment`` objects, and pool
states from ``GPUPool`` objects: the bridge from the API types to the pure placement core.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ._cluster import PoolState
from ._estimate import QLORA_SLOWDOWN, STRATEGY_EFFICIENCY, estimate_deployment, estimate_job
from ._placement import Decision, PlacementRequest, Shape, place
from ._profiles import ModelProfile

if TYPE_CHECKING:
    from ..api.v1alpha1.finetunejob import FineTuneJob
    from ..api.v1alpha1.gpupool import GPUPool
    from ..api.v1alpha1.modeldeployment import ModelDeployment

__all__ = ["dry_run_deployment", "dry_run_job", "pools_from", "request_for_deployment", "request_for_job"]


def _key(kind: str, namespace: str | None, name: str) -> tuple[str, str]:
    """The namespace and the request key ``Kind/namespace/name`` (a job and a deployment may share a name)."""
    ns = namespace or "default"
    return ns, f"{kind}/{ns}/{name}"


def pools_from(pools: Iterable[GPUPool]) -> list[PoolState]:
    """``PoolState`` of each ``GPUPool``, in the given order."""
    return [PoolState.from_gpupool(pool) for pool in pools]


def request_for_job(
    job: FineTuneJob, profile: ModelProfile, *, seq: int = 0, train_tokens: int | None = None
) -> PlacementRequest:
    """The placement request of a fine-tune: ``workers`` replicas of ``gpusPerWorker`` GPUs.

    Args:
        job: The FineTuneJob.
        profile: Its base model's shape.
        seq: Arrival order (e.g. the rank of its creation timestamp).
        train_tokens: Tokens trained over all epochs, when known (sets time and cost).
    """
    spec = job.spec
    res = spec.resources
    est = estimate_job(spec, profile, train_tokens=train_tokens)
    efficiency = STRATEGY_EFFICIENCY[res.strategy] if est.gpus > 1 else 1.0
    if spec.method == "qlora":
        efficiency /= QLORA_SLOWDOWN
    namespace, key = _key("FineTuneJob", job.metadata.namespace, job.metadata.name)
    return PlacementRequest(
        key=key,
        namespace=namespace,
        shapes=(Shape(res.gpus_per_worker, est.memory_per_gpu),),
        replicas=res.workers,
        kind="FineTuneJob",
        priority=res.priority,
        seq=seq,
        pool=res.pool,
        accelerator_type=res.accelerator_type,
        preemptible=res.preemptible,
        flops=None if train_tokens is None else est.flops_per_token * train_tokens,
        efficiency=efficiency,
    )


def request_for_deployment(
    deployment: ModelDeployment,
    profile: ModelProfile,
    *,
    seq: int = 0,
    widen: bool = True,
    adapter_rank: int = 16,
) -> PlacementRequest:
    """The placement request of a deployment: its minimum replicas (at least one) as a gang.

    With ``widen`` the scheduler may also give each replica 2x, 4x or 8x the spec's GPUs
    (tensor parallelism, at most 8) when that is cheaper or the spec's count does not fit;
    the chosen count is in ``Decision.gpus_per_replica`` / ``status.placement.gpusPerReplica``.

    Args:
        deployment: The ModelDeployment.
        profile: The served model's shape.
        seq: Arrival order.
        widen: Offer wider tensor-parallel shapes.
        adapter_rank: LoRA rank assumed for its adapters (the spec does not say).
    """
    spec = deployment.spec
    res = spec.resources
    g = res.gpus_per_replica
    widths = [g]
    if widen and g >= 1:
        widths += [w for w in (2 * g, 4 * g, 8 * g) if w <= 8]
    shapes = tuple(
        Shape(w, estimate_deployment(spec, profile, gpus_per_replica=w, adapter_rank=adapter_rank).memory_per_gpu)
        for w in widths
    )
    namespace, key = _key("ModelDeployment", deployment.metadata.namespace, deployment.metadata.name)
    return PlacementRequest(
        key=key,
        namespace=namespace,
        shapes=shapes,
        replicas=max(spec.replica_range[0], 1),
        kind="ModelDeployment",
        priority=res.priority,
        seq=seq,
        pool=res.pool,
        accelerator_type=res.accelerator_type,
        preemptible=False,
    )


def dry_run_job(
    job: FineTuneJob,
    profile: ModelProfile,
    pools: Iterable[PoolState],
    *,
    train_tokens: int | None = None,
) -> dict[str, Any]:
    """The estimate and placement of a fine-tune, without running it (``corral estimate``, the API's dry run).

    Returns a JSON-ready dict: ``estimate`` (memory breakdown, time, cost on the job's
    accelerator or A100-80GB), ``options`` (one entry per pool: fits, time, cost) and
    ``decision`` (where an empty cluster would place it, or why it could not).
    """
    spec = job.spec
    pool_list = list(pools)
    estimate = estimate_job(spec, profile, train_tokens=train_tokens)
    options = []
    for pool in pool_list:
        est = estimate_job(
            spec,
            profile,
            accelerator=pool.accelerator,
            train_tokens=train_tokens,
            price_per_gpu_hour=pool.price_per_gpu_hour,
        )
        options.append(
            {
                "pool": pool.name,
                "acceleratorType": pool.accelerator_type,
                "spot": pool.spot,
                "gpuMemory": pool.gpu_memory,
                "memoryPerGpu": est.memory_per_gpu,
                "fits": est.memory_per_gpu <= pool.gpu_memory if spec.resources.gpus_per_worker else None,
                "gpus": est.gpus,
                "seconds": est.seconds,
                "gpuHours": est.gpu_hours,
                "costUsd": None if est.cost_usd is None else str(est.cost_usd),
                "usdPerMillionTokens": None if est.usd_per_million_tokens is None else str(est.usd_per_million_tokens),
            }
        )
    out: dict[str, Any] = {
        "kind": "FineTuneJob",
        "name": job.metadata.name,
        "namespace": job.metadata.namespace or "default",
        "model": asdict(profile),
        "trainTokens": train_tokens,
        "estimate": estimate.to_dict(),
        "options": options,
    }
    if pool_list:
        decision = place(request_for_job(job, profile, train_tokens=train_tokens), pool_list)
        out["decision"] = _decision_dict(decision)
    return out


def dry_run_deployment(
    deployment: ModelDeployment, profile: ModelProfile, pools: Iterable[PoolState]
) -> dict[str, Any]:
    """The memory estimate and placement of a deployment, without running it (JSON-ready dict)."""
    spec = deployment.spec
    pool_list = list(pools)
    estimate = estimate_deployment(spec, profile)
    options = []
    for pool in pool_list:
        est = estimate_deployment(spec, profile, accelerator=pool.accelerator)
        options.append(
            {
                "pool": pool.name,
                "acceleratorType": pool.accelerator_type,
                "spot": pool.spot,
                "gpuMemory": pool.gpu_memory,
                "memoryPerGpu": est.memory_per_gpu,
                "fits": est.fits,
                "fullContextSequences": est.full_context_sequences,
                "usdPerHour": str(pool.price_per_gpu_hour * max(spec.resources.gpus_per_replica, 1)),
            }
        )
    out: dict[str, Any] = {
        "kind": "ModelDeployment",
        "name": deployment.metadata.name,
        "namespace": deployment.metadata.namespace or "default",
        "model": asdict(profile),
        "estimate": estimate.to_dict(),
        "options": options,
    }
    if pool_list:
        out["decision"] = _decision_dict(place(request_for_deployment(deployment, profile), pool_list))
    return out


def _decision_dict(decision: Decision) -> dict[str, Any]:
    return {
        "admitted": decision.admitted,
        "reason": decision.reason,
        "message": decision.message,
        "pool": decision.pool,
        "acceleratorType": decision.accelerator_type,
        "replicas": decision.replicas,
        "gpusPerReplica": decision.gpus_per_replica,
        "gpus": decision.gpus,
        "expectedSeconds": decision.expected_seconds,
        "costUsd": None if decision.cost_usd is None else str(decision.cost_usd),
        "usdPerHour": None if decision.usd_per_hour is None else str(decision.usd_per_hour),
        "details": list(decision.details),
    }
