"""promtool on the rules, their unit tests and the real exposition of a live control API and of serving.

Skips only when promtool is not installed (``bash scripts/install_promtool.sh``; CI installs it).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from corral.control import ControlSettings, Runner
from corral.controlapi import TokenAuth, create_app
from corral.drivers import FakeDriver
from corral.observability import CONTRACT, exported_names
from corral.store import SqliteStore
from tests.support.http import serve
from tests.support.metrics_world import populate, serving_registry
from tests.support.promtool import (
    INSTALL_HINT,
    RULE_TESTS,
    RULES,
    binary,
    dashboard_expressions,
    metric_names,
    rule_expressions,
)


@pytest.fixture(scope="module")
def promtool() -> str:
    path = binary("promtool")
    if path is None:
        pytest.skip(f"promtool is not installed: {INSTALL_HINT}")
    return path


SCRAPE_TOKEN = "prometheus-scrape-token-01"


@pytest.fixture(scope="module")
def control_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``/metrics`` of a live control API over a populated store, after some requests and a reconcile pass."""
    root = tmp_path_factory.mktemp("promtool")
    store = SqliteStore(root / "state.db")
    artifacts = (root / "artifacts").as_uri()
    populate(store, artifacts)
    registry = CollectorRegistry()
    # The loop's metrics live in the same registry (as embedded); it runs over another
    # store (one GPUPool) so that reconciling does not change the world the API reports.
    other = SqliteStore(root / "loop.db")
    other.create(store.get("GPUPool", None, "a100"))
    Runner(other, FakeDriver(auto_ready=True), ControlSettings(artifact_root=artifacts), registry=registry).run_once()
    scrape = TokenAuth.from_mapping({"tokens": [{"name": "prometheus", "token": SCRAPE_TOKEN, "metrics": True}]})
    app = create_app(store, scrape, registry=registry, artifact_root=artifacts)
    with serve(app) as port:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/apis/corral.dev/v1alpha1/namespaces/team-a/finetunejobs").status_code == 401
        assert httpx.get(f"{base}/metrics").status_code == 401
        response = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        yield response.text
    store.close()
    other.close()


def _check_metrics(promtool: str, text: str) -> None:
    result = subprocess.run(
        [promtool, "check", "metrics"], check=False, input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


def test_rules_check(promtool: str) -> None:
    for path in sorted(RULES.glob("*.yaml")):
        result = subprocess.run(
            [promtool, "check", "rules", str(path)], check=False, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_rules_unit_tests(promtool: str) -> None:
    tests = sorted(RULE_TESTS.glob("*.yaml"))
    assert tests
    result = subprocess.run(
        [promtool, "test", "rules", *map(str, tests)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=RULE_TESTS,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_unit_test() -> None:
    groups = [g for p in RULES.glob("*.yaml") for g in yaml.safe_load(p.read_text())["groups"]]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS.glob("*.yaml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alerts - fired == set(), f"alerts never tested firing: {sorted(alerts - fired)}"
    assert alerts - quiet == set(), f"alerts never tested quiet: {sorted(alerts - quiet)}"


def test_control_plane_exposition_passes_promtool(promtool: str, control_metrics: str) -> None:
    assert "corral_control_objects{" in control_metrics
    assert "corral_controlapi_requests_total{" in control_metrics
    assert "corral_control_reconcile_duration_seconds_bucket" in control_metrics or (
        "corral_control_queue_depth" in control_metrics
    )
    _check_metrics(promtool, control_metrics)


def test_serving_exposition_passes_promtool(promtool: str) -> None:
    text = generate_latest(serving_registry()).decode()
    assert "corral_serving_time_to_first_token_seconds_bucket" in text
    _check_metrics(promtool, text)


def _sample_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def test_every_metric_in_dashboards_and_rules_is_exported(control_metrics: str) -> None:
    """What the live control API and serving export covers every name the dashboards and rules read.

    Serving series come from Ray Serve replicas with Ray's ``ray_`` prefix; the
    in-process engine records the same table unprefixed, so a ``ray_corral_serving_*``
    name counts as exported when its unprefixed form is.
    """
    exported = _sample_names(control_metrics) | _sample_names(generate_latest(serving_registry()).decode())
    named: set[str] = set()
    for source in (dashboard_expressions(), rule_expressions()):
        for exprs in source.values():
            for expr in exprs:
                named |= metric_names(expr)[0]
    serving = {n for spec in CONTRACT if spec.source == "serving" for n in spec.sample_names}
    missing = set()
    for name in named:
        plain = name.removeprefix("ray_") if name.removeprefix("ray_") in serving else name
        if plain not in exported:
            missing.add(name)
    assert not missing, f"named by dashboards or rules but not exported by the running system: {sorted(missing)}"
    assert named <= exported_names()


def test_labels_stay_bounded(control_metrics: str) -> None:
    # Bounded labels: no series names an object uid, a request id or a path with values in it.
    assert "uid=" not in control_metrics
    assert "/namespaces/team-a/" not in control_metrics
    assert len(control_metrics.splitlines()) < 2000
