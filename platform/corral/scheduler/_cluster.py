"""The scheduler's view of the cluster: pools, their nodes' free GPUs, and what is placed.

:class:`ClusterState` is plain bookkeeping (no clocks, no I/O). It keeps, per pool, the
free GPUs of every node and the nodes bucketed by free count, so that "do R replicas of
g GPUs fit?" costs O(GPUs per node) and picking nodes costs O(nodes touched), whatever
the pool's size.

A pool's nodes are ``maxNodes`` of them: the cluster autoscaler adds nodes up to that
count on demand, so capacity the scheduler may promise is the pool's largest size.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, Literal

from corral.api import parse_quantity

from ._accelerators import Accelerator, get_accelerator

if TYPE_CHECKING:
    from ..api.v1alpha1.gpupool import GPUPool

__all__ = ["Allocation", "ClusterState", "NodePolicy", "PoolState"]

NodePolicy = Literal["binpack", "first", "spread"]
"""How nodes are picked inside a pool: fullest node that fits (Corral), lowest index
(first-fit), emptiest node (Kubernetes' default LeastAllocated scoring)."""


@dataclass(frozen=True)
class PoolState:
    """What the scheduler needs to know about one ``GPUPool``.

    Attributes:
        name: Pool name.
        accelerator_type: Accelerator type of its nodes.
        gpus_per_node: GPUs per node.
        gpu_memory: Bytes of memory per GPU.
        nodes: Nodes the pool can have (``maxNodes``).
        price_per_gpu_hour: US dollars per GPU-hour.
        spot: Spot capacity (only preemptible work is placed there unless pinned).
        quotas: Most GPUs each listed namespace may hold in this pool.
    """

    name: str
    accelerator_type: str
    gpus_per_node: int
    gpu_memory: int
    nodes: int
    price_per_gpu_hour: Decimal = Decimal(0)
    spot: bool = False
    quotas: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.gpus_per_node < 0 or self.nodes < 0 or self.gpu_memory < 0:
            raise ValueError(
                f"pool {self.name!r}: gpusPerNode, nodes and gpuMemory must be >= 0 "
                f"(got {self.gpus_per_node}, {self.nodes}, {self.gpu_memory})"
            )

    @property
    def capacity(self) -> int:
        """GPUs in the pool at its largest size."""
        return self.gpus_per_node * self.nodes

    @cached_property
    def accelerator(self) -> Accelerator:
        """The accelerator entry, with this pool's GPU memory."""
        return get_accelerator(self.accelerator_type, self.gpu_memory or None)

    @classmethod
    def from_gpupool(cls, pool: GPUPool) -> PoolState:
        """Build from a ``GPUPool`` object (``maxNodes`` nodes, ``gpuMemory`` parsed)."""
        spec = pool.spec
        memory = parse_quantity(spec.gpu_memory) if spec.gpu_memory else 0
        return cls(
            name=pool.metadata.name,
            accelerator_type=spec.accelerator_type,
            gpus_per_node=spec.gpus_per_node,
            gpu_memory=memory,
            nodes=spec.max_nodes,
            price_per_gpu_hour=Decimal(spec.price_per_gpu_hour),
            spot=spec.spot,
            quotas={q.namespace: q.max_gpus for q in spec.quotas},
        )


@dataclass(frozen=True)
class Allocation:
    """GPUs held by one admitted job or deployment.

    Attributes:
        key: ``namespace/name`` of the owner (unique).
        namespace: Namespace charged for the GPUs.
        pool: Pool the GPUs are in.
        replicas: Workers or replicas placed.
        gpus_per_replica: GPUs of each replica (all on one node).
        nodes: Node index of each replica; empty means "not recorded" (nodes are assigned
            first-fit when the state is built).
        priority: Priority it was admitted with.
        preemptible: True when it may be preempted by higher-priority work.
        seq: Arrival order (smaller is earlier).
        expected_end: When it is expected to finish (same clock as ``now``); None: not expected to.
        kind: FineTuneJob or ModelDeployment.
    """

    key: str
    namespace: str
    pool: str
    replicas: int
    gpus_per_replica: int
    nodes: tuple[int, ...] = ()
    priority: int = 0
    preemptible: bool = False
    seq: int = 0
    expected_end: float | None = None
    kind: str = "FineTuneJob"

    @property
    def gpus(self) -> int:
        """GPUs held in total."""
        return self.replicas * self.gpus_per_replica

    def on_nodes(self, nodes: tuple[int, ...]) -> Allocation:
        """The same allocation with its replicas on ``nodes`` (a plain constructor call: cheaper than ``replace``)."""
        return Allocation(
            self.key,
            self.namespace,
            self.pool,
            self.replicas,
            self.gpus_per_replica,
            nodes,
            self.priority,
            self.preemptible,
            self.seq,
            self.expected_end,
            self.kind,
        )

    @cached_property
    def per_node(self) -> dict[int, int]:
        """GPUs held on each node (replicas on the same node added up)."""
        out: dict[int, int] = {}
        for node in self.nodes:
            out[node] = out.get(node, 0) + self.gpus_per_replica
        return out


def _end_entry(alloc: Allocation) -> tuple[float, str, int]:
    return (float("inf") if alloc.expected_end is None else alloc.expected_end, alloc.key, alloc.gpus)


def _victim_entry(alloc: Allocation) -> tuple[int, int, str]:
    """Preemption order: lowest priority first, then newest first (least work lost), then key."""
    return (alloc.priority, -alloc.seq, alloc.key)


class ClusterState:
    """Free GPUs per node and the allocations that hold the rest; mutable, deterministic.

    Args:
        pools: The pools, in the order they were declared.
        allocations: What is placed already.

    Raises:
        ValueError: Duplicate pool names, an allocation on an unknown pool, or one that
            does not fit.
    """

    def __init__(self, pools: Iterable[PoolState], allocations: Iterable[Allocation] = ()) -> None:
        self.pools: dict[str, PoolState] = {}
        for pool in pools:
            if pool.name in self.pools:
                raise ValueError(f"pool {pool.name!r} is listed twice")
            self.pools[pool.name] = pool
        self._free: dict[str, list[int]] = {}
        self._buckets: dict[str, list[set[int]]] = {}
        self._free_total: dict[str, int] = {}
        for pool in self.pools.values():
            self._free[pool.name] = [pool.gpus_per_node] * pool.nodes
            buckets: list[set[int]] = [set() for _ in range(pool.gpus_per_node + 1)]
            buckets[pool.gpus_per_node] = set(range(pool.nodes))
            self._buckets[pool.name] = buckets
            self._free_total[pool.name] = pool.capacity
        # Per pool, a node index below which every node is full: first-fit scans start there.
        self._first_open: dict[str, int] = dict.fromkeys(self.pools, 0)
        self._ns_used: dict[tuple[str, str], int] = {}
        self.allocations: dict[str, Allocation] = {}
        self._by_pool: dict[str, dict[str, Allocation]] = {name: {} for name in self.pools}
        self._preemptible: dict[str, dict[int, int]] = {name: {} for name in self.pools}
        self._victims: dict[str, list[tuple[int, int, str]]] = {name: [] for name in self.pools}
        self._pre_nodes: dict[str, dict[int, dict[int, int]]] = {name: {} for name in self.pools}
        self._pre_ns: dict[tuple[str, str], dict[int, int]] = {}
        self._ends: dict[str, list[tuple[float, str, int]]] = {name: [] for name in self.pools}
        for given in allocations:
            alloc = given
            if not alloc.nodes and alloc.gpus_per_replica > 0:
                if alloc.pool not in self.pools:
                    raise ValueError(f"allocation {alloc.key!r}: unknown pool {alloc.pool!r}")
                nodes = self.pick_nodes(alloc.pool, alloc.replicas, alloc.gpus_per_replica, "first")
                if nodes is None:
                    raise ValueError(
                        f"allocation {alloc.key!r} ({alloc.replicas} x {alloc.gpus_per_replica} GPUs) does not fit "
                        f"in pool {alloc.pool!r}"
                    )
                alloc = alloc.on_nodes(nodes)
            self.allocate(alloc)

    def copy(self) -> ClusterState:
        """An independent copy (pools shared: they never change), far cheaper than rebuilding from allocations."""
        new = ClusterState.__new__(ClusterState)
        new.pools = self.pools
        new._free = {name: list(free) for name, free in self._free.items()}
        new._buckets = {name: [set(b) for b in buckets] for name, buckets in self._buckets.items()}
        new._free_total = dict(self._free_total)
        new._first_open = dict(self._first_open)
        new._ns_used = dict(self._ns_used)
        new.allocations = dict(self.allocations)
        new._by_pool = {name: dict(held) for name, held in self._by_pool.items()}
        new._preemptible = {name: dict(by_prio) for name, by_prio in self._preemptible.items()}
        new._victims = {name: list(order) for name, order in self._victims.items()}
        new._pre_nodes = {
            name: {prio: dict(per_node) for prio, per_node in by_prio.items()}
            for name, by_prio in self._pre_nodes.items()
        }
        new._pre_ns = {slot: dict(by_prio) for slot, by_prio in self._pre_ns.items()}
        new._ends = {name: list(ends) for name, ends in self._ends.items()}
        return new

    # -- queries -------------------------------------------------------------------------
    def free_gpus(self, pool: str) -> int:
        """Free GPUs in ``pool``."""
        return self._free_total[pool]

    def node_free(self, pool: str, node: int) -> int:
        """Free GPUs on one node."""
        return self._free[pool][node]

    def free_by_node(self, pool: str) -> Sequence[int]:
        """Free GPUs of every node of ``pool``, by node index (a live view: read, never change)."""
        return self._free[pool]

    def free_histogram(self, pool: str) -> list[int]:
        """Nodes of ``pool`` by free GPUs: element f is how many nodes have f GPUs free."""
        return [len(b) for b in self._buckets[pool]]

    def largest_free(self, pool: str) -> int:
        """Most free GPUs on any one node of ``pool``."""
        buckets = self._buckets[pool]
        for f in range(len(buckets) - 1, -1, -1):
            if buckets[f]:
                return f
        return 0

    def namespace_used(self, pool: str, namespace: str) -> int:
        """GPUs ``namespace`` holds in ``pool``."""
        return self._ns_used.get((pool, namespace), 0)

    def pool_allocations(self, pool: str) -> Mapping[str, Allocation]:
        """Allocations in ``pool`` by key."""
        return self._by_pool[pool]

    def expected_ends(self, pool: str) -> Sequence[tuple[float, str, int]]:
        """(expected end or ``inf``, key, GPUs) of the allocations in ``pool``, earliest first."""
        return self._ends[pool]

    def preemptible_below(self, pool: str, priority: int) -> int:
        """GPUs in ``pool`` held by preemptible allocations of priority below ``priority``."""
        return sum(gpus for prio, gpus in self._preemptible[pool].items() if prio < priority)

    def preemptible_by_node(self, pool: str, below: int) -> dict[int, int]:
        """GPUs per node of ``pool`` held by preemptible allocations below priority ``below`` (nodes with some)."""
        out: dict[int, int] = {}
        for prio, per_node in self._pre_nodes[pool].items():
            if prio < below:
                for node, gpus in per_node.items():
                    out[node] = out.get(node, 0) + gpus
        return out

    def preemptible_in_namespace(self, pool: str, namespace: str, below: int) -> int:
        """GPUs ``namespace`` holds in ``pool`` through preemptible allocations of priority below ``below``."""
        return sum(gpus for prio, gpus in self._pre_ns.get((pool, namespace), {}).items() if prio < below)

    def preemptible_in_order(self, pool: str, below: int) -> Iterator[Allocation]:
        """Preemptible allocations in ``pool`` of priority below ``below``: lowest priority first, newest first.

        Kept sorted as allocations come and go, so iterating stops early and never re-sorts.
        """
        allocations = self.allocations
        for prio, _, key in self._victims[pool]:
            if prio >= below:
                return
            yield allocations[key]

    def fits(self, pool: str, replicas: int, gpus_per_replica: int) -> bool:
        """Whether ``replicas`` replicas of ``gpus_per_replica`` GPUs, each on one node, fit now."""
        if gpus_per_replica <= 0:
            return True
        buckets = self._buckets[pool]
        if gpus_per_replica >= len(buckets) or self._free_total[pool] < replicas * gpus_per_replica:
            return False
        slots = 0
        for f in range(gpus_per_replica, len(buckets)):
            slots += len(buckets[f]) * (f // gpus_per_replica)
            if slots >= replicas:
                return True
        return False

    def pick_nodes(
        self, pool: str, replicas: int, gpus_per_replica: int, policy: NodePolicy = "binpack"
    ) -> tuple[int, ...] | None:
        """Choose a node for each replica (None when they do not all fit); changes nothing.

        ``binpack`` fills the nodes with the fewest free GPUs that still fit first (lowest
        index among equals), keeping whole nodes free for large replicas; ``first`` takes
        nodes in index order; ``spread`` puts each replica on the node with the most free GPUs.
        """
        if gpus_per_replica <= 0:
            return tuple([0] * replicas) if self.pools[pool].nodes else ()
        if not self.fits(pool, replicas, gpus_per_replica):
            return None
        g = gpus_per_replica
        chosen: list[int] = []
        free = self._free[pool]
        if policy == "binpack":
            buckets = self._buckets[pool]
            for f in range(g, len(buckets)):
                for node in sorted(buckets[f]):
                    take = min(f // g, replicas - len(chosen))
                    chosen.extend([node] * take)
                    if len(chosen) == replicas:
                        return tuple(chosen)
        elif policy == "first":
            start = self._first_open[pool]
            while start < len(free) and free[start] == 0:
                start += 1
            self._first_open[pool] = start
            for node in range(start, len(free)):
                f = free[node]
                if f >= g:
                    take = min(f // g, replicas - len(chosen))
                    chosen.extend([node] * take)
                    if len(chosen) == replicas:
                        return tuple(chosen)
        else:
            import heapq

            heap = [(-f, node) for node, f in enumerate(free) if f >= g]
            heapq.heapify(heap)
            while heap and len(chosen) < replicas:
                neg, node = heapq.heappop(heap)
                chosen.append(node)
                left = -neg - g
                if left >= g:
                    heapq.heappush(heap, (-left, node))
            if len(chosen) == replicas:
                return tuple(chosen)
        return None  # pragma: no cover - fits() said they do

    # -- changes -------------------------------------------------------------------------
    def _take(self, pool: str, node: int, gpus: int) -> None:
        free = self._free[pool]
        before = free[node]
        after = before - gpus
        if after < 0 or after > self.pools[pool].gpus_per_node:
            raise ValueError(f"node {node} of pool {pool!r} has {before} free GPUs; cannot change by {-gpus}")
        buckets = self._buckets[pool]
        buckets[before].discard(node)
        buckets[after].add(node)
        free[node] = after
        self._free_total[pool] -= gpus
        if after and node < self._first_open[pool]:
            self._first_open[pool] = node

    def _count_preemptible(self, alloc: Allocation, sign: int) -> None:
        per_node = self._pre_nodes[alloc.pool].setdefault(alloc.priority, {})
        for node, gpus in alloc.per_node.items():
            left = per_node.get(node, 0) + sign * gpus
            if left:
                per_node[node] = left
            else:
                per_node.pop(node, None)
        per_ns = self._pre_ns.setdefault((alloc.pool, alloc.namespace), {})
        per_ns[alloc.priority] = per_ns.get(alloc.priority, 0) + sign * alloc.gpus

    def allocate(self, alloc: Allocation) -> None:
        """Record ``alloc`` (its ``nodes`` must be set and have room).

        Raises:
            ValueError: Unknown pool, duplicate key, wrong node count or a node without room.
        """
        if alloc.pool not in self.pools:
            raise ValueError(f"allocation {alloc.key!r}: unknown pool {alloc.pool!r}; known: {', '.join(self.pools)}")
        if alloc.key in self.allocations:
            raise ValueError(f"allocation {alloc.key!r} is already recorded")
        if alloc.gpus_per_replica > 0 and len(alloc.nodes) != alloc.replicas:
            raise ValueError(f"allocation {alloc.key!r}: {len(alloc.nodes)} nodes for {alloc.replicas} replicas")
        if alloc.gpus_per_replica > 0:
            for node in alloc.nodes:
                if not 0 <= node < self.pools[alloc.pool].nodes:
                    raise ValueError(f"allocation {alloc.key!r}: node {node} is not in pool {alloc.pool!r}")
            for node in alloc.nodes:
                self._take(alloc.pool, node, alloc.gpus_per_replica)
        self.allocations[alloc.key] = alloc
        self._by_pool[alloc.pool][alloc.key] = alloc
        slot = (alloc.pool, alloc.namespace)
        self._ns_used[slot] = self._ns_used.get(slot, 0) + alloc.gpus
        bisect.insort(self._ends[alloc.pool], _end_entry(alloc))
        if alloc.preemptible:
            by_prio = self._preemptible[alloc.pool]
            by_prio[alloc.priority] = by_prio.get(alloc.priority, 0) + alloc.gpus
            bisect.insort(self._victims[alloc.pool], _victim_entry(alloc))
            self._count_preemptible(alloc, 1)

    def release(self, key: str) -> Allocation:
        """Free the GPUs of allocation ``key`` and return it.

        Raises:
            KeyError: No such allocation.
        """
        alloc = self.allocations.pop(key)
        del self._by_pool[alloc.pool][key]
        if alloc.gpus_per_replica > 0:
            for node in alloc.nodes:
                self._take(alloc.pool, node, -alloc.gpus_per_replica)
        slot = (alloc.pool, alloc.namespace)
        self._ns_used[slot] -= alloc.gpus
        if alloc.preemptible:
            self._preemptible[alloc.pool][alloc.priority] -= alloc.gpus
            victims = self._victims[alloc.pool]
            del victims[bisect.bisect_left(victims, _victim_entry(alloc))]
            self._count_preemptible(alloc, -1)
        ends = self._ends[alloc.pool]
        del ends[bisect.bisect_left(ends, _end_entry(alloc))]
        return alloc
