"""Benchmark: scale from zero - time to first token from zero replicas, and what a burst loses.

On a local Ray Serve, the shipped tiny llama served by Corral's Serve application as
:func:`corral.serving.serve_config` builds it (at most 1.5 of this Ray's 2 CPUs hold replicas
at any time):

1. **Fresh replica (baseline)**: a fixed-replica deployment updated from ``replicas: 1`` to
   ``2`` (Serve's lightweight update: it starts one replica and rebuilds nothing; Serve refuses
   ``num_replicas: 0``); the seconds until Serve reports the new replica running, then one
   streamed request's time to first token. Their sum is "a fresh replica's start" the goal
   compares against.
2. **Cold start**: the issue's deployment (``minReplicas: 0, maxReplicas: 2,
   targetOngoingRequests: 2, upscaleDelaySeconds: 5``) at zero replicas; one streamed request;
   its time to first token from zero. Repeated ``--rounds`` times (waiting for zero between).
3. **Burst from zero**: ``--burst`` concurrent streamed requests at zero replicas: failures, time
   to first token p50/max.
4. **Sustained load from zero**: ``--clients`` clients sending back to back for ``--load-seconds``
   starting at zero (the issue's scenario): requests, failures, replicas reached.
5. **Without the activator** (unless ``--no-proxy-baseline``): step 4 against the same
   deployment with Serve's proxy alone in front (no ``CorralActivator``): what clients saw before.

For every replica start, where the time went: from the request (or the redeploy) to the
replica's constructor (Serve's autoscaler and controller, the Ray actor's worker process and
the import of Corral's Serve module), importing torch and transformers, loading the model,
the warm-up forward pass, and from "warm" to the first token (Serve's health check marks it
running, the router learns of it, the request is generated). The replica reports its own
timestamps through a handle (``CorralLLMServer.stats``).

Steps 1 and 2 alternate (fresh, cold, fresh, cold, ...) with both applications deployed, so
each pair runs under the same machine load; the ratio is the median of the per-pair ratios.

Goals: 0 failed requests from zero; cold-start time to first token within 1.5x of a fresh
replica's start.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/cold_start.py [--rounds 3] [--burst 24] [--clients 12] \\
        [--load-seconds 60] [--no-proxy-baseline]

Prints a table and writes ``bench/results/cold_start.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as py_platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

from corral.api.v1alpha1.modeldeployment import ModelDeployment  # noqa: E402
from corral.models import tiny  # noqa: E402
from corral.serving import LLM_DEPLOYMENT, ResolvedModel, serve_config  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "cold_start.json"
QUESTION = [{"role": "user", "content": "What is a Python list?"}]
MAX_TOKENS = 16
AUTOSCALING = {
    "minReplicas": 0,
    "maxReplicas": 2,
    "targetOngoingRequests": 2,
    "upscaleDelaySeconds": 5,
    "downscaleDelaySeconds": 5,
}
DEADLINE = 600.0


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deployment(name: str, **spec: Any) -> ModelDeployment:
    """The tiny base as a ModelDeployment (0.5 CPU per replica, batch 4)."""
    body = {"model": {"name": "tiny"}, "resources": {"cpusPerReplica": "500m"}, "maxConcurrentSequences": 4, **spec}
    return ModelDeployment.model_validate({"metadata": {"name": name}, "spec": body})


COLD, FRESH = "default-cold", "default-fresh"  # serve_config names applications <namespace>-<name>


def app_config(dep: ModelDeployment, base: Path, *, activator: bool = True) -> dict[str, Any]:
    """The Serve config of one deployment; ``activator=False`` strips the activator (Serve's proxy alone)."""
    config = serve_config([dep], lambda ref: ResolvedModel(uri=f"file://{base}"))
    if not activator:
        app = config["applications"][0]
        app["deployments"] = [d for d in app["deployments"] if d["name"] == LLM_DEPLOYMENT]
        app["args"]["hold"] = None
    return config


def _put(config: dict[str, Any]) -> None:
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))


def deploy(config: dict[str, Any]) -> None:
    """Deploy a config (it replaces every application) and wait until its applications run."""
    names = [a["name"] for a in config["applications"]]
    _put(config)
    wait(lambda: all(_status(n) == "RUNNING" for n in names), f"{names} running")


def _status(app: str) -> str | None:
    from ray import serve

    status = serve.status().applications.get(app)
    return None if status is None else str(status.status.value)


def running(app: str) -> int:
    """Model replicas of ``app`` in state RUNNING."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or LLM_DEPLOYMENT not in status.deployments:
        return 0
    return int(status.deployments[LLM_DEPLOYMENT].replica_states.get("RUNNING", 0))


def wait(check: Any, what: str, every: float = 0.1, timeout: float = DEADLINE) -> float:
    """Poll ``check`` until true; return the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(every)
    raise TimeoutError(f"{what} not reached within {timeout:.0f} s")


def startup(app: str, newest: bool = False) -> dict[str, float]:
    """The wall-clock start-up times a replica of ``app`` reports (``newest``: of the last one started)."""
    from ray import serve

    handle = serve.get_deployment_handle(LLM_DEPLOYMENT, app_name=app)
    seen = [dict(handle.stats.remote().result(timeout_s=120)["startup"]) for _ in range(8 if newest else 1)]
    return max(seen, key=lambda s: s["init_started"])


def split(t_request: float, t_first: float, s: dict[str, float]) -> dict[str, float]:
    """Where a replica start went, from the request (wall clock) to the first token."""
    return {
        "to_constructor_s": round(s["init_started"] - t_request, 2),
        "imports_s": round(s["imported"] - s["init_started"], 2),
        "model_load_s": round(s["loaded"] - s["imported"], 2),
        "warmup_s": round(s["warmed"] - s["loaded"], 2),
        "warm_to_first_token_s": round(t_first - s["warmed"], 2),
    }


async def stream_one(url: str, timeout: float = DEADLINE) -> tuple[float, float]:
    """One streamed chat request: (seconds to the first chunk, seconds to the end)."""
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=timeout)
    try:
        t0 = time.monotonic()
        first = None
        stream = await client.chat.completions.create(
            model="tiny", messages=QUESTION, max_tokens=MAX_TOKENS, stream=True, temperature=0
        )
        async for _ in stream:
            first = first or time.monotonic() - t0
        return first or time.monotonic() - t0, time.monotonic() - t0
    finally:
        await client.close()


def fresh_round(url: str, put: Any) -> dict[str, Any]:
    """Baseline: 1 -> 2 replicas of ``fresh`` (a lightweight update: Serve starts one replica, builds nothing)."""
    t_request = time.time()
    put(2)
    ready = wait(lambda: running(FRESH) == 2, "second fresh replica running")
    ttft, _ = asyncio.run(stream_one(f"{url}/default/fresh/v1"))
    row = {
        "ready_s": round(ready, 2),
        "warm_ttft_s": round(ttft, 3),
        "start_s": round(ready + ttft, 2),
        "split": split(t_request, t_request + ready + ttft, startup(FRESH, newest=True)),
    }
    put(1)
    wait(lambda: running(FRESH) == 1, "fresh back to one replica", every=0.5)
    return row


def cold_round(url: str) -> dict[str, Any]:
    """One request at zero replicas: time to first token from zero."""
    wait(lambda: running(COLD) == 0, "cold at zero", every=1.0)
    t_request = time.time()
    ttft, total = asyncio.run(stream_one(f"{url}/default/cold/v1"))
    t_first = t_request + ttft
    return {"ttft_s": round(ttft, 2), "total_s": round(total, 2), "split": split(t_request, t_first, startup(COLD))}


async def burst(url: str, n: int) -> dict[str, Any]:
    """``n`` concurrent streamed requests at once."""
    results = await asyncio.gather(*(stream_one(url) for _ in range(n)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    failed = [repr(r)[:160] for r in results if isinstance(r, BaseException)]
    ttfts = sorted(r[0] for r in ok)
    return {
        "requests": n,
        "failed": len(failed),
        "errors": failed[:5],
        "ttft_p50_s": round(statistics.median(ttfts), 2) if ttfts else None,
        "ttft_max_s": round(ttfts[-1], 2) if ttfts else None,
    }


async def sustained(url: str, app: str, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` clients sending non-streamed requests back to back for ``seconds``, from zero."""
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=DEADLINE)
    done, errors, peak = 0, [], 0
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < end:
            try:
                await client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=MAX_TOKENS)
                done += 1
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")

    async def watch() -> None:
        nonlocal peak
        while time.monotonic() < end:
            peak = max(peak, await asyncio.to_thread(running, app))
            await asyncio.sleep(1.0)

    try:
        await asyncio.gather(watch(), *(worker() for _ in range(clients)))
    finally:
        await client.close()
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": done + len(errors),
        "failed": len(errors),
        "errors": sorted(set(errors))[:5],
        "replicas_reached": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh-replica and cold-start rounds")
    parser.add_argument("--burst", type=int, default=24, help="concurrent requests in the burst from zero")
    parser.add_argument("--clients", type=int, default=12, help="clients of the sustained load from zero")
    parser.add_argument("--load-seconds", type=float, default=60.0, help="duration of the sustained load")
    parser.add_argument("--no-proxy-baseline", action="store_true", help="skip the run without the activator")
    args = parser.parse_args()
    if args.rounds < 1 or args.burst < 1 or args.clients < 1 or args.load_seconds <= 0:
        parser.error("--rounds, --burst and --clients must be >= 1 and --load-seconds > 0")
    import ray
    from ray import serve

    load_before = [round(x, 2) for x in os.getloadavg()]
    print(f"load average before: {load_before}", flush=True)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}},
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = tiny.build("llama", Path(tmp) / "tiny")
            cold_app = app_config(deployment("cold", autoscaling=AUTOSCALING), base)["applications"]

            def both(fresh_replicas: int) -> dict[str, Any]:
                fresh_app = app_config(deployment("fresh", replicas=fresh_replicas), base)["applications"]
                return {"applications": [*fresh_app, *cold_app]}

            # Rounds alternate a fresh replica and a cold start, so each pair runs under the same load.
            deploy(both(1))
            fresh, cold = [], []
            for i in range(args.rounds):
                row = fresh_round(url, lambda n: _put(both(n)))
                fresh.append(row)
                print(f"fresh replica {i + 1}: {row}", flush=True)
                row = cold_round(url)
                cold.append(row)
                print(f"cold start {i + 1}: {row}", flush=True)
            serve.delete(FRESH)
            wait(lambda: running(COLD) == 0, "cold at zero", every=1.0)
            bursts = asyncio.run(burst(f"{url}/default/cold/v1", args.burst))
            print(f"burst of {args.burst} from zero: {bursts}", flush=True)
            wait(lambda: running(COLD) == 0, "cold at zero", every=1.0)
            load = asyncio.run(sustained(f"{url}/default/cold/v1", COLD, args.clients, args.load_seconds))
            print(f"sustained load from zero (activator): {load}", flush=True)
            serve.delete(COLD)

            proxy_load = None
            if not args.no_proxy_baseline:
                deploy(app_config(deployment("cold", autoscaling=AUTOSCALING), base, activator=False))
                wait(lambda: running(COLD) == 0, "cold at zero", every=1.0)
                proxy_load = asyncio.run(sustained(f"{url}/default/cold/v1", COLD, args.clients, args.load_seconds))
                print(f"sustained load from zero (Serve's proxy alone): {proxy_load}", flush=True)
                serve.delete(COLD)
    finally:
        serve.shutdown()
        ray.shutdown()

    fresh_start = statistics.median(r["start_s"] for r in fresh)
    cold_ttft = statistics.median(r["ttft_s"] for r in cold)
    ratios = [c["ttft_s"] / f["start_s"] for f, c in zip(fresh, cold, strict=True)]
    ratio = statistics.median(ratios)
    stages = list(cold[0]["split"])
    print(f"\nload average before {load_before}, after {[round(x, 2) for x in os.getloadavg()]}")
    print(f"{'':<28} {'fresh replica':>13} {'cold start':>10}   (medians over {args.rounds} rounds, seconds)")
    print(
        f"{'request -> first token':<28} {fresh_start:>13.2f} {cold_ttft:>10.2f}   "
        f"ratio {ratio:.2f} (median of paired rounds; goal <= 1.5)"
    )
    for stage in stages:
        f = statistics.median(r["split"][stage] for r in fresh)
        c = statistics.median(r["split"][stage] for r in cold)
        print(f"  {stage:<26} {f:>13.2f} {c:>10.2f}")
    print(
        f"burst of {bursts['requests']} from zero: {bursts['failed']} failed; "
        f"TTFT p50 {bursts['ttft_p50_s']} s, max {bursts['ttft_max_s']} s"
    )
    print(
        f"{load['clients']} clients x {load['seconds']:.0f} s from zero: {load['failed']} of {load['requests']} "
        f"failed (replicas reached {load['replicas_reached']})"
    )
    if proxy_load is not None:
        print(
            f"  same without the activator (Serve's proxy alone): {proxy_load['failed']} of "
            f"{proxy_load['requests']} failed"
        )
    result = {
        "benchmark": "cold_start",
        "machine": {"cpus": os.cpu_count(), "python": py_platform.python_version()},
        "settings": {
            "autoscaling": AUTOSCALING,
            "replica_cpus": 0.5,
            "max_tokens": MAX_TOKENS,
            "rounds": args.rounds,
            "burst": args.burst,
            "clients": args.clients,
            "load_seconds": args.load_seconds,
            "load_average": load_before,
        },
        "fresh_replica": fresh,
        "cold_start": cold,
        "fresh_start_median_s": round(fresh_start, 2),
        "cold_ttft_median_s": round(cold_ttft, 2),
        "cold_over_fresh_per_round": [round(r, 2) for r in ratios],
        "cold_over_fresh": round(ratio, 2),
        "burst_from_zero": bursts,
        "sustained_from_zero": load,
        "sustained_from_zero_without_activator": proxy_load,
        "goals": {"failed_requests": 0, "cold_over_fresh_max": 1.5},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
