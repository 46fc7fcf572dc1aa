"""Admission serialized: one path books GPUs for the whole cluster, against a ledger that never lags.

kopf runs handlers concurrently (``execution.max_workers``), one object each. Placing a
FineTuneJob or ModelDeployment reads every booking (the allocations) and the queue, then
writes ``Admitted`` with its placement; two handlers doing that at once would both see the
last free GPUs and both book them. So every reconcile that may book GPUs runs under
:attr:`Admission.lock`, one at a time in this process, and in that critical section it

1. builds the snapshot from the world copied out of kopf's indexes, with :class:`Ledger`
   laid over it: the placed objects whose status this process wrote and the index has not
   delivered yet (a watch event comes a moment after the write);
2. reconciles, which writes the status conditionally on the resourceVersion it read (the
   runner re-reads the object first; a 409 re-reads and decides again);
3. records the stored object in the ledger before the lock is released.

So the next admission decision sees every GPU booked or released before it, whether or not
the watch has caught up. The world a booking reads is copied from the indexes after the lock
is taken (on kopf's event loop, the thread that updates them), and only bookings drop ledger
entries: a world copied before the lock, while other bookings went on, would have been older
than entries another, newer world had already let go of (20 jobs at once over-committed so).
The slow side effects (creating the RayJob or RayService) are
applied after the lock is released: the status naming the placement is already stored, and
the actions are idempotent.

Why an in-process lock is enough: only the elected leader handles objects (kopf peering,
``ClusterKopfPeering``; a replica that loses the lease pauses its handlers), and only the
operator writes these statuses. A stale leader's late write fails on the resourceVersion
check. Objects that cannot book GPUs (those already holding them, or finished, or being
deleted) reconcile outside the lock: they only keep or release GPUs, and a release seen
late only delays the next admission until the next event or timer.

The ledger forgets an entry once the index holds the same or a later version of the object
(resourceVersions of an etcd-backed API server are increasing integers; a version that is
not an integer is kept until :data:`LEDGER_TTL_SECONDS`), when its reconcile finds it gone,
or when it has been missing from the index for :data:`GONE_GRACE_SECONDS` (a world copied
before the object was created does not hold it, and its booking must still count).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from corral.api.v1alpha1 import FineTuneJob, ModelDeployment, Resource
from corral.control import RequestMemo, Snapshot

from ._world import World

__all__ = ["GONE_GRACE_SECONDS", "LEDGER_TTL_SECONDS", "Admission", "Ledger", "may_book"]

logger = logging.getLogger(__name__)

LEDGER_TTL_SECONDS = 300.0
"""How long a written object whose version cannot be compared overrides the index."""
GONE_GRACE_SECONDS = 30.0
"""How long a written object missing from a world still counts (the world may have been copied before it
was created); past that it is taken as deleted."""

_PLACED_KINDS = ("FineTuneJob", "ModelDeployment")
_FINISHED_PHASES = ("Succeeded", "Failed", "Cancelled")


def may_book(obj: Resource) -> bool:
    """Whether reconciling ``obj`` may book GPUs.

    It may: a FineTuneJob holding none and neither finished nor deleted, or any
    ModelDeployment not being deleted (its replicas may be placed anew).
    """
    if not isinstance(obj, FineTuneJob | ModelDeployment) or obj.metadata.deletion_timestamp is not None:
        return False
    if isinstance(obj, ModelDeployment):
        return True
    placement = obj.status.placement
    holds = placement is not None and placement.pool is not None and placement.gpus > 0
    return not holds and obj.status.phase not in _FINISHED_PHASES


def _newer_or_same(seen: str | None, written: str | None) -> bool:
    """Whether version ``seen`` (from the index) is ``written`` or later; False when they cannot be compared."""
    if seen is None or written is None:
        return False
    if seen == written:
        return True
    if seen.isdigit() and written.isdigit():
        return int(seen) >= int(written)
    return False


@dataclass
class _Entry:
    obj: Resource
    at: float


@dataclass
class Ledger:
    """Placed objects as this process last wrote them, until the index has caught up.

    Thread-safe; :meth:`overlay` and :meth:`record` are called under the admission lock for
    bookings and outside it for releases.
    """

    clock: Any = time.monotonic
    memo: RequestMemo = field(default_factory=RequestMemo)
    """Queued objects' placement requests, kept between the snapshots (the index's objects stay the same instances)."""
    _entries: dict[tuple[str, str | None, str], _Entry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, obj: Resource) -> None:
        """Remember the stored ``obj`` (a FineTuneJob or ModelDeployment; other kinds are ignored)."""
        if obj.kind not in _PLACED_KINDS:
            return
        key = (obj.kind, obj.metadata.namespace, obj.metadata.name)
        with self._lock:
            self._entries[key] = _Entry(obj, self.clock())

    def latest(self, obj: Resource) -> Resource:
        """``obj`` as this process last wrote it, when the ledger holds a version of it; else ``obj``."""
        with self._lock:
            entry = self._entries.get((obj.kind, obj.metadata.namespace, obj.metadata.name))
        if entry is None or entry.obj.metadata.uid != obj.metadata.uid:
            return obj
        if _newer_or_same(obj.metadata.resource_version, entry.obj.metadata.resource_version):
            return obj
        return entry.obj

    def forget(self, obj: Resource) -> None:
        """Drop the entry of ``obj`` (it is gone)."""
        with self._lock:
            self._entries.pop((obj.kind, obj.metadata.namespace, obj.metadata.name), None)

    def overlay(self, world: World, *, prune: bool = True) -> Snapshot:
        """A snapshot of ``world`` with the written objects the index has not delivered yet put over it.

        ``world`` is the caller's own copy: its placed kinds' per-namespace maps are copied
        before they are changed. With ``prune`` (only under :attr:`Admission.lock`, with a world
        copied under it), entries the index has caught up with, of objects that are gone, or past
        :data:`LEDGER_TTL_SECONDS` are dropped: every later booking copies a world at least as
        new. Without it (a caller whose world may be older than another's) nothing is dropped.
        """
        objects = dict(world)
        copied: set[tuple[str, str | None]] = set()
        now = self.clock()
        with self._lock:
            for key, entry in list(self._entries.items()):
                kind, namespace, name = key
                seen = world.get(kind, {}).get(namespace, {}).get(name)
                written = entry.obj
                if seen is None and now - entry.at <= GONE_GRACE_SECONDS:
                    pass  # created after this world was copied: the booking still counts
                elif (
                    seen is None
                    or seen.metadata.uid != written.metadata.uid
                    or _newer_or_same(seen.metadata.resource_version, written.metadata.resource_version)
                    or now - entry.at > LEDGER_TTL_SECONDS
                ):
                    if prune:
                        del self._entries[key]
                    continue
                if (kind, namespace) not in copied:  # the world's maps stay as they were
                    if not any(k == kind for k, _ in copied):
                        objects[kind] = dict(objects.get(kind, {}))
                    objects[kind][namespace] = dict(objects[kind].get(namespace, {}))
                    copied.add((kind, namespace))
                objects[kind][namespace][name] = written
        return Snapshot(objects=objects, memo=self.memo)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


@dataclass
class Admission:
    """The operator's one admission path: the lock bookings run under, and the ledger they read and write."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ledger: Ledger = field(default_factory=Ledger)
