"""Data-parallel strategies: how the loop wraps the model, steps the optimizer and checkpoints its state.

The loop (:mod:`corral.training._loop`) is the same for every strategy; a :class:`Strategy`
owns what differs:

* ``ddp`` (:class:`Replicated`): every worker holds the whole model; the caller's
  ``wrap_model`` (Ray Train's ``prepare_model``) wraps it in ``DistributedDataParallel``
  when there is more than one worker. Optimizer state is ``optimizer.state_dict()``,
  written by rank 0.
* ``fsdp`` (:class:`FullyShardedStrategy`): FSDP2 (``torch.distributed.fsdp.fully_shard``)
  over every transformer block (the model's ``_no_split_modules``) and the root, on the
  process group the caller initialised (gloo on CPU, NCCL on GPU). A checkpoint's optimizer
  state stays sharded: every rank writes its own shard under ``fsdp/`` with
  ``torch.distributed.checkpoint`` (rank 0 adds the ``.metadata``; see
  :mod:`corral.training._fsdp`), so no rank ever holds the whole state. DCP reshards on load:
  the checkpoint resumes with any number of workers. (Older checkpoints with the full state
  in ``optimizer.pt`` still resume.)
* ``deepspeed-zero2``/``deepspeed-zero3`` (:class:`DeepSpeedStrategy`): ``deepspeed.initialize``
  with the config :func:`corral.training._deepspeed.zero_config` generates from the
  hyper-parameters (gradient accumulation, clipping, precision live in the engine; the
  optimizer and schedule stay Corral's AdamW + warm-up), on the process group the caller
  initialised (NCCL on GPUs; gloo on CPU workers, with DeepSpeed's CPU accelerator minus its
  JIT-built shared-memory op, see :func:`corral.training._deepspeed.use_cpu_training_accelerator`).
  A checkpoint is DeepSpeed's own: every rank writes its optimizer partition under
  ``deepspeed/`` (frozen base weights excluded); resuming needs the same number of workers.
  Under ZeRO-3 the model may come already partitioned (``build_model(zero3_config=...)``,
  loaded inside ``deepspeed.zero.Init``): ``deepspeed.initialize`` then gets the very config
  it was loaded under and partitions only what was created whole (the LoRA adapter).

Every strategy writes the same ``model.pt`` (the full trainable weights, gathered on rank 0),
so a checkpoint's weights read the same way whatever trained them. The sharded optimizer
states (``fsdp/``, ``deepspeed/``) rely on every rank's files landing in the same checkpoint
folder: Ray Train merges the folders its ranks report.
"""

from __future__ import annotations

import contextlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import torch

from corral.training._deepspeed import engine_config, take_zero3_loading, use_cpu_training_accelerator
from corral.training._fsdp import FSDP_DIR, load_full, load_sharded, save_sharded
from corral.training._model import trainable_state_dict

if TYPE_CHECKING:
    from corral.api.v1alpha1.finetunejob import Hyperparameters
    from corral.training._checkpoint import CheckpointData
    from corral.training._loop import LoopCallbacks

__all__ = [
    "DEEPSPEED_DIR",
    "FSDP_DIR",
    "OPTIMIZER_FILE",
    "DeepSpeedStrategy",
    "FullyShardedStrategy",
    "Replicated",
    "Strategy",
    "StrategyName",
    "check_resumable",
    "output_model",
    "setup_strategy",
    "transformer_blocks",
]

logger = logging.getLogger(__name__)

StrategyName = Literal["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"]
#: Optimizer state of ``ddp`` checkpoints (rank 0 writes it; ``fsdp`` checkpoints of older Corral versions too).
OPTIMIZER_FILE = "optimizer.pt"
#: Folder of a DeepSpeed checkpoint inside Corral's checkpoint folder (every rank writes its files).
DEEPSPEED_DIR = "deepspeed"
_DS_TAG = "state"


def _trainable_names(module: torch.nn.Module) -> list[str]:
    return [n for n, p in module.named_parameters() if p.requires_grad]


class Strategy(ABC):
    """The model, optimizer and schedule of one run, distributed one way.

    Attributes:
        module: What the loop calls forward on (wrapped or sharded).
        optimizer: The optimizer (DeepSpeed's wrapper under DeepSpeed).
        scheduler: The learning-rate schedule (Corral's; the loop saves and loads its state).
        autocast: Whether the loop should autocast the forward pass (DeepSpeed casts the model itself).
    """

    name: StrategyName
    #: Whether the model passed in stops holding the trained weights (sharded or partitioned).
    sharded: ClassVar[bool] = False
    autocast: bool = True

    def __init__(self, module: torch.nn.Module, optimizer: Any, scheduler: Any, *, rank: int, world_size: int) -> None:
        self.module, self.optimizer, self.scheduler = module, optimizer, scheduler
        self.rank, self.world_size = rank, world_size

    def lr(self) -> float:
        """The learning rate of the next step."""
        return float(self.scheduler.get_last_lr()[0])

    @abstractmethod
    def sync(self, last: bool) -> contextlib.AbstractContextManager[None]:
        """Context for one micro-batch's forward and backward; ``last``: the step's last one (reduce then)."""

    def backward(self, loss: torch.Tensor) -> None:
        """Backward pass of one micro-batch's (already scaled) loss."""
        loss.backward()  # type: ignore[no-untyped-call]

    @abstractmethod
    def step(self, max_grad_norm: float) -> None:
        """Clip, step the optimizer and the schedule, clear the gradients (once per global step)."""

    @abstractmethod
    def gather_weights(self) -> dict[str, torch.Tensor] | None:
        """The full trainable weights on CPU, on rank 0 (``None`` elsewhere). Every rank must call it."""

    @abstractmethod
    def save_state(self, directory: Path) -> None:
        """Write the optimizer state into ``directory``. Every rank must call it."""

    @abstractmethod
    def load_state(self, checkpoint: CheckpointData) -> None:
        """Restore the optimizer state from ``checkpoint`` (written by the same strategy)."""


class Replicated(Strategy):
    """``ddp``: the whole model on every worker, gradients all-reduced (or one worker)."""

    name = "ddp"

    def sync(self, last: bool) -> contextlib.AbstractContextManager[None]:
        no_sync = getattr(self.module, "no_sync", None)
        if not last and no_sync is not None:
            return no_sync()  # type: ignore[no-any-return]
        return contextlib.nullcontext()

    def step(self, max_grad_norm: float) -> None:
        params = [p for p in self.module.parameters() if p.requires_grad]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def gather_weights(self) -> dict[str, torch.Tensor] | None:
        if self.rank != 0:
            return None

        return trainable_state_dict(self.module)

    def save_state(self, directory: Path) -> None:
        if self.rank == 0:
            torch.save(self.optimizer.state_dict(), directory / OPTIMIZER_FILE)

    def load_state(self, checkpoint: CheckpointData) -> None:
        self.optimizer.load_state_dict(checkpoint.optimizer)


def _tensor(value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"expected a tensor in the gathered state dict, got {type(value).__name__}")
    return value


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks to shard one by one: modules named by the model's ``_no_split_modules``."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


class FullyShardedStrategy(Strategy):
    """``fsdp``: FSDP2 ``fully_shard`` per transformer block and at the root."""

    name = "fsdp"
    sharded = True

    @staticmethod
    def shard(model: torch.nn.Module, device: torch.device, world_size: int) -> torch.nn.Module:
        """Shard ``model`` in place over all ranks of the default process group; returns it."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL and the mesh use the current device
        mesh = init_device_mesh(device.type, (world_size,))
        blocks = transformer_blocks(model)
        if not blocks:
            logger.warning("fsdp: %s names no transformer blocks; sharding the root only", type(model).__name__)
        for block in blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model

    def sync(self, last: bool) -> contextlib.AbstractContextManager[None]:
        self.module.set_requires_gradient_sync(last)  # type: ignore[operator]
        return contextlib.nullcontext()

    def step(self, max_grad_norm: float) -> None:
        params = [p for p in self.module.parameters() if p.requires_grad]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)  # DTensor-aware: the norm of the whole model
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def gather_weights(self) -> dict[str, torch.Tensor] | None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        full = get_model_state_dict(self.module, options=options)
        if self.rank != 0:
            return None
        names = _trainable_names(self.module)
        missing = [n for n in names if n not in full]
        if missing:
            raise RuntimeError(f"fsdp: the gathered state dict lacks trainable parameters {missing[:5]}")
        return {n: _tensor(full[n]) for n in names}

    def save_state(self, directory: Path) -> None:
        save_sharded(self.module, self.optimizer, directory)  # every rank its shard, under fsdp/

    def load_state(self, checkpoint: CheckpointData) -> None:
        if checkpoint.engine_dir is not None:
            load_sharded(self.module, self.optimizer, checkpoint.engine_dir)
        elif checkpoint.optimizer:  # an older checkpoint: the full state, which every rank read
            load_full(self.module, self.optimizer, checkpoint.optimizer)
        else:
            raise ValueError(
                f"the fsdp checkpoint at step {checkpoint.step} has no optimizer state "
                f"({FSDP_DIR}/, or {OPTIMIZER_FILE} of older versions)"
            )


class DeepSpeedStrategy(Strategy):
    """``deepspeed-zero2``/``deepspeed-zero3``: a DeepSpeed engine around Corral's AdamW and schedule."""

    name: StrategyName = "deepspeed-zero2"
    sharded = True
    autocast = False

    def __init__(self, engine: Any, optimizer: Any, scheduler: Any, *, rank: int, world_size: int, stage: int) -> None:
        super().__init__(engine, optimizer, scheduler, rank=rank, world_size=world_size)
        self.engine, self.stage = engine, stage
        self.name = "deepspeed-zero2" if stage == 2 else "deepspeed-zero3"

    def sync(self, last: bool) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # the engine reduces at its accumulation boundary

    def backward(self, loss: torch.Tensor) -> None:
        # The loop's loss is already normalised over the whole global batch: no 1/accumulation here.
        self.engine.backward(loss, scale_wrt_gas=False)
        self.engine.step()  # a micro-step; the optimizer steps at the accumulation boundary

    def step(self, max_grad_norm: float) -> None:
        # Clipping (the config's gradient_clipping), the optimizer and schedule steps ran in the last backward.
        accumulation = self.engine.gradient_accumulation_steps()
        if self.engine.micro_steps % accumulation:
            raise RuntimeError(
                f"deepspeed: {self.engine.micro_steps} micro-steps is not a whole number of optimizer steps of "
                f"{accumulation} micro-batches; the config and the loop disagree on the batch plan"
            )

    def gather_weights(self) -> dict[str, torch.Tensor] | None:
        from deepspeed.utils import safe_get_full_fp32_param

        out: dict[str, torch.Tensor] = {}
        for name, param in self.engine.module.named_parameters():
            if not param.requires_grad:
                continue
            full = safe_get_full_fp32_param(param)  # a collective under ZeRO-3
            if full is None:  # ZeRO-2 in fp32: the parameter is the master weight, replicated
                full = param.detach()
            if self.rank == 0:
                out[name] = full.detach().float().cpu().clone()
        return out if self.rank == 0 else None

    def save_state(self, directory: Path) -> None:
        self.engine.save_checkpoint(
            str(directory / DEEPSPEED_DIR),
            tag=_DS_TAG,
            client_state={},
            save_latest=False,
            exclude_frozen_parameters=True,
        )

    def load_state(self, checkpoint: CheckpointData) -> None:
        if checkpoint.engine_dir is None:
            raise ValueError(f"checkpoint at step {checkpoint.step} has no DeepSpeed state ({DEEPSPEED_DIR}/)")
        path, _ = self.engine.load_checkpoint(
            str(checkpoint.engine_dir),
            tag=_DS_TAG,
            load_module_strict=False,  # frozen base weights are not in it
            load_optimizer_states=True,
            load_lr_scheduler_states=False,  # the loop restores Corral's schedule
        )
        if path is None:
            raise RuntimeError(f"deepspeed could not load the checkpoint in {checkpoint.engine_dir}")


def check_resumable(checkpoint: CheckpointData, strategy: StrategyName, world_size: int) -> None:
    """Refuse a checkpoint that this run's strategy cannot read.

    ``ddp`` (the whole state) and ``fsdp`` (sharded, resharded on load) checkpoints resume with
    any number of workers; DeepSpeed's only with the number that wrote them.

    Raises:
        ValueError: Written by another strategy, or (DeepSpeed) by another number of workers.
    """
    written = checkpoint.state.get("strategy", "ddp")
    if written != strategy:
        raise ValueError(
            f"the checkpoint at step {checkpoint.step} was written with strategy {written} and this run uses "
            f"{strategy}; resume with strategy {written}, or start over with checkpointing.resume: never"
        )
    workers = int(checkpoint.state.get("world_size", world_size))
    if strategy.startswith("deepspeed") and workers != world_size:
        raise ValueError(
            f"the DeepSpeed checkpoint at step {checkpoint.step} holds optimizer partitions of {workers} workers; "
            f"this run has {world_size} (DeepSpeed checkpoints resume with the same number of workers)"
        )


def setup_strategy(
    name: StrategyName,
    model: torch.nn.Module,
    *,
    hp: Hyperparameters,
    make_scheduler: Callable[[torch.optim.Optimizer], Any],
    callbacks: LoopCallbacks,
    device: torch.device,
) -> Strategy:
    """Distribute ``model`` by ``name`` and build its optimizer (AdamW) and schedule.

    Args:
        name: ``ddp``, ``fsdp``, ``deepspeed-zero2`` or ``deepspeed-zero3``.
        model: The model from :func:`corral.training.build_model` (trainable weights already resumed).
        hp: Hyper-parameters (learning rate, weight decay, batch sizes, clipping, precision, seed).
        make_scheduler: Builds the schedule on an optimizer.
        callbacks: Rank, world size and (ddp) ``wrap_model``.
        device: The training device.

    Raises:
        ValueError: An unknown strategy, or fsdp/DeepSpeed without an initialised process group.
    """
    if name not in get_args(StrategyName):
        raise ValueError(f"strategy {name!r} is not one of {', '.join(get_args(StrategyName))}")
    rank, world = callbacks.rank, callbacks.world_size
    hp = hp.resolved()

    def adamw(module: torch.nn.Module) -> torch.optim.Optimizer:
        params = [p for p in module.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)

    if name != "deepspeed-zero3" and _loaded_partitioned(model):
        raise ValueError(f"strategy {name}: the model was loaded partitioned for deepspeed-zero3 (zero3_config)")
    if name == "ddp":
        module = callbacks.wrap_model(model)
        optimizer = adamw(module)
        return Replicated(module, optimizer, make_scheduler(optimizer), rank=rank, world_size=world)
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            f"strategy {name} needs an initialised torch.distributed process group (Ray Train or torchrun starts one)"
        )
    if name == "fsdp":
        module = FullyShardedStrategy.shard(model, device, world)
        optimizer = adamw(module)
        return FullyShardedStrategy(module, optimizer, make_scheduler(optimizer), rank=rank, world_size=world)
    return _deepspeed(name, model, hp, make_scheduler, adamw, rank=rank, world=world, device=device)


def _loaded_partitioned(model: torch.nn.Module) -> bool:
    """Whether ``model`` holds ZeRO-3 parameters (``build_model(zero3_config=...)``)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def _deepspeed(
    name: StrategyName,
    model: torch.nn.Module,
    hp: Hyperparameters,
    make_scheduler: Callable[[torch.optim.Optimizer], Any],
    adamw: Callable[[torch.nn.Module], torch.optim.Optimizer],
    *,
    rank: int,
    world: int,
    device: torch.device,
) -> DeepSpeedStrategy:
    loading = take_zero3_loading(model)  # dropped when this returns: later from_pretrained calls load whole
    if device.type == "cpu":
        use_cpu_training_accelerator()  # before deepspeed.initialize: no JIT build of its inference-only comm op
    local_rank = os.environ.get("LOCAL_RANK")
    if (
        device.type == "cuda"
        and device.index is not None
        and local_rank is not None
        and int(local_rank) != device.index
    ):
        # DeepSpeed puts the engine on cuda:LOCAL_RANK; the loop puts the batches on ``device``.
        raise RuntimeError(
            f"deepspeed: this worker trains on {device} but LOCAL_RANK={local_rank}; DeepSpeed would place the "
            f"model on cuda:{local_rank}"
        )
    import deepspeed

    stage = 2 if name == "deepspeed-zero2" else 3
    config = engine_config(name, hp, world_size=world, device=device)
    if loading is not None:
        if loading.config != config:
            raise ValueError(
                f"{name}: the model was loaded partitioned under another DeepSpeed config than this run's "
                f"(zero_optimization {loading.config.get('zero_optimization')} vs {config['zero_optimization']}); "
                "build it with zero3_load_config of the same strategy, hyper-parameters, world size and device"
            )
        config = loading.config  # the very dict zero.Init partitioned the base under
    optimizer = adamw(model)
    scheduler = make_scheduler(optimizer)
    engine, ds_optimizer, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
    )
    return DeepSpeedStrategy(engine, ds_optimizer, scheduler, rank=rank, world_size=world, stage=stage)


def output_model(
    model: torch.nn.Module, weights: dict[str, torch.Tensor] | None, rebuild: Callable[[], torch.nn.Module]
) -> torch.nn.Module:
    """The trained model to save as output, on rank 0.

    Args:
        model: The model that was trained (holds the weights unless its strategy sharded it).
        weights: The gathered trainable weights of a sharded run (``LoopResult.final_weights``),
            ``None`` when ``model`` holds them.
        rebuild: Builds a fresh, unsharded model of the same shape (on CPU) to load them into
            (``build_model`` without ``zero3_config``: a whole model, not loaded under ``zero.Init``).

    Raises:
        ValueError: The gathered weights do not cover the rebuilt model's trainable parameters.
        RuntimeError: The rebuilt model came out ZeRO-3 partitioned.
    """
    if weights is None:
        return model
    fresh = rebuild()
    if _loaded_partitioned(fresh):
        raise RuntimeError("the rebuilt output model loaded partitioned (a ZeRO-3 loading was still alive)")
    missing = sorted(set(_trainable_names(fresh)) - set(weights))
    if missing:
        raise ValueError(f"the gathered weights lack trainable parameters {missing[:5]}")
    fresh.load_state_dict(weights, strict=False)
    return fresh
