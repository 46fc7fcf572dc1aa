"""Placement: which pool, how many GPUs, which nodes, and whom to preempt.

A :class:`PlacementRequest` is a gang: ``replicas`` replicas of ``gpus_per_replica`` GPUs,
each replica on one node, all in one pool, all or nothing. It lists one or more
:class:`Shape` s (GPUs per replica and the memory each GPU then needs, from the
estimator); a deployment may list wider tensor-parallel shapes the scheduler can pick
when they are cheaper or when the narrow one does not fit.

Corral's policy (``policy="corral"``):

1. Pools the request may ever use: the pinned pool or accelerator type, spot only for
   preemptible fine-tunes (or when pinned), enough memory per GPU, enough GPUs per node,
   a large enough pool and namespace quota.
2. Among them, the lowest cost: GPU-hours x price for a fine-tune (GPU-hours from its
   FLOPs and the pool's accelerator), GPUs x price per hour for a deployment.
3. The first such pool where the gang fits now, the namespace's quota allows it and no
   earlier blocked request holds a reservation (unless this one is expected to end before
   that reservation could start). Nodes: fullest first (bin-packing).
4. Otherwise, when it outranks preemptible work: the pool where preempting the fewest
   GPUs makes it fit. Otherwise it waits, with a message saying what it waits for.

``first-fit`` and ``spread`` are the baselines of ``bench/scheduler_sim.py``: arrival
order, pools in declared order, first node that fits, no preemption; and Kubernetes'
default (priority then arrival, the emptiest pool and node, preemption).

Everything here is a function of its inputs: no clocks, no environment, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from ..api.v1alpha1.common import Condition, Placement
from ._accelerators import GIB
from ._cluster import Allocation, ClusterState, NodePolicy, PoolState
from ._queue import PendingQueue, Reservation, order_key, select_victims, shadow_time

__all__ = ["Decision", "PlacementRequest", "Policy", "Scheduler", "Shape", "place"]

Policy = Literal["corral", "first-fit", "spread"]
_POLICIES = ("corral", "first-fit", "spread")


@dataclass(frozen=True)
class Shape:
    """One way to run a replica: GPUs per replica and the bytes each of those GPUs needs."""

    gpus_per_replica: int
    memory_per_gpu: int

    def __post_init__(self) -> None:
        if self.gpus_per_replica < 0 or self.memory_per_gpu < 0:
            raise ValueError(
                f"Shape needs gpus_per_replica >= 0 and memory_per_gpu >= 0, got "
                f"{self.gpus_per_replica} and {self.memory_per_gpu}"
            )


@dataclass(frozen=True)
class PlacementRequest:
    """A fine-tune or deployment waiting for GPUs.

    Attributes:
        key: ``namespace/name``, unique.
        namespace: Namespace charged (quotas).
        shapes: Ways to run one replica, preferred first (the spec's own shape first).
        replicas: Workers (fine-tune) or replicas (deployment) that must all fit.
        kind: FineTuneJob or ModelDeployment.
        priority: Higher goes first and may preempt lower preemptible work.
        seq: Arrival order (FIFO within a priority).
        pool: Pinned pool, or None.
        accelerator_type: Required accelerator type, or None.
        preemptible: May be preempted (and may use spot pools).
        flops: Training FLOPs in total (None for deployments, or when the data size is unknown).
        efficiency: Share of peak x MFU kept (strategy overhead, QLoRA slowdown); scales time.
    """

    key: str
    namespace: str
    shapes: tuple[Shape, ...]
    replicas: int = 1
    kind: str = "FineTuneJob"
    priority: int = 0
    seq: int = 0
    pool: str | None = None
    accelerator_type: str | None = None
    preemptible: bool = False
    flops: float | None = None
    efficiency: float = 1.0

    def __post_init__(self) -> None:
        if not self.shapes:
            raise ValueError(f"request {self.key!r} needs at least one shape")
        if self.replicas < 1:
            raise ValueError(f"request {self.key!r}: replicas must be >= 1, got {self.replicas}")
        if not 0 < self.efficiency <= 1:
            raise ValueError(f"request {self.key!r}: efficiency must be in (0, 1], got {self.efficiency}")

    @property
    def is_training(self) -> bool:
        """True for a fine-tune."""
        return self.kind == "FineTuneJob"


@dataclass(frozen=True)
class Decision:
    """The scheduler's answer for one request.

    Attributes:
        key: The request.
        admitted: True when it may start (after ``preempt`` are stopped).
        reason: CamelCase reason for the ``Admitted`` condition.
        message: What a person can act on.
        pool: Chosen pool.
        accelerator_type: Its accelerator.
        replicas: Replicas placed.
        gpus_per_replica: GPUs of each replica (may be wider than the spec's for a deployment).
        nodes: Node index of each replica in the pool.
        preempt: Keys of the allocations to preempt first.
        expected_seconds: Expected run time of a fine-tune (None when unknown or serving).
        cost_usd: Expected cost of a fine-tune.
        usd_per_hour: What the placement costs per hour.
        details: One line per pool considered (for ``corral describe``).
    """

    key: str
    admitted: bool
    reason: str
    message: str
    pool: str | None = None
    accelerator_type: str | None = None
    replicas: int = 0
    gpus_per_replica: int = 0
    nodes: tuple[int, ...] = ()
    preempt: tuple[str, ...] = ()
    expected_seconds: float | None = None
    cost_usd: Decimal | None = None
    usd_per_hour: Decimal | None = None
    details: tuple[str, ...] = field(default_factory=tuple)

    @property
    def gpus(self) -> int:
        """GPUs placed in total."""
        return self.replicas * self.gpus_per_replica

    def condition(self, observed_generation: int | None = None) -> Condition:
        """The ``Admitted`` condition for the object's status."""
        return Condition(
            type="Admitted",
            status="True" if self.admitted else "False",
            reason=self.reason,
            message=self.message,
            observed_generation=observed_generation,
        )

    @property
    def holds(self) -> bool:
        """True when it may take its GPUs now: admitted, with nobody left to preempt first."""
        return self.admitted and not self.preempt

    def placement(self) -> Placement:
        """The ``status.placement`` block (no GPUs held while victims still have to stop)."""
        return Placement(
            pool=self.pool,
            accelerator_type=self.accelerator_type,
            replicas=self.replicas if self.holds else 0,
            gpus_per_replica=self.gpus_per_replica if self.holds else 0,
            gpus=self.gpus if self.holds else 0,
            message=self.message,
        )

    def describe(self) -> str:
        """Multi-line text for ``corral describe``: the message, then one line per pool."""
        lines = [f"Admitted: {'yes' if self.admitted else 'no'} ({self.reason})", f"  {self.message}"]
        if self.preempt:
            lines.append(f"  preempts: {', '.join(self.preempt)}")
        lines += [f"  - {line}" for line in self.details]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Candidate:
    pool: PoolState
    shape: Shape
    seconds: float | None
    cost: float  # ordering key: USD for the whole fine-tune, or USD per hour for serving / unknown work


def _gib(value: int) -> str:
    return f"{value / GIB:.1f} GiB"


def _money(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


class Scheduler:
    """Places requests on a :class:`ClusterState` and records what it admitted.

    Args:
        state: The cluster; admitted decisions are applied to it by :meth:`schedule`.
        policy: ``corral`` (default) or a baseline: ``first-fit``, ``spread``.

    Raises:
        ValueError: Unknown policy.
    """

    def __init__(self, state: ClusterState, policy: Policy = "corral") -> None:
        if policy not in _POLICIES:
            raise ValueError(f"policy must be one of {', '.join(_POLICIES)}; got {policy!r}")
        self.state = state
        self.policy: Policy = policy
        node_policies: dict[str, NodePolicy] = {"corral": "binpack", "first-fit": "first", "spread": "spread"}
        self._node_policy = node_policies[policy]
        self._static: dict[str, tuple[list[_Candidate], list[str]]] = {}

    # -- static eligibility ---------------------------------------------------------------
    def candidates(self, req: PlacementRequest) -> tuple[list[_Candidate], list[str]]:
        """Pools ``req`` could ever use, cheapest first, and why the others cannot (cached per key)."""
        cached = self._static.get(req.key)
        if cached is not None:
            return cached
        shapes = req.shapes if self.policy == "corral" else req.shapes[:1]
        found: list[_Candidate] = []
        excluded: list[str] = []
        for pool in self.state.pools.values():
            why = self._exclusion(req, pool)
            if why:
                excluded.append(f"{pool.name}: {why}")
                continue
            best: _Candidate | None = None
            first_reason = ""
            for shape in shapes:
                reason = self._shape_reason(req, pool, shape)
                if reason:
                    first_reason = first_reason or reason
                    continue
                cand = self._cost(req, pool, shape)
                if best is None or cand.cost < best.cost:
                    best = cand
            if best is None:
                excluded.append(f"{pool.name}: {first_reason}")
            else:
                found.append(best)
        if self.policy == "corral":
            found.sort(key=lambda c: (c.cost, c.seconds or 0.0, c.pool.name))
        self._static[req.key] = (found, excluded)
        return found, excluded

    def forget(self, key: str) -> None:
        """Drop cached eligibility of ``key`` (call when its spec changes)."""
        self._static.pop(key, None)

    @staticmethod
    def _exclusion(req: PlacementRequest, pool: PoolState) -> str:
        if req.pool is not None and pool.name != req.pool:
            return f"not the pinned pool {req.pool}"
        if req.accelerator_type is not None and pool.accelerator_type != req.accelerator_type:
            return f"has {pool.accelerator_type}, {req.accelerator_type} asked for"
        if pool.spot and req.pool != pool.name and not (req.is_training and req.preemptible):
            return "spot capacity is for preemptible fine-tunes (pin the pool to use it anyway)"
        return ""

    @staticmethod
    def _shape_reason(req: PlacementRequest, pool: PoolState, shape: Shape) -> str:
        g = shape.gpus_per_replica
        if g == 0:
            return "" if pool.gpus_per_node == 0 else "CPU work does not run on a GPU pool"
        if pool.gpus_per_node < g:
            return f"nodes have {pool.gpus_per_node} GPUs, a replica needs {g} on one node"
        if shape.memory_per_gpu > pool.gpu_memory:
            return f"{_gib(pool.gpu_memory)} per GPU, {_gib(shape.memory_per_gpu)} needed"
        if pool.nodes * (pool.gpus_per_node // g) < req.replicas:
            return f"holds at most {pool.nodes * (pool.gpus_per_node // g)} replicas of {g} GPUs, {req.replicas} needed"
        quota = pool.quotas.get(req.namespace)
        if quota is not None and quota < req.replicas * g:
            return f"namespace {req.namespace} may hold at most {quota} GPUs here, {req.replicas * g} needed"
        return ""

    @staticmethod
    def _cost(req: PlacementRequest, pool: PoolState, shape: Shape) -> _Candidate:
        price = float(pool.price_per_gpu_hour)
        gpus = req.replicas * shape.gpus_per_replica
        acc = pool.accelerator
        if req.is_training:
            rate = acc.effective_flops * req.efficiency
            if req.flops is not None:
                seconds = req.flops / (max(gpus, 1) * rate)
                return _Candidate(pool, shape, seconds, max(gpus, 1) * seconds / 3600 * price)
            return _Candidate(pool, shape, None, price / rate * 1e15)
        return _Candidate(pool, shape, None, gpus * price)

    # -- one decision -----------------------------------------------------------------------
    def _need(self, req: PlacementRequest, shape: Shape, pool: PoolState) -> str:
        g = shape.gpus_per_replica
        acc = req.accelerator_type or pool.accelerator_type
        what = f"{req.replicas} x {acc}" if g == 1 else f"{req.replicas} replica(s) x {g} {acc} on one node each"
        return f"needs {what} ({_gib(shape.memory_per_gpu)} per GPU) in one pool"

    def _unschedulable(self, req: PlacementRequest, excluded: list[str]) -> str:
        if req.pool is not None and req.pool not in self.state.pools:
            return f"no GPUPool named {req.pool} (known: {', '.join(self.state.pools) or 'none'})"
        relevant = [line for line in excluded if ": not the pinned pool" not in line and " asked for" not in line]
        pinned = [f"pool {req.pool}" if req.pool else "", req.accelerator_type or ""]
        scope = " and ".join(p for p in pinned if p) or "any pool"
        if not relevant:
            return f"no pool matches {scope}"
        return f"no pool can ever hold it ({scope}): " + "; ".join(relevant)

    def _admit(
        self, req: PlacementRequest, cand: _Candidate, nodes: tuple[int, ...], victims: tuple[str, ...], why: str
    ) -> Decision:
        price = cand.pool.price_per_gpu_hour
        gpus = req.replicas * cand.shape.gpus_per_replica
        cost = None
        if cand.seconds is not None:
            cost = _money(gpus * cand.seconds / 3600 * float(price))
        g = cand.shape.gpus_per_replica
        what = f"{req.replicas} x {g} {cand.pool.accelerator_type}" if g else f"{req.replicas} replica(s) without GPUs"
        message = (
            f"placed {what} on {cand.pool.name} ({why}{', $' + str(cost) + ' expected' if cost is not None else ''})"
        )
        if victims:
            message += f"; preempting {', '.join(victims)}"
        return Decision(
            key=req.key,
            admitted=True,
            reason="Preempting" if victims else "Admitted",
            message=message,
            pool=cand.pool.name,
            accelerator_type=cand.pool.accelerator_type,
            replicas=req.replicas,
            gpus_per_replica=g,
            nodes=nodes,
            preempt=victims,
            expected_seconds=cand.seconds,
            cost_usd=cost,
            usd_per_hour=_money(gpus * float(price)),
        )

    def decide(
        self, req: PlacementRequest, reservations: dict[str, Reservation] | None = None, now: float = 0.0
    ) -> tuple[Decision, str | None]:
        """Decide for one request against the current state; changes nothing.

        Returns:
            The decision, and the pool it is blocked on by capacity (a reservation
            candidate), or None.
        """
        reservations = reservations or {}
        if all(s.gpus_per_replica == 0 for s in req.shapes[:1]) and req.pool is None:
            return (
                Decision(
                    key=req.key,
                    admitted=True,
                    reason="Admitted",
                    message="runs on CPUs; no GPUPool needed",
                    replicas=req.replicas,
                ),
                None,
            )
        cands, excluded = self.candidates(req)
        if not cands:
            return (
                Decision(
                    key=req.key,
                    admitted=False,
                    reason="Unschedulable",
                    message=self._unschedulable(req, excluded),
                    details=tuple(excluded),
                ),
                None,
            )
        state = self.state
        order = cands
        if self.policy == "spread":
            order = sorted(cands, key=lambda c: (-state.free_gpus(c.pool.name), c.pool.name))
        blocked: list[str] = []
        quota_only = True
        reserved_by: list[str] = []
        capacity_pool: str | None = None
        for cand in order:
            pool = cand.pool
            g = cand.shape.gpus_per_replica
            need = req.replicas * g
            quota = pool.quotas.get(req.namespace)
            used = state.namespace_used(pool.name, req.namespace)
            if quota is not None and used + need > quota:
                blocked.append(f"{pool.name}: namespace {req.namespace} uses {used} of {quota} GPUs")
                continue
            quota_only = False
            res = reservations.get(pool.name)
            if (
                res is not None
                and res.key != req.key
                and res.priority >= req.priority
                and (cand.seconds is None or now + cand.seconds > res.start)
            ):
                blocked.append(f"{pool.name}: held for {res.key}, queued ahead of it")
                reserved_by.append(res.key)
                continue
            nodes = state.pick_nodes(pool.name, req.replicas, g, self._node_policy)
            if nodes is not None:
                why = "cheapest pool that fits" if self.policy == "corral" else self.policy
                return self._admit(req, cand, nodes, (), why), None
            free = state.free_gpus(pool.name)
            largest = state.largest_free(pool.name)
            detail = f"{pool.name} has {free} free"
            if g > 1 or free >= need:
                detail += f" (at most {largest} on one node)"
            blocked.append(detail)
            if capacity_pool is None:
                capacity_pool = pool.name
        if self.policy != "first-fit":
            victims = self._preemption(req, order, reservations)
            if victims is not None:
                cand, keys, nodes = victims
                return self._admit(req, cand, nodes, keys, "preempting lower-priority preemptible work"), None
        if quota_only:
            reason = "QuotaExceeded"
        elif reserved_by and capacity_pool is None:
            reason = "WaitingForEarlierRequests"
        else:
            reason = "InsufficientCapacity"
        head = self._need(req, order[0].shape, order[0].pool)
        message = f"{head}; " + "; ".join(blocked)
        return (
            Decision(
                key=req.key,
                admitted=False,
                reason=reason,
                message=message,
                details=tuple(blocked + excluded),
            ),
            capacity_pool,
        )

    def _preemption(
        self, req: PlacementRequest, order: Sequence[_Candidate], reservations: dict[str, Reservation]
    ) -> tuple[_Candidate, tuple[str, ...], tuple[int, ...]] | None:
        best: tuple[int, int, _Candidate, tuple[Allocation, ...]] | None = None
        for rank, cand in enumerate(order):
            res = reservations.get(cand.pool.name)
            if res is not None and res.key != req.key and res.priority >= req.priority:
                continue
            chosen = select_victims(
                self.state,
                cand.pool.name,
                replicas=req.replicas,
                gpus_per_replica=cand.shape.gpus_per_replica,
                priority=req.priority,
                namespace=req.namespace,
                quota=cand.pool.quotas.get(req.namespace),
            )
            if chosen is None:
                continue
            lost = sum(v.gpus for v in chosen)
            if best is None or (lost, rank) < (best[0], best[1]):
                best = (lost, rank, cand, chosen)
        if best is None:
            return None
        _, _, cand, chosen = best
        # Pick nodes as if the victims were gone, then restore the state.
        released = [self.state.release(v.key) for v in chosen]
        try:
            nodes = self.state.pick_nodes(cand.pool.name, req.replicas, cand.shape.gpus_per_replica, self._node_policy)
        finally:
            for alloc in released:
                self.state.allocate(alloc)
        if nodes is None:  # pragma: no cover - select_victims checked the fit
            return None
        return cand, tuple(v.key for v in chosen), nodes

    # -- a scheduling pass --------------------------------------------------------------------
    def apply(self, req: PlacementRequest, decision: Decision, now: float = 0.0) -> list[Allocation]:
        """Record an admitted decision: release its victims, allocate its GPUs; returns the victims.

        Raises:
            ValueError: The decision was not admitted.
        """
        if not decision.admitted:
            raise ValueError(f"decision for {decision.key!r} was not admitted ({decision.reason})")
        victims = [self.state.release(key) for key in decision.preempt]
        if decision.pool is not None:
            end = None if decision.expected_seconds is None else now + decision.expected_seconds
            self.state.allocate(
                Allocation(
                    key=req.key,
                    namespace=req.namespace,
                    pool=decision.pool,
                    replicas=decision.replicas,
                    gpus_per_replica=decision.gpus_per_replica,
                    nodes=decision.nodes,
                    priority=req.priority,
                    preemptible=req.preemptible,
                    seq=req.seq,
                    expected_end=end,
                    kind=req.kind,
                )
            )
        return victims

    def schedule(
        self, pending: Iterable[PlacementRequest], now: float = 0.0, *, max_blocked: int | None = None
    ) -> list[Decision]:
        """One pass over the waiting requests: decide each in queue order and apply admissions.

        ``corral`` and ``spread`` go by priority then arrival; ``first-fit`` by arrival only.
        Under ``corral``, the first request blocked by capacity on a pool reserves it (see
        :mod:`corral.scheduler._queue`).

        Args:
            pending: The waiting requests, in any order.
            now: The caller's clock, compared with allocations' expected ends.
            max_blocked: Stop the pass after this many requests could not be admitted (the
                rest keep their previous decision); bounds a pass on a long queue. None: all.

        Returns:
            One decision per request examined, in the order they were decided.
        """
        ordered: Iterable[PlacementRequest]
        if self.policy == "first-fit":
            ordered = sorted(pending, key=lambda r: (r.seq, r.key))
        elif isinstance(pending, PendingQueue):
            ordered = pending  # already in priority-then-arrival order
        else:
            ordered = sorted(pending, key=order_key)
        reservations: dict[str, Reservation] = {}
        out: list[Decision] = []
        blocked = 0
        for req in ordered:
            if max_blocked is not None and blocked >= max_blocked:
                break
            decision, blocked_pool = self.decide(req, reservations, now)
            if decision.admitted:
                self.apply(req, decision, now)
            else:
                blocked += 1
            if (
                not decision.admitted
                and self.policy == "corral"
                and blocked_pool is not None
                and blocked_pool not in reservations
            ):
                cand = next(c for c in self.candidates(req)[0] if c.pool.name == blocked_pool)
                need = req.replicas * cand.shape.gpus_per_replica
                reservations[blocked_pool] = Reservation(
                    req.key, req.priority, need, shadow_time(self.state, blocked_pool, need, now)
                )
            out.append(decision)
        return out


def place(
    request: PlacementRequest,
    pools: Iterable[PoolState],
    allocations: Iterable[Allocation] = (),
    queue: Iterable[PlacementRequest] = (),
    *,
    now: float = 0.0,
    policy: Policy = "corral",
    state: ClusterState | None = None,
) -> Decision:
    """Decide where ``request`` goes, given the pools, what is placed and what else waits.

    Requests in ``queue`` ahead of ``request`` (higher priority, or same priority and
    earlier ``seq``) are decided first and take their share, exactly as a scheduling pass
    would; the answer for ``request`` is returned. Nothing is changed.

    Args:
        request: The request to decide.
        pools: The pools (``PoolState.from_gpupool`` builds them from ``GPUPool`` objects).
        allocations: What holds GPUs now.
        queue: Other waiting requests (``request`` itself is ignored if listed).
        now: The caller's clock, in seconds, for comparing with ``Allocation.expected_end``.
        policy: ``corral`` or a baseline.
        state: ``ClusterState(pools, allocations)`` built already (e.g. once per reconcile
            pass); it is copied, never changed, and ``pools``/``allocations`` are then unused.
    """
    scheduler = Scheduler(state.copy() if state is not None else ClusterState(pools, allocations), policy)

    def rank(r: PlacementRequest) -> tuple[int, int, str]:
        return (0, r.seq, r.key) if policy == "first-fit" else order_key(r)

    waiting: PendingQueue[PlacementRequest] = PendingQueue()
    for item in queue:
        if item.key != request.key and rank(item) < rank(request):
            waiting.add(item)
    waiting.add(request)
    for decision in scheduler.schedule(waiting, now):
        if decision.key == request.key:
            return decision
    raise AssertionError("unreachable: the request is in the pass")  # pragma: no cover
