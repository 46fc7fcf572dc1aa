"""``FakeDriver``: an in-memory :class:`~corral.drivers.Driver` for tests and dry runs.

Jobs stay where tests put them (:meth:`FakeDriver.set_job`); Serve applications are
``DEPLOYING`` after a deploy until :meth:`FakeDriver.set_app` (or ``auto_ready``) says
otherwise. Every call is recorded, with the :class:`~corral.drivers.Handle` it carried.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ._handle import Handle
from ._protocol import JobState, JobStatus, ServeAppState, ServeAppStatus

__all__ = ["FakeDriver"]


class FakeDriver:
    """Implements the Driver protocol in memory.

    Attributes:
        jobs: Jobs by submission id.
        submitted: Submission ids in the order they were first submitted (a repeat is not added).
        submit_calls: Every ``submit_job`` call, repeats included.
        apps: Deployed application configs by name.
        deploy_calls: Configs passed to ``deploy_serve``.
        handles: ``(method, handle)`` of every submit, stop, deploy and delete, in order.
        auto_ready: Applications are RUNNING with all replicas as soon as they are deployed.
    """

    def __init__(self, *, auto_ready: bool = False, endpoint: str = "http://127.0.0.1:8000") -> None:
        self.jobs: dict[str, JobState] = {}
        self.submitted: list[str] = []
        self.submit_calls: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []
        self.stopped: list[str] = []
        self.apps: dict[str, dict[str, Any]] = {}
        self.app_states: dict[str, ServeAppState] = {}
        self.deploy_calls: list[dict[str, Any]] = []
        self.deleted_apps: list[str] = []
        self.handles: list[tuple[str, Handle]] = []
        self.auto_ready = auto_ready
        self._endpoint = endpoint

    def submit_job(
        self,
        handle: Handle,
        submission_id: str,
        entrypoint: str,
        runtime_env: Mapping[str, Any] | None = None,
        resources: Mapping[str, Any] | None = None,
    ) -> None:
        """Record the job as PENDING unless the id exists."""
        self.handles.append(("submit_job", handle))
        self.submit_calls.append((submission_id, entrypoint, dict(runtime_env or {}), dict(resources or {})))
        if submission_id in self.jobs:
            return
        self.jobs[submission_id] = JobState(submission_id=submission_id, status="PENDING")
        self.submitted.append(submission_id)

    def set_job(
        self,
        submission_id: str,
        status: JobStatus,
        message: str = "",
        *,
        start_time: float | None = None,
        end_time: float | None = None,
    ) -> None:
        """Move a job to ``status`` (tests play Ray)."""
        current = self.jobs.get(submission_id) or JobState(submission_id=submission_id, status=status)
        self.jobs[submission_id] = replace(
            current,
            status=status,
            message=message,
            start_time=start_time if start_time is not None else current.start_time,
            end_time=end_time if end_time is not None else current.end_time,
        )

    def job_status(self, handle: Handle, submission_id: str) -> JobState | None:
        """The job, or None."""
        return self.jobs.get(submission_id)

    def stop_job(self, handle: Handle, submission_id: str) -> bool:
        """STOPPED when it was active."""
        self.handles.append(("stop_job", handle))
        job = self.jobs.get(submission_id)
        if job is None or not job.active:
            return False
        self.jobs[submission_id] = replace(job, status="STOPPED", message="stopped")
        self.stopped.append(submission_id)
        return True

    def job_logs(self, handle: Handle, submission_id: str) -> str:
        """Nothing is logged in memory."""
        return ""

    def deploy_serve(self, handle: Handle, config: Mapping[str, Any]) -> None:
        """Store each application; DEPLOYING (or RUNNING with ``auto_ready``)."""
        self.handles.append(("deploy_serve", handle))
        self.deploy_calls.append(dict(config))
        for app in config.get("applications", []):
            name = str(app["name"])
            self.apps[name] = dict(app)
            self.set_app(name, "RUNNING" if self.auto_ready else "DEPLOYING", running=1 if self.auto_ready else 0)

    def set_app(
        self, name: str, status: ServeAppStatus, *, running: int = 1, target: int = 1, message: str = ""
    ) -> None:
        """Set what Serve reports for an application (tests play Serve)."""
        app = self.apps[name]
        self.app_states[name] = ServeAppState(
            name=name,
            status=status,
            message=message,
            route_prefix=app.get("route_prefix"),
            deployments={"CorralLLMServer": (target, running)},
            deployed_config=app,
        )

    def serve_status(self, handle: Handle, name: str) -> ServeAppState | None:
        """The application, or None."""
        return self.app_states.get(name)

    def delete_serve_app(self, handle: Handle, name: str) -> None:
        """Forget an application."""
        self.handles.append(("delete_serve_app", handle))
        if self.apps.pop(name, None) is not None:
            self.deleted_apps.append(name)
        self.app_states.pop(name, None)

    def endpoint(self, handle: Handle | None = None) -> str | None:
        """The configured base URL."""
        return self._endpoint
