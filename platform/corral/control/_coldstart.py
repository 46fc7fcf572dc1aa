"""Scale from zero as the ModelDeployment reconciler reports it: ``ScaledToZero``, ``ScalingUp``, cold starts.

A deployment whose ``autoscaling.minReplicas`` is 0 has, next to ``Ready``, two phases that
say what a client will see:

* ``ScaledToZero``: Serve runs no replica. The next request starts one and is held until it is
  ready (up to the hold timeout); the message says since when it is idle and about how long
  that start takes.
* ``ScalingUp``: Serve wants replicas but none is ready yet; requests are being held.

The time from the first ``ScalingUp`` seen to the first ready replica is one cold start
(``status.coldStart.count``, ``lastSeconds``; exported as metrics by the store collector).
It is seen by the control loop, so it is accurate to a resync (about 2 s); ``bench/cold_start.py``
measures it exactly. Before any was seen, the estimate comes from the model's size
(:func:`corral.serving.cold_start_estimate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from corral.api.v1alpha1 import ColdStartStatus, ModelDeployment
from corral.serving import cold_start_estimate, hold_args

from ._observed import DeploymentWorld

__all__ = ["ZeroState", "scale_from_zero"]

ZeroPhase = Literal["Ready", "ScaledToZero", "ScalingUp"]


@dataclass(frozen=True)
class ZeroState:
    """The scale-from-zero part of a running deployment's status.

    Attributes:
        phase: ``Ready`` (a replica is ready), ``ScaledToZero`` or ``ScalingUp``.
        message: The Ready condition's message for the two zero phases (empty for ``Ready``).
        cold_start: The new ``status.coldStart``.
    """

    phase: ZeroPhase
    message: str
    cold_start: ColdStartStatus


def _sizes(dep: ModelDeployment, world: DeploymentWorld) -> list[int]:
    sizes = []
    for ref in [dep.spec.model, *(a.model for a in dep.spec.adapters)]:
        model = world.models.get(ref.name)
        artifact = model.status.artifact if model is not None else None
        sizes.append(artifact.size_bytes if artifact is not None else 0)
    return sizes


def scale_from_zero(dep: ModelDeployment, world: DeploymentWorld, desired: int, ready: int) -> ZeroState | None:
    """Where a running deployment that may scale to zero stands.

    Args:
        dep: The deployment, with the status of the previous reconcile.
        world: What the reconciler sees (its ``now`` and the Models' sizes are read).
        desired: Model replicas Serve wants now.
        ready: Model replicas ready now.

    Returns:
        The phase, message and ``status.coldStart``; None when ``minReplicas`` is above zero.
    """
    sizes = _sizes(dep, world)
    hold = hold_args(dep.spec, sizes)
    if hold is None:
        return None
    now = world.now
    cs = (dep.status.cold_start or ColdStartStatus()).model_copy()
    cs.hold_timeout_seconds = hold.timeout_seconds
    if ready > 0:
        if cs.scaling_up_since is not None:
            cs.count += 1
            cs.last_seconds = max(0, math.ceil((now - cs.scaling_up_since).total_seconds()))
            cs.scaling_up_since = None
    elif dep.status.ready_replicas > 0:
        cs.last_active_time = now  # the last replica was there at the previous reconcile
    cs.estimated_seconds = cs.last_seconds if cs.last_seconds is not None else cold_start_estimate(dep.spec, sizes)
    if ready > 0:
        return ZeroState("Ready", "", cs)
    wait = f"about {cs.estimated_seconds} s; a request waits up to {cs.hold_timeout_seconds} s, then gets 503"
    if desired == 0:
        cs.scaling_up_since = None
        idle = f"last active {cs.last_active_time.isoformat()}" if cs.last_active_time else "no request yet"
        return ZeroState(
            "ScaledToZero", f"scaled to zero ({idle}); the next request starts a replica and waits for it ({wait})", cs
        )
    cs.scaling_up_since = cs.scaling_up_since or now
    return ZeroState(
        "ScalingUp", f"starting a replica from zero since {cs.scaling_up_since.isoformat()} ({wait}); requests wait", cs
    )
