"""Memory one serving replica needs on each of its GPUs.

Serving memory per GPU: weights + KV cache (layers x 2 x KV heads x head size x 2 bytes x
context x concurrent sequences, the worst case of every sequence at full context) +
loaded adapters + one step's activations, divided by the tensor-parallel degree; plus the
runtime (fragmentation and the CUDA context) as for training
(:mod:`corral.scheduler._memory`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._accelerators import Accelerator
from ._memory import FRAGMENTATION, MemoryBreakdown, MemoryEstimate, device_for, resolve_precision, with_runtime
from ._profiles import ModelProfile

if TYPE_CHECKING:
    from ..api.v1alpha1.modeldeployment import ModelDeploymentSpec

__all__ = ["ServingEstimate", "estimate_deployment", "estimate_serving", "serving_gpus_needed"]


@dataclass(frozen=True)
class ServingEstimate(MemoryEstimate):
    """Memory one serving replica needs on each of its GPUs.

    Attributes:
        accelerator: Accelerator the fit is computed for.
        gpus_per_replica: Tensor-parallel degree.
        context_length: Tokens per sequence (prompt + answer).
        concurrent_sequences: Sequences generated at once.
        memory: Bytes per GPU by component (KV cache at the worst case: every sequence at full context).
        device_memory: Memory of one device (0 for CPU).
        fits: Whether ``memory.total`` fits ``device_memory`` (None when unknown).
        kv_bytes_per_token: KV-cache bytes per token over the whole model.
        full_context_sequences: Full-context sequences whose KV cache fits next to the weights on
            this accelerator (what a paged KV cache can really hold); None when unknown.
        notes: Assumptions a reader should know about.
    """

    accelerator: str
    gpus_per_replica: int
    context_length: int
    concurrent_sequences: int
    memory: MemoryBreakdown
    device_memory: int
    fits: bool | None
    kv_bytes_per_token: int
    full_context_sequences: int | None
    notes: tuple[str, ...] = field(default_factory=tuple)


def estimate_serving(
    profile: ModelProfile,
    *,
    gpus_per_replica: int = 1,
    max_context_length: int | None = None,
    max_concurrent_sequences: int = 16,
    adapters: int = 0,
    adapter_rank: int = 16,
    precision: str = "bf16",
    accelerator: Accelerator | str | None = None,
) -> ServingEstimate:
    """Estimate the memory of one serving replica per GPU.

    Args:
        profile: The served model's shape.
        gpus_per_replica: Tensor-parallel degree; 0 serves on CPU.
        max_context_length: Prompt + answer tokens; unset uses the model's context length.
        max_concurrent_sequences: Sequences a replica generates at once.
        adapters: LoRA adapters loaded at once on the replica.
        adapter_rank: Rank assumed for the adapters (all-linear targets).
        precision: Weight precision (``bf16``/``fp16``: 2 bytes, ``fp32``: 4).
        accelerator: Accelerator the fit is computed for; default A100-80GB.

    Raises:
        ValueError: An argument outside what is allowed.
    """
    if gpus_per_replica < 0:
        raise ValueError(f"gpusPerReplica must be >= 0; got {gpus_per_replica}")
    if max_concurrent_sequences < 1:
        raise ValueError(f"maxConcurrentSequences must be >= 1; got {max_concurrent_sequences}")
    if adapters < 0:
        raise ValueError(f"adapters must be >= 0; got {adapters}")
    acc, on_gpu = device_for(accelerator, gpus_per_replica)
    prec = resolve_precision(precision, acc)
    wbytes = 4 if prec == "fp32" else 2
    tp = max(gpus_per_replica, 1)
    context = max_context_length or profile.context_length
    weights = math.ceil(profile.params * wbytes / tp)
    kv_heads_per_gpu = math.ceil(profile.kv_heads / tp)
    kv_per_token_gpu = profile.layers * 2 * kv_heads_per_gpu * profile.head_dim * 2
    kv = kv_per_token_gpu * context * max_concurrent_sequences
    adapter_bytes = math.ceil(adapters * profile.lora_params(adapter_rank) * 2 / tp) if adapters else 0
    step_tokens = min(context * max_concurrent_sequences, max(8192, max_concurrent_sequences))
    activations = step_tokens * (4 * profile.hidden_size + 2 * profile.intermediate_size) * 2 // tp
    logits = max_concurrent_sequences * profile.vocab_size * 4
    memory = with_runtime(
        {"weights": weights, "adapter": adapter_bytes, "activations": activations, "logits": logits, "kv_cache": kv},
        on_gpu,
    )
    device_memory = acc.memory_bytes if on_gpu else 0
    full_context: int | None = None
    if device_memory:
        fixed = memory.total - kv - int(kv * FRAGMENTATION)
        room = device_memory - fixed
        full_context = max(0, int(room / (1 + FRAGMENTATION)) // (kv_per_token_gpu * context))
    notes: list[str] = []
    if profile.approximate:
        notes.append(f"model shape approximated from {profile.params / 1e9:.2f}B parameters")
    if device_memory and memory.total > device_memory and full_context:
        notes.append(
            f"the worst case (all {max_concurrent_sequences} sequences at {context} tokens) does not fit; "
            f"{full_context} full-context sequences do: lower maxConcurrentSequences or maxContextLength, "
            f"or add GPUs per replica"
        )
    return ServingEstimate(
        accelerator=acc.name,
        gpus_per_replica=gpus_per_replica,
        context_length=context,
        concurrent_sequences=max_concurrent_sequences,
        memory=memory,
        device_memory=device_memory,
        fits=(memory.total <= device_memory) if device_memory else None,
        kv_bytes_per_token=profile.kv_bytes_per_token,
        full_context_sequences=full_context,
        notes=tuple(notes),
    )


def estimate_deployment(
    spec: ModelDeploymentSpec,
    profile: ModelProfile,
    *,
    accelerator: Accelerator | str | None = None,
    gpus_per_replica: int | None = None,
    adapter_rank: int = 16,
) -> ServingEstimate:
    """:func:`estimate_serving` for a ``ModelDeployment`` spec.

    The spec does not say the adapters' rank; ``adapter_rank`` (default 16) is assumed.
    """
    res = spec.resources
    return estimate_serving(
        profile,
        gpus_per_replica=res.gpus_per_replica if gpus_per_replica is None else gpus_per_replica,
        max_context_length=spec.max_context_length,
        max_concurrent_sequences=spec.max_concurrent_sequences,
        adapters=min(len(spec.adapters), spec.max_adapters_per_replica),
        adapter_rank=adapter_rank,
        accelerator=accelerator if accelerator is not None else res.accelerator_type,
    )


def serving_gpus_needed(
    profile: ModelProfile,
    device_memory: int,
    *,
    max_context_length: int | None = None,
    max_concurrent_sequences: int = 16,
    adapters: int = 0,
    adapter_rank: int = 16,
    options: tuple[int, ...] = (1, 2, 4, 8),
) -> int | None:
    """Fewest GPUs per replica (from ``options``) whose per-GPU memory fits ``device_memory``; None if none."""
    for tp in options:
        est = estimate_serving(
            profile,
            gpus_per_replica=tp,
            max_context_length=max_context_length,
            max_concurrent_sequences=max_concurrent_sequences,
            adapters=adapters,
            adapter_rank=adapter_rank,
        )
        if est.memory.total <= device_memory:
            return tp
    return None
