"""Health, readiness and Prometheus metrics of the control API.

``/healthz`` says the process serves; ``/readyz`` also checks that the store answers (both
without a token: they say nothing about any tenant); ``/metrics`` exposes the registry to a
bearer token that may read metrics (``metrics: true`` or an admin; Prometheus sends it with
its ``authorization`` scrape setting), since it names every namespace's jobs, deployments
and costs. It includes including ``corral_controlapi_requests_total`` (by method,
route template and code) and ``corral_controlapi_request_duration_seconds``, which
:class:`MetricsMiddleware` records for every request.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.observability import counter, histogram
from corral.store import Store

from ._access import Caller
from ._status import APIError

__all__ = ["MetricsMiddleware", "health_router"]

log = logging.getLogger(__name__)

_UNMATCHED = "<unmatched>"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def health_router() -> APIRouter:
    """Return the router with ``/healthz``, ``/readyz`` (no token) and ``/metrics`` (a metrics token)."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz", response_class=PlainTextResponse, operation_id="healthz")
    async def healthz() -> str:
        """Liveness: the process serves requests."""
        return "ok"

    @router.get("/readyz", response_class=PlainTextResponse, operation_id="readyz")
    async def readyz(request: Request) -> Response:
        """Readiness: the store answers."""
        store: Store = request.app.state.store
        try:
            await run_in_threadpool(store.ping)
        except Exception as exc:
            log.warning("Not ready: store unreachable: %s", exc)
            return PlainTextResponse(f"store unreachable: {type(exc).__name__}", status_code=503)
        return PlainTextResponse("ok")

    @router.get("/metrics", operation_id="metrics")
    async def metrics(request: Request, principal: Caller) -> Response:
        """Prometheus text exposition of the registry (a token with ``metrics: true``, or an admin's)."""
        if not principal.reads_metrics:
            raise APIError(
                403,
                "Forbidden",
                f'token "{principal.name}" cannot get path "/metrics": it shows every namespace; use a token '
                "with metrics: true (Prometheus' scrape token) or an admin's",
            )
        registry: CollectorRegistry = request.app.state.registry
        body = await run_in_threadpool(generate_latest, registry)  # the store collector reads the store
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router


class MetricsMiddleware:
    """ASGI middleware that counts requests and times them (to the response headers) per route template."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = counter(
            "corral_controlapi_requests_total",
            "Control API requests by method, route template and HTTP code.",
            ("method", "route", "code"),
            registry=registry,
        )
        self.duration = histogram(
            "corral_controlapi_request_duration_seconds",
            "Control API time to response headers, by method and route template.",
            ("method", "route"),
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        code = 500
        timed = False

        def observe() -> None:
            nonlocal timed
            if not timed:
                timed = True
                self.duration.labels(_method(scope), _route(scope)).observe(time.perf_counter() - start)

        async def send_wrapper(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
                observe()
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            observe()
            self.requests.labels(_method(scope), _route(scope), str(code)).inc()


def _method(scope: Scope) -> str:
    """The method label: the standard methods, else ``OTHER`` (a label set a caller cannot grow)."""
    method = str(scope.get("method", ""))
    return method if method in _METHODS else "OTHER"


def _route(scope: dict[str, Any] | Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else _UNMATCHED
