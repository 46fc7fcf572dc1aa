"""The one protocol every store implements: where Corral's resources live.

Two implementations fit it: :class:`~corral.store.SqliteStore` (the embedded default, one
SQLite file) and the Kubernetes store (custom resources in the API server, with the
operator). Reconcilers and the control API only ever see this protocol.

Semantics follow the Kubernetes API server:

* ``metadata.resourceVersion`` changes on every write; a write that carries a stale one
  fails with :class:`~corral.store.Conflict`; ``None`` means an unconditional write.
* ``metadata.generation`` starts at 1 and is bumped only when ``spec`` changes.
* ``spec``/``metadata`` writes (:meth:`Store.update`, :meth:`Store.patch`) never change
  ``status``; status writes (:meth:`Store.patch_status`, :meth:`Store.replace_status`) never
  change anything else. ``create`` starts from an empty status.
* ``delete`` of an object with finalizers only sets ``metadata.deletionTimestamp``; the
  object goes away when an update removes its last finalizer. No finalizer may be added
  to an object that is being deleted.
* ``watch`` without a resourceVersion first replays the current objects as ``ADDED``
  events, then streams changes; with one it resumes after it, or fails with
  :class:`~corral.store.Expired` when that history is gone.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, Self, TypeVar, cast, overload

from corral.api import FieldProblem
from corral.api.v1alpha1 import GROUP_VERSION, KINDS, CorralModel, Resource

from ._errors import Invalid
from ._selectors import LabelSelector, parse_selector

__all__ = [
    "EventRecord",
    "EventType",
    "KindLike",
    "ResourceList",
    "SelectorLike",
    "Store",
    "Watch",
    "WatchEvent",
    "WatchEventType",
    "resolve_kind",
]

R = TypeVar("R", bound=Resource)
R_co = TypeVar("R_co", bound=Resource, covariant=True)

KindLike = str | type[Resource]
"""A kind given by name (``"FineTuneJob"``) or by class (``FineTuneJob``)."""

SelectorLike = str | Mapping[str, str] | LabelSelector | None
"""A label selector string, a ``matchLabels`` mapping, a parsed selector, or ``None``."""

WatchEventType = Literal["ADDED", "MODIFIED", "DELETED"]
EventType = Literal["Normal", "Warning"]


def resolve_kind(kind: KindLike) -> type[Resource]:
    """Return the resource class of ``kind``.

    Raises:
        Invalid: ``kind`` is not a Corral kind.
    """
    if isinstance(kind, type):
        kind = kind.KIND
    cls = KINDS.get(kind)
    if cls is None:
        raise Invalid(f"{kind!r} is not a Corral kind (allowed: {', '.join(KINDS)})", kind=kind)
    return cls


@dataclass(frozen=True)
class WatchEvent:
    """One change seen by a watch.

    Attributes:
        type: ``ADDED``, ``MODIFIED`` or ``DELETED``.
        object: The object after the change (for ``DELETED``, its last state).
    """

    type: WatchEventType
    object: Resource

    def to_dict(self) -> dict[str, Any]:
        """Return the Kubernetes wire form ``{"type": ..., "object": {...}}``."""
        return {"type": self.type, "object": self.object.to_dict()}


@dataclass(frozen=True)
class ResourceList(Generic[R_co]):
    """The result of :meth:`Store.list`: the items and the resourceVersion they were read at.

    Attributes:
        kind: The kind listed.
        items: The matching objects, sorted by namespace then name.
        resource_version: Pass it to :meth:`Store.watch` to see every change after this list.
    """

    kind: str
    items: builtins.list[R_co]
    resource_version: str

    def to_dict(self) -> dict[str, Any]:
        """Return the Kubernetes wire form ``{apiVersion, kind: FooList, metadata, items}``."""
        return {
            "apiVersion": GROUP_VERSION,
            "kind": f"{self.kind}List",
            "metadata": {"resourceVersion": self.resource_version},
            "items": [item.to_dict() for item in self.items],
        }


@dataclass(frozen=True)
class EventRecord:
    """A Kubernetes-style event about an object (what ``corral describe`` shows).

    Repeats of the same (object, type, reason, message) are folded into one record whose
    ``count`` grows and whose ``last_timestamp`` moves.
    """

    kind: str
    namespace: str | None
    name: str
    uid: str | None
    type: EventType
    reason: str
    message: str
    count: int
    first_timestamp: datetime
    last_timestamp: datetime
    source: str = "corral"
    involved_api_version: str = field(default=GROUP_VERSION)

    def to_dict(self) -> dict[str, Any]:
        """Return the ``v1`` ``Event`` wire form."""
        involved: dict[str, Any] = {"apiVersion": self.involved_api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            involved["namespace"] = self.namespace
        if self.uid:
            involved["uid"] = self.uid
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "involvedObject": involved,
            "type": self.type,
            "reason": self.reason,
            "message": self.message,
            "count": self.count,
            "firstTimestamp": _rfc3339(self.first_timestamp),
            "lastTimestamp": _rfc3339(self.last_timestamp),
            "source": {"component": self.source},
        }


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Watch(abc.ABC, Iterator[WatchEvent]):
    """A running watch: iterate it for events; it ends when stopped or when its timeout passes.

    ``stop`` may be called from any thread; a blocked ``next`` returns within one poll slice.
    """

    @abc.abstractmethod
    def poll(self, timeout: float) -> WatchEvent | None:
        """Wait up to ``timeout`` seconds for the next event.

        Returns:
            The event, or ``None`` when none arrived in time or the watch is done
            (check :attr:`done`).

        Raises:
            Expired: The history this watch needs was compacted away.
        """

    @property
    @abc.abstractmethod
    def done(self) -> bool:
        """True once the watch was stopped or its timeout passed."""

    @abc.abstractmethod
    def stop(self) -> None:
        """End the watch (thread-safe, idempotent)."""

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> WatchEvent:
        while True:
            event = self.poll(1.0)
            if event is not None:
                return event
            if self.done:
                raise StopIteration

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Store(abc.ABC):
    """Where resources live. Every method is thread-safe; every write is atomic.

    Objects go in and come out as typed :class:`~corral.api.v1alpha1.Resource` instances
    (``store.get(Model, "team-a", "bot")`` is a ``Model``); ``namespace`` is ``None`` for
    cluster-scoped kinds (``GPUPool``). Implementations fill in the ``_``-prefixed hooks,
    which receive the resolved resource class; the public methods here resolve kinds,
    parse selectors and narrow return types.
    """

    source: str = "corral"
    """The component named on the events this store records when the caller names none."""

    # -- reads --------------------------------------------------------------------------

    @overload
    def get(self, kind: type[R], namespace: str | None, name: str) -> R: ...
    @overload
    def get(self, kind: str, namespace: str | None, name: str) -> Resource: ...
    def get(self, kind: KindLike, namespace: str | None, name: str) -> Resource:
        """Return one object.

        Raises:
            NotFound: No such object.
        """
        return self._get(resolve_kind(kind), namespace, name)

    @overload
    def list(
        self, kind: type[R], namespace: str | None = None, label_selector: SelectorLike = None
    ) -> ResourceList[R]: ...
    @overload
    def list(
        self, kind: str, namespace: str | None = None, label_selector: SelectorLike = None
    ) -> ResourceList[Resource]: ...
    def list(
        self, kind: KindLike, namespace: str | None = None, label_selector: SelectorLike = None
    ) -> ResourceList[Any]:
        """List objects of a kind, in one namespace or (``namespace=None``) all of them, sorted by namespace, name.

        Raises:
            SelectorError: ``label_selector`` does not parse.
        """
        return self._list(resolve_kind(kind), namespace, parse_selector(label_selector))

    # -- writes -------------------------------------------------------------------------

    def create(self, obj: R) -> R:
        """Create an object; the store sets uid, creationTimestamp, generation 1, resourceVersion.

        ``status`` of ``obj`` is ignored (a new object starts with an empty status), as are
        server-set metadata fields.

        Returns:
            The stored object.

        Raises:
            AlreadyExists: An object of that kind, namespace and name exists.
            Invalid: The object is not valid (e.g. a namespaced kind without a namespace).
        """
        return cast("R", self._create(resolve_kind(obj.kind or type(obj).KIND), obj))

    def update(self, obj: R) -> R:
        """Replace spec and user metadata (labels, annotations, finalizers, ownerReferences).

        ``status`` of ``obj`` is ignored. When ``obj.metadata.resourceVersion`` is set it must
        be the stored one (``None``: unconditional). Removing the last finalizer of an object
        being deleted deletes it.

        Returns:
            The stored object (after deletion: its last state).

        Raises:
            NotFound, Conflict, Invalid.
        """
        return cast("R", self._update(resolve_kind(obj.kind or type(obj).KIND), obj))

    @overload
    def patch(
        self,
        kind: type[R],
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        resource_version: str | None = None,
    ) -> R: ...
    @overload
    def patch(
        self, kind: str, namespace: str | None, name: str, patch: Mapping[str, Any], resource_version: str | None = None
    ) -> Resource: ...
    def patch(
        self,
        kind: KindLike,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        resource_version: str | None = None,
    ) -> Resource:
        """Apply a JSON merge patch (RFC 7386) to spec and metadata, as :meth:`update` would.

        A ``status`` key in the patch is ignored; a ``metadata.resourceVersion`` inside it is
        a precondition, like ``resource_version``.

        Raises:
            NotFound, Conflict, Invalid.
        """
        return self._patch(resolve_kind(kind), namespace, name, patch, resource_version)

    @overload
    def patch_status(
        self,
        kind: type[R],
        namespace: str | None,
        name: str,
        status: Mapping[str, Any] | CorralModel,
        resource_version: str | None = None,
    ) -> R: ...
    @overload
    def patch_status(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        status: Mapping[str, Any] | CorralModel,
        resource_version: str | None = None,
    ) -> Resource: ...
    def patch_status(
        self,
        kind: KindLike,
        namespace: str | None,
        name: str,
        status: Mapping[str, Any] | CorralModel,
        resource_version: str | None = None,
    ) -> Resource:
        """Merge-patch ``status`` (wire names; ``None`` values remove keys); nothing else changes.

        A typed status model is sent without its unset fields (it cannot remove keys; use
        :meth:`replace_status` for that).

        Raises:
            NotFound, Conflict, Invalid.
        """
        patch = status.model_dump(mode="json", exclude_none=True) if isinstance(status, CorralModel) else status
        return self._patch_status(resolve_kind(kind), namespace, name, patch, resource_version)

    def replace_status(self, obj: R) -> R:
        """Replace the whole status with ``obj.status``; spec and metadata of ``obj`` are ignored.

        Raises:
            NotFound, Conflict, Invalid.
        """
        return cast("R", self._replace_status(resolve_kind(obj.kind or type(obj).KIND), obj))

    @overload
    def delete(self, kind: type[R], namespace: str | None, name: str, resource_version: str | None = None) -> R: ...
    @overload
    def delete(self, kind: str, namespace: str | None, name: str, resource_version: str | None = None) -> Resource: ...
    def delete(self, kind: KindLike, namespace: str | None, name: str, resource_version: str | None = None) -> Resource:
        """Delete an object, or only mark it deleting while finalizers remain.

        Returns:
            The object's last state (``deletionTimestamp`` set when it is still there).

        Raises:
            NotFound, Conflict.
        """
        return self._delete(resolve_kind(kind), namespace, name, resource_version)

    # -- watch and events ---------------------------------------------------------------

    def watch(
        self,
        kind: KindLike,
        namespace: str | None = None,
        since_resource_version: str | None = None,
        *,
        label_selector: SelectorLike = None,
        timeout: float | None = None,
    ) -> Watch:
        """Watch a kind, in one namespace or all.

        Args:
            kind: The kind to watch.
            namespace: One namespace, or ``None`` for all.
            since_resource_version: Resume after this version (e.g. a list's); ``None`` or
                ``"0"`` replays the current objects as ``ADDED`` first.
            label_selector: Only events whose object matches (a label change that makes an
                object stop matching is not reported as ``DELETED``).
            timeout: End the watch after this many seconds (``None``: never).

        Raises:
            Expired: ``since_resource_version`` is older than the retained history.
        """
        return self._watch(
            resolve_kind(kind), namespace, since_resource_version, parse_selector(label_selector), timeout
        )

    def record_event(
        self, obj: Resource, type: EventType, reason: str, message: str, *, source: str | None = None
    ) -> EventRecord:
        """Record a Kubernetes-style event about ``obj``; repeats fold into one record with a count.

        ``source`` is the reporting component; unset, the store's own (``source`` attribute:
        ``corral`` unless the store was opened for a component, e.g. ``corral-operator``).

        Raises:
            Invalid: ``type`` is not Normal/Warning or ``reason`` is not CamelCase.
        """
        if type not in ("Normal", "Warning"):
            raise Invalid(
                f"event type must be Normal or Warning, not {type!r}",
                [FieldProblem("type", "must be Normal or Warning", type)],
            )
        if not reason or not reason[0].isupper() or not reason.isalnum():
            raise Invalid(
                f"event reason must be CamelCase, not {reason!r}", [FieldProblem("reason", "CamelCase", reason)]
            )
        cls = resolve_kind(obj.kind or builtins.type(obj).KIND)
        return self._record_event(cls, obj, type, reason, message, source=source or self.source)

    def list_events(self, kind: KindLike, namespace: str | None, name: str) -> builtins.list[EventRecord]:
        """Return the events about an object, oldest first."""
        return self._list_events(resolve_kind(kind), namespace, name)

    @abc.abstractmethod
    def ping(self) -> None:
        """Check that the store answers (readiness); raise when it does not."""

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release connections; the default does nothing."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what an implementation provides ------------------------------------------------

    @abc.abstractmethod
    def _get(self, cls: type[Resource], namespace: str | None, name: str) -> Resource: ...

    @abc.abstractmethod
    def _list(self, cls: type[Resource], namespace: str | None, selector: LabelSelector) -> ResourceList[Any]: ...

    @abc.abstractmethod
    def _create(self, cls: type[Resource], obj: Resource) -> Resource: ...

    @abc.abstractmethod
    def _update(self, cls: type[Resource], obj: Resource) -> Resource: ...

    @abc.abstractmethod
    def _patch(
        self,
        cls: type[Resource],
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        resource_version: str | None,
    ) -> Resource: ...

    @abc.abstractmethod
    def _patch_status(
        self,
        cls: type[Resource],
        namespace: str | None,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None,
    ) -> Resource: ...

    @abc.abstractmethod
    def _replace_status(self, cls: type[Resource], obj: Resource) -> Resource: ...

    @abc.abstractmethod
    def _delete(
        self, cls: type[Resource], namespace: str | None, name: str, resource_version: str | None
    ) -> Resource: ...

    @abc.abstractmethod
    def _watch(
        self,
        cls: type[Resource],
        namespace: str | None,
        since: str | None,
        selector: LabelSelector,
        timeout: float | None,
    ) -> Watch: ...

    @abc.abstractmethod
    def _record_event(
        self, cls: type[Resource], obj: Resource, type: EventType, reason: str, message: str, *, source: str
    ) -> EventRecord: ...

    @abc.abstractmethod
    def _list_events(self, cls: type[Resource], namespace: str | None, name: str) -> builtins.list[EventRecord]: ...
