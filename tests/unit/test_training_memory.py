"""The estimator's model-state bytes are the training loop's tensors; the GPU batch decides checkpointing.

On CPU (fp32) the tiny llama is built, its strategy set up exactly as a worker does
(``setup_strategy``: AdamW on the trainable parameters), one optimizer step taken, and every
tensor counted: weights (frozen and trainable), gradients and Adam's two moments. The scheduler's
``training_memory`` for the same shape must give the same bytes, for LoRA and full fine-tuning.
(AdamW also keeps one 0-d ``step`` tensor per parameter tensor: 4 bytes each, not modelled, and
left out here.) On a GPU, LoRA loads the frozen base in 16 bits, the adapter stays fp32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from corral.api.v1alpha1.finetunejob import FineTuneJobSpec, Hyperparameters, LoRASpec
from corral.scheduler import ModelProfile
from corral.scheduler._memory import training_memory
from corral.training import build_model
from corral.training._loop import LoopCallbacks
from corral.training._memory_fit import memory_fit
from corral.training._model import Method, base_dtype
from corral.training._strategies import setup_strategy

torch.set_num_threads(1)
GIB = 2**30


def _state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    trainable = [p for p in model.parameters() if p.requires_grad]
    weights = sum(p.numel() * p.element_size() for p in trainable)
    grads = sum(p.grad.numel() * p.grad.element_size() for p in trainable if p.grad is not None)
    moments = sum(
        t.numel() * t.element_size()
        for state in optimizer.state.values()
        for name, t in state.items()
        if name in ("exp_avg", "exp_avg_sq")
    )
    return {"frozen": frozen, "trainable": weights, "gradients": grads, "optimizer": moments}


@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_estimate_counts_the_loops_tensors(base: Path, method: Method) -> None:
    lora = LoRASpec(rank=8, alpha=16, dropout=0.0) if method == "lora" else None
    hp = Hyperparameters(learning_rate=1e-3, global_batch_size=2, micro_batch_size=2, precision="fp32")
    model = build_model(base, method, lora, seed=0)
    strategy = setup_strategy(
        "ddp", model, hp=hp, make_scheduler=lambda o: None, callbacks=LoopCallbacks(), device=torch.device("cpu")
    )
    ids = torch.randint(0, 100, (2, 16))
    strategy.module(input_ids=ids, labels=ids).loss.backward()
    strategy.optimizer.step()
    got = _state_bytes(strategy.module, strategy.optimizer)

    profile = ModelProfile.from_hf_config(json.loads((base / "config.json").read_text()))
    trainable = profile.params if lora is None else profile.lora_params(lora.rank, tuple(lora.target_modules))
    want = training_memory(
        profile,
        method=method,
        trainable=trainable,
        stage=0,
        gpus=1,
        precision="fp32",
        micro_batch_size=2,
        max_seq_len=16,
        gradient_checkpointing=False,
        on_gpu=False,
    )
    if method == "lora":
        assert got["frozen"] == want.weights  # the base, 4 bytes a parameter in fp32
        assert got["trainable"] + got["gradients"] + got["optimizer"] == want.adapter  # 16 bytes a parameter
        assert got["gradients"] == got["trainable"] and got["optimizer"] == 2 * got["trainable"]
    else:
        assert got["frozen"] == 0
        assert (got["trainable"], got["gradients"], got["optimizer"]) == (want.weights, want.gradients, want.optimizer)


def _llama_7b() -> dict[str, Any]:
    return {
        "model_type": "llama",
        "num_hidden_layers": 32,
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "intermediate_size": 11008,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
    }


def _spec(**hp: Any) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(
        {
            "baseModel": {"name": "llama-7b"},
            "datasets": [{"name": "d"}],
            "method": "lora",
            "hyperparameters": {"microBatchSize": 8, "globalBatchSize": 8, "maxSeqLen": 2048, **hp},
            "resources": {"gpusPerWorker": 1},
        }
    )


def test_checkpointing_switches_on_when_the_batch_does_not_fit() -> None:
    small = memory_fit(_llama_7b(), _spec(), 24 * GIB)
    assert small.gradient_checkpointing and "without gradient checkpointing" in small.reason
    assert small.estimate_bytes < memory_fit(_llama_7b(), _spec(), 24 * GIB * 100).estimate_bytes
    big = memory_fit(_llama_7b(), _spec(), 141 * GIB)
    assert not big.gradient_checkpointing and "fits" in big.reason
    asked = memory_fit(_llama_7b(), _spec(gradientCheckpointing=True), 141 * GIB)
    assert asked.gradient_checkpointing and asked.reason == "gradientCheckpointing is set"


def test_lora_on_a_gpu_keeps_the_base_in_16_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert base_dtype("lora", "auto", cuda) == base_dtype("lora", "bf16", cuda) == torch.bfloat16
    assert base_dtype("lora", "fp16", cuda) == torch.float16
    assert base_dtype("lora", "fp32", cuda) == torch.float32
    assert base_dtype("full", "auto", cuda) == torch.float32  # fp32 master weights under autocast
    assert base_dtype("lora", "auto", cpu) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a V100 or T4
    assert base_dtype("lora", "auto", cuda) == torch.float16


def test_a_16_bit_base_gets_a_32_bit_adapter(base: Path) -> None:
    """What build_model does on a GPU, shown on CPU with a bf16 base: PEFT keeps the adapter in fp32."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from corral.training._model import _target_modules

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    from peft import LoraConfig

    lora = LoRASpec(rank=4)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=_target_modules(lora)))
    dtypes = {p.dtype for p in peft.parameters() if p.requires_grad}
    frozen = {p.dtype for p in peft.parameters() if not p.requires_grad}
    assert dtypes == {torch.float32} and frozen == {torch.bfloat16}
