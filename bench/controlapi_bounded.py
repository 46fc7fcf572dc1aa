"""Benchmark: bounded input on the control API: memory per upload size, bombs, stalls.

The server runs in its own process (a real uvicorn, a SQLite store, a file artifact root),
so its resident memory is measured alone; a sampler thread reads its RSS every 20 ms.

* ``upload``: peak RSS increase of the server while ``POST /v1/files`` takes a 1 MB (the
  baseline), a 200 MB JSONL upload and a 4.5 MB JSON array, and while it refuses a 600 MB
  one (``Content-Length`` over the limit) and a chunked 600 MB one (cut off at the limit).
  Goal: a 200 MB upload raises RSS by < 50 MB (it took the server from 165 MB to 2,181 MB).
* ``yaml``: time of a 378-byte alias bomb on ``/v1/estimate`` (it took 4.7-6.4 s and +84 MB)
  vs. a small valid YAML estimate, and ``/healthz`` latency while 256 kB YAML bodies
  are parsed (2.3 MB made it take 8.5 s; now YAML is parsed off the event loop and capped).
* ``watch``: a list's latency with 20 watches open vs. none (150 watches made it 5.5 s
  from 5 ms: watches held thread-pool threads).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/controlapi_bounded.py [--quick]

Prints a table and writes ``bench/results/controlapi_bounded.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "controlapi_bounded.json"
TOKEN = "bench-admin-token-0001"
MB = 1_000_000

SERVER = """
import sys, uvicorn
from prometheus_client import CollectorRegistry
from corral.controlapi import TokenAuth, create_app
from corral.store import SqliteStore
root, port = sys.argv[1], int(sys.argv[2])
store = SqliteStore(root + "/state.db")
app = create_app(store, TokenAuth.from_file(root + "/tokens.yaml"), registry=CollectorRegistry(),
                 artifact_root="file://" + root + "/artifacts", max_watches_per_token=200)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
"""


class Sampler:
    """Peak RSS of one process, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return int(self.proc.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _jsonl(path: Path, size: int) -> Path:
    line = json.dumps({"prompt": "How much is a tune-up for a city bike? " * 3, "completion": "It is 45 euros. " * 6})
    count = size // (len(line) + 1) + 1
    with path.open("w") as fh:
        for i in range(count):
            fh.write(line.replace("tune-up", f"tune-up {i}") + "\n")
    return path


def _array(path: Path, size: int) -> Path:
    record = {"messages": [{"role": "user", "content": "hi " * 20}, {"role": "assistant", "content": "hello " * 20}]}
    count = size // len(json.dumps(record)) + 1
    path.write_text(json.dumps([record] * count))
    return path


def _upload(client: httpx.Client, server: Sampler, path: Path) -> dict[str, Any]:
    before = server.rss()
    with Sampler(server.proc.pid) as sampled, path.open("rb") as fh:
        start = time.perf_counter()
        response = client.post("/v1/files", files={"file": (path.name, fh)}, data={"purpose": "fine-tune"})
        seconds = time.perf_counter() - start
    return {
        "bytes": path.stat().st_size,
        "status": response.status_code,
        "file_status": response.json().get("status") if response.status_code == 200 else None,
        "rss_before_mb": before / MB,
        "rss_peak_increase_mb": (sampled.peak - before) / MB,
        "seconds": seconds,
    }


def _refused(client: httpx.Client, server: Sampler, size: int, chunked: bool) -> dict[str, Any]:
    boundary = "benchboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'.encode()
    chunk = b'{"prompt": "x", "completion": "y"}\n' * 30_000

    def body() -> Iterator[bytes]:
        yield head
        sent = 0
        while sent < size:
            yield chunk
            sent += len(chunk)

    before = server.rss()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if not chunked:
        headers["Content-Length"] = str(size + len(head))
    with Sampler(server.proc.pid) as sampled:
        start = time.perf_counter()
        try:
            status = client.post("/v1/files", content=body(), headers=headers).status_code
        except httpx.HTTPError as exc:  # the server answered 413 and closed while the body was sent
            status = getattr(getattr(exc, "response", None), "status_code", None) or type(exc).__name__
        seconds = time.perf_counter() - start
    return {
        "bytes": size,
        "chunked": chunked,
        "status": status,
        "rss_peak_increase_mb": (sampled.peak - before) / MB,
        "seconds": seconds,
    }


def _timed(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _bomb() -> bytes:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        text += f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 10) + "]\n"
    return text.encode()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="20 MB instead of 200 MB, fewer repeats")
    args = parser.parse_args()
    big = 20 * MB if args.quick else 200 * MB
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load": os.getloadavg()[0]}}
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        root = Path(tmp)
        tokens = {"tokens": [{"name": "admin", "token": TOKEN, "namespaces": ["*"], "cluster": True}]}
        (root / "tokens.yaml").write_text(yaml.safe_dump(tokens))
        port = _port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), str(REPO)]), "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(root), str(port)], env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the server did not start")
                time.sleep(0.1)
            server = Sampler(proc.pid)
            headers = {"Authorization": f"Bearer {TOKEN}", "X-Corral-Namespace": "bench"}
            with httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(600.0)) as client:
                small = _upload(client, server, _jsonl(root / "small.jsonl", MB))
                large = _upload(client, server, _jsonl(root / "large.jsonl", big))
                (root / "large.jsonl").unlink()
                array = _upload(client, server, _array(root / "array.json", 4_500_000))
                refused = _refused(client, server, 600 * MB, chunked=False)
                cut = _refused(client, server, 600 * MB, chunked=True)
                results["upload"] = {
                    "1MB": small,
                    "large": large,
                    "json_array_4.5MB": array,
                    "600MB_content_length": refused,
                    "600MB_chunked": cut,
                }

                valid = b"kind: ModelDeployment\nspec:\n  model:\n    name: tiny-llama\n"
                yaml_headers = {"Content-Type": "application/yaml"}
                repeat = 3 if args.quick else 7
                bomb_s = _timed(lambda: client.post("/v1/estimate", content=_bomb(), headers=yaml_headers), repeat)
                valid_s = _timed(lambda: client.post("/v1/estimate", content=valid, headers=yaml_headers), repeat)
                bomb = client.post("/v1/estimate", content=_bomb(), headers=yaml_headers)
                idle = _timed(lambda: client.get("/healthz"), repeat * 3)
                heavy = b"items:\n" + b"  - {a: 1, b: [x, y, z]}\n" * 10_000  # ~250 kB, under the YAML cap
                stop = threading.Event()

                def hammer() -> None:
                    with httpx.Client(base_url=url, headers=headers, timeout=120) as other:
                        while not stop.is_set():
                            other.post("/v1/estimate", content=heavy, headers=yaml_headers)

                workers = [threading.Thread(target=hammer) for _ in range(2)]
                for worker in workers:
                    worker.start()
                time.sleep(0.5)
                busy = _timed(lambda: client.get("/healthz"), repeat * 3)
                stop.set()
                for worker in workers:
                    worker.join()
                results["yaml"] = {
                    "alias_bomb_s": bomb_s,
                    "alias_bomb_status": bomb.status_code,
                    "valid_yaml_s": valid_s,
                    "healthz_idle_s": idle,
                    "healthz_while_parsing_256kB_yaml_s": busy,
                }

                models = "/apis/corral.dev/v1alpha1/namespaces/bench/models"
                quiet = _timed(lambda: client.get(models), repeat * 3)
                streams = []
                watch_clients = [httpx.Client(base_url=url, headers=headers, timeout=60) for _ in range(20)]
                for wc in watch_clients:
                    stream = wc.stream("GET", models, params={"watch": "1", "timeoutSeconds": "60"})
                    stream.__enter__()
                    streams.append(stream)
                time.sleep(1.0)
                watched = _timed(lambda: client.get(models), repeat * 3)
                ready = _timed(lambda: client.get("/readyz"), repeat * 3)
                for stream in streams:
                    stream.__exit__(None, None, None)
                for wc in watch_clients:
                    wc.close()
                results["watch"] = {
                    "list_no_watches_s": quiet,
                    "list_20_watches_s": watched,
                    "readyz_20_watches_s": ready,
                    "ratio": watched / quiet if quiet else None,
                }
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    up = results["upload"]
    rows = [
        ("upload 1 MB (baseline): RSS +MB", f"{up['1MB']['rss_peak_increase_mb']:.1f}", f"{up['1MB']['status']}"),
        (
            f"upload {big // MB} MB: RSS +MB (goal < 50)",
            f"{up['large']['rss_peak_increase_mb']:.1f}",
            f"{up['large']['status']} {up['large']['file_status']} in {up['large']['seconds']:.1f} s",
        ),
        (
            "upload 4.5 MB JSON array: RSS +MB",
            f"{up['json_array_4.5MB']['rss_peak_increase_mb']:.1f}",
            f"{up['json_array_4.5MB']['status']} {up['json_array_4.5MB']['file_status']}",
        ),
        (
            "600 MB, Content-Length: RSS +MB",
            f"{up['600MB_content_length']['rss_peak_increase_mb']:.1f}",
            f"{up['600MB_content_length']['status']} in {up['600MB_content_length']['seconds']:.2f} s",
        ),
        (
            "600 MB, chunked: RSS +MB",
            f"{up['600MB_chunked']['rss_peak_increase_mb']:.1f}",
            f"{up['600MB_chunked']['status']} in {up['600MB_chunked']['seconds']:.1f} s",
        ),
        (
            "YAML alias bomb (s)",
            f"{results['yaml']['alias_bomb_s']:.3f}",
            f"{results['yaml']['alias_bomb_status']}; valid YAML {results['yaml']['valid_yaml_s']:.3f} s",
        ),
        (
            "/healthz idle / while parsing YAML (s)",
            f"{results['yaml']['healthz_idle_s']:.3f}",
            f"{results['yaml']['healthz_while_parsing_256kB_yaml_s']:.3f}",
        ),
        (
            "list: no watches / 20 watches (s)",
            f"{results['watch']['list_no_watches_s']:.3f}",
            f"{results['watch']['list_20_watches_s']:.3f} (readyz {results['watch']['readyz_20_watches_s']:.3f})",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'value':>8}  detail")
    for name, value, detail in rows:
        print(f"{name.ljust(width)}  {value:>8}  {detail}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
