"""DeepSpeed ZeRO-2/ZeRO-3 configuration generated from a FineTuneJob spec (or the loop's hyper-parameters).

The config is a plain dict in DeepSpeed's JSON schema (``train_micro_batch_size_per_gpu``,
``gradient_accumulation_steps``, ``gradient_clipping``, ``bf16``/``fp16``,
``zero_optimization``). The optimizer and scheduler stay Corral's (AdamW + warm-up schedule,
passed to ``deepspeed.initialize``), so the config carries no ``optimizer`` or ``scheduler``
section and allows the client optimizer. One DeepSpeed rank is one Ray Train worker (one
process), so the data-parallel size is ``resources.workers``.

On CPU workers :func:`use_cpu_training_accelerator` replaces DeepSpeed's CPU accelerator by one
that offers no shared-memory all-reduce op: DeepSpeed's ``TorchBackend`` JIT-compiles that op
(``deepspeed_shm_comm``, about 90 s of C++ on a fresh machine, cached in
``TORCH_EXTENSIONS_DIR``) the first time any engine starts, for ``inference_all_reduce`` only;
training's collectives go through ``torch.distributed`` (gloo) either way.

Under ZeRO-3 a worker loads the base model already partitioned: :func:`engine_config` builds
the worker's config once, :func:`corral.training.build_model` loads under
:class:`Zero3Loading` (transformers' ``HfDeepSpeedConfig`` alive, so ``from_pretrained`` runs
in ``deepspeed.zero.Init`` and each rank materialises only its partition) and hands the loading
on with the model (:func:`attach_zero3_loading`), and the strategy takes it back
(:func:`take_zero3_loading`) to give ``deepspeed.initialize`` that same config dict, then
drops it: a model built after that (the output model on rank 0) loads whole again.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import torch

from corral.api.v1alpha1.finetunejob import FineTuneJobSpec, Hyperparameters
from corral.training._sampling import batch_plan

__all__ = [
    "Zero3Loading",
    "attach_zero3_loading",
    "deepspeed_config",
    "engine_config",
    "take_zero3_loading",
    "use_cpu_training_accelerator",
    "zero3_load_config",
    "zero_config",
]

#: The model attribute that carries the :class:`Zero3Loading` a model was loaded under, until ``deepspeed.initialize``.
_LOADING_ATTR = "_corral_zero3_loading"


def zero_config(
    hp: Hyperparameters,
    *,
    stage: int,
    world_size: int,
    on_gpu: bool = True,
    bf16_supported: bool = True,
    offload: bool = False,
) -> dict[str, Any]:
    """Build the DeepSpeed config for ``hp`` on ``world_size`` ranks.

    Args:
        hp: Hyper-parameters (batch sizes, clipping, precision, seed, gradient checkpointing).
        stage: ZeRO stage, 2 or 3.
        world_size: Data-parallel ranks (processes).
        on_gpu: Whether the ranks train on GPUs (``auto`` precision is fp32 on CPUs).
        bf16_supported: Whether the GPUs have bf16 (``auto`` picks bf16 then, fp16 otherwise).
        offload: Offload optimizer state (and, for ZeRO-3, parameters) to CPU memory.

    Returns:
        The config dict (JSON-serialisable).

    Raises:
        ValueError: Stage not 2 or 3, batch sizes that do not divide, fp16 without a GPU.
    """
    if stage not in (2, 3):
        raise ValueError(f"ZeRO stage must be 2 or 3 (got {stage})")
    hp = hp.resolved()
    accum = batch_plan(hp.global_batch_size, hp.micro_batch_size, world_size)
    precision = hp.precision
    if precision == "auto":
        precision = ("bf16" if bf16_supported else "fp16") if on_gpu else "fp32"
    if precision == "fp16" and not on_gpu:
        raise ValueError("precision fp16 needs a GPU (DeepSpeed's fp16 loss scaling); use bf16 or fp32 on CPU")
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
        "zero_allow_untested_optimizer": True,
        "activation_checkpointing": {"partition_activations": hp.gradient_checkpointing and stage == 3},
        "seed": hp.seed,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def deepspeed_config(spec: FineTuneJobSpec, *, bf16_supported: bool = True, offload: bool = False) -> dict[str, Any]:
    """Build the DeepSpeed config for ``spec`` (its GPU workers).

    Args:
        spec: A spec whose strategy is ``deepspeed-zero2`` or ``deepspeed-zero3``.
        bf16_supported: Whether the GPUs have bf16 (``auto`` precision picks it then).
        offload: Offload optimizer state (and, for ZeRO-3, parameters) to CPU memory.

    Returns:
        The config dict (JSON-serialisable), the one the training workers pass to ``deepspeed.initialize``.

    Raises:
        ValueError: The strategy is not DeepSpeed, or the batch sizes do not divide.
    """
    strategy = spec.resources.strategy
    if strategy not in ("deepspeed-zero2", "deepspeed-zero3"):
        raise ValueError(f"not a DeepSpeed strategy: {strategy!r}")
    return zero_config(
        spec.hyperparameters.resolved(),
        stage=2 if strategy == "deepspeed-zero2" else 3,
        world_size=spec.resources.workers,
        on_gpu=spec.resources.gpus_per_worker > 0,
        bf16_supported=bf16_supported,
        offload=offload,
    )


def engine_config(strategy: str, hp: Hyperparameters, *, world_size: int, device: torch.device) -> dict[str, Any]:
    """The config a training worker's DeepSpeed engine gets: ``strategy``'s stage, precision for ``device``.

    Args:
        strategy: ``deepspeed-zero2`` or ``deepspeed-zero3``.
        hp: The loop's hyper-parameters.
        world_size: Data-parallel ranks (processes).
        device: The worker's training device (``auto`` precision: bf16 on GPUs that have it, fp32 on CPU).

    Raises:
        ValueError: Not a DeepSpeed strategy; see :func:`zero_config`.
    """
    if strategy not in ("deepspeed-zero2", "deepspeed-zero3"):
        raise ValueError(f"not a DeepSpeed strategy: {strategy!r} (deepspeed-zero2 or deepspeed-zero3)")
    on_gpu = device.type == "cuda"
    return zero_config(
        hp,
        stage=2 if strategy == "deepspeed-zero2" else 3,
        world_size=world_size,
        on_gpu=on_gpu,
        bf16_supported=on_gpu and torch.cuda.is_bf16_supported(),
    )


def zero3_load_config(
    strategy: str, hp: Hyperparameters, *, world_size: int, device: torch.device
) -> dict[str, Any] | None:
    """The config to load the base model under (``build_model(zero3_config=...)``): ZeRO-3's, else ``None``."""
    if strategy != "deepspeed-zero3":
        return None
    return engine_config(strategy, hp, world_size=world_size, device=device)


@dataclass(frozen=True)
class Zero3Loading:
    """A ZeRO-3 config and the transformers ``HfDeepSpeedConfig`` that makes ``from_pretrained`` partition under it.

    While the ``hf_config`` object lives (transformers keeps only a weak reference to it), every
    ``from_pretrained`` in the process loads inside ``deepspeed.zero.Init``; keep this object
    exactly as long as the model built under it needs it, until ``deepspeed.initialize``.

    Attributes:
        config: The DeepSpeed config dict; ``deepspeed.initialize`` must receive this same dict.
        hf_config: The ``transformers.integrations.HfDeepSpeedConfig`` built on ``config``.
    """

    config: dict[str, Any]
    hf_config: Any

    @classmethod
    def start(cls, config: dict[str, Any], device: torch.device) -> Zero3Loading:
        """Make the next ``from_pretrained`` calls load partitioned under ``config`` (a ZeRO-3 config).

        On CPU it first installs :func:`use_cpu_training_accelerator`; on CUDA it makes ``device``
        the current device (``zero.Init`` puts the partitions there). Then it starts DeepSpeed's
        communication on the caller's process group, as ``deepspeed.initialize`` would:
        ``zero.Init`` reads the world size when it starts, and before that DeepSpeed would see 1
        rank (and refuse the batch sizes, or keep every weight whole).

        Raises:
            ValueError: ``config`` is not a ZeRO stage 3 config, or no torch.distributed process
                group is initialised.
        """
        stage = config.get("zero_optimization", {}).get("stage")
        if stage != 3:
            raise ValueError(f"loading partitioned needs a ZeRO stage 3 config (zero_optimization.stage={stage!r})")
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "loading partitioned for deepspeed-zero3 needs an initialised torch.distributed process group "
                "(Ray Train or torchrun starts one)"
            )
        if device.type == "cpu":
            use_cpu_training_accelerator()
        elif device.type == "cuda":
            torch.cuda.set_device(device)
        import deepspeed
        from deepspeed.accelerator import get_accelerator
        from transformers.integrations.deepspeed import HfDeepSpeedConfig

        deepspeed.init_distributed(dist_backend=get_accelerator().communication_backend_name())

        return cls(config=config, hf_config=HfDeepSpeedConfig(config))  # type: ignore[no-untyped-call]


def attach_zero3_loading(model: torch.nn.Module, loading: Zero3Loading) -> None:
    """Hand ``loading`` on with ``model`` (built under it) to :func:`take_zero3_loading` in the strategy."""
    object.__setattr__(model, _LOADING_ATTR, loading)  # a plain attribute: not a submodule, not in the state dict


def take_zero3_loading(model: torch.nn.Module) -> Zero3Loading | None:
    """Detach and return the :class:`Zero3Loading` ``model`` was built under (``None``: loaded whole).

    Once the caller drops the returned object, ``from_pretrained`` loads whole models again.
    """
    loading = model.__dict__.pop(_LOADING_ATTR, None)
    return loading if isinstance(loading, Zero3Loading) else None


@functools.cache
def _training_cpu_accelerator_class() -> type:
    from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

    class TrainingCPUAccelerator(CPU_Accelerator):  # type: ignore[misc]  # deepspeed ships no types
        """DeepSpeed's CPU accelerator without the shared-memory communication op (inference only)."""

        def get_op_builder(self, class_name: str) -> Any:
            # comm/torch.py's build_shm_op() skips the op (and its JIT build) when the builder is None.
            if class_name == "ShareMemCommBuilder":
                return None
            return super().get_op_builder(class_name)

    return TrainingCPUAccelerator


def use_cpu_training_accelerator() -> None:
    """Make DeepSpeed train on the CPU without JIT-compiling its shared-memory all-reduce op.

    Sets ``DS_ACCELERATOR=cpu`` (unless set) before DeepSpeed is imported, then installs, with
    DeepSpeed's public ``deepspeed.accelerator.set_accelerator``, a subclass of its CPU
    accelerator whose only change is that it has no ``ShareMemCommBuilder``. Call it in the
    worker before ``deepspeed.initialize``; calling it again does nothing.

    Raises:
        RuntimeError: DeepSpeed already uses another accelerator in this process (``DS_ACCELERATOR``
            names a device this CPU worker does not train on).
    """
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # read when deepspeed first picks its accelerator
    from deepspeed.accelerator import get_accelerator, set_accelerator

    cls = _training_cpu_accelerator_class()
    current = get_accelerator()
    if isinstance(current, cls):
        return
    if current.device_name() != "cpu":
        raise RuntimeError(
            f"deepspeed already uses the {current.device_name()} accelerator in this process (DS_ACCELERATOR="
            f"{os.environ.get('DS_ACCELERATOR')!r}) but this worker trains on the CPU; run CPU workers with "
            "DS_ACCELERATOR unset or cpu"
        )
    set_accelerator(cls())
