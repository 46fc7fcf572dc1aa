"""The OpenAI-compatible endpoint, live on a local Ray Serve, through the official openai client.

One application (the tiny base plus two LoRA adapters) is deployed once for the module
from the config :func:`corral.serving.serve_config` builds: the same dict a RayService
would carry, with the token check the control plane adds (one accepted token's SHA-256).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import torch

from corral.api.v1alpha1.common import LocalObjectReference
from corral.api.v1alpha1.modeldeployment import ModelDeployment
from corral.models import tiny
from corral.serving import MULTIPLEX_HEADER, ResolvedModel, serve_config

NAME = "tinybot"
APP = f"default-{NAME}"  # serve_config names it <namespace>-<name>, at /<namespace>/<name>
TOKEN = "team-support-chat-token"
QUESTION = [{"role": "user", "content": "What is a Python list?"}]
PROSE = "The Python language reference describes"


def make_adapter(base: Path, out: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def endpoint(serve_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    root = tmp_path_factory.mktemp("serving-openai")
    uris = {"tiny": tiny.build("llama", root / "base")}
    uris["ad-a"] = make_adapter(uris["tiny"], root / "ad-a", 1)
    uris["ad-b"] = make_adapter(uris["tiny"], root / "ad-b", 2)

    def resolve(ref: LocalObjectReference) -> ResolvedModel:
        return ResolvedModel(uri=f"file://{uris[ref.name]}")

    dep = ModelDeployment.model_validate(
        {
            "metadata": {"name": NAME},
            "spec": {
                "model": {"name": "tiny"},
                "servedName": "tiny",
                "adapters": [
                    {"name": "tiny-a", "model": {"name": "ad-a"}},
                    {"name": "tiny-b", "model": {"name": "ad-b"}},
                ],
                "resources": {"cpusPerReplica": "500m"},
                "maxConcurrentSequences": 8,
                "maxAdaptersPerReplica": 2,
            },
        }
    )
    config = serve_config([dep], resolve)
    config["applications"][0]["args"]["auth"] = {"token_sha256": [hashlib.sha256(TOKEN.encode()).hexdigest()]}
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))
    deadline = time.monotonic() + 240
    status = None
    while time.monotonic() < deadline:
        status = serve.status().applications.get(APP)
        if status is not None and status.status == "RUNNING":
            break
        if status is not None and status.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            pytest.fail(f"deploy failed: {status.message}")
        time.sleep(1)
    else:
        pytest.fail(f"application not running after 240s: {status}")
    try:
        yield f"{serve_url}/default/{NAME}/v1"
    finally:
        serve.delete(APP)


@pytest.fixture
def client(endpoint: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=endpoint, api_key=TOKEN, max_retries=0, timeout=60)


def test_models_lists_base_and_adapters(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny", "tiny-a", "tiny-b"]


def test_plain_chat_answer(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model="tiny", messages=QUESTION, temperature=0, max_tokens=32)
    choice = out.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert out.usage is not None and out.usage.prompt_tokens > 0 and out.usage.completion_tokens > 0
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_streamed_equals_non_streamed(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="tiny", messages=QUESTION, temperature=0, max_tokens=32)
    stream = client.chat.completions.create(
        model="tiny",
        messages=QUESTION,
        temperature=0,
        max_tokens=32,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


def test_completions_stream_and_length(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="tiny", prompt=PROSE, temperature=0, max_tokens=12)
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 12  # type: ignore[union-attr]
    text = "".join(
        c.choices[0].text
        for c in client.completions.create(model="tiny", prompt=PROSE, temperature=0, max_tokens=12, stream=True)
        if c.choices
    )
    assert text == whole.choices[0].text


def test_two_adapters_answer_differently(client: openai.OpenAI) -> None:
    answers = {
        name: client.completions.create(model=name, prompt=PROSE, temperature=0, max_tokens=16).choices[0].text
        for name in ("tiny", "tiny-a", "tiny-b")
    }
    assert len(set(answers.values())) == 3, answers
    again = client.completions.create(model="tiny-a", prompt=PROSE, temperature=0, max_tokens=16)
    assert again.choices[0].text == answers["tiny-a"]


def test_multiplexed_header_reaches_a_replica_holding_the_adapter(client: openai.OpenAI) -> None:
    """The header Serve's proxy routes on is accepted end to end; the replica holds the adapter after."""
    from ray import serve

    plain = client.completions.create(model="tiny-b", prompt=PROSE, temperature=0, max_tokens=8)
    routed = client.completions.create(
        model="tiny-b", prompt=PROSE, temperature=0, max_tokens=8, extra_headers={MULTIPLEX_HEADER: "tiny-b"}
    )
    assert routed.choices[0].text == plain.choices[0].text
    stats = serve.get_deployment_handle("CorralLLMServer", app_name=APP).stats.remote().result(timeout_s=60)
    assert "tiny-b" in stats["adapters_loaded"] and stats["adapter_loads"] >= 1


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == "model" and body["code"] == "model_not_found"


def test_malformed_body_is_400_naming_the_field(client: openai.OpenAI, endpoint: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=[{"role": "robot", "content": "x"}])  # type: ignore[list-item,misc]
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "messages.0.role"
    with pytest.raises(openai.BadRequestError) as too_many:
        client.chat.completions.create(model="tiny", messages=QUESTION, n=2)
    assert isinstance(too_many.value.body, dict) and too_many.value.body["param"] == "n"
    raw = httpx.post(
        f"{endpoint}/chat/completions", content=b"{not json", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"


def test_the_endpoint_asks_who_is_calling(endpoint: str) -> None:
    stranger = openai.OpenAI(base_url=endpoint, api_key="not-a-token-of-this-namespace", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError) as refused:
        stranger.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=4)
    assert refused.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()
    for method, path in (("GET", "/models"), ("POST", "/chat/completions"), ("POST", "/completions")):
        answer = httpx.request(method, f"{endpoint}{path}", json={"model": "tiny", "prompt": "x"}, timeout=30)
        assert answer.status_code == 401, (path, answer.text)
        assert answer.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{endpoint.removesuffix('/v1')}/healthz", timeout=30).status_code == 200


def test_bodies_are_capped_and_long_prompts_refused_before_tokenizing(endpoint: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    big = httpx.post(f"{endpoint}/chat/completions", content=b"x" * (5 * 2**20), headers=auth, timeout=60)
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    long_prompt = {"model": "tiny", "messages": [{"role": "user", "content": "word " * 600_000}], "max_tokens": 4}
    answer = httpx.post(f"{endpoint}/chat/completions", json=long_prompt, headers=auth, timeout=60)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "messages" and "characters" in answer.json()["error"]["message"]
