"""Batched multi-LoRA: one forward pass with a different adapter per row computes what PEFT computes.

The reference is PEFT itself: its mixed-batch forward (``adapter_names=``) and each adapter
alone. Adapters of different ranks share a stack (zero-padded); PEFT's weights become views
into the stack (one copy); an adapter with a LoRA bias falls back to PEFT's path, and the
engine still answers. The engine is also run with torch's default device set elsewhere than the model (as
on a GPU machine, where the default is the CPU and the model is on ``cuda``): every tensor the
engine makes must be on the model's device.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from corral.models import tiny
from corral.serving import GenerationRequest, SamplingParams, TransformersEngine
from corral.serving._batched_lora import BatchedLoRA, unsupported
from corral.serving._loading import load_base
from corral.serving._prompt import Prompter

torch.set_num_threads(1)


def _adapter(base: Path, out: Path, seed: int, rank: int, **extra: Any) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, init_lora_weights=False, **extra)
    get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("batched-lora")
    base = tiny.build("llama", root / "base")
    return {
        "base": base,
        "r4": _adapter(base, root / "r4", 1, 4),
        "r8": _adapter(base, root / "r8", 2, 8),
        "r8b": _adapter(base, root / "r8b", 3, 8),
        "bias": _adapter(base, root / "bias", 4, 4, lora_bias=True),
    }


def _peft(models: dict[str, Path], names: list[str]) -> Any:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(models["base"], dtype=torch.float32)
    peft = PeftModel.from_pretrained(model, str(models[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        peft.load_adapter(str(models[name]), adapter_name=name)
    return peft.eval()


def _inputs(models: dict[str, Path], rows: int) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models["base"])
    texts = ["What is a list?", "How do I open a file in Python", "hi", "Explain a dict comprehension."][:rows]
    enc = tok(texts, return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def test_a_mixed_batch_computes_what_peft_computes(models: dict[str, Path]) -> None:
    names = ["r4", "r8", "r8b"]
    rows = [None, "r4", "r8", "r8b"]
    inputs = _inputs(models, len(rows))
    reference = _peft(models, names)
    with torch.inference_mode():
        want = reference(**inputs, adapter_names=[r or "__base__" for r in rows]).logits
        alone = []
        for i, name in enumerate(rows):
            single = {k: v[i : i + 1] for k, v in inputs.items()}
            if name is None:
                with reference.disable_adapter():
                    alone.append(reference(**single).logits)
            else:
                reference.set_adapter(name)
                alone.append(reference(**single).logits)
    model = _peft(models, names)
    batched = BatchedLoRA()
    batched.rebuild(model)
    assert batched.adapters == ("r4", "r8", "r8b")
    with torch.inference_mode(), batched.rows(rows, torch.device("cpu")):
        got = model(**inputs).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for i, logits in enumerate(alone):  # padding differs from a batch of one only where the mask is 0
        mask = inputs["attention_mask"][i].bool()
        torch.testing.assert_close(got[i][mask], logits[0][mask], rtol=1e-4, atol=1e-4)
    # Rows that all use one adapter, or none, take the fast paths and still agree.
    for same in (["r8"] * 4, [None] * 4):
        with torch.inference_mode():
            expected = reference(**inputs, adapter_names=[r or "__base__" for r in same]).logits
            with batched.rows(same, torch.device("cpu")):
                torch.testing.assert_close(model(**inputs).logits, expected, rtol=1e-5, atol=1e-5)
    # Outside rows(): every row is the base model (PEFT's LoRA layers are off).
    with torch.inference_mode(), reference.disable_adapter():
        torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits, rtol=1e-5, atol=1e-5)


def test_the_stack_is_the_only_copy_of_the_adapter_weights(models: dict[str, Path]) -> None:
    from peft.tuners.lora import LoraLayer

    model = _peft(models, ["r4", "r8"])
    batched = BatchedLoRA()
    batched.rebuild(model)
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert layers
    for layer in layers:
        stack = batched._stacks[id(layer)]
        a0, a_end = stack.a.data_ptr(), stack.a.data_ptr() + stack.a.numel() * stack.a.element_size()
        for name in ("r4", "r8"):
            assert a0 <= layer.lora_A[name].weight.data_ptr() < a_end, "PEFT's weight must be a view of the stack"
    # A delete and a rebuild keep the remaining adapter's values and drop the other's slot.
    before = {id(x): x.lora_B["r8"].weight.clone() for x in layers}
    model.delete_adapter("r4")
    batched.rebuild(model)
    assert batched.adapters == ("r8",)
    for layer in layers:
        torch.testing.assert_close(layer.lora_B["r8"].weight, before[id(layer)])


def test_a_lora_bias_falls_back_to_peft(models: dict[str, Path]) -> None:
    model = _peft(models, ["bias"])
    reason = unsupported(model)
    assert reason is not None and "LoRA bias" in reason
    with pytest.raises(ValueError, match="batched LoRA cannot serve this model"):
        BatchedLoRA().rebuild(model)


def _greedy(tok: Any, adapter: str | None) -> GenerationRequest:
    ids = tuple(Prompter(tok).chat([{"role": "user", "content": "What is a Python list?"}]))
    return GenerationRequest(ids, SamplingParams(max_tokens=12, temperature=0.0), adapter=adapter)


async def _answers(engine: TransformersEngine, requests: list[GenerationRequest]) -> list[list[int]]:
    async def one(req: GenerationRequest) -> list[int]:
        return [t async for c in engine.generate(req) for t in c.token_ids]

    try:
        return list(await asyncio.gather(*(one(r) for r in requests)))
    finally:
        await engine.close()


def test_the_engine_serves_a_lora_bias_through_peft_and_lora_batched(models: dict[str, Path]) -> None:
    model, tok = load_base(f"file://{models['base']}")
    sources = {n: f"file://{p}" for n, p in models.items() if n != "base"}
    engine = TransformersEngine(copy.deepcopy(model), tok, adapters=sources, max_adapters=4)
    mixed = asyncio.run(_answers(engine, [_greedy(tok, n) for n in (None, "r4", "r8")]))
    assert engine.adapters.batched is not None and set(engine.adapters.batched.adapters) == {"r4", "r8"}
    engine = TransformersEngine(copy.deepcopy(model), tok, adapters=sources, max_adapters=4)
    with_bias = asyncio.run(_answers(engine, [_greedy(tok, n) for n in (None, "r4", "r8", "bias")]))
    assert engine.adapters.batched is None  # a LoRA bias resident: PEFT's path for every adapter
    assert with_bias[:3] == mixed
    assert len({tuple(t) for t in with_bias}) == 4


def test_every_engine_tensor_is_on_the_models_device(models: dict[str, Path]) -> None:
    """torch's default device is not the model's: a tensor made without ``device=`` lands on ``meta`` and fails."""
    model, tok = load_base(f"file://{models['base']}")
    sources = {"r4": f"file://{models['r4']}", "r8": f"file://{models['r8']}"}
    requests = [_greedy(tok, n) for n in (None, "r4", "r8")]
    requests.append(GenerationRequest(requests[0].prompt_ids, SamplingParams(max_tokens=8, temperature=0.8, seed=3)))
    want = asyncio.run(_answers(TransformersEngine(copy.deepcopy(model), tok, adapters=sources), requests))
    engine = TransformersEngine(copy.deepcopy(model), tok, adapters=sources)

    async def run() -> list[list[int]]:
        for name in sources:  # PEFT makes a loaded adapter's modules on the default device: load them first
            await engine.adapters.load(name)
        # The default device is per thread: set it on the engine's model thread, where its tensors are made.
        engine._executor.submit(torch.set_default_device, "meta").result()
        assert engine._executor.submit(lambda: torch.empty(1).device.type).result() == "meta"
        return await _answers(engine, requests)

    assert asyncio.run(run()) == want
