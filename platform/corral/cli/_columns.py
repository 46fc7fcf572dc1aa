"""Evaluate a CRD's printer columns on wire objects, the way ``kubectl get`` shows them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

__all__ = ["age", "column_value"]

_FILTER = re.compile(r'^(?P<list>[^\[]+)\[\?\(@\.(?P<key>\w+)==["\'](?P<value>[^"\']*)["\']\)\]\.(?P<rest>.+)$')


def _walk(obj: Any, dotted: str) -> Any:
    for part in dotted.strip(".").split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def column_value(obj: dict[str, Any], json_path: str) -> Any:
    """Return the value a printer column's ``jsonPath`` selects, or None.

    Supports the forms Corral's CRDs use: ``.a.b.c`` and ``.a.list[?(@.key=="v")].field``.
    """
    match = _FILTER.match(json_path)
    if match:
        items = _walk(obj, match["list"])
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and str(item.get(match["key"])) == match["value"]:
                return _walk(item, match["rest"])
        return None
    return _walk(obj, json_path)


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """Format the time since ``timestamp`` as kubectl does (``45s``, ``3m``, ``2h``, ``5d``)."""
    if not timestamp:
        return "<unknown>"
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
