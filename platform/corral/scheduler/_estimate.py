"""Time and cost of a fine-tune, and the estimator's public names.

Time: trained tokens x FLOPs per token / (GPUs x peak x MFU x strategy efficiency).
FLOPs per token are 6 x N for full fine-tuning (forward 2N, backward 4N, N counting the
LM head but not the embedding lookup), 4 x N + 6 x adapter for LoRA (no weight gradients
for the frozen base), plus 2N when activations are recomputed, plus causal attention
(6 x layers x seq x hidden). QLoRA runs 1.3x slower than LoRA (NF4 dequantisation on
every matmul). Cost = GPU-hours x the pool's price per GPU-hour.

Memory per GPU comes from :mod:`corral.scheduler._memory` (training) and
:mod:`corral.scheduler._serving_estimate` (serving), whose names this module re-exports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

from ._accelerators import Accelerator
from ._memory import (
    MemoryBreakdown,
    MemoryEstimate,
    device_for,
    model_state_bytes,
    resolve_precision,
    training_memory,
)
from ._profiles import ModelProfile
from ._serving_estimate import ServingEstimate, estimate_deployment, estimate_serving, serving_gpus_needed

if TYPE_CHECKING:
    from ..api.v1alpha1.finetunejob import FineTuneJobSpec

__all__ = [
    "METHODS",
    "QLORA_SLOWDOWN",
    "STRATEGIES",
    "STRATEGY_EFFICIENCY",
    "MemoryBreakdown",
    "ServingEstimate",
    "TrainingEstimate",
    "estimate_deployment",
    "estimate_job",
    "estimate_serving",
    "estimate_training",
    "model_state_bytes",
    "resolve_precision",
    "serving_gpus_needed",
    "training_flops_per_token",
]

METHODS: tuple[str, ...] = ("lora", "qlora", "full")
"""Fine-tuning methods (``FineTuneJobSpec.method``)."""
STRATEGIES: tuple[str, ...] = ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3")
"""Data-parallel strategies (``TrainingResources.strategy``)."""

_ZERO_STAGE = {"ddp": 0, "deepspeed-zero2": 2, "fsdp": 3, "deepspeed-zero3": 3}

STRATEGY_EFFICIENCY: dict[str, float] = {"ddp": 1.0, "deepspeed-zero2": 0.95, "fsdp": 0.90, "deepspeed-zero3": 0.85}
"""Share of single-GPU throughput kept with more than one GPU: DDP overlaps its gradient
all-reduce with the backward pass; ZeRO-2 adds a reduce-scatter; FSDP and ZeRO-3 all-gather
every layer's weights in forward and backward, which overlap imperfectly."""

QLORA_SLOWDOWN = 1.3
"""QLoRA dequantises NF4 weights on every matmul: 30-40% slower than 16-bit LoRA in the
QLoRA paper's and bitsandbytes' measurements; 1.3 is the optimistic end."""


@dataclass(frozen=True)
class TrainingEstimate(MemoryEstimate):
    """What a fine-tune needs and what it costs.

    Attributes:
        method: lora, qlora or full.
        strategy: Data-parallel strategy.
        precision: Precision trained in (``auto`` resolved).
        accelerator: Accelerator the time is computed for.
        workers: Ray Train workers.
        gpus: GPUs (or CPU workers) in total.
        params: Base model parameters.
        trainable_params: Parameters that receive gradients.
        memory: Bytes per GPU by component.
        device_memory: Memory of one device (0 when unknown, e.g. CPU).
        fits: Whether ``memory.total`` fits ``device_memory`` (None when unknown).
        flops_per_token: Training FLOPs per trained token.
        tokens_per_second: Trained tokens per second over all GPUs.
        train_tokens: Tokens trained in total (all epochs), when known.
        seconds: Wall-clock seconds, when ``train_tokens`` is known.
        gpu_hours: GPUs x hours, when known.
        cost_usd: GPU-hours x price, when the price and the tokens are known.
        usd_per_million_tokens: Price of a million trained tokens, when the price is known.
        notes: Assumptions a reader should know about.
    """

    method: str
    strategy: str
    precision: str
    accelerator: str
    workers: int
    gpus: int
    params: int
    trainable_params: int
    memory: MemoryBreakdown
    device_memory: int
    fits: bool | None
    flops_per_token: float
    tokens_per_second: float
    train_tokens: int | None = None
    seconds: float | None = None
    gpu_hours: float | None = None
    cost_usd: Decimal | None = None
    usd_per_million_tokens: Decimal | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def training_flops_per_token(
    profile: ModelProfile, *, method: str, trainable: int, seq_len: int, recompute: bool
) -> int:
    """Training FLOPs per trained token (the rule in this module's docstring).

    Args:
        profile: The base model's shape.
        method: ``lora``, ``qlora`` or ``full``.
        trainable: Parameters that receive gradients.
        seq_len: Tokens per sequence (for causal attention).
        recompute: Whether activations are recomputed in the backward pass.
    """
    p, h = profile.params, profile.hidden_size
    compute_params = p if profile.tied_embeddings else max(p - profile.vocab_size * h, 1)
    attention = 2 * profile.layers * seq_len * h  # causal forward per token: QK^T and AV over half the sequence
    if method == "full":
        per_token = 6 * compute_params + 3 * attention
    else:
        per_token = 4 * compute_params + 6 * trainable + 3 * attention
    if recompute:
        per_token += 2 * compute_params + attention
    return per_token


def _money(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def estimate_training(
    profile: ModelProfile,
    *,
    method: str = "lora",
    strategy: str = "ddp",
    workers: int = 1,
    gpus_per_worker: int = 1,
    micro_batch_size: int = 4,
    max_seq_len: int = 2048,
    gradient_checkpointing: bool = False,
    precision: str = "auto",
    lora_rank: int = 16,
    lora_targets: tuple[str, ...] | list[str] = ("all-linear",),
    accelerator: Accelerator | str | None = None,
    train_tokens: int | None = None,
    price_per_gpu_hour: Decimal | str | float | None = None,
) -> TrainingEstimate:
    """Estimate memory per GPU, time and cost of a fine-tune.

    Args:
        profile: The base model's shape.
        method: ``lora``, ``qlora`` or ``full``.
        strategy: ``ddp``, ``fsdp``, ``deepspeed-zero2`` or ``deepspeed-zero3``.
        workers: Ray Train workers.
        gpus_per_worker: GPUs per worker; 0 trains on CPUs (one CPU worker counts as one device).
        micro_batch_size: Sequences per forward pass per worker.
        max_seq_len: Tokens per sequence.
        gradient_checkpointing: Recompute activations in the backward pass.
        precision: ``auto``, ``bf16``, ``fp16`` or ``fp32``.
        lora_rank: LoRA rank (lora and qlora).
        lora_targets: LoRA target modules (lora and qlora).
        accelerator: Accelerator (name or entry) the time and fit are computed for; default A100-80GB.
        train_tokens: Tokens trained over all epochs; unset leaves time and cost out.
        price_per_gpu_hour: US dollars per GPU-hour; unset leaves cost out.

    Raises:
        ValueError: An argument outside what is allowed (the message says what is).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    if gpus_per_worker < 0:
        raise ValueError(f"gpusPerWorker must be >= 0; got {gpus_per_worker}")
    if micro_batch_size < 1 or max_seq_len < 1:
        raise ValueError(f"microBatchSize and maxSeqLen must be >= 1; got {micro_batch_size} and {max_seq_len}")
    if train_tokens is not None and train_tokens < 0:
        raise ValueError(f"train_tokens must be >= 0; got {train_tokens}")
    if method == "qlora" and gpus_per_worker < 1:
        raise ValueError("method qlora needs gpusPerWorker >= 1 (4-bit bases run on GPUs only)")

    acc, on_gpu = device_for(accelerator, gpus_per_worker)
    prec = resolve_precision(precision, acc)
    if not on_gpu and precision == "auto":
        prec = "fp32"
    gpus = workers * max(gpus_per_worker, 1)
    stage = _ZERO_STAGE[strategy] if gpus > 1 else 0
    notes: list[str] = []
    if profile.approximate:
        notes.append(
            f"model shape approximated from {profile.params / 1e9:.2f}B parameters "
            f"({profile.layers} layers, hidden {profile.hidden_size}, vocab {profile.vocab_size})"
        )

    p = profile.params
    trainable = p if method == "full" else profile.lora_params(lora_rank, tuple(lora_targets))
    memory = training_memory(
        profile,
        method=method,
        trainable=trainable,
        stage=stage,
        gpus=gpus,
        precision=prec,
        micro_batch_size=micro_batch_size,
        max_seq_len=max_seq_len,
        gradient_checkpointing=gradient_checkpointing,
        on_gpu=on_gpu,
    )

    per_token = training_flops_per_token(
        profile, method=method, trainable=trainable, seq_len=max_seq_len, recompute=gradient_checkpointing
    )
    efficiency = STRATEGY_EFFICIENCY[strategy] if gpus > 1 else 1.0
    flops_per_second = gpus * acc.effective_flops * efficiency
    if method == "qlora":
        flops_per_second /= QLORA_SLOWDOWN
    tokens_per_second = flops_per_second / per_token
    if not acc.known:
        notes.append(acc.note)

    price = None if price_per_gpu_hour is None else float(Decimal(str(price_per_gpu_hour)))
    seconds = gpu_hours = None
    cost = per_million = None
    if train_tokens is not None:
        seconds = train_tokens / tokens_per_second
        gpu_hours = gpus * seconds / 3600
    if price is not None:
        per_million = _money(gpus * (1e6 / tokens_per_second) / 3600 * price)
        if gpu_hours is not None:
            cost = _money(gpu_hours * price)

    device_memory = acc.memory_bytes if on_gpu else 0
    return TrainingEstimate(
        method=method,
        strategy=strategy,
        precision=prec,
        accelerator=acc.name,
        workers=workers,
        gpus=gpus,
        params=p,
        trainable_params=trainable,
        memory=memory,
        device_memory=device_memory,
        fits=(memory.total <= device_memory) if device_memory else None,
        flops_per_token=float(per_token),
        tokens_per_second=tokens_per_second,
        train_tokens=train_tokens,
        seconds=seconds,
        gpu_hours=gpu_hours,
        cost_usd=cost,
        usd_per_million_tokens=per_million,
        notes=tuple(notes),
    )


def estimate_job(
    spec: FineTuneJobSpec,
    profile: ModelProfile,
    *,
    accelerator: Accelerator | str | None = None,
    train_tokens: int | None = None,
    price_per_gpu_hour: Decimal | str | float | None = None,
) -> TrainingEstimate:
    """:func:`estimate_training` for a ``FineTuneJob`` spec.

    Args:
        spec: The job's spec.
        profile: The base model's shape.
        accelerator: Overrides ``spec.resources.acceleratorType`` (default A100-80GB).
        train_tokens: Tokens per epoch x epochs; unset leaves time and cost out.
        price_per_gpu_hour: US dollars per GPU-hour.
    """
    lora = spec.effective_lora
    res = spec.resources
    hp = spec.hyperparameters
    return estimate_training(
        profile,
        method=spec.method,
        strategy=res.strategy,
        workers=res.workers,
        gpus_per_worker=res.gpus_per_worker,
        micro_batch_size=hp.micro_batch_size,
        max_seq_len=hp.max_seq_len,
        gradient_checkpointing=hp.gradient_checkpointing,
        precision=hp.precision,
        lora_rank=lora.rank if lora else 16,
        lora_targets=tuple(lora.target_modules) if lora else ("all-linear",),
        accelerator=accelerator if accelerator is not None else res.accelerator_type,
        train_tokens=train_tokens,
        price_per_gpu_hour=price_per_gpu_hour,
    )
