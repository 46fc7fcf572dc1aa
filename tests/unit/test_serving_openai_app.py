"""The OpenAI HTTP layer over the transformers engine, in-process (the app a Serve replica mounts).

No Ray and no server: requests go through httpx's ASGI transport straight into the FastAPI
app of :class:`corral.serving._openai.OpenAIFrontend`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import torch
from prometheus_client import CollectorRegistry

from corral.models import tiny
from corral.serving import TransformersEngine
from corral.serving._loading import load_base
from corral.serving._metrics import ServingMetrics
from corral.serving._openai import OpenAIFrontend
from corral.serving._prompt import Prompter

torch.set_num_threads(1)
pytestmark = pytest.mark.asyncio

QUESTION = [{"role": "user", "content": "What is a Python list?"}]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("serving-openai-app")
    base = tiny.build("llama", root / "base")
    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), lora).save_pretrained(root / "ad")
    return {"base": base, "ad": root / "ad"}


Make = Callable[..., httpx.AsyncClient]


@pytest_asyncio.fixture
async def make_client(models: dict[str, Path]) -> AsyncIterator[Make]:
    engines: list[TransformersEngine] = []
    clients: list[httpx.AsyncClient] = []

    def make(*, prepared: list[str] | None = None, registry: CollectorRegistry | None = None, **kw: Any) -> Any:
        model, tok = load_base(f"file://{models['base']}")
        metrics = ServingMetrics("tiny", registry=registry or CollectorRegistry())
        engine = TransformersEngine(model, tok, adapters={"tiny-ad": f"file://{models['ad']}"}, metrics=metrics, **kw)
        engines.append(engine)

        async def prepare(name: str) -> None:
            if prepared is not None:
                prepared.append(name)

        frontend = OpenAIFrontend(
            engine, Prompter(tok), served_name="tiny", adapters=["tiny-ad"], metrics=metrics, prepare_adapter=prepare
        )
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=frontend.app()), base_url="http://corral/v1")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
    for engine in engines:
        await engine.close()


def events(body: str) -> list[Any]:
    """The ``data:`` payloads of a server-sent event stream (JSON decoded, ``[DONE]`` kept as text)."""
    out: list[Any] = []
    for block in body.split("\n\n"):
        if block.startswith("data: "):
            data = block.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_models_lists_base_and_adapters(make_client: Make) -> None:
    r = await make_client().get("/models")
    assert r.status_code == 200
    assert [(m["id"], m["parent"]) for m in r.json()["data"]] == [("tiny", None), ("tiny-ad", "tiny")]


async def test_streamed_chat_equals_whole_and_ends_with_done(make_client: Make) -> None:
    client = make_client()
    body = {"model": "tiny", "messages": QUESTION, "temperature": 0, "max_tokens": 24}
    whole = (await client.post("/chat/completions", json=body)).json()
    r = await client.post("/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    got = events(r.text)
    assert got[-1] == "[DONE]"
    chunks, usage_chunk = got[:-2], got[-2]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == whole["usage"]


async def test_ignore_eos_generates_exactly_max_tokens(make_client: Make) -> None:
    client = make_client()
    body = {"model": "tiny", "messages": QUESTION, "temperature": 0, "max_tokens": 200}
    natural = (await client.post("/chat/completions", json=body)).json()
    n = natural["usage"]["completion_tokens"]
    assert natural["choices"][0]["finish_reason"] == "stop" and n < 200, "the tiny model must end on its own"
    forced = (await client.post("/chat/completions", json={**body, "max_tokens": n + 8, "ignore_eos": True})).json()
    assert forced["choices"][0]["finish_reason"] == "length"
    assert forced["usage"]["completion_tokens"] == n + 8
    assert forced["choices"][0]["message"]["content"].startswith(natural["choices"][0]["message"]["content"])
    stream = await client.post(
        "/completions",
        json={"model": "tiny", "prompt": "hi", "max_tokens": 40, "ignore_eos": True, "stream": True,
              "stream_options": {"include_usage": True}},
    )  # fmt: skip
    assert events(stream.text)[-2]["usage"]["completion_tokens"] == 40


async def test_adapter_goes_through_the_multiplexing_hook(make_client: Make) -> None:
    prepared: list[str] = []
    client = make_client(prepared=prepared)
    body = {"prompt": "The Python language reference describes", "temperature": 0, "max_tokens": 16}
    base = (await client.post("/completions", json={**body, "model": "tiny"})).json()
    adapted = (await client.post("/completions", json={**body, "model": "tiny-ad"})).json()
    assert prepared == ["tiny-ad"]
    assert adapted["model"] == "tiny-ad" and adapted["choices"][0]["text"] != base["choices"][0]["text"]


async def test_errors_have_openai_shape_status_and_metrics(make_client: Make) -> None:
    registry = CollectorRegistry()
    client = make_client(registry=registry, max_context_length=64)
    unknown = await client.post("/chat/completions", json={"model": "nope", "messages": QUESTION})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    role = await client.post(
        "/chat/completions", json={"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}
    )
    assert role.status_code == 400 and role.json()["error"]["param"] == "messages.0.role"
    flag = await client.post("/completions", json={"model": "tiny", "prompt": "hi", "ignore_eos": "maybe"})
    assert flag.status_code == 400 and flag.json()["error"]["param"] == "ignore_eos"
    raw = await client.post("/chat/completions", content=b"{not json")
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
    long = await client.post("/chat/completions", json={"model": "tiny", "messages": QUESTION, "max_tokens": 64})
    assert long.status_code == 400 and long.json()["error"]["param"] == "max_tokens"
    counts = {
        code: registry.get_sample_value(
            "corral_serving_errors_total", {"model": "tiny", "adapter": "", "code": code, "type": kind}
        )
        for code, kind in (("404", "model_not_found"), ("400", "invalid_request"))
    }
    assert counts == {"404": 1.0, "400": 4.0}


async def test_full_queue_is_429(make_client: Make) -> None:
    client = make_client(max_waiting=0)
    r = await client.post("/completions", json={"model": "tiny", "prompt": "hi"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "overloaded"
