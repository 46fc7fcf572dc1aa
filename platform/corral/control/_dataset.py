"""The Dataset reconciler: the validation report -> ``Ready`` or ``Invalid``."""

from __future__ import annotations

from corral.api.v1alpha1 import Dataset
from corral.api.v1alpha1.dataset import DatasetStatus

from ._actions import Action, RecordEvent, Result
from ._conditions import set_condition
from ._observed import DatasetWorld

__all__ = ["needs_check", "reconcile_dataset"]


def needs_check(dataset: Dataset) -> bool:
    """True when the data must be (re-)read: a new generation, never read, or unreadable last time."""
    status = dataset.status
    ready = next((c for c in status.conditions if c.type == "Ready"), None)
    return (
        status.observed_generation != dataset.metadata.generation or ready is None or ready.reason == "DataUnreadable"
    )


def reconcile_dataset(dataset: Dataset, world: DatasetWorld) -> Result:
    """Reconcile one Dataset.

    ``Ready=True`` (reason ``Valid``) with the report when every record is usable;
    ``Ready=False`` with reason ``Invalid`` (bad records: the summary names the first lines)
    or ``DataUnreadable`` (the file cannot be read or its format told) otherwise.

    Args:
        dataset: The Dataset.
        world: The check result (None: the status is current; nothing changes).

    Returns:
        The new status and an event on a transition.
    """
    status = dataset.status.model_copy(deep=True)
    check = world.check
    if check is None:
        return Result(status=status)
    generation = dataset.metadata.generation
    actions: list[Action] = []
    before = next((c for c in status.conditions if c.type == "Ready"), None)
    if check.error is not None:
        conditions = set_condition(
            status.conditions, "Ready", "False", "DataUnreadable", check.error, generation=generation, now=world.now
        )
        new = DatasetStatus(observed_generation=generation, conditions=conditions)
        reason = "DataUnreadable"
    elif not check.ok:
        conditions = set_condition(
            status.conditions, "Ready", "False", "Invalid", check.summary, generation=generation, now=world.now
        )
        new = DatasetStatus(
            observed_generation=generation,
            conditions=conditions,
            format=check.format,
            sha256=check.sha256,
            report=check.report,
        )
        reason = "Invalid"
    else:
        conditions = set_condition(
            status.conditions, "Ready", "True", "Valid", check.summary, generation=generation, now=world.now
        )
        new = DatasetStatus(
            observed_generation=generation,
            conditions=conditions,
            format=check.format,
            sha256=check.sha256,
            report=check.report,
        )
        reason = "Valid"
    if before is None or before.reason != reason or before.message != (new.conditions[-1].message):
        message = next(c.message for c in new.conditions if c.type == "Ready")
        actions.append(RecordEvent("Normal" if reason == "Valid" else "Warning", reason, message))
    return Result(status=new, actions=actions)
