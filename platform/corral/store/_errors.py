"""The errors every store raises, shaped after the Kubernetes API's status reasons.

Each error carries the HTTP ``code`` and the CamelCase ``reason`` the control API puts in
its Kubernetes ``Status`` body, so a store error maps to a response without a lookup table.
"""

from __future__ import annotations

from collections.abc import Sequence

from corral.api import FieldProblem

__all__ = ["AlreadyExists", "Conflict", "Expired", "Forbidden", "Invalid", "NotFound", "StoreError"]


class StoreError(Exception):
    """Base of every store error.

    Attributes:
        reason: Kubernetes status reason (``NotFound``, ``Conflict``, ...).
        code: HTTP status code the reason maps to.
        message: Human-readable message (also ``str(error)``).
        kind: Kind of the object concerned, when known.
        name: Name of the object concerned, when known.
    """

    reason = "InternalError"
    code = 500

    def __init__(self, message: str, *, kind: str | None = None, name: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.name = name


class NotFound(StoreError):  # noqa: N818 - Kubernetes status reason names
    """The object (or kind) does not exist."""

    reason = "NotFound"
    code = 404


class Forbidden(StoreError):  # noqa: N818 - Kubernetes status reason names
    """The store's own identity may not do this (a Kubernetes 403: its role lacks a rule).

    Only the Kubernetes store raises it; the message names the verb, the resource and the
    account the API server refused, so the missing rule can be added to the role.
    """

    reason = "Forbidden"
    code = 403


class AlreadyExists(StoreError):  # noqa: N818 - Kubernetes status reason names
    """``create`` of an object whose (kind, namespace, name) is taken."""

    reason = "AlreadyExists"
    code = 409


class Conflict(StoreError):  # noqa: N818 - Kubernetes status reason names
    """A write carried a stale ``metadata.resourceVersion``; re-read and retry."""

    reason = "Conflict"
    code = 409


class Expired(StoreError):  # noqa: N818 - Kubernetes status reason names
    """A watch asked to resume from a resourceVersion older than the retained history (HTTP 410 Gone)."""

    reason = "Expired"
    code = 410


class Invalid(StoreError):  # noqa: N818 - Kubernetes status reason names
    """The object is not valid; ``problems`` lists each bad field by its wire path.

    Attributes:
        problems: One :class:`~corral.api.FieldProblem` per bad field.
    """

    reason = "Invalid"
    code = 422

    def __init__(
        self,
        message: str,
        problems: Sequence[FieldProblem] = (),
        *,
        kind: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(message, kind=kind, name=name)
        self.problems = list(problems)


MAX_OBJECT_BYTES = 1536 * 1024
"""Largest stored object (its canonical JSON), like etcd's 1.5 MiB request limit under Kubernetes."""


class TooLarge(StoreError):  # noqa: N818 - Kubernetes status reason names
    """The object is larger than :data:`MAX_OBJECT_BYTES`."""

    reason = "RequestEntityTooLarge"
    code = 413
