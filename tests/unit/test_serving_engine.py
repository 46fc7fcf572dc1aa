"""The transformers engine in-process: batching, multi-LoRA, stops, limits, usage, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client import CollectorRegistry

from corral.models import tiny
from corral.serving import (
    GenerationRequest,
    InvalidRequestError,
    ModelNotFoundError,
    SamplingParams,
    TransformersEngine,
)
from corral.serving._loading import load_base
from corral.serving._metrics import ServingMetrics
from corral.serving._prompt import Prompter

torch.set_num_threads(1)
pytestmark = pytest.mark.asyncio

QUESTIONS = [
    "What is a Python list?",
    "How do I open a file?",
    "hi",
    "Explain what a dictionary comprehension is and when to use one.",
]


def make_adapter(base: Path, out: Path, seed: int) -> Path:
    """A random (non-zero) LoRA adapter: enough to make answers differ from the base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft = get_peft_model(model, config)
    peft.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serving-engine")
    base = tiny.build("llama", root / "base")
    return {
        "base": base,
        "a0": make_adapter(base, root / "a0", 1),
        "a1": make_adapter(base, root / "a1", 2),
        "a2": make_adapter(base, root / "a2", 3),
    }


@pytest.fixture(scope="module")
def loaded(models: dict[str, Path]) -> tuple[Any, Any]:
    return load_base(f"file://{models['base']}")


@pytest.fixture
def engine_factory(loaded: tuple[Any, Any], models: dict[str, Path]) -> Iterator[Any]:
    import copy

    made: list[TransformersEngine] = []

    def make(**kw: Any) -> TransformersEngine:
        model, tok = loaded
        kw.setdefault("adapters", {n: f"file://{p}" for n, p in models.items() if n != "base"})
        eng = TransformersEngine(copy.deepcopy(model), tok, **kw)
        made.append(eng)
        return eng

    yield make
    for eng in made:
        eng._executor.shutdown(wait=False)


def prompt(loaded: tuple[Any, Any], question: str) -> tuple[int, ...]:
    return tuple(Prompter(loaded[1]).chat([{"role": "user", "content": question}]))


def prose(loaded: tuple[Any, Any]) -> tuple[int, ...]:
    """A raw-text prompt the base continues at length (chat answers of the tiny model are short)."""
    return tuple(Prompter(loaded[1]).completion("The Python language reference describes"))


async def collect(engine: TransformersEngine, req: GenerationRequest) -> dict[str, Any]:
    chunks = [c async for c in engine.generate(req)]
    return {
        "text": "".join(c.text for c in chunks),
        "tokens": [t for c in chunks for t in c.token_ids],
        "finish": chunks[-1].finish_reason,
        "last": chunks[-1],
        "chunks": chunks,
    }


def greedy(ids: tuple[int, ...], max_tokens: int = 24, adapter: str | None = None, **kw: Any) -> GenerationRequest:
    return GenerationRequest(ids, SamplingParams(max_tokens=max_tokens, temperature=0.0, **kw), adapter=adapter)


async def test_greedy_matches_transformers_generate(engine_factory: Any, loaded: tuple[Any, Any]) -> None:
    engine = engine_factory()
    model = loaded[0]
    ids = prompt(loaded, QUESTIONS[0])
    out = await collect(engine, greedy(ids))
    ref = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)[0, len(ids) :].tolist()
    assert out["tokens"] == ref[: len(out["tokens"])]
    again = await collect(engine, greedy(ids))
    assert again["tokens"] == out["tokens"]


async def test_stream_pieces_join_to_the_whole_answer(engine_factory: Any, loaded: tuple[Any, Any]) -> None:
    engine = engine_factory()
    tok = loaded[1]
    out = await collect(engine, greedy(prose(loaded), max_tokens=40))
    assert len(out["chunks"]) == len(out["tokens"]), "one chunk per generated token"
    body = out["tokens"][:-1] if out["finish"] == "stop" else out["tokens"]
    assert out["text"] == tok.decode(body, skip_special_tokens=True)


async def test_concurrent_requests_are_batched_and_unchanged(engine_factory: Any, loaded: tuple[Any, Any]) -> None:
    engine = engine_factory(max_batch_size=8)
    reqs = [greedy(prompt(loaded, q), max_tokens=32) for q in QUESTIONS * 2]
    solo = [await collect(engine, r) for r in reqs]
    engine.step_log.clear()
    together = await asyncio.gather(*(collect(engine, r) for r in reqs))
    assert [t["tokens"] for t in together] == [s["tokens"] for s in solo]
    decode_sizes = [n for kind, n in engine.step_log if kind == "decode"]
    assert max(decode_sizes) >= 4, engine.step_log
    total_tokens = sum(len(t["tokens"]) for t in together)
    assert len(engine.step_log) < total_tokens / 2, "forward passes must be shared between requests"


async def test_requests_join_a_running_batch(engine_factory: Any, loaded: tuple[Any, Any]) -> None:
    engine = engine_factory(max_batch_size=8)
    long = greedy(prose(loaded), max_tokens=48)
    ids = prompt(loaded, QUESTIONS[1])
    solo = await collect(engine, greedy(ids, max_tokens=8))
    engine.step_log.clear()

    async def late() -> dict[str, Any]:
        while engine.stats().steps < 3:
            await asyncio.sleep(0.001)
        return await collect(engine, greedy(ids, max_tokens=8))

    _, second = await asyncio.gather(collect(engine, long), late())
    assert second["tokens"] == solo["tokens"]
    kinds = [k for k, _ in engine.step_log]
    assert kinds.count("prefill") == 2 and ("decode", 2) in engine.step_log, engine.step_log


async def test_adapters_in_one_batch_answer_differently(engine_factory: Any, loaded: tuple[Any, Any]) -> None:
    engine = engine_factory(max_adapters=3)
    ids = prompt(loaded, QUESTIONS[0])
    names = [None, "a0", "a1"]
    solo = [await collect(engine, greedy(ids, adapter=n)) for n in names]
    engine.step_log.clear()
    mixed = await asyncio.gather(*(collect(engine, greedy(ids, adapter=n)) for n in names))
    assert [m["tokens"] for m in mixed] == [s["tokens"] for s in solo]
    assert len({tuple(m["tokens"]) for m in mixed}) == 3, "base and two adapters must answer differently"
    assert max(n for _, n in engine.step_log) == 3, "the three rows share forward passes"


async def test_adapter_lru_eviction(engine_factory: Any, loaded: tuple[Any, Any]) -> None:
    engine = engine_factory(max_adapters=2)
    ids = prompt(loaded, QUESTIONS[2])
    first = await collect(engine, greedy(ids, adapter="a0"))
    await collect(engine, greedy(ids, adapter="a1"))
    await collect(engine, greedy(ids, adapter="a0"))  # a0 is now the most recent
    await collect(engine, greedy(ids, adapter="a2"))  # evicts a1
    stats = engine.stats()
    assert stats.adapters_loaded == ("a0", "a2")
    assert (stats.adapter_loads, stats.adapter_evictions) == (3, 1)
    again = await collect(engine, greedy(ids, adapter="a0"))
    assert again["tokens"] == first["tokens"]
    await engine.unload_adapter("a2")
    assert engine.stats().adapters_loaded == ("a0",)


async def test_more_adapters_than_slots_wait_for_a_slot(engine_factory: Any, loaded: tuple[Any, Any]) -> None:
    engine = engine_factory(max_adapters=1)
    ids = prompt(loaded, QUESTIONS[0])
    outs = await asyncio.gather(*(collect(engine, greedy(ids, adapter=n)) for n in ["a0", "a1", "a2"]))
    assert all(o["finish"] in ("stop", "length") for o in outs)
    assert engine.stats().adapter_evictions == 2


async def test_stop_string_ends_before_it(engine_factory: Any, loaded: tuple[Any, Any]) -> None:
    engine = engine_factory()
    ids = prose(loaded)
    full = await collect(engine, greedy(ids, max_tokens=40))
    assert len(full["text"]) > 6, full["text"]
    stop = full["text"][3:6]
    cut = await collect(engine, greedy(ids, max_tokens=40, stop=(stop,)))
    assert cut["finish"] == "stop"
    assert cut["text"] == full["text"][: full["text"].find(stop)]
    assert stop not in "".join(c.text for c in cut["chunks"])


async def test_max_tokens_finish_reason_and_usage(engine_factory: Any, loaded: tuple[Any, Any]) -> None:
    engine = engine_factory()
    ids = prose(loaded)
    out = await collect(engine, greedy(ids, max_tokens=3))
    assert out["finish"] == "length"
    assert out["last"].completion_tokens == 3 and out["last"].prompt_tokens == len(ids)
    chat = prompt(loaded, QUESTIONS[0])
    natural = await collect(engine, greedy(chat, max_tokens=200))
    assert natural["finish"] == "stop" and natural["last"].completion_tokens == len(natural["tokens"])


async def test_seeded_sampling_is_reproducible(engine_factory: Any, loaded: tuple[Any, Any]) -> None:
    engine = engine_factory()
    ids = prompt(loaded, QUESTIONS[1])

    def req(seed: int) -> GenerationRequest:
        return GenerationRequest(ids, SamplingParams(max_tokens=20, temperature=1.5, top_p=0.9, seed=seed))

    a, b = await asyncio.gather(collect(engine, req(7)), collect(engine, req(7)))
    assert a["tokens"] == b["tokens"]
    others = [await collect(engine, req(s)) for s in range(8, 12)]
    assert any(o["tokens"] != a["tokens"] for o in others)


async def test_errors(engine_factory: Any, loaded: tuple[Any, Any]) -> None:
    engine = engine_factory(max_context_length=64)
    ids = prompt(loaded, QUESTIONS[0])
    with pytest.raises(ModelNotFoundError):
        await collect(engine, greedy(ids, adapter="nope"))
    with pytest.raises(InvalidRequestError) as too_long:
        await collect(engine, greedy(tuple(range(5, 70))))
    assert too_long.value.param == "prompt"
    with pytest.raises(InvalidRequestError) as too_many:
        await collect(engine, greedy(ids, max_tokens=64))
    assert too_many.value.param == "max_tokens"
    out = await collect(engine, GenerationRequest(ids, SamplingParams(temperature=0.0)))
    assert out["finish"] in ("stop", "length")
    assert len(ids) + out["last"].completion_tokens <= 64


async def test_cancelled_request_leaves_the_batch(engine_factory: Any, loaded: tuple[Any, Any]) -> None:
    engine = engine_factory()
    ids = prose(loaded)
    gen = engine.generate(greedy(ids, max_tokens=100, adapter="a0"))
    await gen.__anext__()
    await gen.aclose()
    out = await collect(engine, greedy(ids, max_tokens=5))
    assert out["finish"] == "length"
    stats = engine.stats()
    assert stats.running == 0 and stats.waiting == 0
    await engine.unload_adapter("a0")  # not pinned any more
    assert engine.stats().adapters_loaded == ()


async def test_metrics_are_recorded(engine_factory: Any, loaded: tuple[Any, Any]) -> None:
    registry = CollectorRegistry()
    engine = engine_factory(metrics=ServingMetrics("tiny", registry=registry))
    ids = prose(loaded)
    out = await collect(engine, greedy(ids, max_tokens=5, adapter="a1"))

    def value(name: str, **labels: str) -> float:
        v = registry.get_sample_value(name, {"model": "tiny", "adapter": "a1", **labels})
        return 0.0 if v is None else v

    assert value("corral_serving_requests_total") == 1
    assert value("corral_serving_output_tokens_total") == len(out["tokens"])
    assert value("corral_serving_time_to_first_token_seconds_count") == 1
    assert value("corral_serving_adapter_loads_total") == 1
    assert value("corral_serving_ongoing_requests") == 0
    await engine.close()


async def test_ignore_eos_runs_to_max_tokens(engine_factory: Any, loaded: tuple[Any, Any]) -> None:
    engine = engine_factory()
    ids = prompt(loaded, QUESTIONS[0])
    natural = await collect(engine, greedy(ids, max_tokens=200))
    assert natural["finish"] == "stop", "the tiny model must end this answer on its own"
    n = len(natural["tokens"])  # the last one is the end-of-sequence token
    forced = await collect(engine, greedy(ids, max_tokens=n + 6, ignore_eos=True))
    assert forced["finish"] == "length" and forced["last"].completion_tokens == n + 6
    assert forced["tokens"][:n] == natural["tokens"]
    assert forced["text"].startswith(natural["text"])
