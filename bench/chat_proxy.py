"""Benchmark: what the control API's one-base-URL chat proxy adds over calling Serve directly.

The ~60M-parameter llama of ``bench/serving.py`` is deployed on Ray Serve (the same builder,
``serve_config``); a control API (``corral.controlapi.create_app``, a SQLite store holding a
Ready ModelDeployment whose endpoint is that Serve application, a token) runs in uvicorn in
its own process on loopback, as ``corral up`` runs it. At concurrency 1 (and 4), ``--rounds``
x (direct to Serve, through the control API) back to back, each side the same number of
``/v1/chat/completions`` requests generating exactly 32 tokens (``ignore_eos``). Reported:
p50/p99 latency and throughput per side, and the median over rounds of the per-round ratios
proxy/direct (each pair ran under the same load). Goal: p50 latency ratio at most 1.05 at
concurrency 1 for the ~60M model.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/chat_proxy.py [--rounds 5] [--requests 40]

Prints a table and writes ``bench/results/chat_proxy.json``. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform as py_platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import MAX_TOKENS, ROOT, build_models, exactly, start_serve, summarize

RESULTS = ROOT / "bench" / "results" / "chat_proxy.json"
TOKEN = "bench-token-chat-proxy-1"
MODEL = "llama-60m"
LEVELS = (1, 4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_SERVER = """
import sys, uvicorn
from corral.controlapi import create_app
from corral.controlapi._auth import TokenAuth
from corral.store import SqliteStore
db, token, port, root = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
auth = TokenAuth.from_mapping({"tokens": [{"name": "bench", "token": token, "namespaces": ["default"]}]})
app = create_app(SqliteStore(db), auth, artifact_root=root)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""


def start_control_api(data: Path, endpoint: str) -> tuple[str, Any]:
    """A control API in its own process (as ``corral up`` runs it) whose store holds a Ready
    ModelDeployment served at ``endpoint``; its base URL and the process."""
    import os
    import subprocess

    import httpx

    from corral.api.v1alpha1 import ModelDeployment
    from corral.store import SqliteStore

    db = data / "corral.db"
    store = SqliteStore(db)
    dep = ModelDeployment.model_validate(
        {"metadata": {"name": MODEL, "namespace": "default"}, "spec": {"model": {"name": MODEL}}}
    )
    store.create(dep)
    store.patch_status(
        ModelDeployment, "default", MODEL, {"phase": "Ready", "endpoint": endpoint, "servedModels": [MODEL]}
    )
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-c", _SERVER, str(db), TOKEN, str(port), (data / "artifacts").as_uri()]
    proc = subprocess.Popen(args, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise TimeoutError("the control API did not start")
        time.sleep(0.2)
    return f"{url}/v1", proc


async def _side(url: str, headers: dict[str, str], concurrency: int, total: int) -> dict[str, float]:
    import httpx

    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Describe the Python language reference."}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "ignore_eos": True,
    }
    latencies: list[float] = []
    tokens = 0
    queue = [0]  # one warm-up request per side and level (the connection is set up)
    async with httpx.AsyncClient(timeout=120.0, headers=headers) as client:

        async def worker() -> None:
            nonlocal tokens
            while queue:
                queue.pop()
                t0 = time.perf_counter()
                response = await client.post(f"{url}/chat/completions", json=body)
                response.raise_for_status()
                n = exactly(int(response.json()["usage"]["completion_tokens"]))
                latencies.append(time.perf_counter() - t0)
                tokens += n

        await worker()
        latencies.clear()
        tokens = 0
        queue[:] = list(range(total))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return summarize(latencies, tokens, time.perf_counter() - t0)


def main() -> None:
    """Run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="(direct, proxy) pairs per level")
    parser.add_argument("--requests", type=int, default=40, help="requests per side and round")
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS), help="concurrency levels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="corral-bench-proxy-") as tmp:
        root = Path(tmp)
        paths = build_models(root / "models")
        serve_url, _ = start_serve({MODEL: paths[MODEL]})
        direct = f"{serve_url}/default/{MODEL}/v1"
        proxy, server = start_control_api(root, direct)
        results: dict[str, Any] = {}
        for level in args.levels:
            rounds = []
            for _ in range(args.rounds):
                a = asyncio.run(_side(direct, {}, level, args.requests))
                b = asyncio.run(_side(proxy, {"Authorization": f"Bearer {TOKEN}"}, level, args.requests))
                rounds.append({"direct": a, "proxy": b, "p50_ratio": b["p50_ms"] / a["p50_ms"]})
            results[str(level)] = {
                "direct_p50_ms": statistics.median(r["direct"]["p50_ms"] for r in rounds),
                "proxy_p50_ms": statistics.median(r["proxy"]["p50_ms"] for r in rounds),
                "direct_p99_ms": statistics.median(r["direct"]["p99_ms"] for r in rounds),
                "proxy_p99_ms": statistics.median(r["proxy"]["p99_ms"] for r in rounds),
                "direct_req_per_s": statistics.median(r["direct"]["req_per_s"] for r in rounds),
                "proxy_req_per_s": statistics.median(r["proxy"]["req_per_s"] for r in rounds),
                "p50_latency_ratio": round(statistics.median(r["p50_ratio"] for r in rounds), 3),
                "rounds": rounds,
            }
        server.terminate()
        server.wait(timeout=30)
    print(f"{'c':>3} {'direct p50 ms':>14} {'proxy p50 ms':>13} {'ratio':>6} {'direct req/s':>13} {'proxy req/s':>12}")
    for level, r in results.items():
        print(
            f"{level:>3} {r['direct_p50_ms']:>14.1f} {r['proxy_p50_ms']:>13.1f} {r['p50_latency_ratio']:>6.3f} "
            f"{r['direct_req_per_s']:>13.2f} {r['proxy_req_per_s']:>12.2f}"
        )
    ratio = results["1"]["p50_latency_ratio"]
    print(f"goal: p50 latency ratio at c=1 <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'} ({ratio:.3f})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "chat_proxy",
                "machine": {"python": py_platform.python_version(), "cpus": __import__("os").cpu_count()},
                "model": MODEL,
                "max_tokens": MAX_TOKENS,
                "goal": "p50 latency ratio (through the control API / direct to Serve) <= 1.05 at c=1",
                "levels": results,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
