"""Run the training loop on several spawned processes over gloo (plain torch.distributed, no Ray).

:func:`run_workers` spawns ``world`` processes that each run :func:`_worker`: for every
:class:`Job` asked, a run from a fresh model (or from a given checkpoint) that stops at a step
(checkpointing it), then a run that resumes from that checkpoint on a differently initialised
model and trains to the end (a job without a stop step trains to the end in one run).
Checkpoints are written like Ray Train writes them: every rank into its own folder
(``out/<job>/ranks/<rank>/``), then merged into one (``out/<job>/checkpoint_<step>``).
Rank 0 writes what the test needs into ``out/<job>/``: ``result.json`` (losses, steps,
consumed units, how the weights were laid out: right after ``build_model`` on every rank and
after training; and the output model rank 0 rebuilds from the gathered weights) and
``final.pt`` (the gathered weights). The workers build their models as the Ray worker does:
``deepspeed-zero3`` ones loaded partitioned (``zero3_config``).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from corral.training import LoopCallbacks, LoopConfig, LoopResult, build_model, read_checkpoint, run_loop
from corral.training._deepspeed import zero3_load_config
from corral.training._strategies import output_model

__all__ = ["Job", "run_workers"]


@dataclass(frozen=True)
class Job:
    """What the workers train: ``config`` (its strategy included), from ``resume`` or a fresh model.

    Attributes:
        config: The loop's configuration.
        stop: Stop (and checkpoint) at this step, then resume from that checkpoint to the end;
            ``None``: train to the end in one run.
        resume: A merged checkpoint folder to start from (written by any number of workers).
    """

    config: LoopConfig
    stop: int | None = None
    resume: Path | None = None


class _DistCallbacks(LoopCallbacks):
    """Collectives over the default process group; checkpoints written per rank, then merged."""

    def __init__(self, rank: int, world: int, root: Path) -> None:
        self.rank, self.world_size, self.root = rank, world, root
        self.steps: list[int] = []

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        dist.all_reduce(value)
        return value

    def on_checkpoint(self, step: int, write: Any, metrics: dict[str, Any]) -> None:
        import torch.distributed as dist

        name = f"checkpoint_{step:08d}"
        mine = self.root / "ranks" / str(self.rank) / name
        write(mine)
        dist.barrier()
        if self.rank == 0:  # what Ray Train does with every reporting rank's folder
            for r in range(self.world_size):
                shutil.copytree(self.root / "ranks" / str(r) / name, self.root / name, dirs_exist_ok=True)
        dist.barrier()
        self.steps.append(step)


def _layout(model: torch.nn.Module) -> dict[str, int]:
    """How many trainable weights this rank holds, of how many: FSDP shards, ZeRO-3 partitions, or all."""
    local = full = 0
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if hasattr(p, "to_local"):  # an FSDP2 DTensor: numel() is the global size
            local, full = local + p.to_local().numel(), full + p.numel()
        elif hasattr(p, "ds_numel"):  # a ZeRO-3 parameter: its data is released, ds_tensor is the partition
            local, full = local + p.ds_tensor.numel(), full + int(p.ds_numel)
        else:
            local, full = local + p.numel(), full + p.numel()
    return {"local_numel": local, "full_numel": full}


def _loaded(model: torch.nn.Module) -> dict[str, int]:
    """What this rank holds of every weight (frozen and trainable): ``ds_tensor`` for ZeRO-3 parameters."""
    out = {"frozen_local": 0, "frozen_full": 0, "trainable_local": 0, "trainable_full": 0, "partitioned": 0}
    out["data"] = sum(p.data.numel() for p in model.parameters())  # what is materialised at full size
    for p in model.parameters():
        kind = "trainable" if p.requires_grad else "frozen"
        if hasattr(p, "ds_id"):  # loaded inside zero.Init: only this rank's partition is materialised
            local, full = p.ds_tensor.numel(), int(p.ds_numel)
            out["partitioned"] += 1
        else:
            local = full = p.numel()
        out[f"{kind}_local"] += local
        out[f"{kind}_full"] += full
    return out


def _rebuilt(model: torch.nn.Module, weights: dict[str, torch.Tensor], rebuild: Any) -> dict[str, Any]:
    """How the output model rank 0 rebuilds from the gathered weights came out (whole, holding them)."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    fresh = output_model(model, weights, rebuild)
    params = dict(fresh.named_parameters())
    return {
        "zero3_loading_alive": is_deepspeed_zero3_enabled(),
        "partitioned": sum(hasattr(p, "ds_id") for p in params.values()),
        "holds_weights": all(torch.equal(params[n].detach(), w) for n, w in weights.items()),
    }


def _worker(  # noqa: PLR0917 - torch.multiprocessing passes the arguments by position
    rank: int,
    world: int,
    port: int,
    base: str,
    units: Any,
    jobs: dict[str, Job],
    out: str,
) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
    )
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    train, pad_id = units
    try:
        for label, job in jobs.items():
            cfg, root = job.config, Path(out) / label
            cb = _DistCallbacks(rank, world, root)
            resume = read_checkpoint(job.resume) if job.resume is not None else None
            hp = cfg.hyperparameters
            zero3 = zero3_load_config(cfg.strategy, hp, world_size=world, device=torch.device("cpu"))
            first = build_model(base, cfg.method, cfg.lora, seed=0 if resume is None else 1, zero3_config=zero3)
            loaded: list[dict[str, int]] = [{} for _ in range(world)]
            dist.all_gather_object(loaded, _loaded(first))
            runs: list[LoopResult] = [
                run_loop(first, train, [], cfg, pad_id=pad_id, callbacks=cb, resume=resume, stop_after_step=job.stop)
            ]
            layout = _layout(first)
            if job.stop is not None:
                ckpt = read_checkpoint(root / f"checkpoint_{job.stop:08d}")
                # Another init (the checkpoint overwrites it), loaded the same way.
                second = build_model(base, cfg.method, cfg.lora, seed=1, zero3_config=zero3)
                runs.append(run_loop(second, train, [], cfg, pad_id=pad_id, callbacks=cb, resume=ckpt))
            if rank == 0:
                final = runs[-1].final_weights
                assert final is not None
                torch.save(final, root / "final.pt")
                rebuilt = _rebuilt(first, final, functools.partial(build_model, base, cfg.method, cfg.lora, seed=7))
                result = {
                    "steps": [run.global_step for run in runs],
                    "total_steps": runs[-1].total_steps,
                    "losses": [loss for run in runs for loss in run.losses],
                    "consumed": [unit for run in runs for unit in run.consumed],
                    "checkpoints": cb.steps,
                    "part_final_weights": runs[0].final_weights is not None,
                    "layout": layout,
                    "loaded": loaded,
                    "rebuilt": rebuilt,
                }
                (root / "result.json").write_text(json.dumps(result), encoding="utf-8")
            dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_workers(
    world: int,
    base: Path,
    *,
    units: tuple[list[Any], int],
    jobs: dict[str, Job],
    out: Path,
    timeout_s: float = 600,
) -> None:
    """Spawn ``world`` gloo processes that train ``jobs`` one after the other, each into ``out/<its name>/``.

    Raises:
        TimeoutError: The workers did not finish within ``timeout_s`` (they are terminated).
    """
    import torch.multiprocessing as mp

    ctx = mp.start_processes(
        _worker,
        args=(world, _free_port(), str(base), units, jobs, str(out)),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for process in ctx.processes:
                if process.is_alive():
                    process.terminate()
            raise TimeoutError(f"{world} workers training {sorted(jobs)} did not finish in {timeout_s:.0f} s")
