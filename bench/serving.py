"""Benchmark: the transformers engine through Ray Serve's HTTP endpoint vs. called in-process.

For two models (the shipped tiny llama, ~1.3M parameters, and a ~60M-parameter llama built
from config with random weights), at concurrency 1, 4, 8 and 16: throughput (requests/s,
tokens/s) and p50/p99 latency of ``/v1/completions`` requests through Serve on loopback,
against the same engine class called in-process (baseline, same run). Every request
generates exactly 32 tokens (``ignore_eos``, the vLLM extension the endpoint accepts), so
both sides do the same work whatever the model would have answered.

Per model and level: a short in-process calibration sizes the request count so one side
runs about ``--seconds``; then ``--rounds`` x (in-process, Serve) back to back. Reported
are the medians over the rounds, and the overhead is one minus the median of the per-round
Serve/in-process throughput ratios (each pair ran under the same machine load). Also the
CPU milliseconds per request of each process on the path: in-process, the bench process
(engine and caller); through Serve, the bench process (HTTP client), Serve's proxy and the
replica (engine and Serve's request handling) - where Serve's cost goes on a small box.

Goals: Serve overhead at most 10% (throughput), batching gain at least 3x (throughput at
concurrency 8 over concurrency 1).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/serving.py [--quick] [--rounds 3] [--seconds 3] [--throughput-optimized]

Prints a table and writes ``bench/results/serving.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as py_platform
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

import torch  # noqa: E402

from corral.models import tiny  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "serving.json"
PROMPT = "The Python language reference describes"
MAX_TOKENS = 32
LEVELS = (1, 4, 8, 16)


def build_models(root: Path) -> dict[str, Path]:
    """The tiny llama and a ~60M-parameter llama (random weights, the tiny tokenizer)."""
    from _models import build_llama_60m

    small = tiny.build("llama", root / "tiny")
    return {"tiny": small, "llama-60m": build_llama_60m(root / "llama-60m", small)}


def params_of(path: Path) -> int:
    from transformers import AutoModelForCausalLM

    return sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(path).parameters())


def summarize(latencies: list[float], tokens: int, seconds: float) -> dict[str, float]:
    """Throughput and latency percentiles of one level."""
    lat = sorted(latencies)
    return {
        "requests": len(lat),
        "seconds": round(seconds, 3),
        "req_per_s": round(len(lat) / seconds, 2),
        "tok_per_s": round(tokens / seconds, 1),
        "p50_ms": round(1000 * statistics.median(lat), 1),
        "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
    }


def _cpu_seconds(pids: dict[str, tuple[int, ...]]) -> dict[str, float]:
    """User + system CPU seconds so far of each named group of processes."""
    import psutil

    out = {}
    for name, group in pids.items():
        out[name] = sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in group)
    return out


def serve_pids(app: str) -> dict[str, tuple[int, ...]]:
    """The PIDs of Serve's HTTP proxy and of ``app``'s (single) replica on this machine."""
    import psutil

    found: dict[str, tuple[int, ...]] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.startswith("ray::ProxyActor"):
            found["proxy"] = (proc.info["pid"],)
        elif cmd.startswith(f"ray::ServeReplica:{app}:"):
            found["replica"] = (proc.info["pid"],)
    if set(found) != {"proxy", "replica"}:
        raise RuntimeError(f"could not find Serve's proxy and the replica of {app!r} (found {found})")
    return found


async def drive(
    call: Any, concurrency: int, total: int, pids: dict[str, tuple[int, ...]] | None = None
) -> dict[str, float]:
    """Run ``total`` calls with ``concurrency`` in flight (closed loop).

    With ``pids`` (Serve's proxy and replica), also their CPU milliseconds per request.
    """
    latencies: list[float] = []
    tokens = 0
    queue = list(range(total))

    async def worker() -> None:
        nonlocal tokens
        while queue:
            queue.pop()
            t0 = time.perf_counter()
            n = await call()  # not `tokens += await call()`: that reads tokens before the await
            tokens += n
            latencies.append(time.perf_counter() - t0)

    t0, cpu0 = time.perf_counter(), time.process_time()
    others0 = _cpu_seconds(pids or {})
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    out = summarize(latencies, tokens, time.perf_counter() - t0)
    # CPU of this process per request: the engine and its caller in-process, only the HTTP client over Serve.
    out["bench_cpu_ms_per_req"] = round(1000 * (time.process_time() - cpu0) / total, 2)
    for name, seconds in _cpu_seconds(pids or {}).items():
        out[f"{name}_cpu_ms_per_req"] = round(1000 * (seconds - others0[name]) / total, 2)
    return out


def exactly(tokens: int) -> int:
    """``tokens``, checked to be the fixed answer length every request must have."""
    if tokens != MAX_TOKENS:
        raise RuntimeError(f"a request generated {tokens} tokens instead of {MAX_TOKENS}; ignore_eos is not honoured")
    return tokens


def requests_for(concurrency: int, rate: float, seconds: float) -> int:
    """Requests for one side of one round: about ``seconds`` at ``rate`` req/s, at least 2 per connection."""
    return max(2 * concurrency, round(rate * seconds))


async def bench_model(
    path: Path, url: str, model: str, rounds: int, seconds: float
) -> tuple[dict[int, Any], dict[int, Any]]:
    """Per level, ``rounds`` x (in-process, Serve) back to back; medians over the rounds.

    Each side of a round runs a fixed number of requests, sized from a first calibration
    run so that it lasts about ``seconds``: short levels are the noisiest part of a shared box.
    """
    import httpx

    from corral.serving import GenerationRequest, SamplingParams, TransformersEngine
    from corral.serving._loading import load_base
    from corral.serving._prompt import Prompter

    loaded, tok = load_base(f"file://{path}")
    engine = TransformersEngine(loaded, tok, max_batch_size=16)
    ids = tuple(Prompter(tok).completion(PROMPT))
    req = GenerationRequest(ids, SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True))
    body = {"model": model, "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True}

    async def inproc() -> int:
        n = 0
        async for chunk in engine.generate(req):
            n = chunk.completion_tokens
        return exactly(n)

    inp: dict[int, Any] = {}
    http: dict[int, Any] = {}
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=64)) as client:

        async def over_http() -> int:
            r = await client.post(f"{url}/completions", json=body)
            r.raise_for_status()
            return exactly(int(r.json()["usage"]["completion_tokens"]))

        await drive(inproc, 2, 4)  # warm-up
        await drive(over_http, 2, 4)
        pids = serve_pids(f"default-{model}")  # serve_config names it <namespace>-<name>
        for c in LEVELS:
            calibration = await drive(inproc, c, 2 * c)
            n = requests_for(c, calibration["req_per_s"], seconds)
            runs: dict[str, list[dict[str, float]]] = {"inprocess": [], "serve": []}
            for _ in range(rounds):
                runs["inprocess"].append(await drive(inproc, c, n))
                runs["serve"].append(await drive(over_http, c, n, pids))
            inp[c], http[c] = _median_run(runs["inprocess"]), _median_run(runs["serve"])
            ratios = [s["req_per_s"] / i["req_per_s"] for i, s in zip(runs["inprocess"], runs["serve"], strict=True)]
            http[c]["serve_over_inprocess_per_round"] = [round(r, 3) for r in ratios]
            per_round = http[c]["serve_over_inprocess_per_round"]
            print(f"  {model} c={c}: {n} requests x {rounds} rounds, serve/in-process per round {per_round}")
    await engine.close()
    return inp, http


def _median_run(runs: list[dict[str, float]]) -> dict[str, Any]:
    """The median of each measure over the rounds, and the per-round throughputs."""
    out: dict[str, Any] = {key: round(statistics.median(r[key] for r in runs), 2) for key in runs[0]}
    out["req_per_s_rounds"] = [r["req_per_s"] for r in runs]
    return out


def start_serve(paths: dict[str, Path]) -> tuple[str, float]:
    """Deploy one application per model from serve_config; return the Serve URL and seconds to ready."""
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    from corral.api.v1alpha1.modeldeployment import ModelDeployment
    from corral.serving import ResolvedModel, serve_config

    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures.ray_cluster import free_port

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}},
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    deps = [
        ModelDeployment.model_validate(
            {
                "metadata": {"name": name},
                "spec": {
                    "model": {"name": name},
                    "resources": {"cpusPerReplica": "500m"},
                    "maxConcurrentSequences": 16,
                },
            }
        )
        for name in paths
    ]
    config = serve_config(deps, lambda ref: ResolvedModel(uri=f"file://{paths[ref.name]}"))
    t0 = time.perf_counter()
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))
    while True:
        apps = serve.status().applications
        if all(f"default-{n}" in apps and apps[f"default-{n}"].status == "RUNNING" for n in paths):
            break
        if any(f"default-{n}" in apps and apps[f"default-{n}"].status == "DEPLOY_FAILED" for n in paths):
            raise RuntimeError(f"deploy failed: {apps}")
        if time.perf_counter() - t0 > 300:
            raise TimeoutError("Serve applications not running after 300s")
        time.sleep(0.5)
    return f"http://127.0.0.1:{port}", time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of ~1.5 s per side instead of 3 of ~3 s")
    parser.add_argument("--rounds", type=int, default=None, help="(in-process, Serve) pairs per level")
    parser.add_argument("--seconds", type=float, default=None, help="about how long one side of a round runs")
    parser.add_argument(
        "--throughput-optimized",
        action="store_true",
        help="start Ray with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (Serve's high-throughput mode)",
    )
    args = parser.parse_args()
    if args.throughput_optimized:
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"  # before ray.init: Serve's actors inherit it
    rounds = args.rounds or (2 if args.quick else 3)
    seconds = args.seconds or (1.5 if args.quick else 3.0)
    if rounds < 1 or seconds <= 0:
        parser.error(f"--rounds must be >= 1 and --seconds > 0 (got {rounds}, {seconds})")
    torch.set_num_threads(1)
    from ray import serve

    load_before = [round(x, 2) for x in os.getloadavg()]
    print(f"load average before: {load_before}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_models(Path(tmp))
        params = {name: params_of(p) for name, p in paths.items()}
        url, ready_s = start_serve(paths)
        inproc, http = {}, {}
        try:
            for name, p in paths.items():
                route = f"{url}/default/{name}/v1"  # serve_config routes it at /<namespace>/<name>
                inproc[name], http[name] = asyncio.run(bench_model(p, route, name, rounds, seconds))
        finally:
            serve.shutdown()

    rows = []
    print(
        f"\nServe deploy to ready (both apps): {ready_s:.1f}s; "
        f"load average before {load_before}, "
        f"after {[round(x, 2) for x in os.getloadavg()]}"
    )
    print(
        f"{'model':<10} {'conc':>4} | {'in-proc req/s':>13} {'p50 ms':>8} {'p99 ms':>8} | "
        f"{'serve req/s':>11} {'p50 ms':>8} {'p99 ms':>8} | {'overhead':>8} | "
        f"CPU ms/req: in-proc, serve (client+proxy+replica)"
    )
    for name in paths:
        for c in LEVELS:
            a, b = inproc[name][c], http[name][c]
            overhead = 1 - statistics.median(b["serve_over_inprocess_per_round"])  # paired: same load in a round
            rows.append(
                {"model": name, "concurrency": c, "inprocess": a, "serve": b, "serve_overhead": round(overhead, 3)}
            )
            print(
                f"{name:<10} {c:>4} | {a['req_per_s']:>13.2f} {a['p50_ms']:>8.1f} {a['p99_ms']:>8.1f} | "
                f"{b['req_per_s']:>11.2f} {b['p50_ms']:>8.1f} {b['p99_ms']:>8.1f} | {overhead:>7.1%} | "
                f"{a['bench_cpu_ms_per_req']:.1f}, {b['bench_cpu_ms_per_req']:.1f}+{b['proxy_cpu_ms_per_req']:.1f}"
                f"+{b['replica_cpu_ms_per_req']:.1f}"
            )
    gains = {
        name: {
            "inprocess_c8_over_c1": round(inproc[name][8]["req_per_s"] / inproc[name][1]["req_per_s"], 2),
            "serve_c8_over_c1": round(http[name][8]["req_per_s"] / http[name][1]["req_per_s"], 2),
        }
        for name in paths
    }
    print("\nbatching gain (throughput c=8 / c=1; goal >= 3x):", json.dumps(gains))
    result = {
        "benchmark": "serving",
        "machine": {"cpus": os.cpu_count(), "python": py_platform.python_version(), "torch": torch.__version__},
        "settings": {
            "prompt": PROMPT,
            "max_tokens": MAX_TOKENS,
            "ignore_eos": True,
            "levels": LEVELS,
            "quick": args.quick,
            "rounds": rounds,
            "seconds_per_side": seconds,
            "order": "per level: calibration, then (in-process, serve) x rounds; medians",
            "throughput_optimized": args.throughput_optimized,
            "load_average": load_before,
            "replica_cpus": 0.5,
            "torch_threads": 1,
            "max_batch_size": 16,
        },
        "parameters": params,
        "serve_deploy_to_ready_s": round(ready_s, 1),
        "rows": rows,
        "batching_gain": gains,
        "goals": {"serve_overhead_max": 0.10, "batching_gain_min": 3.0},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
