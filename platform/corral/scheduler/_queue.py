"""The pending queue (priority, then FIFO), pool reservations for blocked gangs, and
preemption victim selection.

Ordering: higher ``priority`` first; within a priority, earlier ``seq`` (arrival order)
first; the key breaks exact ties so the order is total and decisions are deterministic.

Reservations keep FIFO honest for gangs: when the first waiting request that wants a
pool cannot fit there, the pool is reserved for it, and later requests (same or lower
priority) may use the pool only when they are expected to finish before the reservation
could start anyway (EASY backfilling, with the estimator's durations). A large gang
therefore cannot be starved by a stream of small jobs, and small jobs still fill holes.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ._cluster import Allocation, ClusterState

__all__ = ["PendingQueue", "Queued", "Reservation", "select_victims", "shadow_time"]


class Queued(Protocol):
    """What the queue needs of a request."""

    @property
    def key(self) -> str:
        """Unique ``namespace/name``."""
        ...

    @property
    def priority(self) -> int:
        """Higher goes first."""
        ...

    @property
    def seq(self) -> int:
        """Arrival order."""
        ...


def order_key(item: Queued) -> tuple[int, int, str]:
    """Sort key of a request: priority (descending), arrival, key."""
    return (-item.priority, item.seq, item.key)


T = TypeVar("T", bound=Queued)


class PendingQueue(Generic[T]):
    """Requests waiting for placement, kept in scheduling order.

    Insert and remove are O(n) list moves (cheap for thousands of entries); iteration is
    in order. Re-adding a key replaces the old entry (e.g. a preempted job re-queued with
    its original ``seq``, so it keeps its place).
    """

    def __init__(self) -> None:
        self._keys: list[tuple[int, int, str]] = []
        self._items: dict[str, T] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[T]:
        # Lazily, over a snapshot (two C-level copies): a pass that stops early pays only
        # for what it read, and the queue may change while it is iterated.
        items, keys = dict(self._items), list(self._keys)
        return (items[k[2]] for k in keys)

    def add(self, item: T) -> None:
        """Queue ``item`` (replacing an entry with the same key)."""
        if item.key in self._items:
            self.remove(item.key)
        self._items[item.key] = item
        bisect.insort(self._keys, order_key(item))

    def remove(self, key: str) -> T:
        """Take ``key`` out of the queue and return it.

        Raises:
            KeyError: Not queued.
        """
        item = self._items.pop(key)
        okey = order_key(item)
        index = bisect.bisect_left(self._keys, okey)
        del self._keys[index]
        return item

    def get(self, key: str) -> T | None:
        """The queued request with ``key``, or None."""
        return self._items.get(key)

    def position(self, key: str) -> int:
        """0-based position of ``key`` in scheduling order.

        Raises:
            KeyError: Not queued.
        """
        return bisect.bisect_left(self._keys, order_key(self._items[key]))


@dataclass(frozen=True)
class Reservation:
    """A pool held for a blocked request.

    Attributes:
        key: The request holding it.
        priority: Its priority (requests above it ignore the reservation).
        gpus: GPUs it needs.
        start: Earliest time it is expected to fit (``inf`` when something it waits on never ends).
    """

    key: str
    priority: int
    gpus: int
    start: float


def shadow_time(state: ClusterState, pool: str, gpus: int, now: float) -> float:
    """Earliest time ``gpus`` GPUs are expected to be free in ``pool``, from allocations' expected ends.

    Counts GPUs, not nodes (optimistic for multi-GPU replicas). Returns ``now`` when they
    are free already, ``inf`` when an allocation without an expected end must go first.
    """
    free = state.free_gpus(pool)
    if free >= gpus:
        return now
    for end, _, held in state.expected_ends(pool):
        free += held
        if free >= gpus:
            return max(end, now)
    return float("inf")


class _Freeing:
    """What preempting a set of allocations would free in one pool, kept incrementally.

    Adding or dropping a victim touches only its nodes, so the greedy search in
    :func:`select_victims` costs O(victims x replicas) instead of rebuilding a histogram
    per trial.
    """

    def __init__(self, state: ClusterState, pool: str, gpus_per_replica: int, namespace: str) -> None:
        self.g, self.namespace = gpus_per_replica, namespace
        self.gpn = state.pools[pool].gpus_per_node
        self.free = state.free_by_node(pool)
        hist = state.free_histogram(pool)
        self.slots = sum(hist[f] * (f // self.g) for f in range(self.g, self.gpn + 1))
        self.extra: dict[int, int] = {}
        self.ns_freed = 0

    def _change(self, alloc: Allocation, sign: int) -> None:
        g, gpn, free, extra = self.g, self.gpn, self.free, self.extra
        slots = self.slots
        for node, gpus in alloc.per_node.items():
            base = free[node]
            before = base + extra.get(node, 0)
            after = before + sign * gpus
            extra[node] = after - base
            slots += min(after, gpn) // g - min(before, gpn) // g
        self.slots = slots
        if alloc.namespace == self.namespace:
            self.ns_freed += sign * alloc.gpus

    def could_fit(self, freeable: dict[int, int], replicas: int) -> bool:
        """Whether ``replicas`` slots exist once the GPUs in ``freeable`` (per node) are freed too."""
        g, gpn, free, slots = self.g, self.gpn, self.free, self.slots
        for node, gpus in freeable.items():
            base = free[node]
            slots += min(base + gpus, gpn) // g - base // g
            if slots >= replicas:
                return True
        return slots >= replicas

    def add(self, alloc: Allocation) -> None:
        """Count ``alloc``'s GPUs as freed."""
        self._change(alloc, 1)

    def drop(self, alloc: Allocation) -> None:
        """Stop counting ``alloc``'s GPUs as freed."""
        self._change(alloc, -1)


def select_victims(
    state: ClusterState,
    pool: str,
    *,
    replicas: int,
    gpus_per_replica: int,
    priority: int,
    namespace: str,
    quota: int | None,
) -> tuple[Allocation, ...] | None:
    """Fewest lower-priority preemptible allocations in ``pool`` whose removal lets the gang fit.

    Candidates are preemptible allocations of strictly lower priority, tried lowest
    priority first and, within a priority, newest first (least work lost). Greedy: add
    victims until the gang fits on the freed nodes (and the namespace's quota allows
    it), then drop any victim that turned out unnecessary (last added first). Returns
    None when even all candidates are not enough.

    Args:
        state: The cluster.
        pool: Pool to free GPUs in.
        replicas: Replicas of the request.
        gpus_per_replica: GPUs per replica.
        priority: The request's priority.
        namespace: The request's namespace (its own victims count toward its quota).
        quota: The namespace's quota in the pool, or None.
    """
    need = replicas * gpus_per_replica
    if gpus_per_replica <= 0 or state.free_gpus(pool) + state.preemptible_below(pool, priority) < need:
        return None
    used = state.namespace_used(pool, namespace)
    if quota is not None and used - state.preemptible_in_namespace(pool, namespace, priority) + need > quota:
        return None  # even preempting all of the namespace's own lower work leaves it over quota
    plan = _Freeing(state, pool, gpus_per_replica, namespace)
    if not plan.could_fit(state.preemptible_by_node(pool, priority), replicas):
        return None  # even preempting every candidate leaves too few slots (adding victims only adds slots)

    def fits() -> bool:
        if quota is not None and used - plan.ns_freed + need > quota:
            return False
        return plan.slots >= replicas

    chosen: list[Allocation] = []
    for victim in state.preemptible_in_order(pool, priority):
        chosen.append(victim)
        plan.add(victim)
        if fits():
            break
    else:
        return None
    for victim in list(reversed(chosen[:-1])):
        plan.drop(victim)
        if fits():
            chosen = [v for v in chosen if v is not victim]
        else:
            plan.add(victim)
    return tuple(chosen)
