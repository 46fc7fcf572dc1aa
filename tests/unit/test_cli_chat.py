"""``corral chat`` finds the endpoint serving a model and the headers that route to its adapter."""

from __future__ import annotations

from typing import Any

import pytest

from corral.cli._chat import Endpoint, find_endpoint


class _Listing:
    """What ``find_endpoint`` reads from a CorralClient: one namespace's ModelDeployments."""

    namespace = "team-a"

    def __init__(self, *deployments: dict[str, Any]) -> None:
        self._deployments = list(deployments)

    def list(self, plural: str) -> list[dict[str, Any]]:
        assert plural == "modeldeployments"
        return self._deployments

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": "Bearer team-a-token"}


def _deployment(name: str, served: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"model": {"name": "tiny"}, **spec},
        "status": {"servedModels": served, "endpoint": f"http://serve/team-a/{name}/v1"},
    }


def test_adapter_gets_the_multiplexing_header_and_the_base_none() -> None:
    bot = _deployment("bot", ["tiny", "support"], adapters=[{"name": "support", "model": {"name": "ft"}}])
    client: Any = _Listing(bot)
    auth = {"Authorization": "Bearer team-a-token"}  # the chat endpoint asks for the namespace's token
    assert find_endpoint(client, "support") == Endpoint(
        "http://serve/team-a/bot/v1", "bot", {"serve_multiplexed_model_id": "support", **auth}
    )
    assert find_endpoint(client, "tiny").headers == auth
    with pytest.raises(LookupError, match="support"):
        find_endpoint(client, "nope")


def test_vllm_adapter_gets_no_header() -> None:
    gpu = _deployment(
        "gpu",
        ["llama", "llama:support"],
        resources={"gpusPerReplica": 1},
        adapters=[{"name": "support", "model": {"name": "ft"}}],
    )
    client: Any = _Listing(gpu)
    assert find_endpoint(client, "llama:support").headers == {"Authorization": "Bearer team-a-token"}
