"""KubeRay's own words on Corral's conditions: a pure refinement of the shared reconcilers' status.

The reconcilers in ``corral.control`` see KubeRay children through the driver protocol (Ray job
statuses, Serve application statuses), which has no room for KubeRay's reasons. After a
reconcile, :func:`refine_status` puts them back where KubeRay knows more:

* a FineTuneJob whose RayJob failed gets KubeRay's reason (``DeadlineExceeded``,
  ``SubmissionFailed``, ``AppFailed``, ``ValidationFailed``...) on its ``Failed`` condition
  instead of the generic ``JobFailed`` (unless the training itself reported a reason);
* a FineTuneJob whose RayJob waits for Kueue says so on its ``Running`` condition (``Pending``);
* a ModelDeployment whose RayService is upgrading gets ``Ready`` reason ``UpgradeInProgress``.
"""

from __future__ import annotations

from typing import Any

from corral.api.v1alpha1 import Condition, FineTuneJob, ModelDeployment, Resource
from corral.drivers.kuberay import RayJobObservation, RayServiceObservation

__all__ = ["refine_status"]


def _replace(
    conditions: list[Condition], type_: str, old_reasons: tuple[str, ...], reason: str, message: str
) -> list[Condition]:
    return [
        c.model_copy(update={"reason": reason, "message": message or c.message})
        if c.type == type_ and c.reason in old_reasons
        else c
        for c in conditions
    ]


def refine_status(
    obj: Resource,
    status: Any,
    rayjob: RayJobObservation | None = None,
    rayservice: RayServiceObservation | None = None,
) -> Any:
    """Return ``status`` with KubeRay's reasons where the shared reconciler could only be generic.

    Args:
        obj: The reconciled object.
        status: The status the reconciler returned (not modified).
        rayjob: What the FineTuneJob's RayJob says, if it was read.
        rayservice: What the ModelDeployment's RayService says, if it was read.

    Returns:
        A copy of ``status`` (or ``status`` itself when nothing changes).
    """
    if isinstance(obj, FineTuneJob) and rayjob is not None:
        if rayjob.phase == "Failed" and status.phase == "Failed" and not rayjob.stopped:
            conditions = _replace(list(status.conditions), "Failed", ("JobFailed",), rayjob.reason, rayjob.message)
            return status.model_copy(update={"conditions": conditions})
        if rayjob.phase == "Pending" and status.phase == "Admitted":
            conditions = _replace(list(status.conditions), "Running", ("JobPending",), "Pending", rayjob.message)
            return status.model_copy(update={"conditions": conditions})
    if isinstance(obj, ModelDeployment) and rayservice is not None and rayservice.phase == "UpgradeInProgress":
        conditions = _replace(
            list(status.conditions), "Ready", ("Updating", "Deploying"), "UpgradeInProgress", rayservice.message
        )
        return status.model_copy(update={"conditions": conditions})
    return status
