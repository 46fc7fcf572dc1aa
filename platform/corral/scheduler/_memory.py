"""Memory per GPU: the formulas behind every estimate, and the breakdown they fill.

Training memory per GPU (bytes):

* **full**, mixed precision AdamW: 2 (bf16 weights) + 2 (bf16 gradients) + 12 (fp32 master
  weights, momentum, variance) = 16 bytes per parameter, as in the ZeRO paper (K = 12);
  fp32 training is 4 + 4 + 8 = 16 as well.
* **lora**: the frozen base at 2 bytes per parameter, plus the adapter at 16 bytes per
  trainable parameter (PEFT keeps trainable weights in fp32: weight, gradient, two Adam moments).
* **qlora**: the base's linear layers in NF4 with double quantisation (4.127 bits per
  parameter), embeddings and LM head left in bf16, plus the adapter as for LoRA.
* **sharding** over all N GPUs of the job: ``ddp`` shards nothing, ``deepspeed-zero2`` shards
  gradients and optimizer states, ``fsdp`` (FULL_SHARD) and ``deepspeed-zero3`` shard
  weights too and hold two gathered layers at a time.
* **activations** per GPU with FlashAttention/SDPA (no s x s scores kept): 34 x s x b x h
  bytes per layer at 16 bits (Korthikanti et al., 2022, without the 5as/h attention term);
  with gradient checkpointing each layer keeps only its 16-bit input (2sbh) plus one layer
  recomputed in full. Logits: s x b x vocab x (2 + 4 + 4) bytes (16-bit logits, the fp32 copy
  the loss keeps, its fp32 gradient), which dominates for 128K-vocabulary models.
* **runtime**: 1 GiB per GPU for the CUDA context, cuBLAS workspaces and NCCL buffers,
  plus 5% of everything else for allocator fragmentation.

Serving memory is in :mod:`corral.scheduler._serving_estimate`.
"""

from __future__ import annotations

import math
from dataclasses import Field, asdict, dataclass
from decimal import Decimal
from typing import Any, ClassVar, Literal

from ._accelerators import GIB, Accelerator, get_accelerator
from ._profiles import ModelProfile

__all__ = [
    "ADAPTER_BYTES_PER_PARAM",
    "DEFAULT_ACCELERATOR",
    "FRAGMENTATION",
    "LOGIT_BYTES",
    "NF4_BITS",
    "RUNTIME_BYTES",
    "MemoryBreakdown",
    "MemoryEstimate",
    "device_for",
    "model_state_bytes",
    "resolve_precision",
    "training_memory",
    "with_runtime",
]

DEFAULT_ACCELERATOR = "nvidia-a100-80gb"
"""The accelerator an estimate is computed for when none is named."""

NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)
"""NF4 with double quantisation: 4 bits plus an 8-bit absmax per 64 weights plus an fp32 scale
per 256 absmax blocks, about 4.127 bits per weight (QLoRA paper, section 2)."""

RUNTIME_BYTES = GIB
FRAGMENTATION = 0.05
ADAPTER_BYTES_PER_PARAM = 16
LOGIT_BYTES = 4 + 4  # the fp32 copy for the loss and its fp32 gradient, on top of the 16-bit logits


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes one GPU (or one CPU worker) holds, by component."""

    weights: int = 0
    gradients: int = 0
    optimizer: int = 0
    adapter: int = 0
    activations: int = 0
    logits: int = 0
    kv_cache: int = 0
    buffers: int = 0
    runtime: int = 0

    @property
    def total(self) -> int:
        """All components together."""
        return sum(self.parts().values())

    def parts(self) -> dict[str, int]:
        """Non-zero components by name, in a stable order."""
        return {name: value for name, value in asdict(self).items() if value}

    def gib(self) -> float:
        """The total in GiB."""
        return self.total / GIB


class MemoryEstimate:
    """What every estimate shares: a :class:`MemoryBreakdown` per GPU and notes (a mixin for frozen dataclasses)."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]
    memory: MemoryBreakdown
    notes: tuple[str, ...]

    @property
    def memory_per_gpu(self) -> int:
        """Total bytes per GPU."""
        return self.memory.total

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: bytes as integers, memory by component with its total, money as decimal strings."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, Decimal):
                out[key] = str(value)
        out["memory"] = {**self.memory.parts(), "total": self.memory.total}
        out["notes"] = list(self.notes)
        return out


def with_runtime(parts: dict[str, int], on_gpu: bool) -> MemoryBreakdown:
    """``parts`` plus the runtime: fragmentation on all of them, and the CUDA context on a GPU."""
    dynamic = sum(parts.values())
    runtime = int(dynamic * FRAGMENTATION) + (RUNTIME_BYTES if on_gpu else 0)
    return MemoryBreakdown(**parts, runtime=runtime)


def device_for(accelerator: Accelerator | str | None, gpus: int) -> tuple[Accelerator, bool]:
    """The accelerator an estimate is for and whether it runs on a GPU.

    Args:
        accelerator: Name or entry; ``None`` is :data:`DEFAULT_ACCELERATOR`.
        gpus: GPUs per worker or replica; 0 means the CPU, whatever ``accelerator`` says.

    Raises:
        KeyError: Unknown accelerator name (from :func:`get_accelerator`).
    """
    if gpus <= 0:
        acc = get_accelerator("cpu")
    elif accelerator is None:
        acc = get_accelerator(DEFAULT_ACCELERATOR)
    elif isinstance(accelerator, str):
        acc = get_accelerator(accelerator)
    else:
        acc = accelerator
    return acc, gpus > 0 and acc.name != "cpu"


def resolve_precision(precision: str, accelerator: Accelerator) -> Literal["bf16", "fp16", "fp32"]:
    """The precision a job trains in: ``auto`` is bf16 where the chip has it, fp16 otherwise.

    Raises:
        ValueError: Unknown precision.
    """
    if precision == "auto":
        return "bf16" if accelerator.bf16 else "fp16"
    if precision in ("bf16", "fp16", "fp32"):
        return precision  # type: ignore[return-value]
    raise ValueError(f"precision must be one of auto, bf16, fp16, fp32; got {precision!r}")


def model_state_bytes(
    params: int,
    *,
    stage: int,
    shards: int,
    weight_bytes: int = 2,
    gradient_bytes: int = 2,
    optimizer_bytes: int = 12,
) -> tuple[int, int, int]:
    """Weights, gradients and optimizer bytes per GPU under ZeRO stage 0-3 over ``shards`` GPUs.

    Stage 1 shards optimizer states, stage 2 also gradients, stage 3 also weights (the
    ZeRO paper, figure 1; FSDP FULL_SHARD is stage 3).

    Raises:
        ValueError: ``stage`` not in 0..3 or ``shards`` < 1.
    """
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3; got {stage!r}")
    if shards < 1:
        raise ValueError(f"shards must be >= 1; got {shards!r}")
    weights = params * weight_bytes
    grads = params * gradient_bytes
    optim = params * optimizer_bytes
    optim = math.ceil(optim / shards) if stage >= 1 else optim
    grads = math.ceil(grads / shards) if stage >= 2 else grads
    weights = math.ceil(weights / shards) if stage >= 3 else weights
    return weights, grads, optim


def training_memory(
    profile: ModelProfile,
    *,
    method: str,
    trainable: int,
    stage: int,
    gpus: int,
    precision: Literal["bf16", "fp16", "fp32"],
    micro_batch_size: int,
    max_seq_len: int,
    gradient_checkpointing: bool,
    on_gpu: bool,
) -> MemoryBreakdown:
    """Bytes per GPU of a fine-tune (the rules in this module's docstring).

    Args:
        profile: The base model's shape.
        method: ``lora``, ``qlora`` or ``full``.
        trainable: Parameters that receive gradients (the adapter's for lora and qlora).
        stage: ZeRO stage the strategy amounts to (0 on one GPU).
        gpus: GPUs the model states are sharded over.
        precision: Resolved training precision.
        micro_batch_size: Sequences per forward pass per worker.
        max_seq_len: Tokens per sequence.
        gradient_checkpointing: Whether activations are recomputed.
        on_gpu: Whether the runtime's CUDA context counts.
    """
    p = profile.params
    pbytes = 4 if precision == "fp32" else 2
    buffers = 0
    if method == "full":
        if precision == "fp32":
            w, g, o = model_state_bytes(
                p, stage=stage, shards=gpus, weight_bytes=4, gradient_bytes=4, optimizer_bytes=8
            )
        else:
            w, g, o = model_state_bytes(p, stage=stage, shards=gpus)
        adapter = 0
    else:
        if method == "qlora":
            base = int(profile.linear_params * NF4_BITS / 8) + profile.embedding_params * 2
        else:
            base = p * pbytes
        w = math.ceil(base / gpus) if stage >= 3 else base
        g = o = 0
        adapter_w, adapter_g, adapter_o = model_state_bytes(
            trainable, stage=stage, shards=gpus, weight_bytes=4, gradient_bytes=4, optimizer_bytes=8
        )
        adapter = adapter_w + adapter_g + adapter_o
    if stage >= 3:
        layer_params = profile.linear_params // profile.layers
        buffers = 2 * layer_params * pbytes

    s, b, h = max_seq_len, micro_batch_size, profile.hidden_size
    scale = pbytes / 2
    full_layer = int(34 * s * b * h * scale)
    if gradient_checkpointing:
        activations = int(profile.layers * 2 * s * b * h * scale) + full_layer
    else:
        activations = profile.layers * full_layer
    logits = s * b * profile.vocab_size * (pbytes + LOGIT_BYTES)
    return with_runtime(
        {
            "weights": w,
            "gradients": g,
            "optimizer": o,
            "adapter": adapter,
            "activations": activations,
            "logits": logits,
            "buffers": buffers,
        },
        on_gpu,
    )
