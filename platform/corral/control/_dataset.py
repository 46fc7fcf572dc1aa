"""The Dataset reconciler: the validation report -> ``Ready`` or ``Invalid``.

The data is read again on a new generation, while it is unreadable, and when a ``file://``
data file changed or vanished since it was read (its size and mtime, ``status.fileStat``):
a file fixed in place becomes Ready without a new generation, a deleted one
``DataUnreadable``.
"""

from __future__ import annotations

from corral.api.v1alpha1 import Dataset
from corral.api.v1alpha1.dataset import DatasetStatus

from ._actions import Action, RecordEvent, Result
from ._conditions import set_condition
from ._observed import DatasetWorld

__all__ = ["needs_check", "reconcile_dataset"]


def needs_check(dataset: Dataset, file_stat: str | None = None) -> bool:
    """True when the data must be (re-)read: a new generation, never read, unreadable last time,
    or the file's size/mtime (``file_stat``, None: not watched) differs from when it was read.
    """
    status = dataset.status
    ready = next((c for c in status.conditions if c.type == "Ready"), None)
    return (
        status.observed_generation != dataset.metadata.generation
        or ready is None
        or ready.reason == "DataUnreadable"
        or (file_stat is not None and status.file_stat != file_stat)
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
        new = DatasetStatus(observed_generation=generation, conditions=conditions, file_stat=world.file_stat)
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
            file_stat=world.file_stat,
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
            file_stat=world.file_stat,
            report=check.report,
        )
        reason = "Valid"
    if before is None or before.reason != reason or before.message != (new.conditions[-1].message):
        message = next(c.message for c in new.conditions if c.type == "Ready")
        actions.append(RecordEvent("Normal" if reason == "Valid" else "Warning", reason, message))
    return Result(status=new, actions=actions)
