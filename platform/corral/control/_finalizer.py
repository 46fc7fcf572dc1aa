"""Corral's cleanup finalizer: add it while an object lives, drop it once its work is gone.

FineTuneJobs and ModelDeployments own work outside the store (a Ray job, a Serve
application). The finalizer keeps the object until its reconciler has stopped that work;
these two functions are the only place that writes it, for every kind.
"""

from __future__ import annotations

from corral.api.v1alpha1 import ObjectMeta

from ._actions import PatchObject
from ._observed import FINALIZER

__all__ = ["FINALIZER", "ensure_finalizer", "release_finalizer"]


def ensure_finalizer(kind: str, meta: ObjectMeta) -> PatchObject | None:
    """The patch adding :data:`FINALIZER` to a live object, or None when it has it.

    Args:
        kind: The object's kind (``FineTuneJob``, ``ModelDeployment``).
        meta: Its metadata.

    Returns:
        A merge patch of ``metadata.finalizers`` keeping the others in order, or None.
    """
    if FINALIZER in meta.finalizers:
        return None
    return PatchObject(kind, meta.namespace, meta.name, {"metadata": {"finalizers": [*meta.finalizers, FINALIZER]}})


def release_finalizer(kind: str, meta: ObjectMeta) -> PatchObject | None:
    """The patch dropping :data:`FINALIZER` from a deleting object, or None when it is not there.

    Args:
        kind: The object's kind.
        meta: Its metadata.

    Returns:
        A merge patch of ``metadata.finalizers`` without Corral's, or None.
    """
    if FINALIZER not in meta.finalizers:
        return None
    remaining = [f for f in meta.finalizers if f != FINALIZER]
    return PatchObject(kind, meta.namespace, meta.name, {"metadata": {"finalizers": remaining}})
