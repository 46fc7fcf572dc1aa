"""Assemble the control API: resources, discovery, health and metrics, Kubernetes ``Status`` errors, OpenAPI."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

import corral
from corral.api.v1alpha1 import GROUP_VERSION, KINDS
from corral.artifacts import URIPolicy
from corral.observability import REGISTRY, events_uri_under, register_store_collector
from corral.store import SelectorError, Store, StoreError

from ._access import WatchQuota, get_principal
from ._auth import Authenticator
from ._health import MetricsMiddleware, health_router
from ._limits import MAX_UPLOAD_BYTES, BodyLimitMiddleware, BodyTooLarge, InputError, upload_limit
from ._openai_api import install_openai_api
from ._openai_schemas import OpenAIError
from ._resources import API_PREFIX, resource_router
from ._status import APIError, status_response

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_REASONS = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
}
DEFAULT_PUBLIC_PREFIXES = ("hf://",)
"""Prefixes every namespace may reference unless the settings say otherwise: the public Hugging Face Hub."""

_STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Status",
    "description": "A Kubernetes Status: what went wrong, with field causes for Invalid.",
    "properties": {
        "kind": {"type": "string", "enum": ["Status"]},
        "apiVersion": {"type": "string"},
        "status": {"type": "string", "enum": ["Success", "Failure"]},
        "reason": {"type": "string"},
        "code": {"type": "integer"},
        "message": {"type": "string"},
        "details": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "group": {"type": "string"},
                "kind": {"type": "string"},
                "causes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "reason": {"type": "string"},
                            "field": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
        },
    },
}


def _discovery() -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for cls in KINDS.values():
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        resources.append(
            {
                "name": cls.PLURAL,
                "singularName": cls.KIND.lower(),
                "namespaced": cls.NAMESPACED,
                "kind": cls.KIND,
                "verbs": verbs,
                "shortNames": list(cls.SHORT_NAMES),
            }
        )
        resources.append(
            {
                "name": f"{cls.PLURAL}/status",
                "singularName": "",
                "namespaced": cls.NAMESPACED,
                "kind": cls.KIND,
                "verbs": ["get", "patch", "update"],
            }
        )
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION, "resources": resources}


def _install_openapi(app: FastAPI) -> None:
    """Serve an OpenAPI document whose components hold every kind's schema and ``Status``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        _, defs = models_json_schema(
            [(cls, "validation") for cls in KINDS.values()], ref_template="#/components/schemas/{model}"
        )
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(defs.get("$defs", {}))
        schemas["Status"] = _STATUS_SCHEMA
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return status_response(exc)

    async def on_store_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StoreError)
        return status_response(exc)

    async def on_selector_error(request: Request, exc: Exception) -> Response:
        text = str(exc)
        text = text if len(text) <= 300 else text[:297] + "..."
        return status_response(APIError(400, "BadRequest", f"unable to parse requirement: {text}"))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        reason = _REASONS.get(exc.status_code, "InternalError" if exc.status_code >= 500 else "BadRequest")
        message = "the server could not find the requested resource" if exc.status_code == 404 else str(exc.detail)
        return status_response(APIError(exc.status_code, reason, message, headers=dict(exc.headers or {})))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"[:200] for e in exc.errors()[:5]
        )
        if request.url.path.startswith("/v1/"):
            return _openai_response(OpenAIError(400, f"bad request: {errors}", code="invalid_request"))
        return status_response(APIError(400, "BadRequest", f"bad request: {errors}"))

    async def on_input_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InputError)
        code = 413 if isinstance(exc, BodyTooLarge) else 400
        if request.url.path.startswith("/v1/"):
            error = "body_too_large" if code == 413 else "invalid_request"
            return _openai_response(OpenAIError(code, str(exc), code=error))
        return status_response(APIError(code, _REASONS[code], str(exc)))

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(StoreError, on_store_error)
    app.add_exception_handler(SelectorError, on_selector_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(InputError, on_input_error)


def _openai_response(exc: OpenAIError) -> Response:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def create_app(
    store: Store,
    auth: Authenticator,
    *,
    registry: CollectorRegistry | None = None,
    watch_timeout: float = 1800.0,
    artifact_root: str | None = None,
    uri_policy: URIPolicy | None = None,
    max_watches_per_token: int = 20,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> FastAPI:
    """Build the control API.

    Args:
        store: Where resources live (``SqliteStore`` embedded, the Kubernetes store on a cluster).
        auth: Who may call (``TokenAuth`` embedded).
        registry: Prometheus registry for the request metrics and ``/metrics`` (default
            :data:`corral.observability.REGISTRY`); the store collector (objects, GPUs, cost,
            training progress, replicas) is registered on it, bound to ``store``.
        watch_timeout: Longest a watch stream stays open, in seconds.
        artifact_root: URI where the OpenAI-style ``/v1/files`` uploads are stored (under
            ``files/``); ``None`` makes the files and fine-tuning job endpoints answer 503.
        uri_policy: Which URIs a tenant's objects may reference (see
            :class:`corral.artifacts.URIPolicy`); default: the namespace's own prefixes under
            ``artifact_root``, the shared catalog and the public Hugging Face Hub.
        max_watches_per_token: Most watches one token may hold open at once (429 beyond).
        max_upload_bytes: Largest file ``POST /v1/files`` accepts (the body is cut off while it streams).

    Returns:
        The FastAPI application; serve it with uvicorn.
    """
    registry = REGISTRY if registry is None else registry
    app = FastAPI(
        title="Corral control API",
        version=getattr(corral, "__version__", "0"),
        description="Kubernetes-shaped REST API for Corral's corral.dev/v1alpha1 resources.",
    )
    app.state.store = store
    app.state.auth = auth
    app.state.registry = registry
    app.state.uri_policy = uri_policy or URIPolicy(artifact_root, {"*": DEFAULT_PUBLIC_PREFIXES})
    app.state.watch_quota = WatchQuota(max_watches_per_token)
    register_store_collector(store, registry, events_uri_under(artifact_root) if artifact_root else None)
    app.state.max_upload_bytes = max_upload_bytes
    app.add_middleware(BodyLimitMiddleware, routes={("POST", "/v1/files"): upload_limit(max_upload_bytes)})
    app.add_middleware(MetricsMiddleware, registry=registry)
    _install_error_handlers(app)
    app.include_router(health_router())

    @app.get(
        API_PREFIX, operation_id="getCorralAPIResources", tags=["discovery"], dependencies=[Depends(get_principal)]
    )
    async def api_resources() -> JSONResponse:
        """The APIResourceList of ``corral.dev/v1alpha1``."""
        return JSONResponse(_discovery())

    app.include_router(resource_router(watch_timeout))
    install_openai_api(app, artifact_root)
    _install_openapi(app)
    log.info("Control API ready: %d kinds under %s", len(KINDS), API_PREFIX)
    return app
