"""DeepSpeed ZeRO-2/ZeRO-3 configuration generated from a FineTuneJob spec.

The config is a plain dict in DeepSpeed's JSON schema (``train_micro_batch_size_per_gpu``,
``gradient_accumulation_steps``, ``gradient_clipping``, ``bf16``/``fp16``,
``zero_optimization``); it is generated and checked on CPU, and used by a DeepSpeed run
on GPU workers. The optimizer and scheduler stay Corral's (AdamW + warm-up schedule), so
the config carries no ``optimizer`` or ``scheduler`` section.
"""

from __future__ import annotations

from typing import Any

from corral.api.v1alpha1.finetunejob import FineTuneJobSpec
from corral.training._loop import batch_plan

__all__ = ["deepspeed_config"]


def deepspeed_config(spec: FineTuneJobSpec, *, bf16_supported: bool = True, offload: bool = False) -> dict[str, Any]:
    """Build the DeepSpeed config for ``spec``.

    Args:
        spec: A spec whose strategy is ``deepspeed-zero2`` or ``deepspeed-zero3``.
        bf16_supported: Whether the GPUs have bf16 (``auto`` precision picks it then).
        offload: Offload optimizer state (and, for ZeRO-3, parameters) to CPU memory.

    Returns:
        The config dict (JSON-serialisable).

    Raises:
        ValueError: The strategy is not DeepSpeed, or the batch sizes do not divide.
    """
    strategy = spec.resources.strategy
    if strategy not in ("deepspeed-zero2", "deepspeed-zero3"):
        raise ValueError(f"not a DeepSpeed strategy: {strategy!r}")
    hp = spec.hyperparameters
    workers = spec.resources.workers * max(1, spec.resources.gpus_per_worker)
    accum = batch_plan(hp.global_batch_size, hp.micro_batch_size, workers)
    precision = hp.precision
    if precision == "auto":
        precision = "bf16" if bf16_supported else "fp16"
    stage = 2 if strategy == "deepspeed-zero2" else 3
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": 5e8,
    }
    if stage == 2:
        zero["allgather_partitions"] = True
        zero["allgather_bucket_size"] = 5e8
        zero["reduce_scatter"] = True
    else:
        zero["stage3_prefetch_bucket_size"] = 5e8
        zero["stage3_param_persistence_threshold"] = 1e6
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_batch_size": hp.global_batch_size,
        "train_micro_batch_size_per_gpu": hp.micro_batch_size,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": hp.max_grad_norm,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "zero_optimization": zero,
        "activation_checkpointing": {"partition_activations": hp.gradient_checkpointing and stage == 3},
        "seed": hp.seed,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
