"""Kubernetes ``Status`` bodies for every error the control API returns.

``{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": ..., "code": ...,
"message": ..., "details": {"name", "group", "kind", "causes": [{"field", "message"}]}}``;
store errors map by their own ``reason`` and ``code``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.responses import JSONResponse

from corral.api import FieldProblem
from corral.api._show import show
from corral.api.v1alpha1 import API_GROUP
from corral.store import Invalid, StoreError

__all__ = ["APIError", "status_body", "status_response"]


class APIError(Exception):
    """An error raised by a handler that becomes a Kubernetes ``Status`` response.

    Attributes:
        code: HTTP status code.
        reason: Kubernetes status reason (``BadRequest``, ``Unauthorized``, ``Forbidden``, ...).
        message: Human-readable message; never contains a token.
    """

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        kind: str | None = None,
        name: str | None = None,
        problems: Sequence[FieldProblem] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.kind = kind
        self.name = name
        self.problems = list(problems)
        self.headers = headers

    @classmethod
    def from_store(cls, exc: StoreError) -> APIError:
        """Wrap a store error, keeping its reason, code and field problems."""
        problems = exc.problems if isinstance(exc, Invalid) else ()
        return cls(exc.code, exc.reason, exc.message, kind=exc.kind, name=exc.name, problems=problems)


def _cause(problem: FieldProblem) -> dict[str, Any]:
    message = problem.message
    if problem.has_value:
        message = f"Invalid value: {show(problem.value, 80)}: {message}"
    return {"reason": "FieldValueInvalid", "field": problem.path, "message": message}


def status_body(
    code: int,
    reason: str,
    message: str,
    *,
    kind: str | None = None,
    name: str | None = None,
    problems: Sequence[FieldProblem] = (),
) -> dict[str, Any]:
    """Build a failed Kubernetes ``Status`` object."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if kind:
        details["group"] = API_GROUP
        details["kind"] = kind
    if problems:
        details["causes"] = [_cause(problem) for problem in problems]
    if details:
        body["details"] = details
    return body


def status_response(error: APIError | StoreError) -> JSONResponse:
    """Render an error as a ``Status`` JSON response with the matching HTTP code."""
    api_error = error if isinstance(error, APIError) else APIError.from_store(error)
    body = status_body(
        api_error.code,
        api_error.reason,
        api_error.message,
        kind=api_error.kind,
        name=api_error.name,
        problems=api_error.problems,
    )
    return JSONResponse(body, status_code=api_error.code, headers=api_error.headers)
