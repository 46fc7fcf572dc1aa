"""Benchmark: the transformers engine through Ray Serve's HTTP endpoint vs. called in-process.

For two models (the shipped tiny llama, ~1.3M parameters, and a ~60M-parameter llama built
from config with random weights), at concurrency 1, 4, 8 and 16: throughput (requests/s,
tokens/s) and p50/p99 latency of ``/v1/completions`` requests through Serve on loopback,
against the same engine class called in-process (baseline, same run). Every request
generates exactly 32 tokens (``ignore_eos``, the vLLM extension the endpoint accepts), so
both sides do the same work whatever the model would have answered.

Goals: Serve overhead at most 10% (throughput), batching gain at least 3x (throughput at
concurrency 8 over concurrency 1).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/serving.py [--quick]

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


async def drive(call: Any, concurrency: int, total: int) -> dict[str, float]:
    """Run ``total`` calls with ``concurrency`` in flight (closed loop)."""
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
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    out = summarize(latencies, tokens, time.perf_counter() - t0)
    # CPU of this process per request: the engine and its caller in-process, only the HTTP client over Serve.
    out["bench_cpu_ms_per_req"] = round(1000 * (time.process_time() - cpu0) / total, 2)
    return out


def exactly(tokens: int) -> int:
    """``tokens``, checked to be the fixed answer length every request must have."""
    if tokens != MAX_TOKENS:
        raise RuntimeError(f"a request generated {tokens} tokens instead of {MAX_TOKENS}; ignore_eos is not honoured")
    return tokens


def requests_for(concurrency: int, quick: bool) -> int:
    return max(4 if quick else 8, 2 * concurrency if quick else 3 * concurrency)


async def bench_model(path: Path, url: str, model: str, quick: bool) -> tuple[dict[int, Any], dict[int, Any]]:
    """Per level, the in-process engine then the Serve endpoint, back to back (same machine load)."""
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
        for c in LEVELS:
            inp[c] = await drive(inproc, c, requests_for(c, quick))
            http[c] = await drive(over_http, c, requests_for(c, quick))
    await engine.close()
    return inp, http


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
        if all(name in apps and apps[name].status == "RUNNING" for name in paths):
            break
        if any(name in apps and apps[name].status == "DEPLOY_FAILED" for name in paths):
            raise RuntimeError(f"deploy failed: {apps}")
        if time.perf_counter() - t0 > 300:
            raise TimeoutError("Serve applications not running after 300s")
        time.sleep(0.5)
    return f"http://127.0.0.1:{port}", time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests per level")
    args = parser.parse_args()
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
                inproc[name], http[name] = asyncio.run(bench_model(p, f"{url}/{name}/v1", name, args.quick))
        finally:
            serve.shutdown()

    rows = []
    print(
        f"\nServe deploy to ready (both apps): {ready_s:.1f}s; load average before {load_before}, "
        f"after {[round(x, 2) for x in os.getloadavg()]}"
    )
    print(
        f"{'model':<10} {'conc':>4} | {'in-proc req/s':>13} {'p50 ms':>8} {'p99 ms':>8} | "
        f"{'serve req/s':>11} {'p50 ms':>8} {'p99 ms':>8} | {'overhead':>8}"
    )
    for name in paths:
        for c in LEVELS:
            a, b = inproc[name][c], http[name][c]
            overhead = 1 - b["req_per_s"] / a["req_per_s"]
            rows.append(
                {"model": name, "concurrency": c, "inprocess": a, "serve": b, "serve_overhead": round(overhead, 3)}
            )
            print(
                f"{name:<10} {c:>4} | {a['req_per_s']:>13.2f} {a['p50_ms']:>8.1f} {a['p99_ms']:>8.1f} | "
                f"{b['req_per_s']:>11.2f} {b['p50_ms']:>8.1f} {b['p99_ms']:>8.1f} | {overhead:>7.1%}"
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
