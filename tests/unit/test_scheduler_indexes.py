"""The scheduler's incremental indexes give the answers of the plain algorithms they replace.

``select_victims`` keeps a running count of freed slots instead of rebuilding a histogram
per trial, and walks a sorted index of preemptible work instead of sorting every
allocation; ``ClusterState.copy`` replaces a rebuild; the control plane reads decisions off
one plan per pass. Each is checked here against the plain computation on random clusters.
"""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from corral.api.v1alpha1 import GPUPool, GPUPoolSpec, ObjectMeta
from corral.control._plan import decide, queue_plan
from corral.scheduler import Allocation, ClusterState, PlacementRequest, PoolState, Shape, place, pools_from
from corral.scheduler._queue import select_victims

GIB = 1024**3


def _reference_victims(
    state: ClusterState,
    pool: str,
    *,
    replicas: int,
    gpus_per_replica: int,
    priority: int,
    namespace: str,
    quota: int | None,
) -> tuple[Allocation, ...] | None:
    """The plain greedy: sort all candidates, rebuild the free histogram for every trial."""
    need = replicas * gpus_per_replica
    candidates = sorted(
        (a for a in state.pool_allocations(pool).values() if a.preemptible and a.priority < priority),
        key=lambda a: (a.priority, -a.seq, a.key),
    )
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
        return sum(hist[f] * (f // gpus_per_replica) for f in range(gpus_per_replica, gpn + 1)) >= replicas

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


def _busy_cluster(rng: random.Random) -> ClusterState:
    pool = PoolState("p", "nvidia-a100-80gb", 8, 80 * GIB, 12, Decimal("1"), quotas={"team-a": 40})
    state = ClusterState([pool])
    seq = 0
    while state.free_gpus("p") > rng.randrange(0, 12):
        g = rng.choice([1, 1, 2, 4])
        replicas = rng.choice([1, 1, 2, 3])
        nodes = state.pick_nodes("p", replicas, g, rng.choice(["binpack", "spread", "first"]))
        if nodes is None:
            break
        seq += 1
        state.allocate(
            Allocation(
                key=f"team-{'ab'[seq % 2]}/w{seq}",
                namespace=f"team-{'ab'[seq % 2]}",
                pool="p",
                replicas=replicas,
                gpus_per_replica=g,
                nodes=nodes,
                priority=rng.choice([0, 0, 10, 50]),
                preemptible=rng.random() < 0.7,
                seq=rng.randrange(1000),
            )
        )
    return state


@pytest.mark.parametrize("seed", range(40))
def test_select_victims_matches_the_plain_greedy(seed: int) -> None:
    rng = random.Random(seed)
    state = _busy_cluster(rng)
    for _ in range(25):
        args = {
            "replicas": rng.choice([1, 2, 3, 4]),
            "gpus_per_replica": rng.choice([1, 2, 4, 8]),
            "priority": rng.choice([10, 50, 100]),
            "namespace": rng.choice(["team-a", "team-b"]),
        }
        quota = 40 if args["namespace"] == "team-a" else None
        got = select_victims(state, "p", quota=quota, **args)  # type: ignore[arg-type]
        want = _reference_victims(state, "p", quota=quota, **args)  # type: ignore[arg-type]
        assert got == want, args


def test_copy_is_independent_and_complete() -> None:
    state = _busy_cluster(random.Random(3))
    twin = state.copy()
    assert set(vars(twin)) == set(vars(state))  # a field added to ClusterState must be copied too
    victim = next(a for a in state.allocations.values() if a.preemptible)
    before = (
        state.free_gpus("p"),
        state.free_histogram("p"),
        dict(state.allocations),
        list(state.preemptible_in_order("p", 1000)),
        state.preemptible_by_node("p", 1000),
    )
    twin.release(victim.key)
    after = (
        state.free_gpus("p"),
        state.free_histogram("p"),
        dict(state.allocations),
        list(state.preemptible_in_order("p", 1000)),
        state.preemptible_by_node("p", 1000),
    )
    assert after == before
    assert twin.free_gpus("p") == state.free_gpus("p") + victim.gpus
    assert victim not in list(twin.preemptible_in_order("p", 1000))


def _gpupool(name: str, accelerator: str, gpus_per_node: int, nodes: int, price: str) -> GPUPool:
    return GPUPool(
        metadata=ObjectMeta(name=name),
        spec=GPUPoolSpec(
            accelerator_type=accelerator,
            gpus_per_node=gpus_per_node,
            gpu_memory="80Gi",
            max_nodes=nodes,
            price_per_gpu_hour=price,
        ),
    )


@pytest.mark.parametrize("seed", range(8))
def test_plan_gives_every_queued_request_its_place_decision(seed: int) -> None:
    rng = random.Random(seed)
    pools = (_gpupool("a", "nvidia-a100-80gb", 8, 3, "3.67"), _gpupool("h", "nvidia-h100-80gb", 8, 2, "9.80"))
    allocations = tuple(
        Allocation(
            f"team-z/run{i}",
            "team-z",
            "ah"[i % 2],  # three on a (at most 24 of its 24 GPUs), two on h (8 of 16)
            1,
            rng.choice([4, 8]) if i % 2 == 0 else 4,
            priority=rng.choice([0, 20]),
            preemptible=rng.random() < 0.6,
            seq=i,
        )
        for i in range(5)
    )
    queue = tuple(
        PlacementRequest(
            key=f"team-a/q{i}",
            namespace="team-a",
            shapes=(Shape(rng.choice([1, 2, 4, 8]), 40 * GIB),),
            replicas=rng.choice([1, 2]),
            kind=rng.choice(["FineTuneJob", "ModelDeployment"]),
            priority=rng.choice([0, 50, 100]),
            seq=rng.randrange(100),
            flops=1e18,
        )
        for i in range(12)
    )
    plan = queue_plan(pools, allocations, queue)
    assert set(plan) == {r.key for r in queue}
    for request in queue:
        fresh = place(request, pools_from(pools), allocations, queue)
        assert plan[request.key][1] == fresh
        assert decide(request, pools, allocations, queue) == fresh
    # A request that is not queued as it is (new, or changed) is placed afresh.
    changed = PlacementRequest(
        key=queue[0].key, namespace="team-a", shapes=(Shape(1, 10 * GIB),), priority=1000, flops=1e18
    )
    assert decide(changed, pools, allocations, queue) == place(changed, pools_from(pools), allocations, queue)
