"""The local Ray head behind :class:`~corral.drivers.LocalRayDriver`: start it (or attach via
``RAY_ADDRESS``), own its processes, stop it, and send authenticated requests to its dashboard.

Ray 2.60 protects its dashboard (and so the job and Serve APIs) with token auth. A head
this driver starts runs with ``RAY_AUTH_MODE=token`` and a fresh random token kept in its
private temp dir (``RAY_AUTH_TOKEN_PATH``, the dir made 0700 once Ray is up), and binds every
port on 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps Ray from replacing loopback
with the host's address); every request carries
``Authorization: Bearer <token>``. Nothing is written to ``~/.ray``. When attaching, the
token is the one Ray itself would use (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``), read by :meth:`LocalRayDriver.from_env`.

One Ray per home: with ``state_dir`` (the control plane's data dir) the started head is
recorded in ``state_dir/ray-head.json`` (:mod:`._head_record`). :meth:`LocalRayHead.start`
re-attaches to a recorded head that is alive and answers with its token (a daemon that was
killed left it running: its jobs and Serve replicas go on), and otherwise stops what is left
of the recorded head by its PIDs before starting a new one.

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
from typing import Any, Self
from uuid import uuid4

from .._protocol import DriverError
from ._head_record import HeadRecord, head_pids, process_start_time, stop_head_processes, stop_recorded_head

__all__ = ["LocalRayHead", "read_ray_token"]

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


class LocalRayHead:
    """The Ray head of a :class:`~corral.drivers.LocalRayDriver` and the requests to its dashboard.

    The driver's Jobs and Serve halves build on it; the constructor's arguments are
    documented on :class:`~corral.drivers.LocalRayDriver`.
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
        state_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._address = address.rstrip("/") if address else None
        self._token = token
        self._num_cpus = num_cpus
        self._num_gpus = num_gpus
        self._serve_host = serve_host
        self._serve_port = serve_port
        self._requested_serve_port = serve_port
        self._env = dict(env or {})
        self._temp_parent = Path(temp_dir) if temp_dir is not None else Path("/tmp")
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._head_pid: int | None = None
        self._head_start: float | None = None
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._head_id: str | None = None
        self.adopted = False
        self._temp_dir: Path | None = None
        self._client: Any = None
        self._lock = threading.RLock()
        self.gcs_address: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Self:
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
        """True when this driver started or re-attached to (and so owns) the Ray head."""
        return self._head_pid is not None

    @property
    def head_id(self) -> str | None:
        """Identity of the Ray this driver talks to: the recorded head id, or the attached address."""
        return self._head_id or self._address

    @property
    def temp_dir(self) -> Path | None:
        """The started head's private temp dir."""
        return self._temp_dir

    def start(self) -> Self:
        """Start the private head (unless attaching) and connect; idempotent.

        Raises:
            DriverError: The head did not come up.
        """
        with self._lock:
            if self._client is not None:
                return self
            if self._address is None and not self._adopt():
                self._start_head()
            self._client = self._make_client()
            logger.info("Connected to Ray dashboard %s", self._address)
            return self

    def _adopt(self) -> bool:
        """Re-attach to the head recorded in the state dir when it is alive; else stop its leftovers."""
        if self._state_dir is None:
            return False
        record = HeadRecord.read(self._state_dir)
        if record is None:
            return False
        token = record.token()
        started = process_start_time(record.pid)
        if token is not None and started is not None and abs(started - record.pid_start_time) < 0.05:
            self._address, self._token = record.address, token
            try:
                self._request("GET", "/api/version")
            except (OSError, DriverError) as exc:
                logger.warning("Recorded Ray head %s does not answer (%s); stopping it", record.gcs_address, exc)
            else:
                self._head_pid, self._head_start = record.pid, record.pid_start_time
                self._temp_dir, self._serve_port = Path(record.temp_dir), record.serve_port
                self.gcs_address, self._head_id, self.adopted = record.gcs_address, record.head_id, True
                logger.info(
                    "Re-attached to Ray head %s (pid %d, dashboard %s) left running by an earlier control plane",
                    record.gcs_address,
                    record.pid,
                    record.address,
                )
                return True
        self._address, self._token = None, None
        stopped = stop_recorded_head(self._state_dir)
        logger.warning(
            "Stopped %d leftover processes of Ray head %s that could not be re-attached", stopped, record.gcs_address
        )
        return False

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
                # Without this, Ray resolves 127.0.0.1 to the host's address and binds the GCS,
                # raylet, client server and agents on every interface; with it, all stay on loopback.
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
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
        self._head_pid, self._head_start = self._proc.pid, process_start_time(self._proc.pid)
        self._head_id = uuid4().hex
        self._address = f"http://127.0.0.1:{dash_port}"
        self.gcs_address = f"127.0.0.1:{gcs_port}"
        if self._state_dir is not None:
            HeadRecord(
                head_id=self._head_id,
                address=self._address,
                gcs_address=self.gcs_address,
                temp_dir=str(temp_dir),
                token_path=str(token_file),
                serve_port=self._serve_port,
                pid=self._proc.pid,
                pid_start_time=self._head_start or 0.0,
            ).write(self._state_dir)
        proc = self._proc
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = (temp_dir / "ray-start.log").read_text(errors="replace")[-4000:]
                self.down()
                raise DriverError(f"ray start exited with code {proc.returncode}:\n{tail}")
            try:
                self._request("GET", "/api/version")
                break
            except (OSError, DriverError):
                time.sleep(0.5)
        else:
            self.down()
            raise DriverError(f"Ray dashboard did not answer within {self._start_timeout:.0f}s")
        temp_dir.chmod(0o700)  # Ray makes its temp dir 0777; nothing in it is for other users
        logger.info("Started Ray head %s (pid %d, temp dir %s)", self.gcs_address, proc.pid, temp_dir)

    def _make_client(self) -> Any:
        from ray.job_submission import JobSubmissionClient

        headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
        return JobSubmissionClient(self._address, headers=headers)

    def owned_pids(self) -> set[int]:
        """PIDs of the processes of the head this driver started or re-attached to (empty when attached)."""
        if self._head_pid is None or self._temp_dir is None:
            return set()
        return head_pids(self._temp_dir, self._head_pid, self._head_start)

    def down(self, timeout: float = 5.0) -> None:
        """Stop the head this driver owns (and nothing else); idempotent. Attached: disconnect only."""
        with self._lock:
            self._client = None
            if self._head_pid is None:
                return
            pids = self.owned_pids()
            logger.info("Stopping Ray head %s (%d processes)", self.gcs_address, len(pids))
            stop_head_processes(pids, timeout)
            if self._proc is not None:
                if self._proc.poll() is None:  # pragma: no cover - stopped above
                    self._proc.kill()
                self._proc.wait(timeout=5)
            self._proc, self._head_pid = None, None
            # The head is gone: a later start() starts a fresh one instead of attaching to its old address.
            self._address, self._token, self._serve_port = None, None, self._requested_serve_port
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
            if self._state_dir is not None:
                HeadRecord.remove(self._state_dir)
            logger.info("Stopped Ray head %s", self.gcs_address)

    def __enter__(self) -> Self:
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
