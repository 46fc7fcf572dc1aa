"""One reconcile pass, one scheduling plan: the cluster and the queue's decisions, built once.

Every reconciler of a pass is handed the same pools, the same allocations tuple and the same
queue tuple (the runner's snapshot). Placing an object against them means building the
cluster from every allocation and deciding every queued request ahead of it; both are done
once per distinct input here and reused while the very same objects come back (one memo per
thread, so concurrent reconciles never share one). The answers
are those of computing afresh (the scheduler is deterministic): only the time differs, from
a walk over every allocation and every queued request per object to a lookup.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

from corral.api.v1alpha1 import GPUPool
from corral.scheduler import Allocation, ClusterState, Decision, PlacementRequest, Scheduler, place, pools_from

__all__ = ["cluster_of", "decide", "queue_plan"]

V = TypeVar("V")


class _Last(Generic[V]):
    """The last value computed in this thread, with the inputs (held, compared by identity) it was computed from.

    One slot per thread: the runners of concurrent reconciles (the kopf operator runs
    handlers in a thread pool) neither share nor evict each other's memo, and a value is
    only ever read by the thread that computed it.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, inputs: tuple[object, ...]) -> V | None:
        held: tuple[tuple[object, ...], V] | None = getattr(self._local, "last", None)
        if held is None:
            return None
        last_inputs, value = held
        same = len(inputs) == len(last_inputs) and all(a is b for a, b in zip(inputs, last_inputs, strict=True))
        return value if same else None

    def put(self, inputs: tuple[object, ...], value: V) -> None:
        self._local.last = (inputs, value)


_CLUSTER: _Last[ClusterState] = _Last()
_PLAN: _Last[dict[str, tuple[PlacementRequest, Decision]]] = _Last()


def cluster_of(pools: Iterable[GPUPool], allocations: tuple[Allocation, ...]) -> ClusterState:
    """The scheduler's view of ``pools`` with ``allocations`` placed: read it, never change it (copy first)."""
    pool_tuple = tuple(pools)
    inputs = (allocations, *pool_tuple)
    state = _CLUSTER.get(inputs)
    if state is None:
        state = ClusterState(pools_from(pool_tuple), allocations)
        _CLUSTER.put(inputs, state)
    return state


def queue_plan(
    pools: Iterable[GPUPool], allocations: tuple[Allocation, ...], queue: tuple[PlacementRequest, ...]
) -> Mapping[str, tuple[PlacementRequest, Decision]]:
    """One scheduling pass over ``queue`` (priority, then FIFO): each request and its decision, by key.

    A request's decision here is the one ``place()`` gives it with the same queue: a pass
    decides requests in order, so those behind a request never change its answer.
    """
    pool_tuple = tuple(pools)
    inputs = (allocations, queue, *pool_tuple)
    plan = _PLAN.get(inputs)
    if plan is None:
        by_key = {r.key: r for r in queue}
        decisions = Scheduler(cluster_of(pool_tuple, allocations).copy()).schedule(queue)
        plan = {d.key: (by_key[d.key], d) for d in decisions}
        _PLAN.put(inputs, plan)
    return plan


def decide(
    request: PlacementRequest,
    pools: Iterable[GPUPool],
    allocations: tuple[Allocation, ...],
    queue: tuple[PlacementRequest, ...],
) -> Decision:
    """``place()`` for ``request`` with everything else placed and ``queue`` waiting (its own allocation ignored).

    A request queued as it is now reads its decision off the pass's plan; otherwise (new,
    changed, or holding GPUs and being re-decided) it is placed on a copy of the cluster.
    """
    pool_tuple = tuple(pools)
    state = cluster_of(pool_tuple, allocations)
    if request.key in state.allocations:
        state = state.copy()
        state.release(request.key)
    else:
        planned = queue_plan(pool_tuple, allocations, queue).get(request.key)
        if planned is not None and planned[0] == request:
            return planned[1]
    return place(request, (), (), queue, state=state)
