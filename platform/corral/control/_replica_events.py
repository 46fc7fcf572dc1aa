"""Replica recoveries of a serving ModelDeployment, told as events (a pure function).

Serve replaces a replica that died (``kill -9``, out of memory, a node lost) by itself; the
deployment stays ``Ready`` while others serve. Without an event nobody would know: this
compares the status before and after a reconcile and tells a replica lost and its
replacement ready, when the desired count did not change (scaling is not a loss).
"""

from __future__ import annotations

from corral.api.v1alpha1.modeldeployment import ModelDeploymentStatus

from ._actions import RecordEvent

__all__ = ["replica_events"]


def replica_events(old: ModelDeploymentStatus, new: ModelDeploymentStatus) -> list[RecordEvent]:
    """``ReplicaLost`` when ready replicas of a Ready deployment drop at a steady desired count,
    ``ReplicaRestarted`` when they are all back.

    Serve marks the application ``UNHEALTHY`` while a replica is replaced (the deployment says
    ``Failed``/``Unhealthy`` for those seconds), so the replacement is told when the
    deployment is ``Ready`` again with every replica, coming from ``Ready`` or ``Failed``
    short of replicas. A rollout (``Updating``) or a scale change is not a loss.

    Args:
        old: The status before this reconcile.
        new: The status it computed.
    """
    if new.replicas != old.replicas or new.replicas == 0:
        return []
    if old.phase == "Ready" and new.ready_replicas < old.ready_replicas:
        lost = old.ready_replicas - new.ready_replicas
        message = (
            f"{lost} of {old.replicas} replicas stopped serving ({new.ready_replicas}/{new.replicas} ready); "
            "Serve is starting replacements"
        )
        return [RecordEvent("Warning", "ReplicaLost", message)]
    recovered = old.phase in ("Ready", "Failed") and old.ready_replicas < old.replicas
    if recovered and new.phase == "Ready" and new.ready_replicas == new.replicas:
        message = f"replacement replicas are serving ({new.ready_replicas}/{new.replicas} ready)"
        return [RecordEvent("Normal", "ReplicaRestarted", message)]
    return []
