"""The training loop: plain PyTorch, no Ray (unit-testable on its own).

What it does, for LoRA, QLoRA and full fine-tuning alike:

* AdamW on the trainable parameters, a warm-up + ``cosine`` (or ``linear``/``constant``)
  schedule, gradient clipping, optional gradient checkpointing, bf16 autocast where
  asked (``auto`` picks bf16 on CUDA devices that have it, fp32 elsewhere).
* A deterministic sampler with an explicit data position (:mod:`corral.training._sampling`):
  epoch ``e`` visits the units (examples, or packed sequences) in ``randperm(n, seed + e)``
  order; optimizer step ``s`` of the epoch takes units ``[s * G, (s + 1) * G)`` of that
  order, where the global batch ``G = micro x workers x accumulation``. Worker ``r`` takes micro-batch ``k`` of the step
  as units ``[(k * W + r) * micro, ...)``. A checkpoint records ``(epoch, index)``, so a
  resumed run continues with exactly the next unit: nothing repeated, nothing skipped.
  The tail of an epoch shorter than ``G`` is not trained on (``drop_last``).
* Gradient accumulation that equals one big batch: every micro-batch's summed token loss
  is divided by the number of loss tokens of the whole global step (known to every
  worker, since every worker sees the same plan), times the world size to undo DDP's
  gradient averaging.
* Dropout is reseeded per (step, rank), so a resumed run draws the same masks.
* Evaluation on the validation units every ``eval_every_steps`` (or at each epoch end).
* Checkpoints in the layout :mod:`corral.training._checkpoint` reads back; the model itself
  comes from :mod:`corral.training._model`.

The caller supplies a :class:`LoopCallbacks` (collectives, progress, checkpoint
persistence); the Ray layer implements it with ``ray.train``. How the model is distributed
(``ddp``, ``fsdp``, DeepSpeed ZeRO-2/3), how a step is taken and how the optimizer state is
checkpointed is the :mod:`corral.training._strategies` module's part.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from pydantic import BaseModel, ConfigDict, Field, field_validator

from corral.api.v1alpha1.finetunejob import Hyperparameters, LoRASpec, ResolvedHyperparameters
from corral.data import IGNORE_INDEX
from corral.training._checkpoint import MODEL_FILE, SCHEDULER_FILE, STATE_FILE, CheckpointData
from corral.training._data import Unit, collate_units
from corral.training._events import ProgressEvent
from corral.training._model import Method, autocast_dtype, load_trainable, trainable_state_dict
from corral.training._sampling import DataPosition, _Plan, rank_microbatches
from corral.training._strategies import StrategyName, check_resumable, setup_strategy

__all__ = ["LoopCallbacks", "LoopConfig", "LoopResult", "run_loop"]

logger = logging.getLogger(__name__)


class LoopConfig(BaseModel):
    """What the loop needs from the job (a projection of ``FineTuneJobSpec``)."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(default="lora", description="lora, qlora or full.")
    strategy: StrategyName = Field(
        default="ddp", description="ddp, fsdp, deepspeed-zero2 or deepspeed-zero3 (see corral.training._strategies)."
    )
    lora: LoRASpec | None = Field(default=None, description="LoRA shape (lora/qlora).")
    hyperparameters: ResolvedHyperparameters = Field(
        default_factory=ResolvedHyperparameters, description="Optimisation settings (no auto left)."
    )
    checkpoint_every_steps: int = Field(default=100, ge=1, description="Checkpoint every N optimizer steps.")
    gpus_total: int = Field(default=0, ge=0, description="GPUs of the whole run (for GPU-seconds).")
    price_per_gpu_hour: Decimal = Field(default=Decimal(0), ge=0, description="USD per GPU-hour.")
    progress_every_steps: int = Field(default=1, ge=1, description="Emit a progress event every N steps.")

    @field_validator("hyperparameters", mode="before")
    @classmethod
    def _resolve(cls, value: object) -> object:
        return value.resolved() if isinstance(value, Hyperparameters) else value


@dataclass
class LoopResult:
    """What a (possibly partial) run of the loop did."""

    global_step: int
    total_steps: int
    position: DataPosition
    losses: list[float] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    gpu_seconds: float = 0.0
    consumed: list[int] = field(default_factory=list)
    final_metrics: dict[str, float | None] = field(default_factory=dict)
    #: Sharded strategies (fsdp, DeepSpeed) at the end of training: the full trainable weights on
    #: rank 0 (the model passed in no longer holds them); ``None`` otherwise.
    final_weights: dict[str, torch.Tensor] | None = None


class LoopCallbacks:
    """Hooks the loop calls; the defaults run a single process with no persistence."""

    rank: int = 0
    world_size: int = 1

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum ``value`` over workers (default: one worker)."""
        return value

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Wrap the model for ``ddp`` data parallelism (default: unchanged); fsdp and DeepSpeed shard it themselves."""
        return model

    def on_progress(self, event: ProgressEvent) -> None:
        """Called on every worker after every ``progress_every_steps`` step."""

    def on_checkpoint(self, step: int, write: Callable[[Path], None], metrics: dict[str, Any]) -> None:
        """Persist a checkpoint: call ``write(directory)`` on every worker, then keep the directory.

        Args:
            step: Optimizer step.
            write: Writes the checkpoint files into a directory (rank 0 writes; the
                others take part in any collective gathering).
            metrics: Metrics to report with it.
        """


def _make_scheduler(optimizer: torch.optim.Optimizer, hp: Hyperparameters, total_steps: int) -> Any:
    from transformers import get_scheduler

    warmup = math.ceil(hp.warmup_ratio * total_steps)
    return get_scheduler(hp.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def _loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor], dtype: torch.dtype | None) -> torch.Tensor:
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    device_type = labels.device.type
    ctx = torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with ctx:
        logits = model(**inputs, use_cache=False).logits
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _evaluate(
    model: torch.nn.Module,
    units: Sequence[Unit],
    *,
    micro: int,
    callbacks: LoopCallbacks,
    pad_id: int,
    device: torch.device,
    dtype: torch.dtype | None,
) -> float:
    """Mean token loss over the validation units, all workers (equal forward counts per rank)."""
    world, rank = callbacks.world_size, callbacks.rank
    per_rank = -(-len(units) // world)
    mine = list(range(rank, len(units), world))
    batches = -(-per_rank // micro)
    total = torch.zeros(2, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for b in range(batches):
            idx = mine[b * micro : (b + 1) * micro]
            real = bool(idx)
            batch = collate_units([units[i] for i in (idx or [0])], pad_id)
            loss = _loss_sum(model, _to(batch, device), dtype)
            if real:
                total[0] += float(loss)
                total[1] += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    if was_training:
        model.train()
    total = callbacks.all_reduce_sum(total)
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


def run_loop(
    model: torch.nn.Module,
    train_units: Sequence[Unit],
    eval_units: Sequence[Unit],
    config: LoopConfig,
    *,
    pad_id: int,
    callbacks: LoopCallbacks | None = None,
    resume: CheckpointData | None = None,
    stop_after_step: int | None = None,
    device: torch.device | None = None,
) -> LoopResult:
    """Train ``model`` on ``train_units`` as ``config`` says.

    Args:
        model: The model from :func:`build_model` (not yet wrapped for data parallelism).
        train_units: Training sequences (examples, or packed sequences).
        eval_units: Validation sequences (may be empty).
        config: Method, hyper-parameters, checkpoint interval, price.
        pad_id: Padding token id.
        callbacks: Collectives, progress and checkpoint hooks.
        resume: A checkpoint to continue from (weights, optimizer, scheduler, position).
        stop_after_step: Stop after this optimizer step (tests; a checkpoint is written).
        device: Training device (default CPU).

    Returns:
        Steps done, losses, tokens, the final data position.

    Raises:
        ValueError: The batch sizes do not divide, or there is less data than one batch.
    """
    cb = callbacks or LoopCallbacks()
    device = device or torch.device("cpu")
    hp = config.hyperparameters
    plan = _Plan(len(train_units), hp, cb.world_size)
    dtype = autocast_dtype(hp.precision, device)
    unwrapped = model
    if resume is not None:
        check_resumable(resume, config.strategy, cb.world_size)
        missing = set(trainable_state_dict(unwrapped)) - set(resume.model)
        if missing:
            raise ValueError(f"checkpoint lacks trainable parameters: {sorted(missing)[:5]}")
        load_trainable(unwrapped, resume.model)
    par = setup_strategy(
        config.strategy,
        model,
        hp=hp,
        make_scheduler=lambda opt: _make_scheduler(opt, hp, plan.total_steps),
        callbacks=cb,
        device=device,
    )
    model, scheduler = par.module, par.scheduler
    if not par.autocast:
        dtype = None  # the engine runs the model in its own precision
    step = 0
    position = DataPosition()
    gpu_seconds_before = 0.0
    last_eval: float | None = None
    if resume is not None:
        par.load_state(resume)
        scheduler.load_state_dict(resume.scheduler)
        step, position = resume.step, resume.position
        gpu_seconds_before = float(resume.state.get("gpu_seconds", 0.0))
        last_eval = resume.state.get("eval_loss")
        logger.info("resuming at step %d, epoch %d, unit %d", step, position.epoch, position.index)
    result = LoopResult(global_step=step, total_steps=plan.total_steps, position=position)
    eval_every = hp.eval_every_steps
    start = time.perf_counter()

    def gpu_seconds() -> float:
        return gpu_seconds_before + config.gpus_total * (time.perf_counter() - start)

    def cost() -> str:
        usd = Decimal(str(gpu_seconds())) / Decimal(3600) * config.price_per_gpu_hour
        return str(usd.quantize(Decimal("0.000001")))

    def write_checkpoint(directory: Path) -> None:
        # Every rank takes part in gathering (and, under DeepSpeed, writes its partition); rank 0 writes the rest.
        directory.mkdir(parents=True, exist_ok=True)
        weights = par.gather_weights()
        par.save_state(directory)
        if cb.rank != 0:
            return
        assert weights is not None  # rank 0 gathers
        torch.save(weights, directory / MODEL_FILE)
        torch.save(scheduler.state_dict(), directory / SCHEDULER_FILE)
        state = {
            "global_step": step,
            "total_steps": plan.total_steps,
            "epoch": position.epoch,
            "index": position.index,
            "gpu_seconds": gpu_seconds(),
            "eval_loss": last_eval,
            "world_size": cb.world_size,
            "global_batch_size": hp.global_batch_size,
            "strategy": par.name,
        }
        (directory / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")

    def metrics(loss: float | None) -> dict[str, Any]:
        return {
            "step": step,
            "total_steps": plan.total_steps,
            "epoch": position.epoch + 1,
            "loss": loss,
            "eval_loss": last_eval,
            "gpu_seconds": gpu_seconds(),
        }

    step_loss: float | None = None
    last_ckpt = step if resume is not None else -1
    for steps_this_run, (pos, units) in enumerate(plan.steps_from(position), start=1):
        torch.manual_seed(hp.seed + 1_000_003 * (step + 1) + 7919 * cb.rank)
        micro_batches = rank_microbatches(units, cb.rank, cb.world_size, hp.micro_batch_size)
        step_tokens = sum(len(train_units[u].input_ids) for u in units)
        loss_tokens = sum(train_units[u].loss_tokens for u in units)
        scale = cb.world_size / max(1, loss_tokens)
        local_sum = torch.zeros((), dtype=torch.float64, device=device)
        lr = par.lr()
        for k, mb in enumerate(micro_batches):
            batch = _to(collate_units([train_units[u] for u in mb], pad_id), device)
            with par.sync(last=k == len(micro_batches) - 1):
                loss_sum = _loss_sum(model, batch, dtype)
                par.backward(loss_sum * scale)
            local_sum += loss_sum.detach().double()
        par.step(hp.max_grad_norm)
        step += 1
        position = DataPosition(pos.epoch, pos.index + hp.global_batch_size)
        step_loss = float(cb.all_reduce_sum(local_sum)) / max(1, loss_tokens)
        result.losses.append(step_loss)
        result.tokens += step_tokens
        result.consumed.extend(units)
        end_of_epoch = position.index >= plan.per_epoch * hp.global_batch_size
        if eval_units and ((eval_every and step % eval_every == 0) or (not eval_every and end_of_epoch)):
            last_eval = _evaluate(
                model, eval_units, micro=hp.micro_batch_size, callbacks=cb, pad_id=pad_id, device=device, dtype=dtype
            )
            result.eval_losses.append((step, last_eval))
        elapsed = time.perf_counter() - start
        if step % config.progress_every_steps == 0 or step == plan.total_steps:
            remaining = plan.total_steps - step
            cb.on_progress(
                ProgressEvent(
                    step=step,
                    total_steps=plan.total_steps,
                    epoch=pos.epoch + 1,
                    loss=step_loss,
                    eval_loss=last_eval,
                    lr=lr,
                    tokens_per_second=result.tokens / elapsed if elapsed > 0 else 0.0,
                    eta_seconds=elapsed / steps_this_run * remaining,
                    gpu_seconds=gpu_seconds(),
                    cost_usd=cost(),
                )
            )
        stopping = stop_after_step is not None and step >= stop_after_step
        if step % config.checkpoint_every_steps == 0 or step == plan.total_steps or stopping:
            cb.on_checkpoint(step, write_checkpoint, metrics(step_loss))
            last_ckpt = step
        if stopping:
            break
    if last_ckpt != step:  # resumed at the end: nothing trained, nothing to persist twice
        cb.on_checkpoint(step, write_checkpoint, metrics(step_loss))
    if par.sharded and step >= plan.total_steps:
        result.final_weights = par.gather_weights()  # every rank takes part; rank 0 keeps them
    result.global_step = step
    result.position = position
    result.seconds = time.perf_counter() - start
    result.gpu_seconds = gpu_seconds()
    result.final_metrics = {
        "loss": step_loss,
        "eval_loss": last_eval,
        "train_tokens_per_second": result.tokens / result.seconds if result.seconds > 0 else None,
        "gpu_seconds": result.gpu_seconds,
    }
    return result
