"""``corral apply | get | describe | delete`` against a live control API (context from the environment)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from corral.cli import app
from corral.controlapi import TokenAuth, create_app
from corral.store import SqliteStore
from tests.conftest import REPO
from tests.support.http import serve

TOKEN = "cli-test-token-0001"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    auth = TokenAuth.from_mapping({"tokens": [{"name": "dev", "token": TOKEN, "namespaces": ["*"], "cluster": True}]})
    home = tmp_path_factory.mktemp("home")
    store = SqliteStore(home / "state.db")
    try:
        with serve(create_app(store, auth, registry=CollectorRegistry())) as port:
            yield {
                "CORRAL_HOME": str(home),
                "CORRAL_SERVER": f"http://127.0.0.1:{port}",
                "CORRAL_TOKEN": TOKEN,
                "CORRAL_NAMESPACE": "support",
            }
    finally:
        store.close()


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_apply_get_describe_delete(env: dict[str, str]) -> None:
    code, out = run(env, "apply", "-f", str(REPO / "examples/support-bot"))
    assert code == 0, out
    assert "finetunejobs.corral.dev/support-bot-v1 created" in out
    code, out = run(env, "apply", "-f", str(REPO / "examples/support-bot"))
    assert "finetunejobs.corral.dev/support-bot-v1 unchanged" in out

    code, out = run(env, "get", "ftj")
    assert code == 0
    header = out.splitlines()[0].split()
    assert header[:4] == ["NAME", "BASE", "METHOD", "PHASE"]
    assert "support-bot-v1" in out and "tiny-llama" in out and "lora" in out

    code, out = run(env, "get", "finetunejob", "support-bot-v1", "-o", "yaml")
    assert yaml.safe_load(out)["spec"]["lora"]["rank"] == 16

    code, out = run(env, "get", "models", "-A")
    assert out.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]

    code, out = run(env, "describe", "ftj", "support-bot-v1")
    assert code == 0
    assert "Name:         support-bot-v1" in out and "Conditions:" in out and "Events:" in out

    code, out = run(env, "delete", "mdep", "support-bot")
    assert code == 0 and "deleted" in out
    code, out = run(env, "get", "mdep", "support-bot")
    assert code == 1 and "NotFound" in out


def test_errors_are_clear(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    code, out = run(env, "get", "pods")
    assert code == 2 and "not a Corral kind" in out
    bad = tmp_path_factory.mktemp("bad") / "bad.yaml"
    bad.write_text(
        (REPO / "examples/support-bot/40-deployment.yaml").read_text().replace("replicas: 1", "replicas: -1")
    )
    code, out = run(env, "apply", "-f", str(bad))
    assert code == 1 and "spec.replicas: -1" in out
    code, out = run({**env, "CORRAL_TOKEN": "nope"}, "get", "models")
    assert code == 1 and "Unauthorized" in out and "nope" not in out
