"""Ray Jobs for :class:`~corral.drivers.LocalRayDriver`: submit, status, stop and logs
through Ray's job submission client, authenticated with the head's token.

One Ray runs every owner's jobs: the :class:`~corral.drivers.Handle` of each call is not
needed here (submission ids are unique per owner already).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

from .._handle import Handle
from .._protocol import DriverError, JobState, JobStatus
from ._head import LocalRayHead

__all__ = ["LocalRayJobs"]

logger = logging.getLogger(__name__)


class LocalRayJobs(LocalRayHead):
    """The :class:`~corral.drivers.Driver` job methods of :class:`~corral.drivers.LocalRayDriver`."""

    def _jobs(self) -> Any:
        if self._client is None:
            self.start()
        return self._client

    # -- jobs -------------------------------------------------------------------------

    def submit_job(
        self,
        handle: Handle,
        submission_id: str,
        entrypoint: str,
        runtime_env: Mapping[str, Any] | None = None,
        resources: Mapping[str, Any] | None = None,
    ) -> None:
        """Submit a Ray job; an existing ``submission_id`` is success.

        Raises:
            DriverError: Ray refused the job.
        """
        res = dict(resources or {})
        kwargs: dict[str, Any] = {}
        for key, arg in (
            ("num_cpus", "entrypoint_num_cpus"),
            ("num_gpus", "entrypoint_num_gpus"),
            ("memory", "entrypoint_memory"),
            ("resources", "entrypoint_resources"),
        ):
            if res.get(key):
                kwargs[arg] = res[key]
        try:
            self._jobs().submit_job(
                entrypoint=entrypoint,
                submission_id=submission_id,
                runtime_env=dict(runtime_env) if runtime_env else None,
                **kwargs,
            )
        except RuntimeError as exc:
            if "already exists" in str(exc):
                logger.info("Ray job %s already submitted", submission_id)
                return
            raise DriverError(f"Ray refused job {submission_id}: {exc}") from exc
        logger.info("Submitted Ray job %s", submission_id)

    def job_status(self, handle: Handle, submission_id: str) -> JobState | None:
        """Return the job's state, or None when Ray has no such job."""
        try:
            info = self._jobs().get_job_info(submission_id)
        except RuntimeError as exc:
            if "does not exist" in str(exc) or "404" in str(exc):
                return None
            raise DriverError(f"cannot read Ray job {submission_id}: {exc}") from exc
        status = str(getattr(info.status, "value", info.status))
        return JobState(
            submission_id=submission_id,
            status=cast("JobStatus", status),
            message=info.message or "",
            start_time=info.start_time / 1000 if info.start_time else None,
            end_time=info.end_time / 1000 if info.end_time else None,
        )

    def stop_job(self, handle: Handle, submission_id: str) -> bool:
        """Stop the job; False when it was not running or does not exist."""
        try:
            stopped = bool(self._jobs().stop_job(submission_id))
        except RuntimeError as exc:
            if "does not exist" in str(exc):
                return False
            raise DriverError(f"cannot stop Ray job {submission_id}: {exc}") from exc
        if stopped:
            logger.info("Stopped Ray job %s", submission_id)
        return stopped

    def job_logs(self, handle: Handle, submission_id: str) -> str:
        """Return the job's logs (empty when it does not exist)."""
        try:
            return str(self._jobs().get_job_logs(submission_id))
        except RuntimeError as exc:
            if "does not exist" in str(exc):
                return ""
            raise DriverError(f"cannot read logs of Ray job {submission_id}: {exc}") from exc
