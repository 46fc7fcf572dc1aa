"""Conditions and the GPUPool reconciler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from corral.api.v1alpha1 import GPUPool, GPUPoolSpec, ObjectMeta
from corral.control import GPUPoolWorld, reconcile_gpupool, set_condition
from corral.scheduler import Allocation

T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)


def test_set_condition_keeps_transition_time_while_status_holds() -> None:
    conds = set_condition([], "Ready", "False", "Waiting", "a", generation=1, now=T0)
    conds = set_condition(conds, "Ready", "False", "StillWaiting", "b", generation=2, now=T1)
    assert conds[0].last_transition_time == T0
    assert (conds[0].reason, conds[0].message, conds[0].observed_generation) == ("StillWaiting", "b", 2)
    conds = set_condition(conds, "Ready", "True", "Done", "c", generation=2, now=T1)
    assert conds[0].last_transition_time == T1


def test_set_condition_keeps_order_and_other_types() -> None:
    conds = set_condition([], "Admitted", "True", "A", "", generation=1, now=T0)
    conds = set_condition(conds, "Running", "True", "R", "", generation=1, now=T0)
    conds = set_condition(conds, "Admitted", "False", "B", "", generation=1, now=T1)
    assert [c.type for c in conds] == ["Admitted", "Running"]


def test_gpupool_allocated_from_placements() -> None:
    pool = GPUPool(
        metadata=ObjectMeta(name="a100", generation=1),
        spec=GPUPoolSpec(accelerator_type="nvidia-a100-80gb", gpus_per_node=8, gpu_memory="80Gi", max_nodes=2),
    )
    allocations = (
        Allocation(key="a/x", namespace="a", pool="a100", replicas=2, gpus_per_replica=2),
        Allocation(key="b/y", namespace="b", pool="a100", replicas=1, gpus_per_replica=1),
        Allocation(key="b/z", namespace="b", pool="other", replicas=1, gpus_per_replica=8),
    )
    status = reconcile_gpupool(pool, GPUPoolWorld(now=T0, allocations=allocations)).status
    assert (status.allocated_gpus, status.allocatable_gpus) == (5, 11)
    assert [(a.namespace, a.gpus) for a in status.allocations] == [("a", 4), ("b", 1)]
    assert status.conditions[0].status == "True"
