"""What one reconcile pass reads, read once; and the GPU ledger it keeps while the pass runs.

The runner lists every object once per pass. Reconcilers are then handed slices of that
snapshot; for GPUs they are all handed the same two facts, computed once and kept current:
the allocations (what admitted objects hold) and the queue (who waits for GPUs). When the
runner writes the status of a FineTuneJob or ModelDeployment, the snapshot takes the new
object, so the next object of the pass is placed against the GPUs taken or released a moment
ago: nothing is booked twice, and every decision agrees with the others whatever order the
runner visits them in.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from corral.api.v1alpha1 import Resource
from corral.scheduler import Allocation, PlacementRequest

from ._placement import allocation_of, waiting_request

__all__ = ["RequestMemo", "Snapshot"]

_PLACED_KINDS = ("FineTuneJob", "ModelDeployment")


def _ledger_facts(obj: Any) -> tuple[Any, ...]:
    """What the allocations and the queue read of a FineTuneJob or ModelDeployment."""
    gate = next(((c.status, c.reason) for c in obj.status.conditions if c.type in ("Admitted", "Ready")), None)
    return (
        allocation_of(obj),
        obj.status.phase,
        gate,
        not obj.status.conditions,
        obj.metadata.generation,
        obj.metadata.deletion_timestamp is not None,
        getattr(obj.spec, "suspend", None),
    )


class RequestMemo:
    """Queued objects' placement requests, kept from one snapshot to the next.

    A request is a pure function of the object and its namespace's Models and Datasets; it
    is reused while those are the very same instances (compared by identity, held so their
    ids stay theirs). A process whose snapshots share unchanged objects (the kopf operator's
    indexes) then builds the queue in a lookup per object instead of a request per object.
    Thread-safe; entries of objects missing from the latest queue are dropped.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, tuple[tuple[object, ...], PlacementRequest | None]] = {}

    def request(self, obj: Any, models: Mapping[str, Any], datasets: Mapping[str, Any]) -> PlacementRequest | None:
        """:func:`waiting_request` of ``obj``, computed again only when an input changed."""
        inputs = (obj, *models.values(), *datasets.values())
        with self._lock:
            found = self._entries.get(id(obj))
        if (
            found is not None
            and len(found[0]) == len(inputs)
            and all(a is b for a, b in zip(found[0], inputs, strict=True))
        ):
            return found[1]
        request = waiting_request(obj, models, datasets)
        with self._lock:
            self._entries[id(obj)] = (inputs, request)
        return request

    def keep(self, objs: list[Any]) -> None:
        """Drop the entries of objects not in ``objs``."""
        alive = {id(o) for o in objs}
        with self._lock:
            for key in [k for k in self._entries if k not in alive]:
                del self._entries[key]


@dataclass
class Snapshot:
    """Everything one pass reads from the store, read once, then kept current.

    Attributes:
        objects: Per kind, per namespace (None for GPUPools), per name.
        memo: Placement requests kept between snapshots (None: computed for this one).
    """

    objects: dict[str, dict[str | None, dict[str, Any]]] = field(default_factory=dict)
    memo: RequestMemo | None = None
    _allocations: tuple[Allocation, ...] | None = None
    _queue: tuple[PlacementRequest, ...] | None = None

    def in_namespace(self, kind: str, namespace: str | None) -> dict[str, Any]:
        """Objects of a kind in one namespace, by name."""
        return self.objects.get(kind, {}).get(namespace, {})

    def all(self, kind: str) -> list[Any]:
        """Every object of a kind."""
        return [obj for per_ns in self.objects.get(kind, {}).values() for obj in per_ns.values()]

    def record(self, obj: Resource) -> None:
        """Keep the GPU ledger current: a FineTuneJob or ModelDeployment replaces its entry (other kinds are ignored).

        Called after the runner wrote the object's status, so the next object of the pass
        sees the GPUs it took or released and the queue it joined or left.
        """
        if obj.kind not in _PLACED_KINDS:
            return
        per_ns = self.objects.setdefault(obj.kind, {}).setdefault(obj.metadata.namespace, {})
        before = per_ns.get(obj.metadata.name)
        per_ns[obj.metadata.name] = obj
        if before is None or _ledger_facts(before) != _ledger_facts(obj):
            self._allocations = self._queue = None  # else keep them: the same tuples let placement reuse its cluster

    def allocations(self) -> tuple[Allocation, ...]:
        """GPUs held by admitted jobs and placed deployments (jobs first, each kind by namespace and name)."""
        if self._allocations is None:
            found = [allocation_of(o) for kind in _PLACED_KINDS for o in self.all(kind)]
            self._allocations = tuple(a for a in found if a is not None)
        return self._allocations

    def queue(self) -> tuple[PlacementRequest, ...]:
        """Jobs and deployments waiting for GPUs, as placement requests."""
        if self._queue is None:
            placed = [o for kind in _PLACED_KINDS for o in self.all(kind)]
            compute = self.memo.request if self.memo is not None else waiting_request
            found = [
                compute(
                    o,
                    self.in_namespace("Model", o.metadata.namespace),
                    self.in_namespace("Dataset", o.metadata.namespace),
                )
                for o in placed
            ]
            if self.memo is not None:
                self.memo.keep(placed)
            self._queue = tuple(r for r in found if r is not None)
        return self._queue
