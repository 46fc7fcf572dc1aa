"""The observed world from kopf's indexes: every Corral object, parsed once per change.

kopf keeps one watch per kind; an index function files each object, parsed, under its
namespace (``None`` for the cluster-scoped GPUPools) as its watch delivers it. The index is
the cache of parsed objects: a handler whose body has the uid and resourceVersion the index
holds takes the parsed object from it (:func:`parsed`), so an object is parsed once per
change, not once per handler or timer call. Handlers take a :data:`World` (kind ->
namespace -> name -> object) copied from the indexes on kopf's event loop — the thread that
updates the indexes — so the copy is consistent, and build the reconcile snapshot from it
instead of listing every kind from the API server on every call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from corral.api import DocumentError, parse_document
from corral.api.v1alpha1 import KINDS, Resource

__all__ = ["INDEX_NAMES", "World", "index_name", "parse_body", "parsed", "plain", "world_of"]

logger = logging.getLogger(__name__)

World = dict[str, dict[str | None, dict[str, Any]]]
"""Objects by kind, namespace (None: cluster-scoped) and name: the shape of ``Snapshot.objects``."""


def index_name(kind: str) -> str:
    """The kopf index (and handler kwarg) holding the parsed objects of ``kind``."""
    return f"corral_{KINDS[kind].PLURAL}"


INDEX_NAMES: dict[str, str] = {
    kind: index_name(kind) for kind in ("Dataset", "Model", "FineTuneJob", "ModelDeployment", "GPUPool")
}
"""Kind -> index name, for every kind the operator reconciles."""


def plain(value: Any) -> Any:
    """``value`` (a kopf body, or part of one) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def parse_body(body: Mapping[str, Any]) -> Resource | None:
    """The parsed object of a watched body (None when it does not validate: its handler says why)."""
    raw = plain(body)
    try:
        return parse_document(raw, source=f"{raw.get('kind')}/{(raw.get('metadata') or {}).get('name')}")
    except (DocumentError, ValidationError):
        return None


def parsed(world: World, kind: str, body: Mapping[str, Any]) -> Resource | None:
    """The object of ``body`` as the index parsed it, when the index holds this very version.

    The very version: the same uid and resourceVersion. None otherwise (the caller parses it).
    """
    meta = body.get("metadata") or {}
    namespace = meta.get("namespace") if KINDS[kind].NAMESPACED else None
    found = world.get(kind, {}).get(namespace, {}).get(str(meta.get("name")))
    if found is None or not meta.get("resourceVersion"):
        return None
    same = found.metadata.uid == meta.get("uid") and found.metadata.resource_version == meta.get("resourceVersion")
    return found if same else None


def world_of(indexes: Mapping[str, Any]) -> World:
    """Copy kopf's indexes (kind -> index) into a :data:`World`.

    Call it on kopf's event loop (an ``async`` handler): that is the thread that changes
    the indexes, so nothing changes while they are copied.
    """
    world: World = {}
    for kind, name in INDEX_NAMES.items():
        index = indexes.get(name)
        grouped: dict[str | None, dict[str, Any]] = {}
        if index is not None:
            for namespace in index:
                grouped[namespace] = {obj.metadata.name: obj for obj in index[namespace]}
        world[kind] = grouped
    return world
