"""Memory, time and cost estimates for fine-tuning and serving.

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

Serving memory per GPU: weights + KV cache (layers x 2 x KV heads x head size x 2 bytes x
context x concurrent sequences, the worst case of every sequence at full context) +
loaded adapters + one step's activations, divided by the tensor-parallel degree.

Time: trained tokens x FLOPs per token / (GPUs x peak x MFU x strategy efficiency).
FLOPs per token are 6 x N for full fine-tuning (forward 2N, backward 4N, N counting the
LM head but not the embedding lookup), 4 x N + 6 x adapter for LoRA (no weight gradients
for the frozen base), plus 2N when activations are recomputed, plus causal attention
(6 x layers x seq x hidden). QLoRA runs 1.3x slower than LoRA (NF4 dequantisation on
every matmul). Cost = GPU-hours x the pool's price per GPU-hour.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, Literal

from ._accelerators import GIB, Accelerator, get_accelerator
from ._profiles import ModelProfile

if TYPE_CHECKING:
    from ..api.v1alpha1.finetunejob import FineTuneJobSpec
    from ..api.v1alpha1.modeldeployment import ModelDeploymentSpec

__all__ = [
    "METHODS",
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
]

Method = Literal["lora", "qlora", "full"]
Strategy = Literal["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]

METHODS: tuple[str, ...] = ("lora", "qlora", "full")
STRATEGIES: tuple[str, ...] = ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3")

_ZERO_STAGE = {"ddp": 0, "deepspeed-zero2": 2, "fsdp": 3, "deepspeed-zero3": 3}

STRATEGY_EFFICIENCY: dict[str, float] = {"ddp": 1.0, "deepspeed-zero2": 0.95, "fsdp": 0.90, "deepspeed-zero3": 0.85}
"""Share of single-GPU throughput kept with more than one GPU: DDP overlaps its gradient
all-reduce with the backward pass; ZeRO-2 adds a reduce-scatter; FSDP and ZeRO-3 all-gather
every layer's weights in forward and backward, which overlap imperfectly."""

QLORA_SLOWDOWN = 1.3
"""QLoRA dequantises NF4 weights on every matmul: 30-40% slower than 16-bit LoRA in the
QLoRA paper's and bitsandbytes' measurements; 1.3 is the optimistic end."""

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


def _with_runtime(parts: dict[str, int], on_gpu: bool) -> MemoryBreakdown:
    dynamic = sum(parts.values())
    runtime = int(dynamic * FRAGMENTATION) + (RUNTIME_BYTES if on_gpu else 0)
    return MemoryBreakdown(**parts, runtime=runtime)


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


@dataclass(frozen=True)
class TrainingEstimate:
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

    @property
    def memory_per_gpu(self) -> int:
        """Total bytes per GPU."""
        return self.memory.total

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (bytes as integers, money as decimal strings)."""
        out = asdict(self)
        out["memory"] = {**self.memory.parts(), "total": self.memory.total}
        out["cost_usd"] = None if self.cost_usd is None else str(self.cost_usd)
        out["usd_per_million_tokens"] = (
            None if self.usd_per_million_tokens is None else str(self.usd_per_million_tokens)
        )
        out["notes"] = list(self.notes)
        return out


def _money(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _accel(accelerator: Accelerator | str | None) -> Accelerator:
    if accelerator is None:
        return get_accelerator("nvidia-a100-80gb")
    if isinstance(accelerator, str):
        return get_accelerator(accelerator)
    return accelerator


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
        raise ValueError(
            f"microBatchSize and maxSeqLen must be >= 1; got {micro_batch_size} and {max_seq_len}"
        )
    if train_tokens is not None and train_tokens < 0:
        raise ValueError(f"train_tokens must be >= 0; got {train_tokens}")
    if method == "qlora" and gpus_per_worker < 1:
        raise ValueError("method qlora needs gpusPerWorker >= 1 (4-bit bases run on GPUs only)")

    acc = _accel(accelerator) if gpus_per_worker > 0 else get_accelerator("cpu")
    on_gpu = gpus_per_worker > 0 and acc.name != "cpu"
    prec = resolve_precision(precision, acc)
    if not on_gpu and precision == "auto":
        prec = "fp32"
    pbytes = 4 if prec == "fp32" else 2
    gpus = workers * max(gpus_per_worker, 1)
    stage = _ZERO_STAGE[strategy] if gpus > 1 else 0
    notes: list[str] = []
    if profile.approximate:
        notes.append(
            f"model shape approximated from {profile.params / 1e9:.2f}B parameters "
            f"({profile.layers} layers, hidden {profile.hidden_size}, vocab {profile.vocab_size})"
        )

    p = profile.params
    buffers = 0
    if method == "full":
        trainable = p
        if prec == "fp32":
            w, g, o = model_state_bytes(p, stage=stage, shards=gpus, weight_bytes=4, gradient_bytes=4,
                                        optimizer_bytes=8)
        else:
            w, g, o = model_state_bytes(p, stage=stage, shards=gpus)
        adapter = 0
    else:
        trainable = profile.lora_params(lora_rank, tuple(lora_targets))
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
    memory = _with_runtime(
        {"weights": w, "gradients": g, "optimizer": o, "adapter": adapter, "activations": activations,
         "logits": logits, "buffers": buffers},
        on_gpu,
    )

    compute_params = p if profile.tied_embeddings else max(p - profile.vocab_size * h, 1)
    attention = 2 * profile.layers * s * h  # causal forward per token: QK^T and AV over half the sequence
    if method == "full":
        per_token = 6 * compute_params + 3 * attention
    else:
        per_token = 4 * compute_params + 6 * trainable + 3 * attention
    if gradient_checkpointing:
        per_token += 2 * compute_params + attention
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


@dataclass(frozen=True)
class ServingEstimate:
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

    @property
    def memory_per_gpu(self) -> int:
        """Total bytes per GPU."""
        return self.memory.total

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["memory"] = {**self.memory.parts(), "total": self.memory.total}
        out["notes"] = list(self.notes)
        return out


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
    acc = _accel(accelerator) if gpus_per_replica > 0 else get_accelerator("cpu")
    on_gpu = gpus_per_replica > 0 and acc.name != "cpu"
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
    memory = _with_runtime(
        {"weights": weights, "adapter": adapter_bytes, "activations": activations, "logits": logits,
         "kv_cache": kv},
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
