"""The ``Driver`` protocol: where work runs, as the reconcilers see it.

Two implementations fit it: :class:`~corral.drivers.LocalRayDriver` (a local Ray head,
Ray's job submission API and Serve's REST API) and
:class:`~corral.drivers.kuberay.KubeRayDriver` (a ``RayJob`` / ``RayService`` per owner).
Reconcilers never call a driver themselves: the runner asks it what is running
(:meth:`Driver.job_status`, :meth:`Driver.serve_status`) and applies the actions they
return through it.

A driver is shared by every owner: each call carries a :class:`~corral.drivers.Handle`
naming the owner (and, to start work, the scheduler's placement), and the states it returns
carry the backend's own reason (KubeRay's ``DeadlineExceeded``, ``UpgradeInProgress``...),
so the shared reconcilers put it on the conditions.

Every method is idempotent: submitting an existing submission id, stopping a finished
job and deleting an absent application are all success.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from ._handle import Handle

__all__ = [
    "ACTIVE_JOB_STATUSES",
    "Driver",
    "DriverError",
    "JobState",
    "JobStatus",
    "ServeAppState",
    "ServeAppStatus",
]

JobStatus = Literal["PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED"]
"""Ray's job statuses (``ray.job_submission.JobStatus``) as plain strings."""

ACTIVE_JOB_STATUSES: frozenset[str] = frozenset({"PENDING", "RUNNING"})
"""Statuses of a job that has not ended."""

ServeAppStatus = Literal["NOT_STARTED", "DEPLOYING", "DEPLOY_FAILED", "RUNNING", "UNHEALTHY", "DELETING"]
"""Ray Serve's application statuses as plain strings."""


class DriverError(RuntimeError):
    """The compute backend refused or failed a request (the message says which and why)."""


@dataclass(frozen=True)
class JobState:
    """What the backend says about one submitted job.

    Attributes:
        submission_id: The job's submission id.
        status: PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED.
        message: The backend's explanation (e.g. why it failed).
        start_time: Unix seconds the job started, if it did.
        end_time: Unix seconds the job ended, if it did.
        reason: The backend's CamelCase reason where it knows more than ``status`` says
            (KubeRay: ``DeadlineExceeded``, ``SubmissionFailed``, ``AppFailed``,
            ``ValidationFailed`` for a failure; ``Pending`` while Kueue holds the job;
            ``Retrying``); empty when it does not.
    """

    submission_id: str
    status: JobStatus
    message: str = ""
    start_time: float | None = None
    end_time: float | None = None
    reason: str = ""

    @property
    def active(self) -> bool:
        """True while the job is pending or running."""
        return self.status in ACTIVE_JOB_STATUSES


@dataclass(frozen=True)
class ServeAppState:
    """What Serve says about one application.

    Attributes:
        name: Application name.
        status: NOT_STARTED, DEPLOYING, DEPLOY_FAILED, RUNNING, UNHEALTHY or DELETING.
        message: Serve's explanation.
        route_prefix: HTTP route of the application, once known.
        deployments: Per deployment name: ``(target replicas, running replicas)``.
        deployed_config: The application config as submitted (only the options given).
        reason: The backend's CamelCase reason where it knows more than ``status`` says
            (KubeRay: ``UpgradeInProgress`` while a new cluster is prepared and the old one
            serves); empty when it does not.
    """

    name: str
    status: ServeAppStatus
    message: str = ""
    route_prefix: str | None = None
    deployments: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    deployed_config: Mapping[str, Any] | None = None
    reason: str = ""


@runtime_checkable
class Driver(Protocol):
    """Where fine-tunes (Ray jobs) and deployments (Serve applications) run, for any owner."""

    def submit_job(
        self,
        handle: Handle,
        submission_id: str,
        entrypoint: str,
        runtime_env: Mapping[str, Any] | None = None,
        resources: Mapping[str, Any] | None = None,
    ) -> None:
        """Submit a job; an existing ``submission_id`` is success (nothing is submitted twice).

        Args:
            handle: The owner and the placement decided for it.
            submission_id: Deterministic id of the job.
            entrypoint: Shell command the job runs.
            runtime_env: Ray runtime environment of the job.
            resources: Entrypoint resources: ``num_cpus``, ``num_gpus``, ``memory``, ``resources``.

        Raises:
            DriverError: The backend refused the job.
        """

    def job_status(self, handle: Handle, submission_id: str) -> JobState | None:
        """Return the owner's job state, or ``None`` when no such job exists."""

    def stop_job(self, handle: Handle, submission_id: str) -> bool:
        """Ask the owner's job to stop; returns False when it was not running (or does not exist)."""

    def job_logs(self, handle: Handle, submission_id: str) -> str:
        """Return the job's driver logs (empty when there is no such job, or the backend keeps none)."""

    def deploy_serve(self, handle: Handle, config: Mapping[str, Any]) -> None:
        """Deploy the owner's applications of a ``serveConfigV2`` config, leaving other applications alone.

        Applications are matched by name: a new name is added, an existing one is updated
        in place (Serve rolls replicas without dropping in-flight requests).

        Args:
            handle: The owner and the placement decided for it.
            config: ``{"applications": [...]}``.

        Raises:
            DriverError: Serve refused the config.
        """

    def serve_status(self, handle: Handle, name: str) -> ServeAppState | None:
        """Return the owner's Serve application ``name``, or ``None`` when it is not deployed."""

    def delete_serve_app(self, handle: Handle, name: str) -> None:
        """Remove the owner's Serve application ``name``; an absent one is success."""

    def endpoint(self, handle: Handle | None = None) -> str | None:
        """Base URL (``http://host:port``) of the Serve HTTP proxy that serves the owner's applications.

        Args:
            handle: The owner; None asks for the backend's shared proxy, where it has one.

        Returns:
            The URL, or None when unknown.
        """
