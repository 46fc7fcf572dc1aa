"""Where work runs: the :class:`Driver` protocol and the local Ray driver.

* :class:`Driver` - submit/stop/inspect Ray jobs, deploy/inspect/delete Serve applications.
* :class:`FakeDriver` - in memory, for tests.
* :class:`LocalRayDriver` - a private local Ray head (or ``RAY_ADDRESS``), Ray's job
  submission client and Serve's REST API, with Ray 2.60's dashboard token.

Example:
    >>> from corral.drivers import LocalRayDriver
    >>> driver = LocalRayDriver(num_cpus=2)  # doctest: +SKIP
    >>> driver.start(); driver.submit_job("corral-a-b-1", "python -c 'print(1)'"); driver.down()  # doctest: +SKIP
"""

from ._fake import FakeDriver
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
    "HeadRecord",
    "JobState",
    "JobStatus",
    "LocalRayDriver",
    "ServeAppState",
    "ServeAppStatus",
    "read_ray_token",
    "stop_recorded_head",
]
