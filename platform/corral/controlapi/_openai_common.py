"""What the OpenAI-style routes share: the caller and its namespace, OpenAI error bodies, JSON bodies.

Auth is the control API's: the same bearer tokens. An OpenAI-style call works in one
namespace: the ``X-Corral-Namespace`` (or ``OpenAI-Organization``) header when sent, else the
token's only namespace, else ``default`` when the token may use it; anything else is a 400
asking for the header. A caller the cluster authorizes per request (``Principal.access``)
must also be allowed the verb and ``corral.dev`` resource the call stands for in that
namespace (:func:`openai_access`: fine-tuning jobs -> ``finetunejobs``, files -> ``datasets``,
chat, completions and models -> ``modeldeployments``, estimate -> a dry-run ``create`` of
``finetunejobs``). Every error is ``{"error": {message, type, param, code}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from corral.store import StoreError

from ._auth import Authenticator, Principal
from ._limits import InputError, check_namespace, decode_json
from ._openai_schemas import OpenAIError
from ._status import APIError

__all__ = [
    "Namespace",
    "call_store",
    "install_openai_errors",
    "json_body",
    "openai_namespace",
    "parse_model",
]

log = logging.getLogger(__name__)

NAMESPACE_HEADERS = ("x-corral-namespace", "openai-organization")
_bearer = HTTPBearer(auto_error=False, description="A token from the tokens file.")
_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error", 409: "conflict_error"}
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def _principal(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    auth: Authenticator = request.app.state.auth
    try:
        return auth.authenticate(credentials.credentials if credentials else None)
    except APIError as exc:
        raise OpenAIError(
            exc.code, exc.message, code="invalid_api_key", type=_TYPES.get(exc.code, "api_error"), headers=exc.headers
        ) from None


_OPENAI_RESOURCES = (
    ("/v1/fine_tuning/jobs", "finetunejobs"),
    ("/v1/files", "datasets"),
    ("/v1/chat/completions", "modeldeployments"),
    ("/v1/completions", "modeldeployments"),
    ("/v1/models", "modeldeployments"),
    ("/v1/estimate", "finetunejobs"),
)


def openai_access(method: str, path: str) -> tuple[str, str]:
    """The Kubernetes ``(verb, resource)`` an OpenAI-style call stands for.

    Reads of a collection are ``list``, of one item ``get``; chat and completions use a
    served model (``get modeldeployments``); a POST that makes something is ``create``,
    a cancel is ``patch``, a DELETE ``delete``.
    """
    resource, rest = "finetunejobs", ""
    for prefix, plural in _OPENAI_RESOURCES:
        if path == prefix or path.startswith(prefix + "/"):
            resource, rest = plural, path[len(prefix) :].strip("/")
            break
    method = method.upper()
    if resource == "modeldeployments" and not path.startswith("/v1/models"):
        return "get", resource
    if method in ("GET", "HEAD"):
        return ("get" if rest else "list"), resource
    if method == "DELETE":
        return "delete", resource
    if rest.endswith("cancel"):
        return "patch", resource
    return "create", resource


def openai_namespace(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """FastAPI dependency: the namespace an authenticated OpenAI-style call works in.

    Raises:
        OpenAIError: 401 without a valid token; 403 for a namespace the token may not use;
            400 when the token has several namespaces and no header chose one.
    """
    principal = _principal(request, credentials)
    chosen = next((request.headers[h] for h in NAMESPACE_HEADERS if request.headers.get(h)), None)
    if chosen is not None:
        try:
            check_namespace(chosen, "the X-Corral-Namespace (or OpenAI-Organization) header")
        except InputError as exc:
            raise OpenAIError(400, str(exc), code="invalid_namespace", param="X-Corral-Namespace") from None
    if chosen is None:
        if principal.namespaces is not None and len(principal.namespaces) == 1:
            chosen = next(iter(principal.namespaces))
        elif principal.can_use("default"):
            chosen = "default"
        else:
            raise OpenAIError(
                400,
                f'token "{principal.name}" may use several namespaces; choose one with the X-Corral-Namespace '
                "(or OpenAI-Organization) header",
                code="namespace_required",
            )
    if principal.access is not None:
        verb, resource = openai_access(request.method, request.url.path)
        if not principal.access(verb, resource, chosen, ""):
            raise OpenAIError(
                403,
                f'user "{principal.name}" cannot {verb} resource "{resource}" in API group "corral.dev" in the '
                f'namespace "{chosen}"',
                code="forbidden",
                type="permission_error",
            )
    elif not principal.can_use(chosen):
        raise OpenAIError(
            403,
            f'token "{principal.name}" may not use the namespace "{chosen}"',
            code="forbidden",
            type="permission_error",
        )
    return chosen


Namespace = Annotated[str, Depends(openai_namespace)]


async def json_body(request: Request) -> Any:
    """The request's JSON body, within the limits of :func:`decode_json` (400 ``invalid_json`` otherwise)."""
    raw = await request.body()  # BodyTooLarge (413) propagates to the app's handler
    try:
        return decode_json(raw)
    except InputError as exc:
        raise OpenAIError(400, str(exc), code="invalid_json") from None


def parse_model(cls: type[M], body: Any) -> M:
    """Validate ``body`` as ``cls``; the first problem becomes a 400 naming its ``param`` (dotted path)."""
    if not isinstance(body, dict):
        raise OpenAIError(400, "the request body must be a JSON object", code="invalid_request")
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        param = ".".join(str(p) for p in first["loc"] if not isinstance(p, int)) or None
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"[:300] for e in errors[:5])
        code = "unknown_parameter" if first["type"] == "extra_forbidden" else "invalid_value"
        raise OpenAIError(400, message, code=code, param=param) from None


async def call_store(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking store (or artifact) call in the thread pool; store errors become OpenAI errors."""
    try:
        return await run_in_threadpool(fn, *args)
    except StoreError as exc:
        code = {404: "not_found", 409: "conflict", 422: "invalid_value"}.get(exc.code, "store_error")
        raise OpenAIError(exc.code, exc.message, code=code, type=_TYPES.get(exc.code, "api_error")) from None


def install_openai_errors(app: FastAPI) -> None:
    """Render :class:`OpenAIError` as OpenAI's error body with its HTTP status."""

    async def on_openai_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OpenAIError)
        if exc.status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    app.add_exception_handler(OpenAIError, on_openai_error)
