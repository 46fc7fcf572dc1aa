"""Serving metrics recorded inside a Ray actor (as in a Serve replica) reach Ray's Prometheus
exposition under the names the dashboards and alert rules use (``ray_corral_serving_*``)."""

from __future__ import annotations

import os
import subprocess
import sys

from corral.observability import CONTRACT
from tests.conftest import REPO


def test_ray_exports_every_serving_metric_under_the_ray_prefix() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a private throwaway Ray without a dashboard
    out = subprocess.run(
        [sys.executable, "-m", "tests.support.ray_metrics_probe"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    ).stdout
    samples = {line.split("{")[0].split(" ")[0] for line in out.splitlines() if line and not line.startswith("#")}
    missing = []
    for spec in CONTRACT:
        if spec.source != "serving" or spec.name.endswith(("_desired_replicas", "_ready_replicas")):
            continue
        wanted = f"ray_{spec.name}_bucket" if spec.type == "histogram" else f"ray_{spec.name}"
        if wanted not in samples:
            missing.append(wanted)
    assert not missing, f"not in Ray's exposition: {missing}"
    assert 'type="model_not_found"' in out and 'code="404"' in out and 'adapter="billing"' in out
