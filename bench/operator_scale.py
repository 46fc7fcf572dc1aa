"""Benchmark: the kopf operator against a real kube-apiserver with N FineTuneJobs created at once.

For each N (``--counts``, default 1,000 and 10,000) the bench starts its own control plane
(etcd + kube-apiserver + kube-controller-manager, ``tests/support/kube.py``) with Corral's and
KubeRay's CRDs, one namespace holding the support-bot example's base ``Model`` and ``Dataset``
(the data read from the repository, allowed by ``CORRAL_OPERATOR_ALLOWED_URI_PREFIXES``) and a
CPU ``GPUPool`` with room for every job, and runs the real operator in a subprocess
(``python -m corral_operator``, standalone, settings from ``CORRAL_OPERATOR_*``, an admin
kubeconfig). Once the Model and the Dataset are Ready it creates N FineTuneJobs as fast as 16
client threads can, and follows them with one watch. The operator's KubeRay driver creates one
RayJob per admitted job; nothing runs them (no kubelet, no Ray): the driver just records
submissions on the server.

Measured per N:

* seconds from the first create until every FineTuneJob has ``status.phase`` (and the rate
  over that span, plus the rate between 10% and 90% statused: the sustained part);
* the operator's peak RSS (psutil on its PID, sampled every 0.5 s);
* API requests per object: the delta of kube-apiserver's ``apiserver_request_total`` over the
  run, minus the bench's own requests (its N creates and its watch), divided by N. The metric
  has no user label, so the kube-controller-manager's few requests are included; the top
  verbs/resources are kept in the JSON;
* phases at the end and RayJobs created.

A run stops at ``--timeout`` seconds and reports how far it got. Goal (issue 13): >= 100
objects/s at 10,000 and operator RSS <= 200 MB.

Usage::

    PYTHONPATH=platform:operators:. python bench/operator_scale.py [--counts 1000,10000] \\
        [--resync 10] [--timeout 1800]

Prints a table and writes ``bench/results/operator_scale.json``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform as _platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import requests
import urllib3
import yaml

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "platform", ROOT / "operators"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from tests.support.kube import KubeCluster, corral_crd_files, kuberay_crd_files  # noqa: E402

EXAMPLES = ROOT / "examples" / "support-bot"
NS = "scale"
GROUP, VERSION = "corral.dev", "v1alpha1"
_METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the world the jobs reference ---------------------------------------------------------------


def _setup_docs() -> list[dict[str, Any]]:
    model = yaml.safe_load((EXAMPLES / "10-model.yaml").read_text())
    model["metadata"]["namespace"] = NS
    dataset = next(d for d in yaml.safe_load_all((EXAMPLES / "20-dataset.yaml").read_text()) if d)
    dataset["metadata"]["namespace"] = NS
    dataset["spec"]["uri"] = (EXAMPLES / "data" / "support-faq.alpaca.jsonl").as_uri()
    pool = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GPUPool",
        "metadata": {"name": "scale-cpu"},
        # A CPU pool with room for every job of the largest run (1 CPU each).
        "spec": {
            "acceleratorType": "cpu",
            "gpusPerNode": 0,
            "cpusPerNode": "64",
            "maxNodes": 1000,
            "pricePerGpuHour": "0",
        },
    }
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}, pool, model, dataset]


def _job(i: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": f"job-{i:05d}", "namespace": NS},
        "spec": {
            "baseModel": {"name": "tiny-llama"},
            "datasets": [{"name": "support-faq"}],
            "method": "lora",
            "hyperparameters": {"epochs": 1},
            "resources": {"workers": 1, "pool": "scale-cpu"},
        },
    }


# -- measurement helpers ------------------------------------------------------------------------


def _request_counts(kube: KubeCluster) -> Counter[tuple[str, str, str]]:
    """``apiserver_request_total`` summed by (verb, resource, subresource)."""
    r = requests.get(f"{kube.url}/metrics", headers=kube._auth("admin"), verify=False, timeout=30)
    r.raise_for_status()
    counts: Counter[tuple[str, str, str]] = Counter()
    for line in r.text.splitlines():
        m = _METRIC.match(line)
        if m:
            labels = dict(_LABEL.findall(m["labels"]))
            key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
            counts[key] += int(float(m["value"]))
    return counts


class _RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.last = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.last = self.proc.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, self.last)
            self.stop.wait(0.5)


class _Watcher(threading.Thread):
    """One watch on the namespace's FineTuneJobs: when each first had a phase, and its latest phase."""

    def __init__(self, kube: KubeCluster) -> None:
        super().__init__(daemon=True)
        self.kube = kube
        self.first_phase: dict[str, float] = {}
        self.phase: dict[str, str] = {}
        self.stop = threading.Event()
        self.requests = 0
        self.ready = threading.Event()

    def _see(self, obj: dict[str, Any]) -> None:
        phase = (obj.get("status") or {}).get("phase")
        if phase:
            name = obj["metadata"]["name"]
            self.first_phase.setdefault(name, time.monotonic())
            self.phase[name] = phase

    def run(self) -> None:
        # A list for the starting resourceVersion, then a watch from it (this server refuses a
        # watch without one: its etcd lacks RequestWatchProgress); an ERROR (410 Gone) relists.
        url = f"{self.kube.url}/apis/{GROUP}/{VERSION}/namespaces/{NS}/finetunejobs"
        headers = self.kube._auth("admin")
        rv = ""
        while not self.stop.is_set():
            self.requests += 1
            try:
                if not rv:
                    listed = requests.get(url, headers=headers, verify=False, timeout=120).json()
                    for obj in listed.get("items", []):
                        self._see(obj)
                    rv = listed["metadata"]["resourceVersion"]
                    self.requests += 1
                params = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "60", "resourceVersion": rv}
                with requests.get(
                    url, params=params, headers=headers, verify=False, stream=True, timeout=(10, 90)
                ) as r:
                    self.ready.set()
                    for line in r.iter_lines():
                        if self.stop.is_set():
                            return
                        if not line:
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            rv = ""
                            break
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            self._see(obj)
            except (requests.RequestException, ValueError, KeyError):
                time.sleep(0.5)


def _wait_ready(kube: KubeCluster, plural: str, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = kube.get_json(f"{plural}.{GROUP}", name, "-n", NS) or {}
        conds = (obj.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
            return
        time.sleep(1)
    raise RuntimeError(f"{plural}/{name} not Ready after {timeout:.0f}s: {json.dumps(obj.get('status'))[:1500]}")


def _create_all(kube: KubeCluster, n: int) -> tuple[int, float]:
    """POST n FineTuneJobs from 16 threads; returns (failures, seconds)."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=16, pool_maxsize=16)
    session.mount("https://", adapter)
    url = f"{kube.url}/apis/{GROUP}/{VERSION}/namespaces/{NS}/finetunejobs"
    headers = {**kube._auth("admin"), "Content-Type": "application/json"}

    def create(i: int) -> bool:
        r = session.post(url, data=json.dumps(_job(i)), headers=headers, verify=False, timeout=60)
        return r.status_code in (201, 409)

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        ok = sum(pool.map(create, range(n)))
    return n - ok, time.monotonic() - start


# -- one run ------------------------------------------------------------------------------------


def run(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    kube = KubeCluster(workdir / f"kube-{n}")
    with kube:
        kube.install_crds([*corral_crd_files(), *kuberay_crd_files()])
        kube.apply(_setup_docs())
        kubeconfig = kube.write_kubeconfig(workdir / f"operator-{n}.kubeconfig", "admin")
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT / "operators"), str(ROOT)]),
            "OMP_NUM_THREADS": "1",
            "CORRAL_OPERATOR_STANDALONE": "true",
            "CORRAL_OPERATOR_ARTIFACT_ROOT": (workdir / f"artifacts-{n}").as_uri(),
            "CORRAL_OPERATOR_RESYNC_SECONDS": str(args.resync),
            "CORRAL_OPERATOR_HEALTH_PORT": str(_free_port()),
            "CORRAL_OPERATOR_ALLOWED_URI_PREFIXES": json.dumps({"*": ["hf://", f"{EXAMPLES.as_uri()}/"]}),
        }
        # The tiny catalog model's weights, built in a child process where the operator looks
        # for them: otherwise the operator builds them itself, importing torch and transformers
        # (~750 MB of RSS that a cluster with hf:// or s3:// base models never pays).
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from corral.control._observe import materialize_model; "
                "materialize_model('llama', sys.argv[1])",
                f"{env['CORRAL_OPERATOR_ARTIFACT_ROOT']}/catalog/tiny-llama",
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        log_path = workdir / f"operator-{n}.log"
        with log_path.open("ab") as log:
            op = subprocess.Popen(
                [sys.executable, "-m", "corral_operator"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        rss = _RssSampler(op.pid)
        rss.start()
        watcher = _Watcher(kube)
        try:
            _wait_ready(kube, "models", "tiny-llama", 180)
            _wait_ready(kube, "datasets", "support-faq", 180)
            rss_idle = rss.last
            watcher.start()
            watcher.ready.wait(30)
            before = _request_counts(kube)
            start = time.monotonic()
            failures, create_s = _create_all(kube, n)
            deadline = start + args.timeout
            marks: dict[int, float] = {}
            while time.monotonic() < deadline:
                if op.poll() is not None:
                    raise RuntimeError(f"operator exited with {op.returncode}: {log_path.read_text()[-3000:]}")
                done = len(watcher.first_phase)
                now = time.monotonic()
                for pct in (10, 50, 90, 100):
                    if done >= n * pct / 100 and pct not in marks:
                        marks[pct] = now - start
                if done >= n:
                    break
                time.sleep(0.5)
            elapsed = time.monotonic() - start
            done = len(watcher.first_phase)
            after = _request_counts(kube)
            rayjobs = len((kube.get_json("rayjobs.ray.io", "-n", NS) or {"items": []})["items"])
        finally:
            watcher.stop.set()
            rss.stop.set()
            if op.poll() is None:
                op.terminate()
                try:
                    op.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    op.kill()
                    op.wait(timeout=10)
        delta = after - before
        own = n + watcher.requests + 1  # the bench's creates, its watch requests, one metrics read
        total = sum(delta.values())
        all_s = marks.get(100)
        sustained = 0.8 * n / (marks[90] - marks[10]) if 10 in marks and 90 in marks and marks[90] > marks[10] else None
        return {
            "objects": n,
            "completed": all_s is not None,
            "statused": done,
            "create_seconds": round(create_s, 1),
            "create_failures": failures,
            "seconds_to_all_status": round(all_s, 1) if all_s is not None else None,
            "seconds_run": round(elapsed, 1),
            "objects_per_s": round((n if all_s else done) / (all_s or elapsed), 1),
            "objects_per_s_10_to_90": round(sustained, 1) if sustained else None,
            "percent_marks_s": {str(k): round(v, 1) for k, v in sorted(marks.items())},
            "operator_rss_peak_mb": round(rss.peak / 2**20, 1),
            "operator_rss_idle_mb": round(rss_idle / 2**20, 1),
            "api_requests_total": total,
            "api_requests_operator_est": total - own,
            "api_requests_per_object": round((total - own) / n, 1),
            "api_requests_per_statused_object": round((total - own) / max(done, 1), 1),
            "api_requests_top": [
                {"verb": v, "resource": r, "subresource": s, "count": c} for (v, r, s), c in delta.most_common(12)
            ],
            "phases": dict(Counter(watcher.phase.values())),
            "rayjobs_created": rayjobs,
            "resync_seconds": args.resync,
        }


def _write(args: argparse.Namespace, results: list[dict[str, Any]]) -> Path:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "operator_scale",
                "machine": {"cpus": os.cpu_count(), "python": _platform.python_version()},
                "settings": {"resync_seconds": args.resync, "timeout_s": args.timeout, "create_threads": 16},
                "goals": {"objects_per_s_at_10000": 100, "operator_rss_mb": 200},
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="1000,10000", help="comma-separated numbers of FineTuneJobs")
    parser.add_argument("--resync", type=float, default=10.0, help="CORRAL_OPERATOR_RESYNC_SECONDS (the chart's 10)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run before giving up")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "operator_scale.json"))
    parser.add_argument("--workdir", default=None, help="keep logs and data here (default: a temporary folder)")
    args = parser.parse_args()
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    # SIGTERM unwinds like Ctrl-C, so the operator and the control plane are stopped by PID.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    results = []
    with tempfile.TemporaryDirectory(prefix="corral-scale-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for n in counts:
            print(f"operator_scale: {n} FineTuneJobs ...", flush=True)
            results.append(run(n, args, workdir))
            print(json.dumps(results[-1]), flush=True)
            out = _write(args, results)  # after each N: a long run killed later keeps what it measured

    rows = [
        ["objects", *[f"{r['objects']:,}" for r in results]],
        ["statused", *[f"{r['statused']:,}" for r in results]],
        ["create (s)", *[f"{r['create_seconds']}" for r in results]],
        ["s to all status", *[str(r["seconds_to_all_status"] or f">{r['seconds_run']}") for r in results]],
        ["objects/s (all)", *[str(r["objects_per_s"]) for r in results]],
        ["objects/s (10-90%)", *[str(r["objects_per_s_10_to_90"]) for r in results]],
        ["operator RSS peak (MB)", *[str(r["operator_rss_peak_mb"]) for r in results]],
        ["API requests / statused object", *[str(r["api_requests_per_statused_object"]) for r in results]],
        ["RayJobs created", *[f"{r['rayjobs_created']:,}" for r in results]],
    ]
    width = max(len(r[0]) for r in rows)
    for row in rows:
        print(f"{row[0]:<{width}}  " + "  ".join(f"{c:>12}" for c in row[1:]))
    print("goal: >= 100 objects/s at 10,000 and operator RSS <= 200 MB")

    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
