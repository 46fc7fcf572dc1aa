"""The estimator against published figures (with tolerances, and why they differ) and its invariants."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from corral.api import parse_quantity
from corral.scheduler import (
    ModelProfile,
    estimate_serving,
    estimate_training,
    get_accelerator,
    model_state_bytes,
    serving_gpus_needed,
)

GB = 1e9
LLAMA_7B = 6_738_415_616

LLAMA2_7B_CONFIG = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}
LLAMA3_8B_CONFIG = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
}


@pytest.fixture
def llama7b() -> ModelProfile:
    return ModelProfile.from_catalog_params(LLAMA_7B, "llama")


# --- LLaMA-Factory's hardware table (README "Hardware Requirement"), 7B column ----------------
# The table gives no batch size or sequence length; we use the smallest sensible run
# (micro-batch 1, 512 tokens, gradient checkpointing on, LoRA rank 8 on all linear layers:
# LLaMA-Factory's defaults), so activations are small and model states dominate.


def _llamafactory(profile: ModelProfile, method: str) -> float:
    est = estimate_training(
        profile, method=method, micro_batch_size=1, max_seq_len=512, gradient_checkpointing=True, lora_rank=8
    )
    return est.memory.total / GB


def test_full_bf16_7b_about_120gb(llama7b: ModelProfile) -> None:
    # Published: 120 GB ("18x GB" rule: 126 GB). Estimate: ~115 GB (-4%): 16 bytes/param of model
    # states (107.8 GB) + 1 GiB runtime + 5% fragmentation; LLaMA-Factory's rule of thumb rounds
    # the per-parameter cost up to 18 bytes to cover activations and allocator slack.
    assert _llamafactory(llama7b, "full") == pytest.approx(120, rel=0.10)


def test_lora_7b_about_16gb(llama7b: ModelProfile) -> None:
    # Published: 16 GB ("2x GB"). Estimate: ~16.0 GB: 13.5 GB bf16 base + 0.3 GB adapter states
    # (20M params x 16 bytes) + activations/logits 0.4 GB + runtime.
    assert _llamafactory(llama7b, "lora") == pytest.approx(16, rel=0.10)


def test_qlora_4bit_7b_about_6gb(llama7b: ModelProfile) -> None:
    # Published: 6 GB ("x/2 GB"). Estimate: ~5.9 GB (-2%): NF4 linear layers 3.3 GB + bf16
    # embeddings and LM head 0.5 GB + adapter 0.3 GB + activations 0.4 GB + runtime 1.3 GB.
    assert _llamafactory(llama7b, "qlora") == pytest.approx(6, rel=0.10)


def test_lora_trainable_params_match_peft() -> None:
    # PEFT prints "trainable params: 19,988,480" for LLaMA-7B, r=8, all seven linear modules.
    profile = ModelProfile.from_hf_config(LLAMA2_7B_CONFIG)
    assert profile.lora_params(8, ("all-linear",)) == 19_988_480
    assert profile.lora_params(8, ("q_proj", "v_proj")) == 4_194_304  # the classic q,v adapter


# --- ZeRO paper (Rajbhandari et al. 2019), figure 1: 7.5B params, Nd = 64, K = 12 ----------------
# The paper's figures are model states only, in 10^9 bytes: exact to rounding.


@pytest.mark.parametrize(
    ("stage", "published_gb"),
    [(0, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)],
)
def test_zero_paper_model_states(stage: int, published_gb: float) -> None:
    total = sum(model_state_bytes(7_500_000_000, stage=stage, shards=64))
    assert total / GB == pytest.approx(published_gb, rel=0.02)


def test_zero_strategies_shard_model_states() -> None:
    profile = ModelProfile.from_catalog_params(7.5e9, "llama")
    by_strategy = {}
    for strategy in ("ddp", "deepspeed-zero2", "deepspeed-zero3", "fsdp"):
        est = estimate_training(profile, method="full", strategy=strategy, workers=64, micro_batch_size=1)
        by_strategy[strategy] = (est.memory.weights + est.memory.gradients + est.memory.optimizer) / GB
    assert by_strategy["ddp"] == pytest.approx(120, rel=0.01)
    assert by_strategy["deepspeed-zero2"] == pytest.approx(16.6, rel=0.02)
    assert by_strategy["deepspeed-zero3"] == pytest.approx(1.9, rel=0.02)
    assert by_strategy["fsdp"] == by_strategy["deepspeed-zero3"]  # FULL_SHARD is stage 3


# --- Alpaca (Stanford, March 2023): 7B, 52K examples, 3 epochs, 512 tokens, 8 x A100-80GB, ~3 hours --


def test_alpaca_run_time_and_fit(llama7b: ModelProfile) -> None:
    tokens = 52_002 * 3 * 512
    est = estimate_training(
        llama7b,
        method="full",
        strategy="fsdp",
        workers=8,
        micro_batch_size=4,
        max_seq_len=512,
        gradient_checkpointing=False,
        precision="bf16",
        accelerator="nvidia-a100-80gb",
        train_tokens=tokens,
        price_per_gpu_hour="3.67",
    )
    assert est.fits  # it ran on 80 GB cards
    hours = (est.seconds or 0) / 3600
    # Published: about 3 hours. Estimate: ~1.0 hour, 3x too fast. Counting 512 tokens per example
    # overstates the work (Alpaca pads to the longest in a batch; most examples are shorter), so the
    # real gap is larger still: Alpaca's 2023 stack (PyTorch 1.13 FSDP full_shard with fp32 sharded
    # parameters and a flat-parameter all-gather on every micro-batch of 4, no FlashAttention, HF
    # Trainer) ran at ~12% MFU; the estimator assumes a current stack at 40% x 0.9 (FSDP).
    # The tolerance says so: within [0.25x, 1.5x] of 3 hours.
    assert 0.75 <= hours <= 4.5
    assert est.gpu_hours == pytest.approx(8 * hours)
    assert est.cost_usd == Decimal(str(round(est.gpu_hours * 3.67, 2)))


# --- shapes ----------------------------------------------------------------------------------------


def test_from_hf_config_counts_params() -> None:
    assert ModelProfile.from_hf_config(LLAMA2_7B_CONFIG).params == pytest.approx(LLAMA_7B, rel=1e-3)
    llama3 = ModelProfile.from_hf_config(LLAMA3_8B_CONFIG)
    assert llama3.params == pytest.approx(8_030_261_248, rel=1e-3)
    assert llama3.kv_heads == 8
    assert llama3.head_dim == 128


def test_from_hf_config_rejects_missing_fields() -> None:
    with pytest.raises(ValueError, match="num_hidden_layers"):
        ModelProfile.from_hf_config({"hidden_size": 4096})


@pytest.mark.parametrize(
    ("params", "layers", "hidden"),
    [
        (1.24e9, 16, 2048),
        (3.2e9, 28, 3072),
        (6.7e9, 32, 4096),
        (8.0e9, 32, 4096),
        (13e9, 40, 5120),
        (33e9, 60, 6656),
        (65e9, 80, 8192),
        (70.6e9, 80, 8192),
    ],
)
def test_from_catalog_params_standard_shapes(params: float, layers: int, hidden: int) -> None:
    profile = ModelProfile.from_catalog_params(params, "llama")
    assert (profile.layers, profile.hidden_size) == (layers, hidden)
    assert profile.params == int(params)
    assert profile.approximate


def test_from_catalog_params_non_gqa_architecture_and_tiny() -> None:
    neox = ModelProfile.from_catalog_params(11.8e9, "gpt_neox")
    assert neox.kv_heads == neox.attention_heads
    assert not neox.gated_mlp
    tiny = ModelProfile.from_catalog_params(1_377_408, "llama")
    assert tiny.embedding_params < tiny.params
    with pytest.raises(ValueError, match="positive"):
        ModelProfile.from_catalog_params(0)


# --- serving -----------------------------------------------------------------------------------------


def test_kv_cache_formula() -> None:
    llama3 = ModelProfile.from_hf_config(LLAMA3_8B_CONFIG)
    # layers x 2 x KV heads x head size x 2 bytes = 32 x 2 x 8 x 128 x 2
    assert llama3.kv_bytes_per_token == 131_072
    est = estimate_serving(
        llama3, gpus_per_replica=1, max_context_length=8192, max_concurrent_sequences=16, accelerator="nvidia-a100-80gb"
    )
    assert est.memory.kv_cache == 131_072 * 8192 * 16
    assert est.memory.weights == llama3.params * 2
    assert est.fits


def test_serving_tensor_parallel_and_adapters() -> None:
    llama3 = ModelProfile.from_hf_config(LLAMA3_8B_CONFIG)
    one = estimate_serving(llama3, gpus_per_replica=1, max_context_length=4096, max_concurrent_sequences=8)
    two = estimate_serving(llama3, gpus_per_replica=2, max_context_length=4096, max_concurrent_sequences=8)
    assert two.memory.weights * 2 == pytest.approx(one.memory.weights, abs=2)
    assert two.memory.kv_cache * 2 == one.memory.kv_cache
    with_adapters = estimate_serving(
        llama3, gpus_per_replica=1, max_context_length=4096, max_concurrent_sequences=8, adapters=4
    )
    assert with_adapters.memory.adapter == 4 * llama3.lora_params(16) * 2
    # 8B at 8K x 64 sequences: 69 GB of KV cache alone; too big for one L4, and the estimate
    # says how many full-context sequences would fit instead.
    big = estimate_serving(
        llama3, gpus_per_replica=1, max_context_length=8192, max_concurrent_sequences=64, accelerator="nvidia-l4"
    )
    assert big.fits is False
    assert big.full_context_sequences is not None and 0 < big.full_context_sequences < 64
    assert serving_gpus_needed(llama3, 24 * 1024**3, max_context_length=4096, max_concurrent_sequences=8) == 1
    # 70B: two GPUs hold 70.6 GB of weights each, leaving no room for 10.5 GB of KV cache: four.
    assert (
        serving_gpus_needed(
            ModelProfile.from_catalog_params(70.6e9), 80 * 1024**3, max_context_length=4096, max_concurrent_sequences=16
        )
        == 4
    )


# --- invariants and errors ---------------------------------------------------------------------------


def test_checkpointing_and_sharding_reduce_memory(llama7b: ModelProfile) -> None:
    plain = estimate_training(llama7b, method="lora", micro_batch_size=4, max_seq_len=2048)
    ckpt = estimate_training(llama7b, method="lora", micro_batch_size=4, max_seq_len=2048, gradient_checkpointing=True)
    assert ckpt.memory.activations < plain.memory.activations / 5
    assert ckpt.flops_per_token > plain.flops_per_token  # recomputation costs a forward pass
    fsdp = estimate_training(llama7b, method="lora", strategy="fsdp", workers=8, micro_batch_size=4, max_seq_len=2048)
    assert fsdp.memory.weights < plain.memory.weights / 7


def test_lora_flops_below_full(llama7b: ModelProfile) -> None:
    full = estimate_training(llama7b, method="full", max_seq_len=512)
    lora = estimate_training(llama7b, method="lora", max_seq_len=512)
    assert lora.flops_per_token == pytest.approx(full.flops_per_token * 4 / 6, rel=0.02)
    qlora = estimate_training(llama7b, method="qlora", max_seq_len=512)
    assert qlora.tokens_per_second < lora.tokens_per_second


def test_faster_accelerator_is_faster(llama7b: ModelProfile) -> None:
    a100 = estimate_training(llama7b, accelerator="nvidia-a100-80gb", train_tokens=10**8)
    h100 = estimate_training(llama7b, accelerator="nvidia-h100-80gb", train_tokens=10**8)
    assert (h100.seconds or 0) < (a100.seconds or 0)
    assert a100.cost_usd is None  # no price given


def test_cpu_training_has_no_device_fit(llama7b: ModelProfile) -> None:
    est = estimate_training(llama7b, method="lora", gpus_per_worker=0)
    assert est.accelerator == "cpu"
    assert est.fits is None
    assert est.precision == "fp32"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "dora"}, "method must be one of lora, qlora, full; got 'dora'"),
        ({"strategy": "zero1"}, "strategy must be one of"),
        ({"workers": 0}, "workers must be >= 1; got 0"),
        ({"precision": "int8"}, "precision must be one of auto, bf16, fp16, fp32"),
        ({"method": "qlora", "gpus_per_worker": 0}, "qlora needs gpusPerWorker >= 1"),
    ],
)
def test_bad_inputs_raise_value_error(llama7b: ModelProfile, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        estimate_training(llama7b, **kwargs)  # type: ignore[arg-type]


def test_zero_stage_validation() -> None:
    with pytest.raises(ValueError, match="ZeRO stage must be 0, 1, 2 or 3; got 4"):
        model_state_bytes(10, stage=4, shards=2)


def test_accelerators_and_quantities() -> None:
    assert get_accelerator("nvidia-tesla-t4").name == "nvidia-t4"
    assert not get_accelerator("nvidia-t4").bf16
    unknown = get_accelerator("acme-x1", memory_bytes=48 * 1024**3)
    assert not unknown.known and unknown.memory_gib == 48
    assert parse_quantity("80Gi") == 80 * 1024**3
    assert parse_quantity("24G") == 24 * 10**9
    assert parse_quantity("500m") == 0
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity("lots")


def test_both_estimates_share_one_json_form(llama7b: ModelProfile) -> None:
    train = estimate_training(llama7b, train_tokens=10**6, price_per_gpu_hour="2.5")
    serve = estimate_serving(llama7b, adapters=2)
    for est in (train, serve):
        doc = est.to_dict()
        assert json.loads(json.dumps(doc)) == doc  # plain JSON: no Decimal, no tuple, no dataclass
        assert doc["memory"]["total"] == est.memory_per_gpu == est.memory.total
        assert {k: v for k, v in doc["memory"].items() if k != "total"} == est.memory.parts()
        assert list(doc) == list(est.__dataclass_fields__)  # every field, in declaration order
    doc = train.to_dict()
    assert doc["cost_usd"] == str(train.cost_usd) and Decimal(doc["usd_per_million_tokens"]) > 0
    assert serve.to_dict()["memory"]["kv_cache"] > 0
