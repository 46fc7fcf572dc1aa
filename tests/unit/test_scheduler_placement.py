"""Placement: cheapest pool, pins, gang admission, quotas, priority + FIFO, preemption, determinism."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal

from corral.scheduler import Allocation, PlacementRequest, PoolState, Scheduler, Shape, place
from corral.scheduler._cluster import ClusterState

GIB = 1024**3


def pools() -> list[PoolState]:
    return [
        PoolState(
            "a100-ondemand", "nvidia-a100-80gb", 8, 80 * GIB, 4, Decimal("3.67"), quotas={"team-a": 16, "team-b": 8}
        ),
        PoolState("a100-spot", "nvidia-a100-80gb", 8, 80 * GIB, 8, Decimal("1.47"), spot=True),
        PoolState("h100", "nvidia-h100-80gb", 8, 80 * GIB, 2, Decimal("12.00")),  # dearer per FLOP than A100
        PoolState("l4", "nvidia-l4", 1, 24 * GIB, 20, Decimal("0.71")),
    ]


def job(name: str = "ft", *, workers: int = 8, gib: float = 40, ns: str = "team-a", **kw: object) -> PlacementRequest:
    fields: dict[str, object] = {"flops": 1e18, "preemptible": False}
    fields.update(kw)
    return PlacementRequest(
        key=f"{ns}/{name}",
        namespace=ns,
        shapes=(Shape(1, int(gib * GIB)),),
        replicas=workers,
        kind="FineTuneJob",
        **fields,  # type: ignore[arg-type]
    )


def deployment(name: str = "dep", *, shapes: tuple[Shape, ...] | None = None, **kw: object) -> PlacementRequest:
    return PlacementRequest(
        key=f"team-a/{name}",
        namespace="team-a",
        shapes=shapes or (Shape(1, 30 * GIB),),
        replicas=1,
        kind="ModelDeployment",
        priority=100,
        **kw,  # type: ignore[arg-type]
    )


def fill(pool: str, gpus: int, *, key: str = "team-z/filler", ns: str = "team-z", **kw: object) -> Allocation:
    return Allocation(key=key, namespace=ns, pool=pool, replicas=gpus, gpus_per_replica=1, **kw)  # type: ignore[arg-type]


def test_cheapest_pool_that_fits() -> None:
    # Non-preemptible: spot is off limits; L4 is cheapest but 24 GiB < 40 GiB needed; A100
    # on-demand costs less per unit of work than H100 at these prices.
    decision = place(job(), pools())
    assert decision.admitted and decision.pool == "a100-ondemand"
    assert decision.gpus == 8 and len(set(decision.nodes)) >= 1
    # A preemptible fine-tune may use spot capacity, which is cheaper.
    assert place(job(preemptible=True), pools()).pool == "a100-spot"
    # Small enough for an L4: the cheapest of all.
    assert place(job(gib=10), pools()).pool == "l4"


def test_pinned_pool_and_accelerator_are_honoured() -> None:
    assert place(job(pool="h100"), pools()).pool == "h100"
    assert place(job(accelerator_type="nvidia-h100-80gb"), pools()).pool == "h100"
    pinned_spot = place(job(pool="a100-spot"), pools())  # pinning a spot pool is allowed
    assert pinned_spot.pool == "a100-spot"
    missing = place(job(pool="nope"), pools())
    assert not missing.admitted and missing.reason == "Unschedulable"
    assert "no GPUPool named nope" in missing.message


def test_gang_needs_all_workers_in_one_pool() -> None:
    spec = [p for p in pools() if p.name != "h100"]
    # 4 free in each A100 pool, 8 free L4s but the job needs 40 GiB per GPU.
    busy = [fill("a100-ondemand", 28, key="team-z/a"), fill("a100-spot", 60, key="team-z/b")]
    decision = place(job(preemptible=True), spec, busy)
    assert not decision.admitted
    assert decision.reason == "InsufficientCapacity"
    assert "needs 8 x nvidia-a100-80gb" in decision.message
    assert "a100-spot has 4 free" in decision.message
    assert "a100-ondemand has 4 free" in decision.message
    # Free one more node's worth in the spot pool: the whole gang goes there.
    busy[1] = fill("a100-spot", 56, key="team-z/b")
    decision = place(job(preemptible=True), spec, busy)
    assert decision.admitted and decision.pool == "a100-spot" and len(decision.nodes) == 8


def test_multi_gpu_replicas_stay_on_one_node() -> None:
    state_pools = [PoolState("a", "nvidia-a100-80gb", 8, 80 * GIB, 2, Decimal(1))]
    # 6 free on each node: 12 free GPUs, but two replicas of 8 cannot fit.
    busy = [Allocation("x/y", "x", "a", 2, 2, nodes=(0, 1))]
    req = PlacementRequest("team-a/tp", "team-a", (Shape(8, GIB),), replicas=1, kind="ModelDeployment")
    decision = place(req, state_pools, busy)
    assert not decision.admitted and "at most 6 on one node" in decision.message


def test_quota_enforced_with_explanation() -> None:
    busy = [fill("a100-ondemand", 16, key="team-a/other", ns="team-a")]
    decision = place(job(accelerator_type="nvidia-a100-80gb"), pools(), busy)
    assert not decision.admitted
    assert decision.reason == "QuotaExceeded"
    assert "namespace team-a uses 16 of 16 GPUs" in decision.message
    # A gang larger than the quota can never run there.
    never = place(job(workers=24, pool="a100-ondemand"), pools())
    assert never.reason == "Unschedulable" and "may hold at most 16 GPUs" in never.message
    # team-b (quota 8) is not affected by team-a's use.
    assert place(job(ns="team-b", accelerator_type="nvidia-a100-80gb"), pools(), busy).admitted


def test_priority_then_fifo() -> None:
    one_node = [PoolState("p", "nvidia-a100-80gb", 8, 80 * GIB, 1, Decimal(1))]
    first = job("first", seq=1)
    second = job("second", seq=2)
    urgent = job("urgent", seq=3, priority=10)
    state = ClusterState(one_node)
    decisions = {d.key: d for d in Scheduler(state).schedule([second, urgent, first])}
    assert decisions["team-a/urgent"].admitted
    assert not decisions["team-a/first"].admitted and not decisions["team-a/second"].admitted
    # Same priority: arrival order decides.
    state = ClusterState(one_node)
    decisions = {d.key: d for d in Scheduler(state).schedule([second, first])}
    assert decisions["team-a/first"].admitted and not decisions["team-a/second"].admitted
    # place() agrees: the earlier request in the queue takes the node.
    assert not place(second, one_node, queue=[first]).admitted
    assert place(first, one_node, queue=[second]).admitted


def test_blocked_gang_reserves_its_pool_and_short_jobs_backfill() -> None:
    one_pool = [PoolState("p", "nvidia-a100-80gb", 8, 80 * GIB, 2, Decimal(1))]
    running = [fill("p", 8, key="team-z/running", expected_end=1000.0)]
    big = job("big", workers=16, seq=1)
    long_small = job("long", workers=2, seq=2, flops=1e30)  # would outlive the reservation
    short_small = job("short", workers=2, seq=3, flops=1e9)  # ends long before t=1000
    state = ClusterState(one_pool, running)
    decisions = {d.key: d for d in Scheduler(state).schedule([big, long_small, short_small], now=0.0)}
    assert not decisions["team-a/big"].admitted
    assert not decisions["team-a/long"].admitted
    assert "held for team-a/big" in decisions["team-a/long"].message
    assert decisions["team-a/short"].admitted


def test_deployment_preempts_preemptible_finetune_only() -> None:
    l4_only = [PoolState("l4", "nvidia-l4", 1, 24 * GIB, 2, Decimal("0.71"))]
    dep = deployment(shapes=(Shape(1, 20 * GIB),))
    preemptible = [
        Allocation("team-b/ft1", "team-b", "l4", 1, 1, nodes=(0,), priority=0, preemptible=True, seq=1),
        Allocation("team-b/ft2", "team-b", "l4", 1, 1, nodes=(1,), priority=0, preemptible=True, seq=2),
    ]
    decision = place(dep, l4_only, preemptible)
    assert decision.admitted and decision.reason == "Preempting"
    assert decision.preempt == ("team-b/ft2",)  # one victim is enough; the newest loses least work
    assert "preempting team-b/ft2" in decision.message
    protected = [replace(a, preemptible=False) for a in preemptible]
    blocked = place(dep, l4_only, protected)
    assert not blocked.admitted and blocked.preempt == ()
    # Equal priority never preempts.
    assert not place(replace(dep, priority=0), l4_only, preemptible).admitted


def test_scheduler_apply_releases_victims() -> None:
    l4_only = [PoolState("l4", "nvidia-l4", 1, 24 * GIB, 1, Decimal("0.71"))]
    state = ClusterState(l4_only, [Allocation("team-b/ft", "team-b", "l4", 1, 1, preemptible=True)])
    sched = Scheduler(state)
    (decision,) = sched.schedule([deployment(shapes=(Shape(1, 20 * GIB),))])
    assert decision.preempt == ("team-b/ft",)
    assert "team-b/ft" not in state.allocations and "team-a/dep" in state.allocations
    assert state.free_gpus("l4") == 0


def test_deployment_widens_when_cheaper() -> None:
    # 30 GiB per GPU on one GPU does not fit an L4; two L4s at 16 GiB each do, and cost
    # 2 x 0.71 < 3.67 for an A100.
    dep = deployment(shapes=(Shape(1, 30 * GIB), Shape(2, 16 * GIB)))
    two_l4 = [PoolState("l4x4", "nvidia-l4", 4, 24 * GIB, 4, Decimal("0.71")), *pools()[:1]]
    decision = place(dep, two_l4)
    assert decision.pool == "l4x4" and decision.gpus_per_replica == 2
    assert decision.usd_per_hour == Decimal("1.42")
    # Baselines stick to the spec's shape.
    assert place(dep, two_l4, policy="first-fit").pool == "a100-ondemand"


def test_spot_is_for_preemptible_finetunes() -> None:
    spot_only = [p for p in pools() if p.spot]
    decision = place(deployment(), spot_only)
    assert decision.reason == "Unschedulable"
    assert "spot capacity is for preemptible fine-tunes" in decision.message


def test_decisions_are_deterministic() -> None:
    rng = random.Random(3)
    reqs = [
        job(
            f"j{i}",
            workers=rng.choice([1, 2, 4, 8]),
            seq=i,
            priority=rng.choice([0, 5]),
            preemptible=rng.random() < 0.5,
        )
        for i in range(40)
    ]
    first = [(d.key, d.admitted, d.pool, d.nodes, d.message) for d in Scheduler(ClusterState(pools())).schedule(reqs)]
    shuffled = reqs[:]
    rng.shuffle(shuffled)
    second = [
        (d.key, d.admitted, d.pool, d.nodes, d.message) for d in Scheduler(ClusterState(pools())).schedule(shuffled)
    ]
    assert first == second
    assert place(reqs[5], pools(), queue=reqs) == place(reqs[5], pools(), queue=list(reversed(reqs)))


def test_condition_and_placement_blocks() -> None:
    busy = [fill("a100-ondemand", 16, key="team-a/other", ns="team-a")]
    decision = place(job(accelerator_type="nvidia-a100-80gb"), pools(), busy)
    condition = decision.condition(observed_generation=3)
    assert condition.type == "Admitted" and condition.status == "False" and condition.reason == "QuotaExceeded"
    assert "team-a uses 16 of 16" in condition.message
    assert decision.placement().gpus == 0
    assert "Admitted: no (QuotaExceeded)" in decision.describe()
    ok = place(job(), pools())
    placement = ok.placement()
    assert placement.pool == "a100-ondemand" and placement.gpus == 8 and placement.gpus_per_replica == 1
    assert ok.condition().status == "True"


def test_cpu_requests_need_no_pool() -> None:
    req = PlacementRequest("team-a/cpu", "team-a", (Shape(0, GIB),), replicas=2)
    assert place(req, pools()).admitted
