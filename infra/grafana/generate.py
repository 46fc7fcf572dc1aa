"""Generate Corral's Grafana dashboards (``infra/grafana/dashboards/*.json``) from this file.

This module is the one source of truth: the JSON files are its output, committed so the
Helm chart and Grafana's file provisioning can read them as they are, and
``tests/unit/test_dashboards.py`` fails when they are not current.

Usage::

    python infra/grafana/generate.py          # rewrite the JSON files
    python infra/grafana/generate.py --check  # exit 1 when a file is not current

Every dashboard is templated by ``datasource`` (any Prometheus), ``namespace`` and
``model``. Metric names follow ``corral.observability`` (the contract); serving series
come from Ray Serve replicas and carry Ray's ``ray_`` prefix.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["DASHBOARDS", "render", "write"]

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace=~"$namespace"'
MODEL = 'model=~"$model"'
RATE = "$__rate_interval"


def _templating() -> dict[str, Any]:
    def query_var(name: str, label: str, query: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "query": {"query": query, "refId": f"{name}-var"},
            "definition": query,
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
        }

    return {
        "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "refresh": 1,
            },
            query_var("namespace", "Namespace", "label_values(corral_control_objects, namespace)"),
            query_var("model", "Model", f"label_values(corral_serving_desired_replicas{{{NS}}}, model)"),
        ]
    }


class _Board:
    """Lays panels out on Grafana's 24-column grid, row by row."""

    def __init__(self, uid: str, title: str, description: str, tags: list[str]) -> None:
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.panels: list[dict[str, Any]] = []
        self._x = self._y = self._row_h = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y},
                "id": len(self.panels) + 1,
                "panels": [],
            }
        )
        self._y += 1

    def _newline(self) -> None:
        if self._x:
            self._y += self._row_h
            self._x = self._row_h = 0

    def panel(
        self,
        kind: str,
        title: str,
        targets: list[tuple[str, str]],
        *,
        unit: str = "short",
        w: int = 12,
        h: int = 8,
        description: str = "",
        instant: bool = False,
    ) -> None:
        if self._x + w > 24:
            self._newline()
        panel: dict[str, Any] = {
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self._x, "y": self._y},
            "id": len(self.panels) + 1,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
            "targets": [
                {
                    "datasource": DS,
                    "expr": expr,
                    "legendFormat": legend,
                    "refId": chr(ord("A") + i),
                    **({"instant": True, "format": "table"} if instant else {"range": True}),
                }
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        if kind == "timeseries":
            panel["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]}}
        if kind == "table":
            panel["transformations"] = [{"id": "merge", "options": {}}]
        self.panels.append(panel)
        self._x += w
        self._row_h = max(self._row_h, h)

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["corral", *self.tags],
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": 39,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "timezone": "browser",
            "templating": _templating(),
            "annotations": {"list": []},
            "links": [
                {"type": "dashboards", "tags": ["corral"], "title": "Corral", "asDropdown": True, "includeVars": True}
            ],
            "panels": self.panels,
        }


def _quantiles(metric: str, by: str, selector: str) -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"p{int(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def overview() -> dict[str, Any]:
    b = _Board(
        "corral-overview", "Corral / Overview", "Objects, GPU allocation, cost and what is failing.", ["overview"]
    )
    b.row("At a glance")
    b.panel(
        "stat",
        "Failing objects",
        [(f'sum(corral_control_objects{{{NS}, phase=~"Failed|NotReady"}}) or vector(0)', "failing")],
        w=6,
        h=4,
        description="Fine-tunes and deployments in phase Failed, Models and Datasets not Ready.",
    )
    b.panel(
        "stat",
        "GPUs allocated",
        [(f"sum(corral_scheduler_allocated_gpus{{{NS}}}) or vector(0)", "GPUs")],
        w=6,
        h=4,
    )
    b.panel(
        "stat",
        "Cost rate",
        [(f"sum(corral_scheduler_allocated_cost_usd_per_hour{{{NS}}}) or vector(0)", "USD/h")],
        unit="currencyUSD",
        w=6,
        h=4,
        description="Allocated GPUs at their pool's price per GPU-hour.",
    )
    b.panel(
        "stat",
        "Fine-tune cost accrued",
        [(f"sum(corral_training_cost_usd{{{NS}}}) or vector(0)", "USD")],
        unit="currencyUSD",
        w=6,
        h=4,
    )
    b.row("Objects")
    b.panel(
        "timeseries",
        "Objects by kind and phase",
        [(f"sum by (kind, phase) (corral_control_objects{{{NS}}})", "{{kind}} {{phase}}")],
    )
    b.panel(
        "table",
        "Failing objects",
        [
            (f'corral_training_phase{{{NS}, phase="Failed"}} == 1', "FineTuneJob {{namespace}}/{{job}}"),
            (
                f"corral_serving_ready_replicas{{{NS}}} == 0 "
                f"and on (namespace, deployment) corral_serving_desired_replicas{{{NS}}} > 0",
                "ModelDeployment {{namespace}}/{{deployment}}",
            ),
        ],
        instant=True,
        description="Failed fine-tunes and deployments with no ready replica.",
    )
    b.row("GPUs")
    b.panel(
        "timeseries",
        "GPU allocation by pool",
        [
            (f"sum by (pool) (corral_scheduler_allocated_gpus{{{NS}}})", "allocated {{pool}}"),
            ("sum by (pool) (corral_scheduler_allocatable_gpus)", "allocatable {{pool}}"),
            ("sum by (pool) (corral_scheduler_capacity_gpus)", "capacity {{pool}}"),
        ],
    )
    b.panel(
        "timeseries",
        "GPU allocation by namespace",
        [
            (f"sum by (namespace, pool) (corral_scheduler_allocated_gpus{{{NS}}})", "{{namespace}} on {{pool}}"),
            (f"corral_scheduler_quota_gpus{{{NS}}}", "quota {{namespace}} on {{pool}}"),
        ],
    )
    b.panel(
        "timeseries",
        "GPUs asked for by pending work",
        [(f"sum by (pool, kind) (corral_scheduler_pending_gpus{{{NS}}})", "{{kind}} on {{pool}}")],
        description="Pending fine-tunes and deployments; an empty pool means any pool.",
    )
    b.row("Cost")
    b.panel(
        "timeseries",
        "Cost rate by namespace",
        [(f"sum by (namespace) (corral_scheduler_allocated_cost_usd_per_hour{{{NS}}})", "{{namespace}}")],
        unit="currencyUSD",
    )
    b.panel(
        "table",
        "Fine-tune cost: estimated and accrued",
        [
            (f"corral_training_estimated_cost_usd{{{NS}}}", "estimated"),
            (f"corral_training_cost_usd{{{NS}}}", "accrued"),
        ],
        unit="currencyUSD",
        instant=True,
    )
    return b.to_json()


def finetuning() -> dict[str, Any]:
    b = _Board(
        "corral-finetuning",
        "Corral / Fine-tuning",
        "FineTuneJobs: loss, throughput, progress, checkpoints and restarts.",
        ["training"],
    )
    sel = NS
    b.row("Jobs")
    b.panel(
        "table",
        "Jobs by phase",
        [(f"corral_training_phase{{{sel}}} == 1", "{{namespace}}/{{job}} {{phase}}")],
        instant=True,
    )
    b.panel(
        "bargauge",
        "Progress",
        [(f"corral_training_progress_ratio{{{sel}}}", "{{namespace}}/{{job}}")],
        unit="percentunit",
    )
    b.row("Learning")
    b.panel("timeseries", "Training loss", [(f"corral_training_loss{{{sel}}}", "{{namespace}}/{{job}}")])
    b.panel("timeseries", "Evaluation loss", [(f"corral_training_eval_loss{{{sel}}}", "{{namespace}}/{{job}}")])
    b.panel(
        "timeseries",
        "Tokens per second",
        [(f"corral_training_tokens_per_second{{{sel}}}", "{{namespace}}/{{job}}")],
        unit="short",
    )
    b.panel("timeseries", "Optimizer step", [(f"corral_training_step{{{sel}}}", "{{namespace}}/{{job}}")])
    b.panel("timeseries", "Learning rate", [(f"corral_training_learning_rate{{{sel}}}", "{{namespace}}/{{job}}")])
    b.row("Evaluation before promotion")
    b.panel(
        "bargauge",
        "Score: fine-tune vs base (similarity)",
        [
            (
                f'corral_training_evaluation_score_ratio{{{sel},metric="similarity"}}',
                "{{namespace}}/{{job}} {{split}} {{variant}}",
            )
        ],
        unit="percentunit",
        instant=True,
        description="Mean normalized similarity of the answers to the references, on the held-out split and a "
        "sample of the training data, for the fine-tune and its base on the same questions.",
    )
    b.panel(
        "bargauge",
        "Exact match: fine-tune vs base",
        [
            (
                f'corral_training_evaluation_score_ratio{{{sel},metric="exact_match"}}',
                "{{namespace}}/{{job}} {{split}} {{variant}}",
            )
        ],
        unit="percentunit",
        instant=True,
        description="Share of answers equal to the reference after normalization.",
    )
    b.row("Time, checkpoints and restarts")
    b.panel("timeseries", "ETA", [(f"corral_training_eta_seconds{{{sel}}}", "{{namespace}}/{{job}}")], unit="s")
    b.panel(
        "timeseries",
        "Checkpoints written",
        [(f"corral_training_checkpoints_total{{{sel}}}", "{{namespace}}/{{job}}")],
        w=6,
    )
    b.panel(
        "timeseries",
        "Restarts and preemptions",
        [
            (f"corral_training_restarts_total{{{sel}}}", "{{namespace}}/{{job}} restarts"),
            (f"corral_training_preemptions_total{{{sel}}}", "{{namespace}}/{{job}} preemptions"),
        ],
        w=6,
    )
    b.row("GPU time and cost")
    b.panel(
        "timeseries",
        "GPUs in use (GPU-seconds per second)",
        [(f"rate(corral_training_gpu_seconds_total{{{sel}}}[{RATE}])", "{{namespace}}/{{job}}")],
    )
    b.panel(
        "timeseries",
        "Cost accrued and estimated",
        [
            (f"corral_training_cost_usd{{{sel}}}", "accrued {{namespace}}/{{job}}"),
            (f"corral_training_estimated_cost_usd{{{sel}}}", "estimated {{namespace}}/{{job}}"),
        ],
        unit="currencyUSD",
    )
    return b.to_json()


def serving() -> dict[str, Any]:
    b = _Board(
        "corral-serving",
        "Corral / Serving",
        "ModelDeployments: traffic, errors, latency (TTFT, TPOT), tokens, replicas and adapters.",
        ["serving"],
    )
    m = MODEL
    b.row("Traffic")
    b.panel(
        "timeseries",
        "Requests per second",
        [
            (
                f"sum by (model, adapter) (rate(ray_corral_serving_requests_total{{{m}}}[{RATE}]))",
                "{{model}} {{adapter}}",
            )
        ],
        unit="reqps",
    )
    b.panel(
        "timeseries",
        "Errors per second by type and code",
        [
            (
                f"sum by (model, type, code) (rate(ray_corral_serving_errors_total{{{m}}}[{RATE}]))",
                "{{model}} {{type}} {{code}}",
            )
        ],
        unit="reqps",
    )
    b.panel(
        "timeseries",
        "Prompt tokens per second",
        [
            (
                f"sum by (model, adapter) (rate(ray_corral_serving_prompt_tokens_total{{{m}}}[{RATE}]))",
                "{{model}} {{adapter}}",
            )
        ],
    )
    b.panel(
        "timeseries",
        "Output tokens per second",
        [
            (
                f"sum by (model, adapter) (rate(ray_corral_serving_output_tokens_total{{{m}}}[{RATE}]))",
                "{{model}} {{adapter}}",
            )
        ],
    )
    b.panel(
        "timeseries",
        "Ongoing requests",
        [(f"sum by (model, adapter) (ray_corral_serving_ongoing_requests{{{m}}})", "{{model}} {{adapter}}")],
    )
    b.row("Latency")
    b.panel(
        "timeseries",
        "Time to first token",
        _quantiles("ray_corral_serving_time_to_first_token_seconds", "model", m),
        unit="s",
    )
    b.panel(
        "timeseries",
        "Time per output token",
        _quantiles("ray_corral_serving_time_per_output_token_seconds", "model", m),
        unit="s",
    )
    b.panel(
        "timeseries",
        "End-to-end request latency",
        _quantiles("ray_corral_serving_request_duration_seconds", "model", m),
        unit="s",
    )
    b.row("Replicas and adapters")
    b.panel(
        "timeseries",
        "Replicas",
        [
            (f"corral_serving_ready_replicas{{{NS}, {m}}}", "ready {{namespace}}/{{deployment}}"),
            (f"corral_serving_desired_replicas{{{NS}, {m}}}", "desired {{namespace}}/{{deployment}}"),
        ],
    )
    b.panel(
        "timeseries",
        "Adapter loads and evictions",
        [
            (
                f"sum by (model, adapter) (rate(ray_corral_serving_adapter_loads_total{{{m}}}[{RATE}]))",
                "loads {{model}} {{adapter}}",
            ),
            (
                f"sum by (model, adapter) (rate(ray_corral_serving_adapter_evictions_total{{{m}}}[{RATE}]))",
                "evictions {{model}} {{adapter}}",
            ),
        ],
        unit="ops",
    )
    b.panel(
        "timeseries",
        "Adapter load time",
        _quantiles("ray_corral_serving_adapter_load_seconds", "model", m),
        unit="s",
    )
    b.row("Scale from zero")
    b.panel(
        "timeseries",
        "Cold starts",
        [
            (
                f"increase(corral_serving_cold_starts_total{{{NS}, {m}}}[1h])",
                "cold starts/h {{namespace}}/{{deployment}}",
            ),
            (
                f"corral_serving_last_cold_start_seconds{{{NS}, {m}}}",
                "last cold start (s) {{namespace}}/{{deployment}}",
            ),
        ],
        w=8,
        description="Scale-ups from zero replicas (minReplicas 0) and how long the last one took, "
        "as the control loop saw it (to a resync, about 2 s).",
    )
    b.panel(
        "timeseries",
        "Request hold time (waiting for a replica)",
        _quantiles("ray_corral_serving_request_hold_seconds", "model", m),
        unit="s",
        w=8,
        description="How long the activator of a scale-to-zero deployment held requests until a replica took "
        "them: near zero when warm, a cold start when it scaled up from zero. Requests held past the hold "
        "timeout are errors with code 503.",
    )
    b.panel(
        "timeseries",
        "Replica start-up by stage",
        [
            (
                f"sum by (model, stage) (rate(ray_corral_serving_replica_startup_seconds_sum{{{m}}}[1h])) "
                f"/ sum by (model, stage) (rate(ray_corral_serving_replica_startup_seconds_count{{{m}}}[1h]))",
                "{{model}} {{stage}}",
            )
        ],
        unit="s",
        w=8,
        description="Mean seconds a starting replica spent importing torch and transformers, loading the model "
        "and warming up (the Ray actor start before them is in bench/cold_start.py).",
    )
    return b.to_json()


def controlplane() -> dict[str, Any]:
    b = _Board(
        "corral-controlplane",
        "Corral / Control plane",
        "Reconcile loop and control API.",
        ["control-plane"],
    )
    b.row("Reconcile loop")
    b.panel(
        "timeseries",
        "Reconciles per second",
        [(f"sum by (kind, result) (rate(corral_control_reconciles_total[{RATE}]))", "{{kind}} {{result}}")],
        unit="ops",
    )
    b.panel(
        "timeseries",
        "Reconcile errors per second",
        [(f'sum by (kind) (rate(corral_control_reconciles_total{{result="error"}}[{RATE}]))', "{{kind}}")],
        unit="ops",
    )
    b.panel(
        "timeseries",
        "Reconcile duration",
        _quantiles("corral_control_reconcile_duration_seconds", "kind", ""),
        unit="s",
    )
    b.panel(
        "timeseries",
        "Queue depth and backoff",
        [
            ("corral_control_queue_depth", "to reconcile in this pass"),
            ("corral_control_backoff_objects", "waiting to retry"),
        ],
        w=6,
    )
    b.panel(
        "stat",
        "Since the last pass",
        [("time() - corral_control_last_pass_timestamp_seconds", "age")],
        unit="s",
        w=6,
    )
    b.row("Control API")
    b.panel(
        "timeseries",
        "Requests per second by route and code",
        [(f"sum by (route, code) (rate(corral_controlapi_requests_total[{RATE}]))", "{{code}} {{route}}")],
        unit="reqps",
    )
    b.panel(
        "timeseries",
        "Request latency (p95 by route)",
        [
            (
                "histogram_quantile(0.95, sum by (le, route) "
                f"(rate(corral_controlapi_request_duration_seconds_bucket[{RATE}])))",
                "{{route}}",
            )
        ],
        unit="s",
    )
    b.panel(
        "timeseries",
        "5xx ratio",
        [
            (
                f'sum(rate(corral_controlapi_requests_total{{code=~"5.."}}[{RATE}])) '
                f"/ sum(rate(corral_controlapi_requests_total[{RATE}]))",
                "5xx",
            )
        ],
        unit="percentunit",
    )
    return b.to_json()


DASHBOARDS = {"overview": overview, "finetuning": finetuning, "serving": serving, "controlplane": controlplane}
"""File stem -> builder."""


def render() -> dict[str, str]:
    """Every dashboard as the exact text of its JSON file, by file name."""
    return {f"{stem}.json": json.dumps(build(), indent=2, sort_keys=True) + "\n" for stem, build in DASHBOARDS.items()}


def write(out: Path = OUT) -> list[Path]:
    """Write the JSON files; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render().items():
        path = out / name
        path.write_text(text)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """Write the dashboards, or with ``--check`` report the ones that are not current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 when a committed file is not current")
    args = parser.parse_args(argv)
    if args.check:
        stale = [n for n, text in render().items() if not (OUT / n).is_file() or (OUT / n).read_text() != text]
        for name in stale:
            print(f"{OUT / name} is not current: run python infra/grafana/generate.py", file=sys.stderr)
        return 1 if stale else 0
    for path in write():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
