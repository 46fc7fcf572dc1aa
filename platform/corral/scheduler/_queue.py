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
        items = self._items
        return iter([items[k[2]] for k in self._keys])

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
    if state.free_gpus(pool) + state.preemptible_below(pool, priority) < need:
        return None
    candidates = sorted(
        (a for a in state.pool_allocations(pool).values() if a.preemptible and a.priority < priority),
        key=lambda a: (a.priority, -a.seq, a.key),
    )
    if not candidates:
        return None
    gpn = state.pools[pool].gpus_per_node

    def fits(victims: list[Allocation]) -> bool:
        freed: dict[int, int] = {}
        ns_freed = 0
        for victim in victims:
            for node in victim.nodes:
                freed[node] = freed.get(node, 0) + victim.gpus_per_replica
            if victim.namespace == namespace:
                ns_freed += victim.gpus
        if quota is not None and state.namespace_used(pool, namespace) - ns_freed + need > quota:
            return False
        hist = state.free_histogram(pool)
        for node, extra in freed.items():
            before = state.node_free(pool, node)
            hist[before] -= 1
            hist[min(before + extra, gpn)] += 1
        slots = sum(hist[f] * (f // gpus_per_replica) for f in range(gpus_per_replica, gpn + 1))
        return slots >= replicas

    chosen: list[Allocation] = []
    for victim in candidates:
        chosen.append(victim)
        if fits(chosen):
            break
    else:
        return None
    for victim in list(reversed(chosen[:-1])):
        trial = [v for v in chosen if v is not victim]
        if fits(trial):
            chosen = trial
    return tuple(chosen)
