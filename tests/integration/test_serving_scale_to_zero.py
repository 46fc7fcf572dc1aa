"""Scale from zero on a real local Ray Serve, through the official openai client: nothing is refused.

Two applications built by :func:`corral.serving.serve_config` from ``minReplicas: 0``
ModelDeployments (so each has the ``CorralActivator`` ingress in front of the model):

* ``zero``: the tiny base, 0..2 replicas. At zero a request is answered (held while a replica
  starts), and a burst during the scale-up loses nothing. Each test first waits until the
  application is back at zero (pytest-randomly shuffles the order).
* ``zero-stuck``: replicas that ask for more CPUs than this Ray has, so none can ever start; with
  ``holdTimeoutSeconds: 2`` a request gets 503, ``Retry-After`` and OpenAI's error body.

Both are deployed in one declarative config (a second ``deploy_apps`` would replace the first).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from corral.api.v1alpha1.common import LocalObjectReference
from corral.api.v1alpha1.modeldeployment import ModelDeployment
from corral.models import tiny
from corral.serving import LLM_DEPLOYMENT, ResolvedModel, app_name, cold_start_estimate, serve_config

QUESTION = [{"role": "user", "content": "What is a Python list?"}]
DEADLINE = 300.0  # a cold start on a loaded 2-core box: worker process, torch import, load


def _deployment(name: str, **spec: Any) -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "model": {"name": "tiny"},
                "servedName": "tiny",
                "resources": {"cpusPerReplica": "500m"},
                "maxConcurrentSequences": 4,
                "autoscaling": {
                    "minReplicas": 0,
                    "maxReplicas": 2,
                    "targetOngoingRequests": 2,
                    "upscaleDelaySeconds": 0,
                    "downscaleDelaySeconds": 2,
                },
                **spec,
            },
        }
    )


def _deploy(deps: list[ModelDeployment], base: Path) -> None:
    """Deploy ``deps`` as one declarative config (it replaces every application) and wait until they run."""
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    def resolve(ref: LocalObjectReference) -> ResolvedModel:
        return ResolvedModel(uri=f"file://{base}")

    config = serve_config(deps, resolve)
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))
    deadline = time.monotonic() + 240
    statuses: dict[str, Any] = {}
    while time.monotonic() < deadline:
        statuses = {app_name(d): serve.status().applications.get(app_name(d)) for d in deps}
        if all(s is not None and s.status == "RUNNING" for s in statuses.values()):
            return
        failed = [s for s in statuses.values() if s is not None and s.status in ("DEPLOY_FAILED", "UNHEALTHY")]
        if failed:
            pytest.fail(f"deploy failed: {failed[0].message}")
        time.sleep(1)
    pytest.fail(f"applications not running after 240 s: {statuses}")


def _running(app: str) -> int:
    from ray import serve

    status = serve.status().applications[app].deployments[LLM_DEPLOYMENT]
    return int(status.replica_states.get("RUNNING", 0))


def _wait_for_zero(app: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if _running(app) == 0:
            return
        time.sleep(1)
    pytest.fail(f"{app} did not scale back to zero within {DEADLINE:.0f} s")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build("llama", tmp_path_factory.mktemp("scale-to-zero") / "base")


STUCK = _deployment("zero-stuck", resources={"cpusPerReplica": "64"})  # more CPUs than this Ray has: never starts
STUCK.spec.autoscaling.hold_timeout_seconds = 2  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def apps(serve_url: str, base: Path) -> Iterator[str]:
    from ray import serve

    _deploy([_deployment("zero"), STUCK], base)
    try:
        yield serve_url
    finally:
        serve.delete("default-zero")
        serve.delete("default-zero-stuck")


@pytest.fixture(scope="module")
def zero(apps: str) -> str:
    return f"{apps}/default/zero/v1"


def test_request_at_zero_replicas_is_answered(zero: str) -> None:
    client = openai.OpenAI(base_url=zero, api_key="unused", max_retries=0, timeout=DEADLINE)
    _wait_for_zero("default-zero")  # at once when this test runs first: minReplicas 0 starts with no replica
    assert [m.id for m in client.models.list().data] == ["tiny"]  # the activator answers this itself
    assert _running("default-zero") == 0
    out = client.chat.completions.create(model="tiny", messages=QUESTION, temperature=0, max_tokens=8)
    assert out.choices[0].message.content and out.choices[0].finish_reason in ("stop", "length")
    assert _running("default-zero") >= 1
    stream = client.chat.completions.create(model="tiny", messages=QUESTION, temperature=0, max_tokens=8, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == out.choices[0].message.content  # the stream passes through the activator unchanged


def test_burst_during_scale_up_from_zero_loses_nothing(zero: str) -> None:
    _wait_for_zero("default-zero")
    client = openai.AsyncOpenAI(base_url=zero, api_key="unused", max_retries=0, timeout=DEADLINE)

    async def one(i: int) -> str:
        if i % 2:
            out = await client.completions.create(model="tiny", prompt=f"Item {i} is", max_tokens=6, temperature=0)
            return out.choices[0].finish_reason or ""
        answer = await client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=6, stream=True)
        finish = ""
        async for chunk in answer:
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        return finish

    async def burst() -> list[str | BaseException]:
        try:
            return await asyncio.gather(*(one(i) for i in range(16)), return_exceptions=True)
        finally:
            await client.close()

    results = asyncio.run(burst())
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == [], f"{len(failures)} of {len(results)} failed: {failures[:3]}"
    assert all(r in ("stop", "length") for r in results), results


def test_request_past_the_hold_timeout_gets_503_with_retry_after(apps: str) -> None:
    url = f"{apps}/default/zero-stuck/v1"
    raw = httpx.post(
        f"{url}/chat/completions", json={"model": "tiny", "messages": QUESTION, "max_tokens": 4}, timeout=120
    )
    assert raw.status_code == 503
    assert raw.headers["retry-after"] == str(cold_start_estimate(STUCK.spec, [0]))
    error = raw.json()["error"]
    assert error["code"] == "cold_start_timeout" and error["type"] == "server_error"
    assert "within 2 s" in error["message"]
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
    with pytest.raises(openai.InternalServerError) as info:
        client.completions.create(model="tiny", prompt="Hi", max_tokens=4)
    assert info.value.status_code == 503 and info.value.response.headers["retry-after"].isdigit()
