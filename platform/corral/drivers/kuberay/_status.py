"""KubeRay status, read back as Corral sees it: pure mappers of a RayJob's and a RayService's status.

:func:`finetunejob_status_from_rayjob` maps a RayJob's ``jobStatus``/``jobDeploymentStatus``/
``reason`` onto a Corral phase and reason plus the driver's :class:`~corral.drivers.JobState`;
:func:`deployment_status_from_rayservice` maps a RayService's conditions and application
statuses onto a phase and reason plus :class:`~corral.drivers.ServeAppState`. The reconcilers
in ``corral.control`` consume the driver-level states, so the cluster and the embedded loop
share one reconciler.

Example:
    >>> from corral.drivers.kuberay import finetunejob_status_from_rayjob
    >>> obs = finetunejob_status_from_rayjob({"status": {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}})
    >>> obs.phase, obs.job_state("s").status
    ('Running', 'RUNNING')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import yaml

from .._protocol import JobState, JobStatus, ServeAppState, ServeAppStatus

__all__ = [
    "RayJobObservation",
    "RayServiceObservation",
    "deployment_status_from_rayservice",
    "finetunejob_status_from_rayjob",
    "serve_config_of",
]

JobPhase = Literal["Pending", "Admitted", "Running", "Succeeded", "Failed"]
ServicePhase = Literal["Pending", "Deploying", "Ready", "UpgradeInProgress", "Failed"]

_PHASE_TO_JOB_STATUS: dict[str, JobStatus] = {
    "Pending": "PENDING",
    "Admitted": "PENDING",
    "Running": "RUNNING",
    "Succeeded": "SUCCEEDED",
    "Failed": "FAILED",
}


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class RayJobObservation:
    """A RayJob's status in Corral's terms.

    Attributes:
        phase: Pending (not admitted: new, or suspended waiting for Kueue), Admitted (cluster
            starting, job pending), Running, Succeeded or Failed.
        reason: CamelCase reason; for Failed, KubeRay's own reason (``DeadlineExceeded``,
            ``AppFailed``, ``SubmissionFailed``, ``ValidationFailed``...).
        message: KubeRay's message, or a sentence saying where the job is.
        stopped: True when Ray reports the job STOPPED (someone stopped it).
        start_time: Unix seconds the job started, if it did.
        end_time: Unix seconds the job ended, if it did.
    """

    phase: JobPhase
    reason: str
    message: str
    stopped: bool = False
    start_time: float | None = None
    end_time: float | None = None

    def job_state(self, submission_id: str) -> JobState:
        """The driver-level state the FineTuneJob reconciler follows.

        Its ``reason`` is KubeRay's where it says more than the status: why the job failed
        (``DeadlineExceeded``, ``AppFailed``...), ``Pending`` (waiting for Kueue or KubeRay),
        ``Retrying``; empty otherwise (a stopped, admitted, running or finished job).
        """
        status: JobStatus = "STOPPED" if self.stopped else _PHASE_TO_JOB_STATUS[self.phase]
        told = not self.stopped and (self.phase in ("Pending", "Failed") or self.reason == "Retrying")
        return JobState(
            submission_id, status, self.message, self.start_time, self.end_time, reason=self.reason if told else ""
        )


def finetunejob_status_from_rayjob(rayjob: Mapping[str, Any]) -> RayJobObservation:
    """Map a RayJob's ``status`` (``jobDeploymentStatus``, ``jobStatus``, ``reason``) onto Corral's phases.

    Args:
        rayjob: The RayJob object as read from the API server.

    Returns:
        The observation; a RayJob without status is Pending.
    """
    spec = rayjob.get("spec") or {}
    status = rayjob.get("status") or {}
    deployment = str(status.get("jobDeploymentStatus") or "")
    job = str(status.get("jobStatus") or "")
    kuberay_reason = str(status.get("reason") or "")
    message = str(status.get("message") or "")
    start, end = _parse_time(status.get("startTime")), _parse_time(status.get("endTime"))

    def obs(phase: JobPhase, reason: str, default: str, *, stopped: bool = False) -> RayJobObservation:
        return RayJobObservation(phase, reason, message or default, stopped, start, end)

    if deployment in ("Failed", "ValidationFailed") or (deployment == "Complete" and job == "FAILED"):
        reason = kuberay_reason or ("ValidationFailed" if deployment == "ValidationFailed" else "AppFailed")
        return obs("Failed", reason, f"RayJob failed ({reason})")
    if job == "STOPPED":
        return obs("Failed", "JobStopped", "the Ray job was stopped", stopped=True)
    if job == "SUCCEEDED" and deployment in ("Complete", "Running", ""):
        return obs("Succeeded", "Succeeded", "the Ray job succeeded")
    if job == "RUNNING":
        return obs("Running", "Running", "the Ray job is running")
    if deployment in ("", "New", "Suspended", "Suspending") or spec.get("suspend"):
        why = "waiting for Kueue to admit it" if spec.get("suspend") else "waiting for KubeRay to start it"
        return obs("Pending", "Pending", f"the RayJob is {why}")
    if deployment == "Retrying":
        return obs("Admitted", "Retrying", "KubeRay is retrying the job on a new cluster")
    return obs("Admitted", "Admitted", f"the Ray cluster is starting ({deployment})")


@dataclass(frozen=True)
class RayServiceObservation:
    """A RayService's status in Corral's terms.

    Attributes:
        phase: Pending, Deploying, Ready, UpgradeInProgress or Failed.
        reason: CamelCase reason (KubeRay's condition reason where it gives one).
        message: Detail.
        app: Serve's state of the application as the reconciler reads it; its
            ``deployed_config`` is the application in ``spec.serveConfigV2``.
    """

    phase: ServicePhase
    reason: str
    message: str
    app: ServeAppState


def serve_config_of(rayservice: Mapping[str, Any]) -> dict[str, Any]:
    """The ``serveConfigV2`` of a RayService, parsed (empty when unset or not YAML)."""
    text = (rayservice.get("spec") or {}).get("serveConfigV2") or ""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == type_:
            return cond
    return None


def _targets(app_config: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for dep in app_config.get("deployments") or []:
        scaling = dep.get("autoscaling_config") or {}
        out[str(dep.get("name"))] = int(dep.get("num_replicas") or scaling.get("min_replicas") or 1)
    return out


def deployment_status_from_rayservice(rayservice: Mapping[str, Any], app_name: str) -> RayServiceObservation:
    """Map a RayService's conditions and ``activeServiceStatus`` onto Corral's phases.

    Args:
        rayservice: The RayService object as read from the API server.
        app_name: The Serve application of the ModelDeployment.

    Returns:
        The observation. While KubeRay reports ``UpgradeInProgress``, the application is
        reported ``DEPLOYING`` with reason ``UpgradeInProgress`` (the old cluster keeps
        serving; the reconciler puts the reason on the Ready condition).
    """
    status = rayservice.get("status") or {}
    config = next((a for a in serve_config_of(rayservice).get("applications") or [] if a.get("name") == app_name), None)
    apps = ((status.get("activeServiceStatus") or {}).get("applicationStatuses")) or {}
    reported = apps.get(app_name) or {}
    app_status: ServeAppStatus = reported.get("status") or "NOT_STARTED"
    app_message = str(reported.get("message") or "")
    targets = _targets(config or {})
    healthy = {
        name: str((d or {}).get("status") or "") == "HEALTHY"
        for name, d in (reported.get("serveDeploymentStatuses") or {}).items()
    }
    deployments = {name: (target, target if healthy.get(name) else 0) for name, target in targets.items()}

    upgrade = _condition(status, "UpgradeInProgress")
    ready = _condition(status, "Ready")
    if app_status in ("DEPLOY_FAILED", "UNHEALTHY"):
        phase: ServicePhase = "Failed"
        reason = "DeployFailed" if app_status == "DEPLOY_FAILED" else "Unhealthy"
        message = app_message or f"application {app_name} is {app_status}"
    elif upgrade is not None and upgrade.get("status") == "True":
        phase, reason = "UpgradeInProgress", "UpgradeInProgress"
        message = str(upgrade.get("message") or "KubeRay is preparing a new cluster; the old one keeps serving")
        app_status = "DEPLOYING"
    elif app_status == "RUNNING" and (ready is None or ready.get("status") == "True"):
        phase, reason = "Ready", "Ready"
        message = app_message or f"application {app_name} is running"
    elif not status:
        phase, reason, message = "Pending", "Pending", "waiting for KubeRay to start the RayService"
    else:
        phase = "Deploying"
        reason = str((ready or {}).get("reason") or "Deploying")
        message = app_message or str((ready or {}).get("message") or f"application {app_name} is {app_status}")
        if app_status == "RUNNING":
            app_status = "DEPLOYING"
    app = ServeAppState(
        name=app_name,
        status=app_status,
        message=message,
        route_prefix=(config or {}).get("route_prefix"),
        deployments=deployments,
        deployed_config=config,
        reason="UpgradeInProgress" if phase == "UpgradeInProgress" else "",
    )
    return RayServiceObservation(phase, reason, message, app)
