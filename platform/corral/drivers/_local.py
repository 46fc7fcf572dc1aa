"""``LocalRayDriver``: a local Ray head (started by Corral, or attached via ``RAY_ADDRESS``),
jobs through Ray's job submission API, deployments through Serve's REST API.

Ray 2.60 protects its dashboard (and so the job and Serve APIs) with token auth. A head
this driver starts runs with ``RAY_AUTH_MODE=token`` and a fresh random token kept in its
private temp dir (``RAY_AUTH_TOKEN_PATH``); every request carries
``Authorization: Bearer <token>``. Nothing is written to ``~/.ray``. When attaching, the
token is the one Ray itself would use (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``), read by :meth:`LocalRayDriver.from_env`.

:meth:`LocalRayDriver.down` stops only the processes of the head it started (the
``ray start --block`` process, its descendants and any process naming its temp dir); it
never runs ``ray stop``, which would stop every Ray of the user.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from ._protocol import DriverError, JobState, JobStatus, ServeAppState, ServeAppStatus

__all__ = ["LocalRayDriver", "read_ray_token"]

logger = logging.getLogger(__name__)

_TOKEN_FILE = "auth_token"
_HTTP_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_ray_token(environ: Mapping[str, str] | None = None) -> str | None:
    """Find the token Ray would use: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``.

    Args:
        environ: Environment to read (default ``os.environ``).

    Returns:
        The token, or None when there is none.
    """
    env = os.environ if environ is None else environ
    if env.get("RAY_AUTH_TOKEN"):
        return env["RAY_AUTH_TOKEN"].strip()
    for candidate in (env.get("RAY_AUTH_TOKEN_PATH"), str(Path.home() / ".ray" / _TOKEN_FILE)):
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_text(encoding="utf-8").strip() or None
    return None


class LocalRayDriver:
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
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        token: str | None = None,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        serve_host: str = "127.0.0.1",
        serve_port: int | None = None,
        env: Mapping[str, str] | None = None,
        temp_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self._address = address.rstrip("/") if address else None
        self._token = token
        self._num_cpus = num_cpus
        self._num_gpus = num_gpus
        self._serve_host = serve_host
        self._serve_port = serve_port
        self._env = dict(env or {})
        self._temp_parent = Path(temp_dir) if temp_dir is not None else Path("/tmp")
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._temp_dir: Path | None = None
        self._client: Any = None
        self._lock = threading.RLock()
        self.gcs_address: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> LocalRayDriver:
        """Attach to ``RAY_ADDRESS`` (a dashboard URL) when it is set, else plan a private head.

        Args:
            environ: Environment to read (default ``os.environ``).
            **kwargs: Passed to the constructor.
        """
        env = os.environ if environ is None else environ
        address = env.get("RAY_ADDRESS") or None
        if address and not address.startswith(("http://", "https://")):
            address = f"http://{address}"
        token = read_ray_token(env) if address else None
        return cls(address, token=token, **kwargs)

    # -- lifecycle --------------------------------------------------------------------

    @property
    def address(self) -> str | None:
        """Dashboard URL of the Ray this driver talks to (None before :meth:`start`)."""
        return self._address

    @property
    def token(self) -> str | None:
        """The dashboard token sent with every request."""
        return self._token

    @property
    def started_head(self) -> bool:
        """True when this driver started (and so owns) the Ray head."""
        return self._proc is not None

    @property
    def temp_dir(self) -> Path | None:
        """The started head's private temp dir."""
        return self._temp_dir

    def start(self) -> LocalRayDriver:
        """Start the private head (unless attaching) and connect; idempotent.

        Raises:
            DriverError: The head did not come up.
        """
        with self._lock:
            if self._client is not None:
                return self
            if self._address is None:
                self._start_head()
            self._client = self._make_client()
            logger.info("Connected to Ray dashboard %s", self._address)
            return self

    def _start_head(self) -> None:
        self._temp_parent.mkdir(parents=True, exist_ok=True)
        temp_dir = Path(tempfile.mkdtemp(prefix="corral-ray-", dir=self._temp_parent))
        token = secrets.token_hex(32)
        token_file = temp_dir / _TOKEN_FILE
        token_file.write_text(token, encoding="utf-8")
        token_file.chmod(0o600)
        gcs_port, dash_port = _free_port(), _free_port()
        if self._serve_port is None:
            self._serve_port = _free_port()
        ray_bin = Path(sys.executable).with_name("ray")
        cmd = [
            str(ray_bin) if ray_bin.exists() else (shutil.which("ray") or "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs_port}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash_port}",
            f"--ray-client-server-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ]
        if self._num_cpus is not None:
            cmd.append(f"--num-cpus={self._num_cpus}")
        if self._num_gpus is not None:
            cmd.append(f"--num-gpus={self._num_gpus}")
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
        env.update(
            {
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(token_file),
                "RAY_USAGE_STATS_ENABLED": "0",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        env.update(self._env)
        log = (temp_dir / "ray-start.log").open("wb")
        logger.info("Starting Ray head in %s (dashboard 127.0.0.1:%d)", temp_dir, dash_port)
        self._proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        self._temp_dir, self._token = temp_dir, token
        self._address = f"http://127.0.0.1:{dash_port}"
        self.gcs_address = f"127.0.0.1:{gcs_port}"
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = (temp_dir / "ray-start.log").read_text(errors="replace")[-4000:]
                self.down()
                raise DriverError(f"ray start exited with code {self._proc.returncode}:\n{tail}")
            try:
                self._request("GET", "/api/version")
                break
            except (OSError, DriverError):
                time.sleep(0.5)
        else:
            self.down()
            raise DriverError(f"Ray dashboard did not answer within {self._start_timeout:.0f}s")
        logger.info("Started Ray head %s (pid %d)", self.gcs_address, self._proc.pid)

    def _make_client(self) -> Any:
        from ray.job_submission import JobSubmissionClient

        headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
        return JobSubmissionClient(self._address, headers=headers)

    def owned_pids(self) -> set[int]:
        """PIDs of the processes of the head this driver started (empty when attached)."""
        if self._proc is None or self._temp_dir is None:
            return set()
        import psutil  # type: ignore[import-untyped]

        pids: set[int] = set()
        marker = str(self._temp_dir)
        try:
            parent = psutil.Process(self._proc.pid)
            pids.add(parent.pid)
            pids.update(child.pid for child in parent.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                cmdline = proc.info["cmdline"] or []
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if any(marker in part for part in cmdline):
                pids.add(proc.info["pid"])
        pids.discard(os.getpid())
        return pids

    def down(self, timeout: float = 5.0) -> None:
        """Stop the head this driver started (and nothing else); idempotent. Attached: disconnect only."""
        with self._lock:
            self._client = None
            if self._proc is None:
                return
            import psutil

            pids = self.owned_pids()
            logger.info("Stopping Ray head %s (%d processes)", self.gcs_address, len(pids))
            procs = []
            for pid in pids:
                try:
                    procs.append(psutil.Process(pid))
                except psutil.NoSuchProcess:
                    continue
            for proc in procs:
                try:
                    proc.send_signal(signal.SIGTERM)
                except psutil.NoSuchProcess:
                    continue
            _, alive = psutil.wait_procs(procs, timeout=timeout)
            for proc in alive:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    continue
            psutil.wait_procs(alive, timeout=5)
            if self._proc.poll() is None:  # pragma: no cover - killed above
                self._proc.kill()
            self._proc.wait(timeout=5)
            self._proc = None
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
            logger.info("Stopped Ray head %s", self.gcs_address)

    def __enter__(self) -> LocalRayDriver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- HTTP -------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        if self._address is None:
            raise DriverError("the driver is not started")
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self._address + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self._token:
            req.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(req, timeout=_HTTP_TIMEOUT) as resp:
                text = resp.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", errors="replace")[:2000]
            raise DriverError(f"{method} {path} answered {exc.code}: {detail}") from exc
        return json.loads(text) if text.strip() else None

    def _jobs(self) -> Any:
        if self._client is None:
            self.start()
        return self._client

    # -- jobs -------------------------------------------------------------------------

    def submit_job(
        self,
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

    def job_status(self, submission_id: str) -> JobState | None:
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

    def stop_job(self, submission_id: str) -> bool:
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

    def job_logs(self, submission_id: str) -> str:
        """Return the job's logs (empty when it does not exist)."""
        try:
            return str(self._jobs().get_job_logs(submission_id))
        except RuntimeError as exc:
            if "does not exist" in str(exc):
                return ""
            raise DriverError(f"cannot read logs of Ray job {submission_id}: {exc}") from exc

    # -- Serve ------------------------------------------------------------------------

    def _serve_details(self) -> dict[str, Any]:
        details = self._request("GET", "/api/serve/applications/")
        return details if isinstance(details, dict) else {}

    def deploy_serve(self, config: Mapping[str, Any]) -> None:
        """Upsert the config's applications by name, keeping the others (one declarative PUT).

        Raises:
            DriverError: Serve refused the config, or an application deployed through the
                Python API (no declarative config) is in the way.
        """
        with self._lock:
            details = self._serve_details()
            apps: dict[str, Any] = {}
            for name, app in (details.get("applications") or {}).items():
                deployed = app.get("deployed_app_config")
                if deployed is None:
                    raise DriverError(
                        f"Serve application {name!r} was deployed through the Python API; Corral deploys "
                        "declaratively and cannot keep it: delete it (serve.delete) or use another Ray"
                    )
                apps[name] = deployed
            for app in config.get("applications", []):
                apps[app["name"]] = dict(app)
            self._put_serve(list(apps.values()), config.get("http_options"))
        logger.info("Deployed Serve applications %s", ", ".join(a["name"] for a in config.get("applications", [])))

    def _put_serve(self, applications: list[Any], http_options: Mapping[str, Any] | None = None) -> None:
        body: dict[str, Any] = {"applications": applications}
        if self._proc is not None:
            body["http_options"] = {"host": self._serve_host, "port": self._serve_port}
        elif http_options:
            body["http_options"] = dict(http_options)
        self._request("PUT", "/api/serve/applications/", body)

    def serve_status(self) -> dict[str, ServeAppState]:
        """Every Serve application by name (empty when Serve is not running)."""
        details = self._serve_details()
        out: dict[str, ServeAppState] = {}
        for name, app in (details.get("applications") or {}).items():
            deployments = {
                dep_name: (
                    int(dep.get("target_num_replicas") or 0),
                    sum(1 for r in dep.get("replicas") or [] if r.get("state") == "RUNNING"),
                )
                for dep_name, dep in (app.get("deployments") or {}).items()
            }
            out[name] = ServeAppState(
                name=name,
                status=cast("ServeAppStatus", app.get("status") or "NOT_STARTED"),
                message=app.get("message") or "",
                route_prefix=app.get("route_prefix"),
                deployments=deployments,
                deployed_config=app.get("deployed_app_config"),
            )
        return out

    def delete_serve_app(self, name: str) -> None:
        """Remove one application (the others keep running); absent is success."""
        with self._lock:
            details = self._serve_details()
            current = details.get("applications") or {}
            if name not in current:
                return
            keep = [app["deployed_app_config"] for n, app in current.items() if n != name]
            self._put_serve(keep)
        logger.info("Deleted Serve application %s", name)

    def endpoint(self) -> str | None:
        """Base URL of Serve's HTTP proxy."""
        if self._proc is not None:
            return f"http://{self._serve_host}:{self._serve_port}"
        if self._serve_port is not None:
            return f"http://{self._serve_host}:{self._serve_port}"
        try:
            http = self._serve_details().get("http_options") or {}
        except (OSError, DriverError):
            return None
        host = http.get("host") or "127.0.0.1"
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return f"http://{host}:{http.get('port') or 8000}"
