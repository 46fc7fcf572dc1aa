"""Render a value for an error message without ever serializing more of it than is shown.

``json.dumps(value)[:80]`` walks the whole value first: a YAML alias bomb or a 30 MB string
costs its full size (and time) before the message is cut. :func:`show` stops as soon as it
has ``limit`` characters, so an error about a huge value costs no more than a small one.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["show"]

_ELLIPSIS = "..."


class _Full(Exception):  # noqa: N818 - internal control flow, not an error
    """Raised inside the walk once the budget is spent."""


def show(value: Any, limit: int = 80) -> str:
    """Return a compact JSON-like rendering of ``value`` of at most ``limit`` characters.

    Strings are shown with ``repr`` (as before), other values as JSON; containers are
    walked only as far as the budget reaches, and depth is capped, so the cost is bounded
    by ``limit`` whatever the value's size or nesting.

    Args:
        value: Any decoded JSON/YAML value (or anything with a ``str``).
        limit: Most characters returned (``...`` included when cut).
    """
    if isinstance(value, str):
        head = value[: limit + 1]
        text = repr(head)
        if len(value) > limit or len(text) > limit:
            return text[: max(limit - len(_ELLIPSIS), 0)] + _ELLIPSIS
        return text
    parts: list[str] = []
    budget = [limit + 1]

    def emit(text: str) -> None:
        parts.append(text[: budget[0]])
        budget[0] -= len(text)
        if budget[0] <= 0:
            raise _Full

    def walk(item: Any, depth: int) -> None:
        if depth > 32:
            emit(_ELLIPSIS)
        elif isinstance(item, dict):
            emit("{")
            for index, (key, sub) in enumerate(item.items()):
                if index:
                    emit(", ")
                emit(json.dumps(str(key)[: budget[0]]) + ": ")
                walk(sub, depth + 1)
            emit("}")
        elif isinstance(item, list | tuple):
            emit("[")
            for index, sub in enumerate(item):
                if index:
                    emit(", ")
                walk(sub, depth + 1)
            emit("]")
        elif isinstance(item, str):
            emit(json.dumps(item[: budget[0]]))
        elif item is None or isinstance(item, bool | int | float):
            emit(json.dumps(item) if not isinstance(item, int) or isinstance(item, bool) else _int(item))
        else:
            emit(json.dumps(str(item)[: budget[0]]))

    try:
        walk(value, 0)
    except _Full:
        text = "".join(parts)
        return text[: max(limit - len(_ELLIPSIS), 0)] + _ELLIPSIS
    return "".join(parts)


def _int(value: int) -> str:
    if value.bit_length() > 256:  # str() of a huge int is quadratic and capped by Python anyway
        return f"<integer of {value.bit_length()} bits>"
    return str(value)
