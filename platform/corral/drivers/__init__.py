"""Where work runs: the owner-aware :class:`Driver` protocol, and one package per backend.

* :class:`Driver` - submit/stop/inspect Ray jobs, deploy/inspect/delete Serve applications;
  every call carries a :class:`Handle` (the :class:`Owner` and, to start work, the
  scheduler's :class:`PodPlacement`); :class:`JobState` and :class:`ServeAppState` carry
  the backend's reason.
* :class:`FakeDriver` - in memory, for tests.
* :class:`LocalRayDriver` (:mod:`corral.drivers.local`) - a private local Ray head (or
  ``RAY_ADDRESS``), Ray's job submission client and Serve's REST API, with Ray 2.60's
  dashboard token.
* :mod:`corral.drivers.kuberay` - ``RayJob`` / ``RayService`` builders and the KubeRay driver
  (imported on its own: it is the cluster's).

Example:
    >>> from corral.drivers import Handle, LocalRayDriver, Owner
    >>> handle = Handle(Owner("FineTuneJob", "bot", "team-a"))
    >>> driver = LocalRayDriver(num_cpus=2)  # doctest: +SKIP
    >>> driver.start(); driver.submit_job(handle, "corral-team-a.bot-1", "python -c 'print(1)'")  # doctest: +SKIP
    >>> driver.down()  # doctest: +SKIP
"""

from ._fake import FakeDriver
from ._handle import Handle, Owner, PodPlacement
from ._protocol import (
    ACTIVE_JOB_STATUSES,
    Driver,
    DriverError,
    JobState,
    JobStatus,
    ServeAppState,
    ServeAppStatus,
)
from .local import HeadRecord, LocalRayDriver, read_ray_token, stop_recorded_head

__all__ = [
    "ACTIVE_JOB_STATUSES",
    "Driver",
    "DriverError",
    "FakeDriver",
    "Handle",
    "HeadRecord",
    "JobState",
    "JobStatus",
    "LocalRayDriver",
    "Owner",
    "PodPlacement",
    "ServeAppState",
    "ServeAppStatus",
    "read_ray_token",
    "stop_recorded_head",
]
