"""The local backend: fine-tunes as Ray jobs and deployments as Serve applications on one local Ray.

:class:`LocalRayDriver` starts a private Ray head (or attaches to ``RAY_ADDRESS``), submits
jobs through Ray's job submission client and deploys through Serve's REST API, with Ray
2.60's dashboard token. One Ray serves every owner, so the driver needs nothing of the
:class:`~corral.drivers.Handle` each call carries.

* :mod:`._head` - start/attach/stop the head, its token and owned processes.
* :mod:`._head_record` - the record of a started head in the data dir (one Ray per home).
* :mod:`._jobs` - Ray Jobs: submit, status, stop, logs.
* :mod:`._serve` - Ray Serve: deploy, status, delete, endpoint.
"""

from ._driver import LocalRayDriver
from ._head import read_ray_token
from ._head_record import HeadRecord, head_pids, stop_recorded_head

__all__ = ["HeadRecord", "LocalRayDriver", "head_pids", "read_ray_token", "stop_recorded_head"]
