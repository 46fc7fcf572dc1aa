"""The one-base-URL chat proxy's routing: model -> the namespace's deployment that serves it (no servers)."""

from __future__ import annotations

import asyncio

import pytest

from corral.api.v1alpha1 import ModelDeployment
from corral.controlapi._openai_chat import ChatRouter
from corral.controlapi._openai_schemas import OpenAIError
from corral.serving import MULTIPLEX_HEADER
from corral.store import SqliteStore
from tests.support.objects import applied, deployment


def _deployment(store: SqliteStore, namespace: str, name: str, adapters: list[str], endpoint: str | None) -> None:
    listed = [{"name": a, "model": {"name": f"model-{i}"}} for i, a in enumerate(adapters)]
    store.create(applied(deployment(name, ns=namespace, finalizers=(), model={"name": "tiny-llama"}, adapters=listed)))
    status = {"phase": "Ready", "servedModels": ["tiny-llama", *adapters]}
    if endpoint:
        status["endpoint"] = endpoint
    store.patch_status(ModelDeployment, namespace, name, status)


@pytest.fixture
def store() -> SqliteStore:
    store = SqliteStore(":memory:")
    _deployment(store, "team-a", "bot", ["ft:tiny-llama:x:ftjob-1"], "http://serve/team-a/bot/v1")
    _deployment(store, "team-b", "other", ["secret-adapter"], "http://serve/team-b/other/v1")
    _deployment(store, "team-a", "starting", ["not-yet"], None)
    return store


def test_routes_by_model_with_the_multiplexing_header_for_adapters(store: SqliteStore) -> None:
    router = ChatRouter(store)
    adapter = asyncio.run(router.route("team-a", "ft:tiny-llama:x:ftjob-1"))
    assert (adapter.deployment, adapter.endpoint) == ("bot", "http://serve/team-a/bot/v1")
    assert adapter.headers == {MULTIPLEX_HEADER: "ft:tiny-llama:x:ftjob-1"}
    base = asyncio.run(router.route("team-a", "tiny-llama"))
    assert base.deployment == "bot" and base.headers == {}


def test_other_namespaces_and_endpointless_deployments_are_not_routed(store: SqliteStore) -> None:
    router = ChatRouter(store)
    for model in ("secret-adapter", "not-yet", "missing"):
        with pytest.raises(OpenAIError) as err:
            asyncio.run(router.route("team-a", model))
        assert err.value.status == 404 and err.value.code == "model_not_found"
        assert "secret-adapter" not in err.value.message.split("(served:")[1]  # team-b's names stay hidden


def test_a_new_deployment_is_found_on_a_miss_despite_the_cache(store: SqliteStore) -> None:
    router = ChatRouter(store, cache_seconds=3600)
    assert {m["id"] for m in asyncio.run(router.models("team-a"))} == {"tiny-llama", "ft:tiny-llama:x:ftjob-1"}
    _deployment(store, "team-a", "second", ["new-adapter"], "http://serve/team-a/second/v1")
    assert asyncio.run(router.route("team-a", "new-adapter")).deployment == "second"
