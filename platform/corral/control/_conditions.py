"""Kubernetes-style conditions: set one by type, keeping ``lastTransitionTime`` when its status holds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from corral.api.v1alpha1 import Condition
from corral.api.v1alpha1.common import ConditionStatus

__all__ = ["get_condition", "is_true", "set_condition"]


def get_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """Return the condition of ``type_``, or None."""
    for condition in conditions:
        if condition.type == type_:
            return condition
    return None


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    """True when the condition of ``type_`` exists and is ``True``."""
    condition = get_condition(conditions, type_)
    return condition is not None and condition.status == "True"


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """Return ``conditions`` with ``type_`` set (added or replaced in place, order kept).

    ``lastTransitionTime`` moves to ``now`` only when the status changes (or the condition
    is new); a new reason or message alone keeps it.

    Args:
        conditions: The current conditions.
        type_: Condition type (CamelCase).
        status: ``True``, ``False`` or ``Unknown``.
        reason: CamelCase reason.
        message: What a person can act on.
        generation: ``metadata.generation`` the condition was computed from.
        now: The reconcile time.

    Returns:
        A new list; the input is not changed.
    """
    out: list[Condition] = []
    found = False
    for condition in conditions:
        if condition.type != type_:
            out.append(condition)
            continue
        found = True
        moment = condition.last_transition_time if condition.status == status else now
        out.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=moment or now,
                observed_generation=generation,
            )
        )
    if not found:
        out.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=generation,
            )
        )
    return out
