"""Grafana dashboards: current with their generator, templated, every expression parses and names contract metrics."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType
from typing import Any

import pytest

from corral.observability import CONTRACT, exported_names
from tests.support.promtool import (
    DASHBOARDS,
    INSTALL_HINT,
    REPO,
    binary,
    check_expressions,
    dashboard_expressions,
    metric_names,
    recorded_names,
    rule_expressions,
)

EXPECTED = {"overview.json", "finetuning.json", "serving.json", "controlplane.json"}


def _generator() -> ModuleType:
    path = REPO / "infra" / "grafana" / "generate.py"
    spec = importlib.util.spec_from_file_location("corral_grafana_generate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _boards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def test_committed_json_is_what_the_generator_writes() -> None:
    rendered = _generator().render()
    assert set(rendered) == EXPECTED
    on_disk = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    stale = sorted(n for n in EXPECTED if on_disk.get(n) != rendered[n])
    assert not stale, f"{stale} not current: run `python infra/grafana/generate.py`"
    assert set(on_disk) == EXPECTED, "a dashboard JSON without a generator entry"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_templated_by_datasource_namespace_and_model(name: str) -> None:
    board = _boards()[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for var in ("namespace", "model"):
        assert variables[var]["type"] == "query" and variables[var]["includeAll"]
        assert variables[var]["datasource"]["uid"] == "${datasource}"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert board["uid"].startswith("corral-")


def test_each_dashboard_shows_what_the_issue_asks_for() -> None:
    exprs = {name: " ".join(e) for name, e in dashboard_expressions().items()}
    wants = {
        "overview.json": ["corral_control_objects", "corral_scheduler_allocated_gpus", "cost_usd", 'phase="Failed"'],
        "finetuning.json": [
            "corral_training_loss",
            "corral_training_eval_loss",
            "corral_training_tokens_per_second",
            "corral_training_progress_ratio",
            "corral_training_eta_seconds",
            "corral_training_checkpoints_total",
            "corral_training_restarts_total",
        ],
        "serving.json": [
            "requests_total",
            "errors_total",
            "time_to_first_token_seconds_bucket",
            "time_per_output_token_seconds_bucket",
            "output_tokens_total",
            "ongoing_requests",
            "corral_serving_ready_replicas",
            "adapter_loads_total",
            "adapter_evictions_total",
        ],
        "controlplane.json": [
            "corral_control_reconciles_total",
            'result="error"',
            "corral_control_reconcile_duration_seconds_bucket",
            "corral_controlapi_request_duration_seconds_bucket",
        ],
    }
    for name, needles in wants.items():
        missing = [n for n in needles if n not in exprs[name]]
        assert not missing, f"{name} lacks {missing}"
    for name in ("overview.json", "finetuning.json"):
        assert "$namespace" in exprs[name]
    assert "$model" in exprs["serving.json"]


def test_every_metric_named_is_in_the_contract_or_recorded() -> None:
    allowed, recorded = exported_names(), recorded_names()
    for source in (dashboard_expressions(), rule_expressions()):
        for name, exprs in source.items():
            for expr in exprs:
                metrics, rules = metric_names(expr)
                assert metrics <= allowed, f"{name}: {sorted(metrics - allowed)} not in the contract"
                assert rules <= recorded, f"{name}: {sorted(rules - recorded)} not recorded by any rule"
    named = {m for exprs in dashboard_expressions().values() for e in exprs for m in metric_names(e)[0]}
    families = {s.name for s in CONTRACT}
    shown = {f for f in families if any(n.removeprefix("ray_").startswith(f.removesuffix("_total")) for n in named)}
    assert len(shown) >= len(families) - 3, f"dashboards show little of the contract: {sorted(families - shown)}"


def test_every_expression_parses_with_promtool() -> None:
    promtool = binary("promtool")
    if promtool is None:
        pytest.skip(f"promtool is not installed: {INSTALL_HINT}")
    exprs = [e for es in dashboard_expressions().values() for e in es]
    exprs += [e for es in rule_expressions().values() for e in es]
    result = check_expressions(promtool, exprs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout
