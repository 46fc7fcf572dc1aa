"""One OpenAI base URL: ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models`` on the control API.

With these routes ``openai.OpenAI(base_url=<control API>/v1, api_key=<token>)`` uploads files,
fine-tunes and chats with the result through one URL. A request is authenticated like every
OpenAI-style call (the caller's token and namespace, :mod:`corral.controlapi._openai_common`),
then routed by its ``model`` to the ModelDeployment of that namespace that serves it (the base
model or an adapter: ``status.servedModels``) and forwarded, body unchanged, to the
deployment's Serve endpoint (``status.endpoint``, ``<serve>/<namespace>/<deployment>/v1``).
For an adapter Serve's multiplexing header (``serve_multiplexed_model_id``) is set, so Serve's
proxy prefers a replica that already holds it. Streaming answers (``stream: true``) are passed
through chunk by chunk as they arrive; Serve's status code and body come back as they are
(a ``503`` with ``Retry-After`` under overload included).

Routing is a :class:`ChatRouter`: it finds a :class:`Route` for ``(namespace, model)`` from
the store (cached for ``cache_seconds``, looked up again on a miss) and then awaits
:meth:`ChatRouter.ready` before forwarding. ``ready`` returns at once here; it is the hook
where a "hold the request while the deployment scales up from zero" wait plugs in (subclass
and override it, or set ``app.state.chat_router``).

Direct Serve endpoints stay for in-cluster clients; the extra hop's cost is measured by
``bench/chat_proxy.py`` (the same requests straight to Serve as baseline).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from corral.api.v1alpha1 import ModelDeployment
from corral.serving._chat_auth import BodyTooLargeError, read_capped
from corral.serving._config import routing_headers
from corral.store import Store

from ._openai_common import Namespace, call_store
from ._openai_schemas import OpenAIError

__all__ = ["MAX_BODY_BYTES", "ChatRouter", "Route", "chat_router", "install_chat_proxy"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
"""Largest chat or completion request body the proxy reads."""
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


@dataclass(frozen=True)
class Route:
    """Where one model of one namespace is served."""

    namespace: str
    model: str
    deployment: str
    endpoint: str
    """The deployment's OpenAI base URL (``.../v1``)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Routing headers (Serve's multiplexing header for an adapter)."""


@dataclass
class _Entry:
    at: float
    routes: dict[str, Route]
    served: list[dict[str, Any]]


class ChatRouter:
    """Finds the deployment that serves a model, and decides when a request may go to it.

    Args:
        store: Where ModelDeployments live.
        cache_seconds: How long a namespace's routes are reused (a miss looks again at once).
    """

    def __init__(self, store: Store, cache_seconds: float = 2.0) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self._cache: dict[str, _Entry] = {}

    def _load(self, namespace: str) -> _Entry:
        routes: dict[str, Route] = {}
        served: list[dict[str, Any]] = []
        for dep in self.store.list(ModelDeployment, namespace).items:
            st = dep.status
            if not st.endpoint:
                continue
            for name in st.served_models:
                route = Route(namespace, name, dep.metadata.name, st.endpoint, routing_headers(dep.spec, name))
                routes.setdefault(name, route)
                created = int(dep.metadata.creation_timestamp.timestamp()) if dep.metadata.creation_timestamp else 0
                served.append({"id": name, "object": "model", "created": created, "owned_by": dep.metadata.name})
        return _Entry(time.monotonic(), routes, served)

    async def _entry(self, namespace: str, fresh: bool = False) -> _Entry:
        entry = self._cache.get(namespace)
        if fresh or entry is None or time.monotonic() - entry.at > self.cache_seconds:
            entry = await call_store(self._load, namespace)
            self._cache[namespace] = entry
        return entry

    async def route(self, namespace: str, model: str) -> Route:
        """The route of ``model`` in ``namespace``.

        Raises:
            OpenAIError: 404 ``model_not_found`` when no deployment of the namespace serves it.
        """
        entry = await self._entry(namespace)
        found = entry.routes.get(model)
        if found is None:
            entry = await self._entry(namespace, fresh=True)
            found = entry.routes.get(model)
        if found is None:
            served = ", ".join(sorted(entry.routes)) or "nothing yet"
            raise OpenAIError(
                404,
                f"The model '{model}' is not served in namespace {namespace} (served: {served})",
                code="model_not_found",
                param="model",
            )
        return found

    async def models(self, namespace: str) -> list[dict[str, Any]]:
        """OpenAI ``model`` objects for every served name of the namespace."""
        return list((await self._entry(namespace, fresh=True)).served)

    async def ready(self, route: Route) -> None:
        """Wait until ``route`` can take a request (here: at once).

        The hook for scale-from-zero: an override holds the request here while the
        deployment's first replica starts, and raises :class:`OpenAIError` (503 with
        ``Retry-After``) when it does not start in time.
        """
        return None


def _client(app: FastAPI) -> httpx.AsyncClient:
    client: httpx.AsyncClient | None = getattr(app.state, "chat_http", None)
    if client is None:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=10.0), limits=limits)
        app.state.chat_http = client
    return client


def _router(request: Request) -> ChatRouter:
    router: ChatRouter | None = getattr(request.app.state, "chat_router", None)
    if router is None:
        router = ChatRouter(request.app.state.store)
        request.app.state.chat_router = router
    return router


async def _body(request: Request) -> tuple[bytes, dict[str, Any]]:
    try:
        raw = await read_capped(request, MAX_BODY_BYTES)
    except BodyTooLargeError:
        message = f"the request body is larger than {MAX_BODY_BYTES} bytes"
        raise OpenAIError(413, message, code="body_too_large") from None
    try:
        body = json.loads(raw or b"null")
    except ValueError as exc:
        raise OpenAIError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
        raise OpenAIError(
            400, "the request body must be a JSON object with a model", code="invalid_value", param="model"
        )
    return raw, body


async def _forward(request: Request, namespace: str, path: str) -> Response:
    raw, body = await _body(request)
    router = _router(request)
    route = await router.route(namespace, body["model"])
    await router.ready(route)
    headers = {"content-type": "application/json", **route.headers}
    authorization = request.headers.get("authorization")
    if authorization:  # the chat endpoint asks for a token of the namespace: the caller's own (it passed ours)
        headers["authorization"] = authorization
    accept = request.headers.get("accept")
    if accept:
        headers["accept"] = accept
    client = _client(request.app)
    upstream = client.build_request("POST", f"{route.endpoint.rstrip('/')}/{path}", content=raw, headers=headers)
    try:
        response = await client.send(upstream, stream=True)
    except httpx.HTTPError as exc:
        log.warning("chat proxy: %s %s: %s", route.deployment, path, exc)
        raise OpenAIError(
            502,
            f"ModelDeployment {route.deployment} did not answer: {exc}",
            code="upstream_unavailable",
            type="api_error",
        ) from None
    passed = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_HEADERS}
    if body.get("stream") is True and response.status_code == 200:

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            except (httpx.HTTPError, asyncio.CancelledError):
                log.info("chat proxy: stream from %s ended early", route.deployment)
                raise
            finally:
                await response.aclose()

        return StreamingResponse(relay(), status_code=200, headers=passed)
    try:
        content = await response.aread()
    finally:
        await response.aclose()
    return Response(content=content, status_code=response.status_code, headers=passed)


def chat_router() -> APIRouter:
    """The ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models`` routes."""
    router = APIRouter(prefix="/v1", tags=["openai-chat"])

    @router.post("/chat/completions", operation_id="createChatCompletion", summary="Chat with a served model")
    async def chat(request: Request, namespace: Namespace) -> Response:
        return await _forward(request, namespace, "chat/completions")

    @router.post("/completions", operation_id="createCompletion", summary="Complete a prompt with a served model")
    async def completions(request: Request, namespace: Namespace) -> Response:
        return await _forward(request, namespace, "completions")

    @router.get("/models", operation_id="listModels", summary="Models served in the caller's namespace")
    async def models(request: Request, namespace: Namespace) -> JSONResponse:
        data = await _router(request).models(namespace)
        return JSONResponse({"object": "list", "data": data})

    @router.get("/models/{model:path}", operation_id="retrieveModel", summary="One served model")
    async def model(request: Request, namespace: Namespace, model: str) -> JSONResponse:
        data = await _router(request).models(namespace)
        found = next((m for m in data if m["id"] == model), None)
        if found is None:
            raise OpenAIError(404, f"The model '{model}' does not exist", code="model_not_found", param="model")
        return JSONResponse(found)

    return router


def install_chat_proxy(app: FastAPI) -> None:
    """Mount the chat routes on ``app`` and close the proxy's HTTP client at shutdown."""
    app.include_router(chat_router())

    async def close() -> None:
        client: httpx.AsyncClient | None = getattr(app.state, "chat_http", None)
        if client is not None:
            await client.aclose()

    app.router.add_event_handler("shutdown", close)
