"""Serving metrics recorded inside a Ray actor (as in a Serve replica) reach Ray's Prometheus
exposition under the names the dashboards and alert rules use (``ray_corral_serving_*``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from corral.observability import CONTRACT
from tests.conftest import REPO
from tests.support.promtool import binary

# Labels Ray's exporter adds to every sample; they are CamelCase, which promtool's lint rejects.
_RAY_LABEL = re.compile(r'(?<=[{,])(Component|NodeAddress|SessionName|Version|WorkerId|otel_scope_\w+)="[^"]*",?')


@pytest.fixture(scope="module")
def exposition() -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a private throwaway Ray without a dashboard
    return subprocess.run(
        [sys.executable, "-m", "tests.support.ray_metrics_probe"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    ).stdout


def test_ray_exports_every_serving_metric_under_the_ray_prefix(exposition: str) -> None:
    out = exposition
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


def test_corral_part_of_rays_exposition_passes_promtool(exposition: str) -> None:
    """promtool's lint rejects Ray's own CamelCase labels; everything Corral adds must pass it."""
    promtool = binary("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (make tools installs it)")
    ours = [line for line in exposition.splitlines() if "corral_serving" in line]
    text = "\n".join(_RAY_LABEL.sub("", line).replace(",}", "}") for line in ours) + "\n"
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
