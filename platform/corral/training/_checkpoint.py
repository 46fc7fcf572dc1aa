"""A training checkpoint's files, and reading one back (see ``run_loop`` for the writing side).

A checkpoint folder holds ``trainer_state.json`` (step, data position, strategy, world
size), ``model.pt`` (the full trainable weights, whatever the strategy), ``scheduler.pt``
and the optimizer state: ``optimizer.pt`` for ``ddp``, one shard per worker under ``fsdp/``
(``torch.distributed.checkpoint``) or ``deepspeed/`` (DeepSpeed's partitions).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from corral.training._fsdp import FSDP_DIR, check_complete
from corral.training._sampling import DataPosition
from corral.training._strategies import DEEPSPEED_DIR, OPTIMIZER_FILE

__all__ = ["MODEL_FILE", "SCHEDULER_FILE", "STATE_FILE", "CheckpointData", "read_checkpoint"]

STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.pt"
SCHEDULER_FILE = "scheduler.pt"


@dataclass
class CheckpointData:
    """A checkpoint read back into memory (see :func:`read_checkpoint`).

    ``model`` holds the full trainable weights whatever the strategy; ``optimizer`` the
    optimizer state of ``ddp`` checkpoints (and of ``fsdp`` checkpoints of older versions).
    ``fsdp`` and DeepSpeed keep their sharded state in ``engine_dir`` instead: a local copy of
    the checkpoint's ``fsdp/`` or ``deepspeed/`` folder, removed when this object is
    garbage-collected.
    """

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    state: dict[str, Any]
    engine_dir: Path | None = None

    @property
    def step(self) -> int:
        """Optimizer step of the checkpoint."""
        return int(self.state["global_step"])

    @property
    def position(self) -> DataPosition:
        """Data position of the checkpoint."""
        return DataPosition(int(self.state["epoch"]), int(self.state["index"]))


def read_checkpoint(directory: str | Path) -> CheckpointData:
    """Read a checkpoint written by the loop.

    The sharded optimizer state of an ``fsdp`` checkpoint (``fsdp/``: one
    ``torch.distributed.checkpoint`` file per worker and rank 0's ``.metadata``) or a DeepSpeed
    one (``deepspeed/``: one optimizer partition per worker) is checked to be complete and
    copied to a local temporary folder (``engine_dir``), so that ``directory`` may be a download
    that is removed afterwards.

    Raises:
        FileNotFoundError: Not a checkpoint directory, or one with files missing.
    """
    d = Path(directory)
    if not (d / STATE_FILE).is_file():
        raise FileNotFoundError(f"{d} is not a Corral training checkpoint (no {STATE_FILE})")
    state = json.loads((d / STATE_FILE).read_text(encoding="utf-8"))
    engine_dir: Path | None = None
    optimizer: dict[str, Any] = {}
    strategy = str(state.get("strategy", "ddp"))
    if strategy.startswith("deepspeed"):
        engine_dir = _copy_engine_state(d / DEEPSPEED_DIR, int(state["world_size"]))
    elif strategy == "fsdp" and (d / FSDP_DIR).is_dir():
        engine_dir = _copy_engine_state(d / FSDP_DIR, int(state["world_size"]))
    else:  # ddp, or an fsdp checkpoint of an older version (the full state)
        optimizer = _load(d / OPTIMIZER_FILE)
    data = CheckpointData(
        model=_load(d / MODEL_FILE),
        optimizer=optimizer,
        scheduler=_load(d / SCHEDULER_FILE),
        state=state,
        engine_dir=engine_dir,
    )
    if engine_dir is not None:
        weakref.finalize(data, shutil.rmtree, engine_dir, True)
    return data


def _load(path: Path) -> Any:
    """``torch.load`` memory-mapped: a tensor is read from disk only when it is used.

    A ZeRO-3 full fine-tune restores its partitioned weights from DeepSpeed's own state, so the
    whole-model ``model.pt`` it also holds is never paged in; the mapping outlives a download
    folder removed after reading (Linux keeps a mapped file's data until it is unmapped).
    """
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _copy_engine_state(source: Path, world_size: int) -> Path:
    """Copy a DeepSpeed or fsdp state folder to a temporary one, after checking every rank's files are there."""
    if source.name == FSDP_DIR:
        check_complete(source)
    else:
        parts = sorted(source.glob("*/*zero_pp_rank_*_optim_states.pt"))
        if len(parts) != world_size:
            raise FileNotFoundError(
                f"{source} holds {len(parts)} DeepSpeed optimizer partitions, not the {world_size} of the workers "
                "that wrote it (an interrupted upload)"
            )
    target = Path(tempfile.mkdtemp(prefix=f"corral-{source.name}-resume-"))
    shutil.copytree(source, target, dirs_exist_ok=True)
    return target
