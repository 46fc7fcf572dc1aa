"""Bounded input for the control API: bodies, JSON, YAML, namespaces, numbers.

Every limit is checked while the input is read, never after it is held whole:

* :class:`BodyLimitMiddleware` counts request bytes as they stream in and stops a request
  at its route's limit (``Content-Length`` over the limit is refused before any byte is
  read): 3 MiB for API bodies (Kubernetes' limit), :data:`MAX_UPLOAD_BYTES` plus the
  multipart framing for ``POST /v1/files``.
* :func:`decode_json` refuses ``NaN``/``Infinity``, nesting deeper than :data:`MAX_DEPTH`
  and (through the store) objects over :data:`corral.store.MAX_OBJECT_BYTES`.
* :func:`decode_yaml` refuses anchors and aliases (no "billion laughs") and runs in the
  thread pool, so a large document never blocks the event loop.
* :func:`check_namespace` holds a namespace taken from a header to the DNS label rule
  before it can reach a path or a query.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

import yaml
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "MAX_UPLOAD_BYTES",
    "MAX_YAML_BYTES",
    "BodyLimitMiddleware",
    "BodyTooLarge",
    "InputError",
    "check_finite",
    "check_namespace",
    "decode_json",
    "decode_yaml",
]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 3 * 1024 * 1024
"""Largest API request body (Kubernetes' API server refuses bodies over 3 MiB too)."""
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
"""Largest uploaded file (``POST /v1/files``)."""
UPLOAD_OVERHEAD_BYTES = 64 * 1024
"""Room for the multipart framing and the text fields around an upload."""
MAX_YAML_BYTES = 256 * 1024
"""Largest YAML body: a FineTuneJob or ModelDeployment is a few kB, and PyYAML is slow on megabytes."""
MAX_DEPTH = 100
"""Deepest nesting of arrays and objects a JSON or YAML body may have."""
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class InputError(ValueError):
    """A request body or parameter that breaks a limit; the message says which and what is allowed."""


class BodyTooLarge(InputError):  # noqa: N818 - reads like the HTTP status
    """A request body over its route's limit (HTTP 413).

    Attributes:
        limit: The limit in bytes.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than the limit of {limit} bytes")
        self.limit = limit


def upload_limit(max_file_bytes: int = MAX_UPLOAD_BYTES) -> int:
    """The body limit of ``POST /v1/files``: the file limit plus the multipart framing."""
    return max_file_bytes + UPLOAD_OVERHEAD_BYTES


class BodyLimitMiddleware:
    """ASGI middleware that caps every request body while it streams.

    A request whose ``Content-Length`` is over the limit is answered 413 at once; one
    without (chunked) is counted as it arrives and the handler's read raises
    :class:`BodyTooLarge` (rendered as 413 by the app's handlers) at the first byte over.

    Args:
        app: The wrapped application.
        default: Limit of every route not in ``routes``.
        routes: ``(method, path)`` -> limit, e.g. the upload route.
    """

    def __init__(self, app: ASGIApp, default: int = MAX_BODY_BYTES, routes: dict[tuple[str, str], int] | None = None):
        self.app = app
        self.default = default
        self.routes = dict(routes or {})

    def limit_for(self, scope: Scope) -> int:
        """The body limit of one request."""
        path = str(scope.get("path", "")).rstrip("/") or "/"
        return self.routes.get((str(scope.get("method", "")), path), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        length = _content_length(scope)
        if length is not None and length > limit:
            await _refuse(scope, send, limit)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(scope: Scope, send: Send, limit: int) -> None:
    message = f"the request body is larger than the limit of {limit} bytes"
    if str(scope.get("path", "")).startswith("/v1/"):
        body: dict[str, Any] = {
            "error": {"message": message, "type": "invalid_request_error", "param": None, "code": "body_too_large"}
        }
    else:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "RequestEntityTooLarge",
            "code": 413,
        }
    raw = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": raw})


def _refuse_constant(name: str) -> Any:
    raise InputError(f"{name} is not a JSON number: numbers must be finite")


def decode_json(raw: bytes) -> Any:
    """Decode a JSON request body within the limits (empty means ``null``).

    Raises:
        InputError: Not JSON, not UTF-8, ``NaN``/``Infinity``, or nested deeper than :data:`MAX_DEPTH`.
    """
    if not raw:
        return None
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise InputError(f"the request body is nested deeper than {MAX_DEPTH} levels") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"the request body is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    check_depth(value)
    return value


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse a decoded value nested deeper than ``limit`` (walked iteratively: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise InputError(f"the request body is nested deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children)


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases (each alias can multiply the document)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not accepted by the API", event.start_mark
            )
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "YAML anchors (&name) are not accepted by the API", event.start_mark
            )
        return super().compose_node(parent, index)


def decode_yaml(raw: bytes) -> Any:
    """Decode one YAML document of a request body: safe tags only, no anchors or aliases.

    Blocking (call it in the thread pool); the body is already capped by
    :class:`BodyLimitMiddleware`.

    Raises:
        BodyTooLarge: Over :data:`MAX_YAML_BYTES`.
        InputError: Not YAML, several documents, an alias or anchor, or too deep.
    """
    if len(raw) > MAX_YAML_BYTES:
        raise BodyTooLarge(MAX_YAML_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        value = yaml.load(text, Loader=_NoAliasLoader)
    except RecursionError:
        raise InputError(f"the body is nested deeper than {MAX_DEPTH} levels") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InputError(f"the body is not valid YAML{where}: {problem}") from None
    check_depth(value)
    _check_yaml_numbers(value)
    return value


def _check_yaml_numbers(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise InputError(f"{item} is not accepted: numbers must be finite")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def check_finite(name: str, value: str, *, low: float = 0.0) -> float:
    """Parse a numeric query parameter that must be a finite number of at least ``low``.

    Raises:
        InputError: Not a number, ``nan``/``inf``, or below ``low``.
    """
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{name} must be a number (got {value[:40]!r})") from None
    if not math.isfinite(number) or number < low:
        raise InputError(f"{name} must be a finite number of at least {low:g} (got {value[:40]!r})")
    return number


def check_namespace(value: str, where: str = "namespace") -> str:
    """Hold a namespace to the DNS label rule (lowercase letters, digits, ``-``; at most 63).

    Raises:
        InputError: Anything else (``..``, ``a/b``, ``x?y``, upper case, empty).
    """
    if not _DNS1123_LABEL.match(value):
        shown = value[:70] + ("..." if len(value) > 70 else "")
        raise InputError(
            f"{where} {shown!r} is not a valid namespace: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value
