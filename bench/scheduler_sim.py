"""Benchmark: Corral's placement against two baselines on a simulated week.

Cluster: 1,000 nodes (6,000 GPUs) in 6 pools - A100-40GB, A100-80GB on-demand and spot,
H100, L4 on-demand and spot - with per-namespace quotas on the on-demand A100-80GB and
H100 pools. Workload: 10,000 arrivals over 7 days (70% fine-tunes, 30% deployments),
models from 1B to 70B, LoRA/QLoRA/full, sizes and durations from Corral's estimator
(durations depend on the pool the job lands on; the "true" speed of each job deviates
from the estimate by a log-normal factor, sigma 0.15, so the scheduler's expected ends
are estimates, not oracles). Deployments live for a log-normal time (median 12 h).

Policies, replayed on the same workload in one run:

* ``corral``: cheapest pool that fits, bin-packing, priority + FIFO with reservations and
  EASY backfill, preemption of preemptible fine-tunes by higher priority; deployments may
  widen tensor parallelism.
* ``first-fit``: arrival order, pools in declared (alphabetical) order, first node that
  fits, no preemption.
* ``spread``: Kubernetes-default-like: priority then arrival, the pool and node with the
  most free GPUs (LeastAllocated), preemption of lower-priority preemptible work.

All three use gang admission (as with a coscheduling plugin), the same eligibility
(accelerator pins, memory per GPU, spot only for preemptible fine-tunes) and quotas.
Preempted fine-tunes lose the work since their last checkpoint (every 30 minutes).
Spot reclaims and node failures are not simulated.

The control plane does not keep a scheduler between decisions: each reconcile places one
object against the allocations and the queue of its snapshot. The last table measures that
path on a busy moment of the same cluster (1,000 nodes, the first 3,000 arrivals placed at
once, 300 of the rest waiting): ``place()`` built from scratch per object, against the
control plane's reuse within a pass (:mod:`corral.control._plan`: the cluster and the
queue's plan built once, then each waiting object reads its decision).

Usage::

    PYTHONPATH=platform python bench/scheduler_sim.py [--arrivals 10000] [--days 7] [--seed 7]

Prints a table and writes ``bench/results/scheduler_sim.json``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

from corral.scheduler import (  # noqa: E402
    ClusterState,
    ModelProfile,
    PendingQueue,
    PlacementRequest,
    PoolState,
    Scheduler,
    Shape,
    estimate_serving,
    estimate_training,
    get_accelerator,
)
from corral.scheduler._estimate import QLORA_SLOWDOWN, STRATEGY_EFFICIENCY  # noqa: E402

GIB = 1024**3
HOUR = 3600.0
CHECKPOINT_EVERY = 1800.0
MAX_BLOCKED = 32  # a pass stops after 32 requests it could not admit (all policies alike)
CADENCE = 60.0  # one scheduling pass per simulated minute at most, as a controller's resync batches events
NAMESPACES = [f"team-{i}" for i in range(8)]

POOLS = [
    PoolState("a100-40-ondemand", "nvidia-a100-40gb", 8, 40 * GIB, 100, Decimal("2.93")),
    PoolState(
        "a100-80-ondemand", "nvidia-a100-80gb", 8, 80 * GIB, 150, Decimal("3.67"), quotas={ns: 400 for ns in NAMESPACES}
    ),
    PoolState("a100-80-spot", "nvidia-a100-80gb", 8, 80 * GIB, 150, Decimal("1.47"), spot=True),
    PoolState(
        "h100-ondemand", "nvidia-h100-80gb", 8, 80 * GIB, 100, Decimal("9.80"), quotas={ns: 200 for ns in NAMESPACES}
    ),
    PoolState("l4-ondemand", "nvidia-l4", 4, 24 * GIB, 300, Decimal("0.71")),
    PoolState("l4-spot", "nvidia-l4", 4, 24 * GIB, 200, Decimal("0.28"), spot=True),
]

SIZES = {"1b": 1.24e9, "3b": 3.21e9, "7b": 6.74e9, "8b": 8.03e9, "13b": 13.0e9, "33b": 32.5e9, "70b": 70.6e9}


@dataclass
class Item:
    """One fine-tune or deployment of the workload."""

    request: PlacementRequest
    arrival: float
    flops: float = 0.0  # fine-tunes: total work
    speed: float = 1.0  # true speed / estimated speed
    lifetime: float = 0.0  # deployments: seconds it runs once admitted
    remaining: float = 0.0
    admitted_at: float | None = None
    first_admitted_at: float | None = None
    finished_at: float | None = None
    run_start: float = 0.0
    run_rate: float = 0.0
    pool: str | None = None
    gpus: int = 0
    cost: float = 0.0
    preemptions: int = 0
    epoch: int = 0  # bumps on preemption to invalidate the pending end event


def _choice(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def make_workload(arrivals: int, days: float, seed: int) -> list[Item]:
    """The synthetic workload (deterministic for a seed)."""
    rng = random.Random(seed)
    horizon = days * 24 * HOUR
    items: list[Item] = []
    # Arrivals follow the working day: intensity 1 + 0.8 sin(2 pi t / day), drawn by thinning.
    times: list[float] = []
    while len(times) < arrivals:
        t = rng.uniform(0, horizon)
        if rng.random() < (1 + 0.8 * math.sin(2 * math.pi * t / (24 * HOUR))) / 1.8:
            times.append(t)
    times.sort()
    a100 = get_accelerator("nvidia-a100-80gb")
    for seq, arrival in enumerate(times):
        ns = NAMESPACES[rng.randrange(len(NAMESPACES))]
        if rng.random() < 0.7:
            size = _choice(rng, {"1b": 0.15, "3b": 0.15, "7b": 0.15, "8b": 0.25, "13b": 0.12, "33b": 0.06, "70b": 0.12})
            big = size in ("33b", "70b")
            method = _choice(
                rng, {"lora": 0.5, "qlora": 0.35, "full": 0.15} if big else {"lora": 0.55, "qlora": 0.2, "full": 0.25}
            )
            profile = ModelProfile.from_catalog_params(SIZES[size], "llama")
            seq_len = rng.choice([1024, 2048, 4096])
            micro = rng.choice([1, 2, 4])
            ckpt = rng.random() < 0.7 or method == "full"
            # The user picks the fewest power-of-two workers whose memory fits an 80 GB GPU,
            # then sometimes asks for more to go faster.
            workers, strategy, est = 1, "ddp", None
            for w in (1, 2, 4, 8, 16, 32, 64):
                strat = "ddp" if w == 1 else ("fsdp" if method != "qlora" else "deepspeed-zero3")
                if method != "full" and w > 1 and rng.random() < 0.5:
                    strat = "ddp"
                est = estimate_training(
                    profile,
                    method=method,
                    strategy=strat,
                    workers=w,
                    micro_batch_size=micro,
                    max_seq_len=seq_len,
                    gradient_checkpointing=ckpt,
                    accelerator=a100,
                )
                if est.memory_per_gpu <= 78 * GIB:
                    workers, strategy = w, strat
                    break
            else:
                micro, seq_len = 1, 1024
                workers, strategy = 64, "fsdp"
            if rng.random() < 0.3 and workers < 8:
                workers *= 2
            est = estimate_training(
                profile,
                method=method,
                strategy=strategy,
                workers=workers,
                micro_batch_size=micro,
                max_seq_len=seq_len,
                gradient_checkpointing=ckpt,
                accelerator=a100,
            )
            tokens = min(max(rng.lognormvariate(math.log(9e8), 1.1), 4e7), 9e9) * rng.choice([1, 2, 3])
            if size in ("33b", "70b"):
                tokens /= 3
            tokens = min(tokens, 72 * HOUR * est.tokens_per_second)  # nobody plans a fine-tune over 2 days
            flops = est.flops_per_token * tokens
            efficiency = STRATEGY_EFFICIENCY[strategy] if workers > 1 else 1.0
            if method == "qlora":
                efficiency /= QLORA_SLOWDOWN
            priority = 50 if rng.random() < 0.15 else 0
            pin = None
            if rng.random() < 0.15:
                pin = rng.choice(["nvidia-a100-80gb", "nvidia-h100-80gb"])
            req = PlacementRequest(
                key=f"{ns}/ft-{seq}",
                namespace=ns,
                shapes=(Shape(1, est.memory_per_gpu),),
                replicas=workers,
                kind="FineTuneJob",
                priority=priority,
                seq=seq,
                accelerator_type=pin,
                preemptible=rng.random() < 0.6,
                flops=flops,
                efficiency=efficiency,
            )
            items.append(Item(req, arrival, flops=flops, speed=rng.lognormvariate(0, 0.15), remaining=flops))
        else:
            size = _choice(rng, {"1b": 0.1, "3b": 0.1, "7b": 0.15, "8b": 0.35, "13b": 0.1, "70b": 0.2})
            profile = ModelProfile.from_catalog_params(SIZES[size], "llama")
            ctx = rng.choice([2048, 4096, 8192])
            conc = rng.choice([8, 16, 32])
            adapters = rng.choice([0, 0, 2, 8])
            g0 = next(
                (
                    g
                    for g in (1, 2, 4, 8)
                    if estimate_serving(
                        profile,
                        gpus_per_replica=g,
                        max_context_length=ctx,
                        max_concurrent_sequences=conc,
                        adapters=adapters,
                    ).memory_per_gpu
                    <= 78 * GIB
                ),
                8,
            )
            shapes = tuple(
                Shape(
                    g,
                    estimate_serving(
                        profile,
                        gpus_per_replica=g,
                        max_context_length=ctx,
                        max_concurrent_sequences=conc,
                        adapters=adapters,
                    ).memory_per_gpu,
                )
                for g in (g0, 2 * g0, 4 * g0, 8 * g0)
                if g <= 8
            )
            req = PlacementRequest(
                key=f"{ns}/dep-{seq}",
                namespace=ns,
                shapes=shapes,
                replicas=rng.choice([1, 1, 2, 2, 3, 4]),
                kind="ModelDeployment",
                priority=50 if rng.random() < 0.1 else 100,
                seq=seq,
            )
            lifetime = min(max(rng.lognormvariate(math.log(16 * HOUR), 1.0), HOUR), 5 * 24 * HOUR)
            items.append(Item(req, arrival, lifetime=lifetime))
    return items


class TimedScheduler(Scheduler):
    """Scheduler that records how long each decision takes."""

    def __init__(self, state: ClusterState, policy: Any) -> None:
        super().__init__(state, policy)
        self.timings: list[float] = []

    def decide(self, req: PlacementRequest, reservations: Any = None, now: float = 0.0) -> Any:
        t0 = time.perf_counter()
        out = super().decide(req, reservations, now)
        self.timings.append(time.perf_counter() - t0)
        return out


@dataclass
class Result:
    policy: str
    metrics: dict[str, Any] = field(default_factory=dict)


def simulate(items_in: list[Item], policy: str, days: float) -> Result:
    """Replay the workload under ``policy``."""
    items = {it.request.key: replace(it) for it in items_in}
    state = ClusterState(POOLS)
    sched = TimedScheduler(state, policy)
    queue: PendingQueue[PlacementRequest] = PendingQueue()
    events: list[tuple[float, int, int, str, int]] = []  # (time, order, tiebreak, key, epoch)
    for n, it in enumerate(items.values()):
        heapq.heappush(events, (it.arrival, 1, n, it.request.key, 0))
    capacity = sum(p.capacity for p in POOLS)
    horizon = days * 24 * HOUR
    busy_area = 0.0
    busy_week = 0.0
    last_t = 0.0
    used = 0
    preemptions = 0
    frag_samples: list[tuple[int, int]] = []
    next_sample = 0.0
    counter = len(items)
    price = {p.name: float(p.price_per_gpu_hour) for p in POOLS}
    eff = {p.name: p.accelerator.effective_flops for p in POOLS}

    def stop_run(it: Item, now: float, preempted: bool) -> None:
        nonlocal used
        elapsed = now - it.run_start
        it.cost += it.gpus * elapsed / HOUR * price[it.pool or ""]
        if it.request.is_training:
            kept = math.floor(elapsed / CHECKPOINT_EVERY) * CHECKPOINT_EVERY if preempted else elapsed
            it.remaining = max(it.remaining - kept * it.run_rate, 0.0)
        used -= it.gpus
        it.pool = None

    def sample_fragmentation() -> None:
        waiting = list(queue)
        if not waiting:
            return
        min_g: dict[str, int] = {}
        for req in waiting:
            for cand in sched.candidates(req)[0]:
                g = cand.shape.gpus_per_replica
                name = cand.pool.name
                min_g[name] = min(min_g.get(name, 99), g)
        free_total = fragmented = 0
        for pool in POOLS:
            hist = state.free_histogram(pool.name)
            free = sum(f * n for f, n in enumerate(hist))
            g = min_g.get(pool.name)
            if g is None:  # nobody waiting can use this pool at all: idle, not fragmented
                continue
            usable = sum(n * (f // g) * g for f, n in enumerate(hist) if f >= g)
            free_total += free
            fragmented += free - usable
        frag_samples.append((fragmented, free_total))

    wall0 = time.perf_counter()
    while events:
        now = events[0][0]
        while next_sample <= now and next_sample <= horizon:
            sample_fragmentation()
            next_sample += HOUR
        busy_area += used * (now - last_t)
        if last_t < horizon:
            busy_week += used * (min(now, horizon) - last_t)
        last_t = now
        window_end = now + CADENCE
        while events and events[0][0] <= window_end:
            if events[0][0] > now:
                busy_area += used * (events[0][0] - now)
                if now < horizon:
                    busy_week += used * (min(events[0][0], horizon) - now)
                now = last_t = events[0][0]
            _, kind, _, key, epoch = heapq.heappop(events)
            it = items[key]
            if kind == 1:  # arrival
                queue.add(it.request)
            elif epoch == it.epoch and it.pool is not None:  # end of a run
                stop_run(it, now, preempted=False)
                state.release(key)
                it.finished_at = now
        if not len(queue):
            continue
        for decision in sched.schedule(queue, now, max_blocked=MAX_BLOCKED):
            if not decision.admitted:
                continue
            it = items[decision.key]
            queue.remove(decision.key)
            for victim_key in decision.preempt:
                victim = items[victim_key]
                stop_run(victim, now, preempted=True)
                victim.epoch += 1
                victim.preemptions += 1
                preemptions += 1
                vreq = replace(victim.request, flops=victim.remaining)
                victim.request = vreq
                sched.forget(victim_key)
                queue.add(vreq)
            it.pool = decision.pool
            it.gpus = decision.gpus
            it.run_start = now
            it.admitted_at = now
            if it.first_admitted_at is None:
                it.first_admitted_at = now
            used += it.gpus
            if it.request.is_training:
                rate = it.gpus * eff[decision.pool or ""] * it.request.efficiency * it.speed
                it.run_rate = rate
                end = now + it.remaining / rate
            else:
                end = now + it.lifetime
            counter += 1
            heapq.heappush(events, (end, 0, counter, it.request.key, it.epoch))
    wall = time.perf_counter() - wall0

    end_time = last_t
    waits: dict[int, list[float]] = {}
    for it in items.values():
        start = it.first_admitted_at if it.first_admitted_at is not None else end_time
        waits.setdefault(it.request.priority, []).append((start - it.arrival) / HOUR)
    train_cost = sum(it.cost for it in items.values() if it.request.is_training)
    serve_cost = sum(it.cost for it in items.values() if not it.request.is_training)
    timings = sorted(sched.timings)
    frag = [f for f, _ in frag_samples]
    frag_share = [f / t for f, t in frag_samples if t]
    metrics: dict[str, Any] = {
        "gpu_utilisation_week": busy_week / (capacity * horizon),
        "gpu_utilisation_to_makespan": busy_area / (capacity * end_time),
        "makespan_hours": end_time / HOUR,
        "fragmented_gpus_mean": statistics.fmean(frag) if frag else 0.0,
        "fragmented_share_of_free": statistics.fmean(frag_share) if frag_share else 0.0,
        "cost_usd_total": train_cost + serve_cost,
        "cost_usd_training": train_cost,
        "cost_usd_serving": serve_cost,
        "preemptions": preemptions,
        "unfinished": sum(1 for it in items.values() if it.request.is_training and it.finished_at is None),
        "never_admitted": sum(1 for it in items.values() if it.first_admitted_at is None),
        "wait_hours": {
            str(p): {"mean": statistics.fmean(w), "p95": sorted(w)[int(0.95 * (len(w) - 1))], "n": len(w)}
            for p, w in sorted(waits.items(), reverse=True)
        },
        "decisions": len(timings),
        "decision_us_mean": 1e6 * statistics.fmean(timings) if timings else 0.0,
        "decision_us_p99": 1e6 * timings[int(0.99 * (len(timings) - 1))] if timings else 0.0,
        "scheduler_ms_per_job": 1e3 * sum(timings) / len(items),
        "sim_wall_seconds": wall,
    }
    return Result(policy, metrics)


def _gpupools() -> list[Any]:
    """The simulated pools as ``GPUPool`` objects, as the control plane reads them."""
    from corral.api.v1alpha1 import GPUPool, GPUPoolSpec, ObjectMeta

    return [
        GPUPool(
            metadata=ObjectMeta(name=p.name),
            spec=GPUPoolSpec.model_validate(
                {
                    "acceleratorType": p.accelerator_type,
                    "gpusPerNode": p.gpus_per_node,
                    "gpuMemory": f"{p.gpu_memory // GIB}Gi",
                    "maxNodes": p.nodes,
                    "pricePerGpuHour": str(p.price_per_gpu_hour),
                    "spot": p.spot,
                    "quotas": [{"namespace": ns, "maxGpus": q} for ns, q in p.quotas.items()],
                }
            ),
        )
        for p in POOLS
    ]


def control_plane_timing(items: list[Item], placed: int = 3000, waiting: int = 300) -> dict[str, Any]:
    """Per-object placement time of the control plane's path, from scratch and with the pass's plan reused."""
    from corral.control._plan import decide
    from corral.scheduler import place, pools_from

    state = ClusterState(POOLS)
    requests = [it.request for it in items[:placed]]
    admitted = {d.key for d in Scheduler(state).schedule(requests) if d.admitted}
    # Status records pools and GPU counts, not nodes: the control plane rebuilds the layout.
    allocations = tuple(replace(a, nodes=()) for a in state.allocations.values())
    queue = tuple(r for r in requests if r.key not in admitted)[:waiting]
    pools = _gpupools()
    assert [p.name for p in pools_from(pools)] == [p.name for p in POOLS]

    def times(fn: Any) -> list[float]:
        out = []
        for req in queue:
            t0 = time.perf_counter()
            fn(req)
            out.append(time.perf_counter() - t0)
        return out

    scratch = times(lambda r: place(r, POOLS, allocations, queue))
    first = time.perf_counter()
    decide(queue[0], pools, allocations, queue)  # the pass's first object builds the cluster and the plan
    first_ms = 1e3 * (time.perf_counter() - first)
    reused = times(lambda r: decide(r, pools, allocations, queue))
    same = all(decide(r, pools, allocations, queue) == place(r, POOLS, allocations, queue) for r in queue[:20])

    def stats(ts: list[float]) -> dict[str, float]:
        ts = sorted(ts)
        return {"mean_ms": 1e3 * statistics.fmean(ts), "p99_ms": 1e3 * ts[int(0.99 * (len(ts) - 1))]}

    return {
        "allocations": len(allocations),
        "waiting": len(queue),
        "from_scratch": stats(scratch),
        "pass_first_object_ms": first_ms,
        "pass_reused": stats(reused),
        "same_decisions": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arrivals", type=int, default=10_000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--policies", default="corral,first-fit,spread")
    args = parser.parse_args()

    t0 = time.perf_counter()
    items = make_workload(args.arrivals, args.days, args.seed)
    gen_s = time.perf_counter() - t0
    capacity = sum(p.capacity for p in POOLS)
    a100 = get_accelerator("nvidia-a100-80gb").effective_flops
    offered = sum(
        (
            it.flops / (a100 * it.request.efficiency)
            if it.request.is_training
            else it.lifetime * it.request.shapes[0].gpus_per_replica * it.request.replicas
        )
        for it in items
    ) / (capacity * args.days * 24 * HOUR)
    n_train = sum(1 for it in items if it.request.is_training)
    print(
        f"workload: {len(items)} arrivals ({n_train} fine-tunes, {len(items) - n_train} deployments) over "
        f"{args.days:g} days on {sum(p.nodes for p in POOLS)} nodes / {capacity} GPUs in {len(POOLS)} pools; "
        f"offered load {offered:.0%} of GPU-time (in A100-80GB GPU-hours); generated in {gen_s:.1f}s"
    )

    results = [simulate(items, policy, args.days) for policy in args.policies.split(",")]
    prios = sorted({p for r in results for p in r.metrics["wait_hours"]}, key=int, reverse=True)
    header = ["metric", *[r.policy for r in results]]
    rows: list[list[str]] = [
        ["GPU utilisation (week)", *[f"{r.metrics['gpu_utilisation_week']:.1%}" for r in results]],
        ["GPU utilisation (to makespan)", *[f"{r.metrics['gpu_utilisation_to_makespan']:.1%}" for r in results]],
        ["makespan (h)", *[f"{r.metrics['makespan_hours']:.0f}" for r in results]],
        ["fragmented free GPUs (mean)", *[f"{r.metrics['fragmented_gpus_mean']:.0f}" for r in results]],
        ["fragmented share of free GPUs", *[f"{r.metrics['fragmented_share_of_free']:.1%}" for r in results]],
        ["cost total (USD)", *[f"{r.metrics['cost_usd_total']:,.0f}" for r in results]],
        ["  training (USD)", *[f"{r.metrics['cost_usd_training']:,.0f}" for r in results]],
        ["  serving (USD)", *[f"{r.metrics['cost_usd_serving']:,.0f}" for r in results]],
        ["preemptions", *[str(r.metrics["preemptions"]) for r in results]],
    ]
    for p in prios:
        rows.append(
            [
                f"wait prio {p} mean / p95 (h)",
                *[
                    f"{r.metrics['wait_hours'][p]['mean']:.2f} / {r.metrics['wait_hours'][p]['p95']:.2f}"
                    if p in r.metrics["wait_hours"]
                    else "-"
                    for r in results
                ],
            ]
        )
    rows += [
        [
            "decision time mean / p99 (us)",
            *[f"{r.metrics['decision_us_mean']:.0f} / {r.metrics['decision_us_p99']:.0f}" for r in results],
        ],
        ["scheduler time per job (ms)", *[f"{r.metrics['scheduler_ms_per_job']:.2f}" for r in results]],
        ["simulation wall time (s)", *[f"{r.metrics['sim_wall_seconds']:.1f}" for r in results]],
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))

    control = control_plane_timing(items)
    print(
        f"\ncontrol plane, one object placed per reconcile ({control['allocations']} allocations, "
        f"{control['waiting']} waiting):"
    )
    print(
        f"  place() from scratch        mean {control['from_scratch']['mean_ms']:.2f} ms, "
        f"p99 {control['from_scratch']['p99_ms']:.2f} ms"
    )
    print(
        f"  plan reused within a pass   mean {control['pass_reused']['mean_ms']:.3f} ms, "
        f"p99 {control['pass_reused']['p99_ms']:.3f} ms (first object of the pass "
        f"{control['pass_first_object_ms']:.1f} ms; same decisions: {control['same_decisions']})"
    )

    out = ROOT / "bench" / "results" / "scheduler_sim.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "workload": {
                    "arrivals": len(items),
                    "fine_tunes": n_train,
                    "days": args.days,
                    "seed": args.seed,
                    "nodes": sum(p.nodes for p in POOLS),
                    "gpus": capacity,
                    "offered_load": offered,
                    "pools": [
                        {
                            "name": p.name,
                            "accelerator": p.accelerator_type,
                            "gpus_per_node": p.gpus_per_node,
                            "nodes": p.nodes,
                            "price": str(p.price_per_gpu_hour),
                            "spot": p.spot,
                        }
                        for p in POOLS
                    ],
                },
                "results": {r.policy: r.metrics for r in results},
                "control_plane": control,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
