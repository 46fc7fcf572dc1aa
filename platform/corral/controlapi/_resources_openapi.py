"""The OpenAPI fragments of the resource endpoints: parameters, bodies and responses per operation."""

from __future__ import annotations

from typing import Any

from corral.api.v1alpha1 import Resource

__all__ = ["MERGE_PATCH", "operation_openapi"]

MERGE_PATCH = "application/merge-patch+json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _param(name: str, where: str, description: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": {"type": "string"},
        "description": description,
    }


_LIST_PARAMS = [
    _param("labelSelector", "query", "Kubernetes label selector, e.g. app=bot,tier!=dev."),
    _param("watch", "query", "1 or true: stream newline-delimited watch events instead of a list."),
    _param("resourceVersion", "query", "With watch: stream the changes after this version."),
    _param("timeoutSeconds", "query", "With watch: end the stream after this many seconds."),
]


def operation_openapi(
    cls: type[Resource], op: str, *, body: str | None = None, many: bool = False, created: bool = False
) -> dict[str, Any]:
    """The ``openapi_extra`` of one operation of ``cls``.

    Args:
        cls: The kind.
        op: ``all`` (every namespace), ``collection``, ``item`` or ``status``.
        body: ``object`` (the kind's schema) or ``patch`` (a merge patch), if the operation takes one.
        many: A list (with the list and watch parameters).
        created: The success answer is ``201 Created`` (create).
    """
    params = []
    if cls.NAMESPACED and op != "all":
        params.append(_param("namespace", "path", "Namespace of the objects."))
    if op in ("item", "status"):
        params.append(_param("name", "path", f"Name of the {cls.KIND}."))
    if many:
        params += _LIST_PARAMS
    extra: dict[str, Any] = {"parameters": params}
    item_schema = _ref(cls.KIND)
    ok_schema: dict[str, Any] = (
        {"type": "object", "properties": {"items": {"type": "array", "items": item_schema}}} if many else item_schema
    )
    extra["responses"] = {
        "201" if created else "200": {
            "description": f"{cls.KIND}List" if many else cls.KIND,
            "content": {"application/json": {"schema": ok_schema}},
        },
        "default": {"description": "A Kubernetes Status", "content": {"application/json": {"schema": _ref("Status")}}},
    }
    if body == "object":
        extra["requestBody"] = {"required": True, "content": {"application/json": {"schema": item_schema}}}
    elif body == "patch":
        extra["requestBody"] = {
            "required": True,
            "content": {MERGE_PATCH: {"schema": {"type": "object", "description": "RFC 7386 JSON merge patch."}}},
        }
    return extra
