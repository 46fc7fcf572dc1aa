"""DeepSpeed ZeRO-2/3 configs generated from a spec (checked on CPU; training with them: test_training_strategies)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from corral.api.v1alpha1.finetunejob import FineTuneJobSpec, Hyperparameters
from corral.training import deepspeed_config
from corral.training._deepspeed import zero_config


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
    # One DeepSpeed rank per Ray Train worker (one process each, whatever its GPUs):
    # 64 = 2 per rank x 2 ranks x 16 accumulation steps
    assert cfg["gradient_accumulation_steps"] == 16
    assert cfg["train_batch_size"] == 64
    assert cfg["gradient_clipping"] == 0.5
    assert cfg["bf16"] == {"enabled": True} and cfg["fp16"] == {"enabled": False}
    zero = cfg["zero_optimization"]
    assert zero["stage"] == 2 and "offload_optimizer" not in zero and "offload_param" not in zero
    assert "optimizer" not in cfg and "scheduler" not in cfg
    assert cfg["zero_allow_untested_optimizer"] is True  # Corral's own AdamW goes to deepspeed.initialize


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
    with pytest.raises(ValueError, match=r"globalBatchSize=64.*microBatchSize=2.*workers=3"):
        deepspeed_config(_spec("deepspeed-zero2", workers=3, gpus=4))
    with pytest.raises(ValueError, match="not a DeepSpeed strategy"):
        deepspeed_config(_spec("ddp"))


def test_zero_config_on_cpu_ranks() -> None:
    hp = Hyperparameters(globalBatchSize=8, microBatchSize=1)
    cfg = zero_config(hp, stage=3, world_size=2, on_gpu=False)
    assert cfg["gradient_accumulation_steps"] == 4
    assert not cfg["bf16"]["enabled"] and not cfg["fp16"]["enabled"]  # auto on CPU: fp32
    assert zero_config(hp.model_copy(update={"precision": "bf16"}), stage=2, world_size=2, on_gpu=False)["bf16"] == {
        "enabled": True
    }
    with pytest.raises(ValueError, match="precision fp16 needs a GPU"):
        zero_config(hp.model_copy(update={"precision": "fp16"}), stage=2, world_size=2, on_gpu=False)
    with pytest.raises(ValueError, match="ZeRO stage must be 2 or 3"):
        zero_config(hp, stage=1, world_size=2)


# Run in a fresh interpreter: the accelerator is process-global DeepSpeed state.
_ACCELERATOR_CHECK = """
import os
from corral.training._deepspeed import use_cpu_training_accelerator
use_cpu_training_accelerator()
use_cpu_training_accelerator()  # a second call keeps the first one's accelerator
from deepspeed.accelerator import get_accelerator, set_accelerator
from deepspeed.accelerator.cuda_accelerator import CUDA_Accelerator
from deepspeed.comm.torch import build_shm_op
acc = get_accelerator()
assert os.environ["DS_ACCELERATOR"] == "cpu" and acc.device_name() == "cpu", acc
assert acc.create_op_builder("ShareMemCommBuilder") is None
assert build_shm_op() is None, "TorchBackend would JIT-build the shm op"
assert acc.create_op_builder("CPUAdamBuilder") is not None  # the other ops are DeepSpeed's own
set_accelerator(CUDA_Accelerator())
try:
    use_cpu_training_accelerator()
except RuntimeError as exc:
    print(exc)
"""


def test_cpu_training_accelerator_offers_no_shm_comm_op(tmp_path: Path) -> None:
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (pip install deepspeed)")
    extensions = tmp_path / "torch_extensions"
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions), "OMP_NUM_THREADS": "1"}
    env.pop("DS_ACCELERATOR", None)
    run = subprocess.run(
        [sys.executable, "-c", _ACCELERATOR_CHECK], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "deepspeed already uses the cuda accelerator in this process" in run.stdout
    assert not extensions.exists(), "something was JIT-built"
