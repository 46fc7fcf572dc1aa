"""A Serve replica that dies and is replaced while the deployment stays Ready is told by events."""

from __future__ import annotations

from corral.api.v1alpha1.modeldeployment import ModelDeploymentStatus
from corral.control._replica_events import replica_events


def _st(phase: str, replicas: int, ready: int) -> ModelDeploymentStatus:
    return ModelDeploymentStatus(phase=phase, replicas=replicas, ready_replicas=ready)


def test_a_lost_replica_and_its_replacement_are_told() -> None:
    lost = replica_events(_st("Ready", 2, 2), _st("Ready", 2, 1))
    assert [(e.type, e.reason) for e in lost] == [("Warning", "ReplicaLost")]
    assert lost[0].message.startswith("1 of 2 replicas stopped serving (1/2 ready)")
    back = replica_events(_st("Ready", 2, 1), _st("Ready", 2, 2))
    assert [(e.type, e.reason) for e in back] == [("Normal", "ReplicaRestarted")]
    assert replica_events(_st("Ready", 2, 2), _st("Ready", 2, 2)) == []
    # Serve says UNHEALTHY while it replaces the only replica: Failed for a few seconds.
    assert [e.reason for e in replica_events(_st("Ready", 1, 1), _st("Failed", 1, 0))] == ["ReplicaLost"]
    assert [e.reason for e in replica_events(_st("Failed", 1, 0), _st("Ready", 1, 1))] == ["ReplicaRestarted"]


def test_scaling_and_rollouts_are_not_losses() -> None:
    assert replica_events(_st("Ready", 2, 2), _st("Ready", 1, 1)) == []  # scaled down
    assert replica_events(_st("Ready", 1, 1), _st("Ready", 2, 1)) == []  # scaling up
    assert replica_events(_st("Updating", 2, 2), _st("Updating", 2, 1)) == []  # a rollout
    assert replica_events(_st("Deploying", 1, 0), _st("Ready", 1, 1)) == []  # first deploy
