"""Whether a job's batch fits its GPU: the scheduler's estimate decides gradient checkpointing.

A worker on a GPU asks :func:`corral.scheduler.estimate_training` (the formulas the scheduler
places jobs with) for the memory of its batch without activation checkpointing. When that does
not fit the device and the same batch with checkpointing does, the worker turns checkpointing
on, as Axolotl and LLaMA-Factory users do by hand: it trades ~30% more compute for activations
of one layer instead of all of them. The decision and its numbers are logged and reported with
the job's start. Pure: the device's memory is an argument, so it is tested on CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from corral.api.v1alpha1.finetunejob import FineTuneJobSpec
from corral.scheduler import ModelProfile, estimate_training

__all__ = ["FIT_FRACTION", "MemoryFit", "memory_fit"]

FIT_FRACTION = 0.95
"""Share of the device's memory a batch may plan for (the rest: other processes, allocator slack)."""

_GIB = 2**30


@dataclass(frozen=True)
class MemoryFit:
    """The decision: checkpointing on or off, and why."""

    gradient_checkpointing: bool
    estimate_bytes: int  # per GPU, with the decision applied
    device_bytes: int
    reason: str


def memory_fit(model_config: Mapping[str, Any], spec: FineTuneJobSpec, device_bytes: int) -> MemoryFit:
    """Decide gradient checkpointing for one worker of ``spec`` on a GPU with ``device_bytes``.

    Args:
        model_config: The base model's ``config.json``.
        spec: The FineTuneJob spec (method, LoRA, batch, sequence length, precision, strategy).
        device_bytes: Total memory of the worker's GPU.

    Returns:
        On when the job asked for it, or when the batch only fits with it; the estimate per GPU.
    """
    hp = spec.hyperparameters
    lora = spec.effective_lora
    profile = ModelProfile.from_hf_config(model_config)

    def estimate(checkpointing: bool) -> int:
        return estimate_training(
            profile,
            method=spec.method,
            strategy=spec.resources.strategy,
            workers=spec.resources.workers,
            gpus_per_worker=max(spec.resources.gpus_per_worker, 1),
            micro_batch_size=hp.micro_batch_size,
            max_seq_len=hp.max_seq_len,
            gradient_checkpointing=checkpointing,
            precision=hp.precision,
            lora_rank=lora.rank if lora else 16,
            lora_targets=tuple(lora.target_modules) if lora else ("all-linear",),
        ).memory_per_gpu

    budget = int(device_bytes * FIT_FRACTION)
    if hp.gradient_checkpointing:
        return MemoryFit(True, estimate(True), device_bytes, "gradientCheckpointing is set")
    without = estimate(False)
    if without <= budget:
        return MemoryFit(False, without, device_bytes, f"{without / _GIB:.1f} GiB fits {device_bytes / _GIB:.1f} GiB")
    with_ckpt = estimate(True)
    fits = "fits" if with_ckpt <= budget else "still does not fit"
    return MemoryFit(
        True,
        with_ckpt,
        device_bytes,
        f"the batch needs {without / _GIB:.1f} GiB per GPU without gradient checkpointing, more than "
        f"{FIT_FRACTION:.0%} of the GPU's {device_bytes / _GIB:.1f} GiB; with it {with_ckpt / _GIB:.1f} GiB ({fits})",
    )
