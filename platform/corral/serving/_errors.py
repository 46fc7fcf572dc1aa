"""Serving errors that map onto OpenAI's error shape and an HTTP status.

Every error the endpoint returns is ``{"error": {"message", "type", "param", "code"}}``
with the status of the :class:`ServingError` subclass raised.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthUnavailableError",
    "ColdStartTimeoutError",
    "EngineClosedError",
    "ForbiddenError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "OverloadedError",
    "ServingError",
    "UnauthorizedError",
]


class ServingError(Exception):
    """An error with an HTTP status and OpenAI's error fields.

    Attributes:
        status: HTTP status code.
        type: OpenAI error ``type``.
        code: OpenAI error ``code`` (machine readable), or ``None``.
        param: The request field at fault, or ``None``.
    """

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_dict(self) -> dict[str, Any]:
        """Return the error as OpenAI's JSON body ``{"error": {...}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    @classmethod
    def from_dict(cls, body: dict[str, Any], status: int) -> ServingError:
        """Rebuild an error from :meth:`to_dict` output and its status (crossing a process boundary)."""
        err = body["error"]
        kinds: dict[int, type[ServingError]] = {
            400: InvalidRequestError,
            404: ModelNotFoundError,
            429: OverloadedError,
            503: EngineClosedError,
        }
        out = kinds.get(status, ServingError)(str(err["message"]), param=err.get("param"))
        out.status = status
        out.type = str(err.get("type") or out.type)
        out.code = err.get("code")
        return out


class InvalidRequestError(ServingError):
    """The request is malformed or asks for something unsupported (400); ``param`` names the field."""

    status = 400
    type = "invalid_request_error"


class ModelNotFoundError(ServingError):
    """The requested ``model`` is neither the base model nor one of its adapters (404)."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class OverloadedError(ServingError):
    """The replica's queue is full (429); retry later."""

    status = 429
    type = "rate_limit_error"
    code = "overloaded"


class EngineClosedError(ServingError):
    """The engine is shutting down or the deployment cannot take requests (503)."""

    status = 503
    type = "server_error"
    code = "unavailable"


class ColdStartTimeoutError(ServingError):
    """No replica took the request within the hold timeout (503); retry after ``retry_after`` seconds.

    Raised where a request is held while a deployment scales up from zero (or every replica
    is full) and the wait outlasts the hold timeout.

    Attributes:
        retry_after: Seconds a client should wait before retrying (the ``Retry-After`` header).
    """

    status = 503
    type = "server_error"
    code = "cold_start_timeout"

    def __init__(self, message: str, *, retry_after: int, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.retry_after = retry_after


class UnauthorizedError(ServingError):
    """No token, or not one of the deployment's namespace (401)."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class ForbiddenError(ServingError):
    """A Kubernetes user whom RBAC does not allow to use this deployment (403)."""

    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class AuthUnavailableError(ServingError):
    """The API server could not be asked who is calling (503); the caller may retry."""

    status = 503
    type = "server_error"
    code = "auth_unavailable"
