"""Ray Serve for :class:`~corral.drivers.LocalRayDriver`: deploy, status, delete and the
endpoint through Serve's declarative REST API on the head's dashboard.

One Serve holds every owner's applications (named apart by the reconcilers) behind one HTTP
proxy: the :class:`~corral.drivers.Handle` of each call is not needed here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

from .._handle import Handle
from .._protocol import DriverError, ServeAppState, ServeAppStatus
from ._head import LocalRayHead

__all__ = ["LocalRayServe"]

logger = logging.getLogger(__name__)


class LocalRayServe(LocalRayHead):
    """The :class:`~corral.drivers.Driver` Serve methods of :class:`~corral.drivers.LocalRayDriver`."""

    # -- Serve ------------------------------------------------------------------------

    def _serve_details(self) -> dict[str, Any]:
        details = self._request("GET", "/api/serve/applications/")
        return details if isinstance(details, dict) else {}

    def deploy_serve(self, handle: Handle, config: Mapping[str, Any]) -> None:
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
        if self._head_pid is not None:
            body["http_options"] = {"host": self._serve_host, "port": self._serve_port}
        elif http_options:
            body["http_options"] = dict(http_options)
        self._request("PUT", "/api/serve/applications/", body)

    def serve_status(self, handle: Handle, name: str) -> ServeAppState | None:
        """The Serve application ``name``, or None when it is not deployed."""
        return self.applications().get(name)

    def applications(self) -> dict[str, ServeAppState]:
        """Every Serve application by name, whoever owns it (empty when Serve is not running)."""
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

    def delete_serve_app(self, handle: Handle, name: str) -> None:
        """Remove one application (the others keep running); absent is success."""
        with self._lock:
            details = self._serve_details()
            current = details.get("applications") or {}
            if name not in current:
                return
            keep = [app["deployed_app_config"] for n, app in current.items() if n != name]
            self._put_serve(keep)
        logger.info("Deleted Serve application %s", name)

    def endpoint(self, handle: Handle | None = None) -> str | None:
        """Base URL of Serve's HTTP proxy (one for every owner)."""
        if self._head_pid is not None:
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
