"""The API server's rules for object bodies, shared by every store.

Both stores refuse an invalid object with the same :class:`~corral.store.Invalid` before
writing it, start a new object from the same fields, and (SQLite, which is its own API
server) keep ``status`` and the server-managed metadata out of spec writes. Bodies are
plain wire-form dicts (``resource.to_dict()``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from corral.api import DocumentError, FieldProblem, parse_document
from corral.api.v1alpha1 import Resource

from ._errors import Conflict, Invalid

__all__ = [
    "SERVER_FIELDS",
    "USER_METADATA",
    "canonical",
    "creatable_body",
    "field_problem",
    "precondition",
    "timestamp",
    "validate",
    "with_spec_and_metadata",
]

SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp", "managedFields")
"""Metadata the server sets; a client's values for them are dropped on create."""

USER_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")
"""Metadata a spec write (update, patch) may change."""


def timestamp() -> str:
    """Now, as the RFC 3339 UTC seconds Kubernetes writes (``2024-05-01T12:00:00Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical(value: Any) -> str:
    """``value`` as compact JSON with sorted keys: equal documents give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def field_problem(path: str, message: str) -> FieldProblem:
    """A problem with the field at wire path ``path`` that carries no value."""
    return FieldProblem(path, message, has_value=False)


def validate(rc: type[Resource], body: dict[str, Any]) -> Resource:
    """Parse ``body`` as a ``rc``.

    Raises:
        Invalid: The body is not a valid ``rc``; ``problems`` names each bad field.
    """
    try:
        obj = parse_document(body, source=f"{rc.KIND}/{body.get('metadata', {}).get('name', '?')}")
    except DocumentError as exc:
        raise Invalid(str(exc), exc.problems, kind=rc.KIND, name=exc.name) from None
    if not isinstance(obj, rc):  # pragma: no cover - parse_document picks the class from body["kind"]
        raise Invalid(f"expected kind {rc.KIND}, got {obj.kind}", kind=rc.KIND)
    return obj


def creatable_body(cls: type[Resource], obj: Resource) -> dict[str, Any]:
    """The validated body a create sends: no server-set metadata, no status, a namespace only when namespaced.

    The result may carry the model's default (empty) status back; a store that must not
    send one drops it.

    Raises:
        Invalid: A namespaced kind without a namespace, or an invalid object.
    """
    body = obj.to_dict()
    meta = body.setdefault("metadata", {})
    if cls.NAMESPACED and not meta.get("namespace"):
        raise Invalid(
            f"{cls.KIND} {meta.get('name')}: metadata.namespace is required for a namespaced kind",
            [field_problem("metadata.namespace", "required for a namespaced kind")],
            kind=cls.KIND,
            name=meta.get("name"),
        )
    if not cls.NAMESPACED:
        meta.pop("namespace", None)
    for server_field in SERVER_FIELDS:
        meta.pop(server_field, None)
    body.pop("status", None)
    return validate(cls, body).to_dict()


def precondition(cls: type[Resource], name: str, meta: Mapping[str, Any], resource_version: str | None) -> None:
    """Check a write's resourceVersion precondition against the stored ``meta`` (``None``: none).

    Raises:
        Conflict: ``resource_version`` is not the stored one.
    """
    if resource_version is not None and str(resource_version) != meta["resourceVersion"]:
        raise Conflict(
            f'Operation cannot be fulfilled on {cls.PLURAL}.corral.dev "{name}": the object has been modified; '
            f"please apply your changes to the latest version and try again "
            f"(sent resourceVersion {resource_version}, current {meta['resourceVersion']})",
            kind=cls.KIND,
            name=name,
        )


def with_spec_and_metadata(current: dict[str, Any], incoming: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` with spec and user metadata taken from ``incoming``; status untouched."""
    new = dict(current)
    if "spec" in incoming:
        new["spec"] = incoming["spec"]
    else:
        new.pop("spec", None)
    meta = dict(current["metadata"])
    imeta = incoming.get("metadata") or {}
    for key in USER_METADATA:
        if key in imeta:
            meta[key] = imeta[key]
        else:
            meta.pop(key, None)
    new["metadata"] = meta
    return new
