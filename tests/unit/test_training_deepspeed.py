"""DeepSpeed ZeRO-2/3 configs generated from a spec (shape checked on CPU)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from corral.api.v1alpha1.finetunejob import FineTuneJobSpec
from corral.training import deepspeed_config


def _spec(strategy: str, workers: int = 2, gpus: int = 4, **hp: Any) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(
        {
            "baseModel": {"name": "m"},
            "datasets": [{"name": "d"}],
            "hyperparameters": {"globalBatchSize": 64, "microBatchSize": 2, "maxGradNorm": 0.5, **hp},
            "resources": {"workers": workers, "gpusPerWorker": gpus, "strategy": strategy},
        }
    )


def test_zero2() -> None:
    cfg = deepspeed_config(_spec("deepspeed-zero2"))
    json.dumps(cfg)  # serialisable as DeepSpeed reads it
    assert cfg["train_micro_batch_size_per_gpu"] == 2
    # 64 = 2 per GPU x 8 GPUs x 4 accumulation steps
    assert cfg["gradient_accumulation_steps"] == 4
    assert cfg["train_batch_size"] == 64
    assert cfg["gradient_clipping"] == 0.5
    assert cfg["bf16"] == {"enabled": True} and cfg["fp16"] == {"enabled": False}
    zero = cfg["zero_optimization"]
    assert zero["stage"] == 2 and "offload_optimizer" not in zero and "offload_param" not in zero
    assert "optimizer" not in cfg and "scheduler" not in cfg


def test_zero3_offload_and_fp16_fallback() -> None:
    cfg = deepspeed_config(_spec("deepspeed-zero3"), bf16_supported=False, offload=True)
    zero = cfg["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert cfg["fp16"] == {"enabled": True} and cfg["bf16"] == {"enabled": False}
    explicit = deepspeed_config(_spec("deepspeed-zero3", precision="fp32"))
    assert not explicit["bf16"]["enabled"] and not explicit["fp16"]["enabled"]


def test_batch_must_divide_and_strategy_must_be_deepspeed() -> None:
    with pytest.raises(ValueError, match=r"globalBatchSize=64.*microBatchSize=2.*workers=12"):
        deepspeed_config(_spec("deepspeed-zero2", workers=3, gpus=4))
    with pytest.raises(ValueError, match="not a DeepSpeed strategy"):
        deepspeed_config(_spec("ddp"))
