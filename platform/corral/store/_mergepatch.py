"""JSON merge patch (RFC 7386), the ``application/merge-patch+json`` the control API accepts."""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["merge_patch"]


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch to a decoded JSON value.

    Mappings merge key by key, ``None`` (JSON ``null``) removes a key, anything else
    (lists included) replaces the target value wholesale.

    Args:
        target: The document to patch; it is not modified.
        patch: The merge patch.

    Returns:
        The patched document (a new object).
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: dict[str, Any] = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
