"""Find promtool/prometheus, and pull every PromQL expression out of the dashboards and rules.

The binaries come from Debian's ``prometheus`` package, unpacked by
``scripts/install_promtool.sh`` into ``.tools/prometheus/usr/bin``; ``PROMTOOL`` and
``PROMETHEUS`` override, and a ``promtool`` on ``PATH`` is used last.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DASHBOARDS",
    "REPO",
    "RULES",
    "RULE_TESTS",
    "binary",
    "check_expressions",
    "dashboard_expressions",
    "metric_names",
    "recorded_names",
    "rule_expressions",
]

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "infra" / "grafana" / "dashboards"
RULES = REPO / "infra" / "prometheus" / "rules"
RULE_TESTS = REPO / "infra" / "prometheus" / "tests"

INSTALL_HINT = "run `bash scripts/install_promtool.sh` (Debian's prometheus package into .tools/)"

_GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$namespace": ".*", "$model": ".*"}
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$")
_METRIC = re.compile(r"\b(?:ray_)?corral_[a-z0-9_]+\b")
_RECORDED = re.compile(r"\bcorral:[a-zA-Z0-9_:]+")


def binary(name: str) -> str | None:
    """Path of ``promtool`` or ``prometheus`` (None when not installed)."""
    env = os.environ.get(name.upper())
    if env and Path(env).is_file():
        return env
    local = REPO / ".tools" / "prometheus" / "usr" / "bin" / name
    if local.is_file():
        return str(local)
    return shutil.which(name)


def _walk_targets(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            found.append(node["expr"])
        for value in node.values():
            found.extend(_walk_targets(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_walk_targets(value))
    return found


def dashboard_expressions() -> dict[str, list[str]]:
    """Per dashboard file: every panel expression and every template variable's metric selector."""
    out: dict[str, list[str]] = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        exprs = _walk_targets(board.get("panels", []))
        for var in board.get("templating", {}).get("list", []):
            query = var.get("query")
            text = query.get("query") if isinstance(query, dict) else None
            if var.get("type") == "query" and isinstance(text, str):
                match = _LABEL_VALUES.match(text.strip())
                exprs.append(match.group("selector") if match else text)
        out[path.name] = exprs
    return out


def rule_expressions() -> dict[str, list[str]]:
    """Per rules file: every recording and alerting rule's expression."""
    out: dict[str, list[str]] = {}
    for path in sorted(RULES.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        out[path.name] = [rule["expr"] for group in doc["groups"] for rule in group["rules"]]
    return out


def recorded_names() -> set[str]:
    """Names the recording rules define."""
    names: set[str] = set()
    for path in sorted(RULES.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        names.update(r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r)
    return names


def metric_names(expr: str) -> tuple[set[str], set[str]]:
    """(exported metric names, recording-rule names) an expression reads."""
    return set(_METRIC.findall(expr)), set(_RECORDED.findall(expr))


def substitute(expr: str) -> str:
    """Replace Grafana's variables with values PromQL parses."""
    for var, value in sorted(_GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    return expr


def check_expressions(promtool: str, exprs: list[str]) -> subprocess.CompletedProcess[str]:
    """Parse expressions with ``promtool check rules`` (each becomes a recording rule)."""
    rules = [{"record": f"corral_check:expr_{i}", "expr": substitute(e)} for i, e in enumerate(exprs)]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "expressions", "rules": rules}]}, f)
    try:
        return subprocess.run(
            [promtool, "check", "rules", f.name], check=False, capture_output=True, text=True, timeout=120
        )
    finally:
        os.unlink(f.name)
