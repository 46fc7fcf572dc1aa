"""The Python client (what the CLI uses) against a live control API on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from corral.client import APIStatusError, Context, CorralClient, load_context, save_context
from corral.controlapi import TokenAuth, create_app
from corral.store import SqliteStore
from tests.conftest import REPO
from tests.support.http import serve

TOKEN = "client-test-token-0001"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SqliteStore]]:
    auth = TokenAuth.from_mapping({"tokens": [{"name": "dev", "token": TOKEN, "namespaces": ["*"], "cluster": True}]})
    store = SqliteStore(tmp_path_factory.mktemp("client") / "state.db")
    try:
        with serve(create_app(store, auth, registry=CollectorRegistry())) as port:
            yield f"http://127.0.0.1:{port}", store
    finally:
        store.close()


def test_apply_creates_then_configures_then_leaves_unchanged(api: tuple[str, SqliteStore], tmp_path: Path) -> None:
    url, _ = api
    with CorralClient(url, TOKEN, namespace="support") as client:
        first = client.apply_file(REPO / "examples" / "support-bot")
        assert [outcome for _, outcome in first] == ["created"] * len(first)
        assert {type(obj).__name__ for obj, _ in first} >= {"GPUPool", "Model", "Dataset", "FineTuneJob"}
        again = client.apply_file(REPO / "examples" / "support-bot")
        assert [outcome for _, outcome in again] == ["unchanged"] * len(again)
        job = yaml.safe_load((REPO / "examples/support-bot/30-finetunejob.yaml").read_text())
        job["spec"]["suspend"] = True
        path = tmp_path / "job.yaml"
        path.write_text(yaml.safe_dump(job))
        [(_, outcome)] = client.apply_file(path)
        assert outcome == "configured"
        live = client.get("ftj", "support-bot-v1")
        assert live["spec"]["suspend"] is True and live["metadata"]["generation"] == 2
        assert [m["metadata"]["name"] for m in client.list("models")] == ["tiny-llama"]
        assert client.list("gpupools")[0]["metadata"]["name"] == "local-cpu"


def test_events_and_errors(api: tuple[str, SqliteStore]) -> None:
    url, store = api
    with CorralClient(url, TOKEN, namespace="support") as client:
        obj = store.get("Model", "support", "tiny-llama")
        store.record_event(obj, "Warning", "ArtifactMissing", "weights not found")
        events = client.events("model", "tiny-llama")
        assert events[-1]["reason"] == "ArtifactMissing" and events[-1]["type"] == "Warning"
        with pytest.raises(APIStatusError) as info:
            client.get("model", "nope")
        assert info.value.code == 404
        with pytest.raises(ValueError, match="not a Corral kind"):
            client.get("pods", "x")
    with CorralClient(url, "wrong-token") as bad, pytest.raises(APIStatusError) as info:
        bad.list("models")
    assert info.value.code == 401 and "wrong-token" not in str(info.value)


def test_context_file_round_trip_is_private(tmp_path: Path) -> None:
    env = {"CORRAL_HOME": str(tmp_path / "home")}
    path = save_context(Context("http://127.0.0.1:1", "secret-token", "support"), env)
    assert path.stat().st_mode & 0o077 == 0
    ctx = load_context(env)
    assert ctx.server == "http://127.0.0.1:1" and ctx.token == "secret-token" and ctx.namespace == "support"
    assert "secret-token" not in repr(ctx)
    assert load_context({**env, "CORRAL_NAMESPACE": "other"}).namespace == "other"
    with pytest.raises(FileNotFoundError, match="corral up"):
        load_context({"CORRAL_HOME": str(tmp_path / "empty")})
