"""The optimizer state of ``fsdp`` checkpoints: sharded, one file per rank (``torch.distributed.checkpoint``).

No rank ever holds the whole optimizer state (for a 70B full fine-tune, Adam's moments are
~560 GB). :func:`save_sharded` has every rank write its own shard of the state (the FSDP2
``DTensor`` shards of ``exp_avg``/``exp_avg_sq``, keyed by parameter name) into the checkpoint's
``fsdp/`` folder with ``torch.distributed.checkpoint`` (DCP):

* rank ``r`` writes ``__<r>_0.distcp``: its shards, and some of the small replicated values
  (Adam's ``step`` per parameter, the ``param_groups``), each written once, by one rank;
* rank 0 (the coordinator) also writes ``.metadata``: every tensor's global shape, and which
  byte range of which file holds which chunk of it.

A rank writes nothing but its own files, and ``.metadata`` names the data files by their
name only, so ranks may write into different local folders that are merged afterwards (Ray
Train uploads every reporting rank's folder into the same checkpoint folder).
:func:`check_complete` tells a merged folder from one with a rank's upload missing.

On resume (:func:`load_sharded`) every rank reads, from the merged folder, the saved chunks
that overlap its own shards: DCP reshards, so a checkpoint resumes with any number of workers.
Checkpoints written before the state was sharded hold it whole in ``optimizer.pt`` (gathered
on rank 0); :func:`load_full` still resumes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["FSDP_DIR", "check_complete", "load_full", "load_sharded", "save_sharded"]

#: Folder of an ``fsdp`` checkpoint's optimizer state inside Corral's checkpoint folder (every rank writes into it).
FSDP_DIR = "fsdp"
#: The key of the optimizer state in the DCP state dict (a DCP checkpoint is a dict of named states).
_KEY = "optimizer"
_METADATA = ".metadata"


def save_sharded(module: torch.nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Write this rank's shard of the optimizer state into ``directory/fsdp/``. Every rank must call it.

    Args:
        module: The ``fully_shard``-ed model.
        optimizer: Its optimizer.
        directory: This rank's checkpoint folder (it may differ from the other ranks' folders).
    """
    from torch.distributed.checkpoint.filesystem import FileSystemWriter
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    from torch.distributed.checkpoint.state_dict_saver import save

    state = get_optimizer_state_dict(module, optimizer, options=StateDictOptions(full_state_dict=False))
    save({_KEY: state}, storage_writer=FileSystemWriter(directory / FSDP_DIR, single_file_per_rank=True))


def load_sharded(module: torch.nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Restore this rank's shard of the optimizer state from a merged ``fsdp/`` folder. Every rank must call it.

    The checkpoint may have been written by another number of workers: each rank reads the
    parts of the saved shards that overlap its own.

    Args:
        module: The ``fully_shard``-ed model (its weights already restored).
        optimizer: Its optimizer (state not yet initialised, or to be replaced).
        folder: The ``fsdp/`` folder (complete: see :func:`check_complete`).
    """
    from torch.distributed.checkpoint.filesystem import FileSystemReader
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.checkpoint.state_dict_loader import load

    options = StateDictOptions(full_state_dict=False)
    # This rank's (zero-initialised) shards, keyed like the saved state: DCP fills them in place.
    state = get_optimizer_state_dict(module, optimizer, options=options)
    load({_KEY: state}, storage_reader=FileSystemReader(folder))
    set_optimizer_state_dict(module, optimizer, state, options=options)


def load_full(module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Restore the optimizer from the full state of an older checkpoint (``optimizer.pt``); each rank keeps its shard.

    Every rank must call it, each with the whole state in memory.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(module, optimizer, state, options=StateDictOptions(full_state_dict=True))


def check_complete(folder: Path) -> None:
    """Check that a (merged) ``fsdp/`` folder holds ``.metadata`` and every file it names.

    Raises:
        FileNotFoundError: ``.metadata`` (rank 0's) or another rank's data file is missing,
            as after an interrupted upload.
    """
    from torch.distributed.checkpoint.filesystem import FileSystemReader

    if not (folder / _METADATA).is_file():
        raise FileNotFoundError(
            f"{folder} has no {_METADATA} (torch.distributed.checkpoint, written by rank 0): the optimizer state "
            "of this checkpoint is incomplete (an interrupted upload)"
        )
    metadata = FileSystemReader(folder).read_metadata()
    files = sorted({info.relative_path for info in metadata.storage_data.values()})
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(missing)} of the {len(files)} optimizer state files its {_METADATA} names "
            "(one per rank; an interrupted upload)"
        )
