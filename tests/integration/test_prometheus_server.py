"""A real Prometheus scrapes a live control API and answers a recording rule from Corral's rules.

The ``prometheus`` binary comes from the same Debian package as promtool
(``bash scripts/install_promtool.sh``); the test skips only when it is absent.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from corral.controlapi import TokenAuth, create_app
from corral.store import SqliteStore
from tests.support.http import serve
from tests.support.metrics_world import NS, populate
from tests.support.procs import stop_process
from tests.support.promtool import INSTALL_HINT, RULES, binary

DEADLINE_S = 90.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rules_every_second(out: Path) -> Path:
    """Corral's rules with every group evaluated each second (the file itself says 30s)."""
    for path in sorted(RULES.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            group["interval"] = "1s"
        (out / path.name).write_text(yaml.safe_dump(doc))
    return out


def test_prometheus_scrapes_the_control_api_and_records(tmp_path: Path) -> None:
    prometheus = binary("prometheus")
    if prometheus is None:
        pytest.skip(f"prometheus is not installed: {INSTALL_HINT}")
    store = SqliteStore(tmp_path / "state.db")
    artifacts = (tmp_path / "artifacts").as_uri()
    populate(store, artifacts)
    token = "prometheus-scrape-token-02"
    scrape = TokenAuth.from_mapping({"tokens": [{"name": "prometheus", "token": token, "metrics": True}]})
    app = create_app(store, scrape, registry=CollectorRegistry(), artifact_root=artifacts)
    rules = _rules_every_second(tmp_path)
    (tmp_path / "scrape-token").write_text(token)
    with serve(app) as api_port:
        web_port = _free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules / "*.yaml")],
            "scrape_configs": [
                {
                    "job_name": "corral-control-api",
                    "metrics_path": "/metrics",
                    # /metrics needs a token: Prometheus' authorization scrape setting sends it
                    "authorization": {"type": "Bearer", "credentials_file": str(tmp_path / "scrape-token")},
                    "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = (tmp_path / "prometheus.log").open("w")
        proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{web_port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{web_port}/api/v1"
            deadline = time.monotonic() + DEADLINE_S
            result: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
                try:
                    response = httpx.get(f"{base}/query", params={"query": "corral:objects:count"}, timeout=5)
                except httpx.HTTPError:
                    response = None
                result = []
                # Until its storage is ready Prometheus answers 503 "Service Unavailable" in plain text.
                if response is not None and response.status_code == 200:
                    body = response.json()
                    result = body["data"]["result"] if body.get("status") == "success" else []
                if result:
                    break
                time.sleep(0.5)
            assert result, (
                "no value for corral:objects:count before the deadline:\n" + (tmp_path / "prometheus.log").read_text()
            )
            values = {(r["metric"]["kind"], r["metric"]["phase"]): float(r["value"][1]) for r in result}  # type: ignore[index]
            assert values[("FineTuneJob", "Running")] == 1
            assert values[("Model", "Ready")] == 1
            targets = httpx.get(f"{base}/targets", timeout=5).json()["data"]["activeTargets"]
            assert [t["health"] for t in targets] == ["up"]
            up = httpx.get(f"{base}/query", params={"query": f'corral_training_loss{{namespace="{NS}"}}'}).json()
            assert float(up["data"]["result"][0]["value"][1]) == 1.25
        finally:
            stop_process(proc, timeout=20)
            log.close()
    store.close()
