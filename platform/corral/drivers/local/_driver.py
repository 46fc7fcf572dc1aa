"""``LocalRayDriver``: a local Ray head (started by Corral, or attached via ``RAY_ADDRESS``),
jobs through Ray's job submission API, deployments through Serve's REST API.

The driver is composed of three parts, one module each:

* :mod:`._head` - start/attach/stop the head, its token and owned processes (the
  token and process-ownership rules are written there), authenticated dashboard requests.
* :mod:`._jobs` - Ray Jobs: submit, status, stop, logs.
* :mod:`._serve` - Ray Serve: deploy, status, delete, endpoint.
"""

from __future__ import annotations

from ._head import read_ray_token
from ._jobs import LocalRayJobs
from ._serve import LocalRayServe

__all__ = ["LocalRayDriver", "read_ray_token"]


class LocalRayDriver(LocalRayJobs, LocalRayServe):
    """Runs fine-tunes as Ray jobs and deployments as Serve applications on a local Ray.

    Args:
        address: Dashboard URL of a running Ray to attach to (``http://127.0.0.1:8265``);
            None starts a private head on :meth:`start`.
        token: Dashboard token when attaching (None: no ``Authorization`` header).
        num_cpus: CPUs the started head offers (None: Ray's default, all cores).
        num_gpus: GPUs the started head offers (None: Ray's detection).
        serve_host: Host Serve's HTTP proxy binds to on a started head.
        serve_port: Its port (None: a free port).
        env: Extra environment for the started head and everything it runs (e.g. PYTHONPATH).
        temp_dir: Parent of the head's private temp dir (default ``/tmp``: Ray's socket
            paths must stay short).
        start_timeout: Seconds to wait for the started head's dashboard.
        state_dir: Where the started head is recorded (``ray-head.json``), so that a later
            driver with the same ``state_dir`` re-attaches to it, or stops what is left of it
            before starting another (one Ray per home); None: no record.
    """
