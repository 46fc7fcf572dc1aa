"""What reconcilers ask for: plain, comparable action values the runner applies in order.

Reconcilers never act; they return these. The runner applies them through the store and
the :class:`~corral.drivers.Driver`: the driver actions carry the
:class:`~corral.drivers.Handle` of their owner (and, to start work, the placement the
reconciler has just decided), which the runner passes through unchanged. It treats
"already there" (409 on create, an existing submission id) and "already gone" (404 on
delete) as success, so applying the same list twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from corral.api.v1alpha1 import Resource
from corral.drivers import Handle

__all__ = [
    "Action",
    "CreateObject",
    "DeleteServe",
    "DeployServe",
    "MaterializeModel",
    "PatchObject",
    "RecordEvent",
    "Result",
    "StopJob",
    "SubmitJob",
    "WriteFile",
]


@dataclass(frozen=True)
class WriteFile:
    """Write ``content`` to an artifact URI (e.g. the resolved JOB.json before submitting)."""

    uri: str
    content: bytes


@dataclass(frozen=True)
class SubmitJob:
    """Submit a Ray job (idempotent by ``submission_id``) for the handle's owner, where its placement says."""

    handle: Handle
    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StopJob:
    """Stop the owner's Ray job (a finished or absent job is success)."""

    handle: Handle
    submission_id: str


@dataclass(frozen=True)
class DeployServe:
    """Deploy (create or update in place) the owner's ``serveConfigV2`` applications, where its placement says."""

    handle: Handle
    config: dict[str, Any]

    @property
    def app_names(self) -> list[str]:
        """Names of the applications deployed."""
        return [str(app["name"]) for app in self.config.get("applications", [])]


@dataclass(frozen=True)
class DeleteServe:
    """Delete one of the owner's Serve applications (absent is success)."""

    handle: Handle
    app_name: str


@dataclass(frozen=True)
class CreateObject:
    """Create an object in the store (AlreadyExists is success)."""

    obj: Resource


@dataclass(frozen=True)
class PatchObject:
    """Merge-patch an object's spec/metadata, guarded by ``resource_version`` when set."""

    kind: str
    namespace: str | None
    name: str
    patch: dict[str, Any]
    resource_version: str | None = None


@dataclass(frozen=True)
class RecordEvent:
    """Record an event about the reconciled object (repeats fold into a count)."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class MaterializeModel:
    """Build a catalog model that Corral makes locally (the ``tiny`` presets) at ``uri``."""

    builtin: str
    uri: str


Action = (
    WriteFile
    | SubmitJob
    | StopJob
    | DeployServe
    | DeleteServe
    | CreateObject
    | PatchObject
    | RecordEvent
    | (MaterializeModel)
)


@dataclass
class Result:
    """A reconcile's answer: the status to store and the actions to apply.

    Attributes:
        status: The object's new status (a kind's status model); written only when it changed.
        actions: Side effects, applied in order after the status is stored (intent first:
            a crash between the two repeats the same idempotent actions on restart).
        requeue_after: Reconcile again after this many seconds even if nothing changes
            (e.g. to follow a running job); None: only on change or the periodic resync.
    """

    status: Any
    actions: list[Action] = field(default_factory=list)
    requeue_after: float | None = None
