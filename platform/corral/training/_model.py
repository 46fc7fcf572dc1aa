"""The model to train: the base loaded and made trainable by method (LoRA, QLoRA, full), and precision."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from corral.api.v1alpha1.finetunejob import LoRASpec
from corral.training._deepspeed import Zero3Loading, attach_zero3_loading
from corral.training._preflight import qlora_refusal

__all__ = ["Method", "autocast_dtype", "base_dtype", "build_model", "load_trainable", "trainable_state_dict"]

Method = Literal["lora", "qlora", "full"]


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None``: fp32, no autocast).

    Raises:
        ValueError: fp16 without CUDA (it needs a gradient scaler on a GPU).
    """
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA device (device={device.type}); use bf16 or fp32")
    return torch.float16


def base_dtype(method: str, precision: str, device: torch.device) -> torch.dtype:
    """The dtype the base model's weights load in.

    LoRA on a GPU keeps the frozen base in 16 bits — bf16, or fp16 where the GPU has no bf16 —
    and the adapter in fp32 (PEFT upcasts half-precision adapters), as PEFT and LLaMA-Factory
    recipes do and as the estimator counts (2 bytes per base parameter). A full fine-tune keeps
    fp32 master weights under autocast; CPUs train in fp32.
    """
    if method != "lora" or device.type != "cuda" or precision == "fp32":
        return torch.float32
    if precision == "fp16" or not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _target_modules(lora: LoRASpec) -> str | list[str]:
    names = list(lora.target_modules)
    if "all-linear" in names:
        if len(names) > 1:
            raise ValueError(f"targetModules: all-linear cannot be combined with other names (got {names})")
        return "all-linear"
    return names


def _enable_checkpointing(model: Any) -> None:
    """Activation (gradient) checkpointing, non-reentrant (works with frozen inputs under LoRA)."""
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def build_model(
    model_path: str | Path,
    method: Method,
    lora: LoRASpec | None,
    *,
    seed: int = 42,
    gradient_checkpointing: bool = False,
    device: torch.device | None = None,
    zero3_config: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    precision: str = "fp32",
) -> torch.nn.Module:
    """Load the base model and make it trainable by ``method``.

    With ``zero3_config`` (``deepspeed-zero3`` workers, inside the initialised process group)
    the base loads inside ``deepspeed.zero.Init``: each rank materialises only its partition of
    the weights, never the whole model. The LoRA adapter is created whole on every rank (the
    same seed, the same values); ``deepspeed.initialize`` partitions it. The returned model
    carries the :class:`corral.training._deepspeed.Zero3Loading` until the strategy hands its
    config to ``deepspeed.initialize``.

    Args:
        model_path: Directory with config, weights (and tokenizer).
        method: ``lora`` (PEFT adapter on a frozen base), ``qlora`` (the same on a 4-bit
            base: CUDA and bitsandbytes) or ``full`` (every weight trains).
        lora: LoRA shape (``None`` for full).
        seed: Seeds the adapter initialisation.
        gradient_checkpointing: Recompute activations in the backward pass.
        device: Where to put the model (default CPU).
        trust_remote_code: Run the model code shipped with the weights (transformers'
            ``trust_remote_code``): only for Models that opted in, in namespaces that allow it.
        precision: The job's precision; LoRA on a GPU loads the frozen base in 16 bits
            (:func:`base_dtype`). Sharded strategies pass ``fp32`` (one dtype per flat group).
        zero3_config: The ZeRO-3 DeepSpeed config to load partitioned under
            (:func:`corral.training._deepspeed.zero3_load_config`); the same dict must reach
            ``deepspeed.initialize``. ``None``: load the whole model.

    Returns:
        The model (a ``PeftModel`` for lora/qlora) in training mode.

    Raises:
        ValueError: qlora without CUDA or bitsandbytes, or with ``zero3_config``; LoRA shape
            missing; ``zero3_config`` not a stage 3 config.
        RuntimeError: No ``zero3_config`` while another model's ZeRO-3 loading is still alive
            (this model would load partitioned).
        ValueError: From transformers, when the weights need their own code and
            ``trust_remote_code`` is False.
    """
    from transformers import AutoModelForCausalLM
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled


    device = device or torch.device("cpu")
    loading: Zero3Loading | None = None
    if zero3_config is not None:
        if method == "qlora":
            raise ValueError("method qlora cannot load under DeepSpeed ZeRO-3 (a 4-bit base trains with ddp only)")
        loading = Zero3Loading.start(zero3_config, device)
    elif is_deepspeed_zero3_enabled():  # type: ignore[no-untyped-call]
        raise RuntimeError(
            "a ZeRO-3 loading (transformers' HfDeepSpeedConfig) is still alive: this model would load partitioned; "
            "let deepspeed.initialize take it from its model first"
        )
    kwargs: dict[str, Any] = {"dtype": base_dtype(method, precision, device)}
    if method == "qlora":
        reason = qlora_refusal(cuda_available=device.type == "cuda")
        if reason:
            raise ValueError(reason)
        from transformers import BitsAndBytesConfig

        kwargs = {
            "quantization_config": BitsAndBytesConfig(  # type: ignore[no-untyped-call]
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            ),
            "device_map": {"": device},
            "dtype": torch.bfloat16,
        }
    model: Any = AutoModelForCausalLM.from_pretrained(str(model_path), trust_remote_code=trust_remote_code, **kwargs)
    model.config.use_cache = False
    if method != "qlora" and loading is None:  # zero.Init placed the partitions on the device already
        model.to(device)
    if method == "full":
        if gradient_checkpointing:
            _enable_checkpointing(model)
        model.train()
        if loading is not None:
            attach_zero3_loading(model, loading)
        return model  # type: ignore[no-any-return]
    if lora is None:
        raise ValueError(f"method {method} needs a LoRA shape")
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if method == "qlora":
        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=gradient_checkpointing
        )
    elif gradient_checkpointing:
        _enable_checkpointing(model)
        model.enable_input_require_grads()
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.effective_alpha,
        lora_dropout=lora.dropout,
        target_modules=_target_modules(lora),
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)
    peft_model: torch.nn.Module = get_peft_model(model, config)
    peft_model.train()
    if loading is not None:
        attach_zero3_loading(peft_model, loading)
    return peft_model


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters of ``model`` (all of them for full fine-tuning), on CPU."""
    return {n: p.detach().cpu().clone() for n, p in _unwrap(model).named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint's trainable ``weights`` into ``model`` before its strategy distributes it.

    Parameters loaded partitioned (``build_model(zero3_config=...)``: ZeRO-3, only this rank's
    partition exists) are left out: DeepSpeed restores them from its own checkpoint (the
    optimizer's fp32 partitions) when the strategy loads its state.
    """
    partitioned = {n for n, p in model.named_parameters() if hasattr(p, "ds_id")}
    model.load_state_dict({k: v for k, v in weights.items() if k not in partitioned}, strict=False)
