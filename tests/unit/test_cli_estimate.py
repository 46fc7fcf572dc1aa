"""``corral estimate`` on the cluster example, with typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from corral.cli import _estimate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "cluster"
JOB = EXAMPLES / "llama3-support.yaml"
POOLS = EXAMPLES / "gpupools.yaml"


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    _estimate.register(app)

    @app.command("noop")  # a second command keeps typer in multi-command mode, as in corral's app
    def noop() -> None:
        pass

    return app


def test_table_for_the_cluster_example(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["estimate", "-f", str(JOB), "--pools", str(POOLS), "--examples", "20000"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "FineTuneJob team-a/llama-support-v3" in out
    assert "Options per pool" in out
    assert "a100-spot" in out and "l4-serving" in out
    assert "placed 8 x 1 nvidia-a100-80gb on a100-spot" in out  # preemptible: the spot pool is cheapest
    assert "ModelDeployment team-a/llama-support" in out


def test_json_output(app: typer.Typer) -> None:
    result = CliRunner().invoke(
        app, ["estimate", "-f", str(JOB), "--pools", str(POOLS), "--tokens", "1000000", "--json"]
    )
    assert result.exit_code == 0, result.output
    docs = json.loads(result.output)
    job = next(d for d in docs if d["kind"] == "FineTuneJob")
    assert job["trainTokens"] == 3_000_000  # 3 epochs
    assert job["model"]["params"] == 8_030_261_248  # llama-3.1-8b-instruct -> catalog llama-3.1-8b
    assert job["estimate"]["gpus"] == 8
    assert job["decision"]["admitted"] and job["decision"]["pool"] == "a100-spot"
    assert {o["pool"] for o in job["options"]} == {"a100-ondemand", "a100-spot", "h100", "l4-serving"}
    dep = next(d for d in docs if d["kind"] == "ModelDeployment")
    assert dep["decision"]["admitted"] and dep["decision"]["pool"] == "l4-serving"


def test_deployment_too_big_for_the_pool_says_why(app: typer.Typer, tmp_path: Path) -> None:
    text = JOB.read_text().replace("maxContextLength: 4096", "maxContextLength: 8192")
    big = tmp_path / "big.yaml"
    big.write_text(text.replace("maxConcurrentSequences: 8", "maxConcurrentSequences: 64"))
    result = CliRunner().invoke(app, ["estimate", "-f", str(big), "--pools", str(POOLS), "--tokens", "1000", "--json"])
    assert result.exit_code == 0, result.output
    dep = next(d for d in json.loads(result.output) if d["kind"] == "ModelDeployment")
    # 64 sequences x 8192 tokens of KV cache do not fit one L4: reported, with the reason.
    assert not dep["decision"]["admitted"] and "24.0 GiB per GPU" in dep["decision"]["message"]


def test_params_option_without_catalog_model(app: typer.Typer, tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        "apiVersion: corral.dev/v1alpha1\nkind: FineTuneJob\nmetadata: {name: j, namespace: ns}\n"
        "spec:\n  baseModel: {name: my-private-model}\n  datasets: [{name: d}]\n  method: qlora\n"
        "  resources: {workers: 1, gpusPerWorker: 1}\n"
    )
    result = CliRunner().invoke(app, ["estimate", "-f", str(job), "--params", "7e9", "--arch", "llama", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["estimate"]["method"] == "qlora" and "decision" not in doc
    missing = CliRunner().invoke(app, ["estimate", "-f", str(job)])
    assert missing.exit_code != 0
    assert "--params" in missing.output
