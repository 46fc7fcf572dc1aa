"""``EmbeddedControlPlane``: the whole embedded default in one process (what ``corral up`` starts).

A SQLite store under the data dir, a :class:`~corral.drivers.LocalRayDriver` (a private
Ray head, or ``RAY_ADDRESS``), the :class:`~corral.control.Runner` thread and the control
API on uvicorn.

Restart-safe: the started Ray head is recorded in the data dir, so a plane started again
on the same data dir re-attaches to the head an earlier (killed) plane left running, with
its jobs and Serve replicas, instead of starting a second one. Before the API answers, one
reconcile pass runs, so what the API reports (a deployment's ``Ready``, a job's phase) has
been checked against the Ray that runs now, not carried over from the last process.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from corral.artifacts import URIPolicy, load_namespace_settings
from corral.control import ControlSettings, Runner
from corral.controlapi import ControlAPISettings, TokenAuth, create_app
from corral.drivers import Driver, LocalRayDriver, read_ray_token
from corral.store import SqliteStore

__all__ = ["EmbeddedControlPlane"]

logger = logging.getLogger(__name__)

REMOTE_CODE_ENV = "CORRAL_REMOTE_CODE_NAMESPACES"
API_START_TIMEOUT = 60.0  # seconds for uvicorn to bind and start the app


class EmbeddedControlPlane:
    """Store + driver + reconcile loop + control API, started and stopped together.

    Args:
        data_dir: Where the SQLite file (``corral.db``) and artifacts (``artifacts/``) live.
        ray_address: Dashboard URL of a Ray to attach to; None starts a private head
            (``corral up`` passes ``RAY_ADDRESS`` here when it is set).
        driver: A driver to use instead (tests); it is not stopped by :meth:`stop`.
        host: Control API host.
        port: Control API port (0: no API server).
        auth: Control API authenticator (default: the tokens file ``data_dir/tokens.yaml``
            when it exists, else no tokens: every call is refused).
        num_cpus: CPUs of a started Ray head.
        serve_port: Port of Serve's HTTP proxy on a started head (None: a free one).
        resync_seconds: Longest wait between reconcile passes.
        remote_code_namespaces: Namespaces whose Models may run code shipped with their weights
            (``*``: all); default ``$CORRAL_REMOTE_CODE_NAMESPACES`` (comma-separated), else none.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        ray_address: str | None = None,
        driver: Driver | None = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        auth: Any = None,
        num_cpus: int | None = None,
        serve_port: int | None = None,
        resync_seconds: float = 2.0,
        remote_code_namespaces: Iterable[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._ray_address = ray_address
        self._own_driver = driver is None
        self._driver = driver
        self.host, self.port = host, port
        self._auth = auth
        self._num_cpus = num_cpus
        self._serve_port = serve_port
        self._first_pass_timeout = 120.0
        self._resync = resync_seconds
        if remote_code_namespaces is None:
            raw = os.environ.get(REMOTE_CODE_ENV, "")
            remote_code_namespaces = [n.strip() for n in raw.split(",") if n.strip()]
        self._remote_code = frozenset(remote_code_namespaces)
        self._chat_tokens: tuple[tuple[str, frozenset[str] | None], ...] | None = None
        self.store: SqliteStore | None = None
        self.runner: Runner | None = None
        self._server: Any = None
        self._server_thread: threading.Thread | None = None

    @property
    def driver(self) -> Driver:
        """The driver (after :meth:`start`)."""
        if self._driver is None:
            raise RuntimeError("the control plane is not started")
        return self._driver

    @property
    def settings(self) -> ControlSettings:
        """Settings handed to the reconcilers.

        ``data_dir/namespace-artifacts.yaml``, when present, gives each namespace the S3
        credentials its Datasets and Models are read with (see
        :func:`corral.artifacts.load_namespace_settings`).
        """
        credentials = self.data_dir / "namespace-artifacts.yaml"
        return ControlSettings(
            artifact_root=(self.data_dir / "artifacts").as_uri(),
            python=sys.executable,
            job_runtime_env={"env_vars": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}},
            namespace_artifacts=load_namespace_settings(credentials) if credentials.exists() else {},
            remote_code_namespaces=self._remote_code,
            chat_tokens=self._chat_tokens,
        )

    def start(self) -> EmbeddedControlPlane:
        """Start the driver, the loop and the API server; return once the API listens.

        Raises:
            RuntimeError: The API server exited during start-up or did not listen within a minute.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = SqliteStore(self.data_dir / "corral.db")
        self._auth = self._authenticator()
        self._chat_tokens = _chat_tokens(self._auth)
        if self._driver is None:
            token = read_ray_token() if self._ray_address else None
            self._driver = LocalRayDriver(
                self._ray_address,
                token=token,
                num_cpus=self._num_cpus,
                serve_port=self._serve_port,
                state_dir=self.data_dir,
            )
        if isinstance(self._driver, LocalRayDriver):
            self._driver.start()
        self.runner = Runner(self.store, self._driver, self.settings, resync_seconds=self._resync).start()
        # The API answers once the first pass has checked every status against the Ray that
        # runs now (its slow actions, e.g. deploying to a fresh Serve, run after that).
        if not self.runner.statuses_checked.wait(self._first_pass_timeout):
            logger.warning(
                "The first reconcile pass took over %.0f s; starting the API anyway", self._first_pass_timeout
            )
        if self.port:
            try:
                self._start_api()
            except BaseException:
                self.stop()
                raise
        logger.info("Corral control plane up (data dir %s)", self.data_dir)
        return self

    def _start_api(self) -> None:
        import uvicorn

        assert self.store is not None
        auth = self._authenticator()
        api = ControlAPISettings.from_env()
        root = self.settings.artifact_root
        app = create_app(
            self.store,
            auth,
            artifact_root=root,
            watch_timeout=api.watch_timeout_seconds,
            uri_policy=URIPolicy.from_mapping(root, api.allowed_uri_prefixes, "CORRAL_ALLOWED_URI_PREFIXES"),
            max_watches_per_token=api.max_watches_per_token,
        )
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._server_thread = threading.Thread(target=self._server.run, name="corral-api", daemon=True)
        self._server_thread.start()
        self._wait_listening(API_START_TIMEOUT)
        logger.info("Control API on http://%s:%d", self.host, self.port)

    def _authenticator(self) -> Any:
        """The control API's authenticator: the one given, else the tokens file (none: every call refused)."""
        if self._auth is not None:
            return self._auth
        tokens = self.data_dir / "tokens.yaml"
        return TokenAuth.from_file(tokens) if tokens.exists() else TokenAuth([])

    def _wait_listening(self, timeout: float) -> None:
        """Return once uvicorn listens (its lifespan started, the socket bound); raise if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._server_thread is None or not self._server_thread.is_alive():
                raise RuntimeError(
                    f"the control API did not start on {self.host}:{self.port} (see the log above: port in use?)"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"the control API on {self.host}:{self.port} did not listen within {timeout:.0f} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the API, the loop and (when this process started it) the Ray head."""
        if self._server is not None:
            self._server.should_exit = True
            if self._server_thread is not None:
                self._server_thread.join(15)
            self._server = None
        if self.runner is not None:
            self.runner.stop()
            self.runner = None
        if self._own_driver and isinstance(self._driver, LocalRayDriver):
            self._driver.down()
        if self.store is not None:
            self.store.close()
            self.store = None
        logger.info("Corral control plane down")

    def __enter__(self) -> EmbeddedControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _chat_tokens(auth: Any) -> tuple[tuple[str, frozenset[str] | None], ...] | None:
    """``(sha256, namespaces)`` of the tokens file's entries: the chat endpoints accept the same tokens."""
    if not isinstance(auth, TokenAuth):
        logger.warning("the control API's authenticator is not a tokens file: chat endpoints ask for no token")
        return None
    return tuple((entry.sha256, entry.namespaces) for entry in auth.entries)
