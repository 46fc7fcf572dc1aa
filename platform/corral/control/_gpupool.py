"""The GPUPool reconciler: allocatable vs. allocated GPUs from the placements of jobs and deployments."""

from __future__ import annotations

from collections import defaultdict

from corral.api.v1alpha1 import GPUPool
from corral.api.v1alpha1.gpupool import GPUPoolStatus, NamespaceAllocation

from ._actions import Result
from ._conditions import set_condition
from ._observed import GPUPoolWorld

__all__ = ["reconcile_gpupool"]


def reconcile_gpupool(pool: GPUPool, world: GPUPoolWorld) -> Result:
    """Reconcile one GPUPool: capacity, GPUs held and GPUs held per namespace.

    Args:
        pool: The pool.
        world: Every allocation (those on other pools are ignored).

    Returns:
        The new status (``Ready=True``, reason ``Reconciled``).
    """
    spec = pool.spec
    mine = [a for a in world.allocations if a.pool == pool.metadata.name]
    per_ns: dict[str, int] = defaultdict(int)
    for allocation in mine:
        per_ns[allocation.namespace] += allocation.replicas * allocation.gpus_per_replica
    allocated = sum(per_ns.values())
    capacity = spec.capacity_gpus
    message = f"{allocated} of {capacity} GPUs allocated ({spec.accelerator_type}, up to {spec.max_nodes} nodes)"
    conditions = set_condition(
        pool.status.conditions,
        "Ready",
        "True",
        "Reconciled",
        message,
        generation=pool.metadata.generation,
        now=world.now,
    )
    status = GPUPoolStatus(
        observed_generation=pool.metadata.generation,
        conditions=conditions,
        nodes=spec.min_nodes,
        allocatable_gpus=max(capacity - allocated, 0),
        allocated_gpus=allocated,
        allocations=[NamespaceAllocation(namespace=ns, gpus=g) for ns, g in sorted(per_ns.items())],
    )
    return Result(status=status)
