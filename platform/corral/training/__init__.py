"""Fine-tuning on Ray Train: the ``python -m corral.training --job JOB.json`` entrypoint and its parts.

* :class:`TrainingJob` - the resolved job file the control plane writes.
* :func:`run_loop`, :func:`build_model` - the plain-PyTorch loop (LoRA, QLoRA, full) with a
  deterministic, checkpointed data position.
* :func:`build_trainer` - the loop in a ``TorchTrainer`` (scaling, storage, failures, checkpoints).
* :func:`deepspeed_config` - DeepSpeed ZeRO-2/3 config from a spec.
* :class:`EventWriter`, :func:`read_events`, :func:`summarize` - the events file the control
  plane reads into ``status.progress``/``metrics``/``checkpoints``/``cost``.
* :func:`save_output`, :func:`model_card` - the output Model folder and its card.

Names are imported on first use (PEP 562): the control plane reads the events file through
``corral.training._events`` without importing torch (the operator stays ~100 MB; torch alone
adds ~450 MB). Names from the loop, checkpoints, DeepSpeed and Ray Train import torch;
transformers, peft and ray are imported where they are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.training._checkpoint import CheckpointData, read_checkpoint
    from corral.training._deepspeed import deepspeed_config
    from corral.training._events import (
        CheckpointEvent,
        CompletedEvent,
        EventWriter,
        FailedEvent,
        JobSummary,
        ProgressEvent,
        StartedEvent,
        read_events,
        summarize,
    )
    from corral.training._job import BaseModelSource, DatasetSource, TrainingJob, load_job
    from corral.training._loop import LoopCallbacks, LoopConfig, LoopResult, run_loop
    from corral.training._model import build_model
    from corral.training._output import model_card, save_output
    from corral.training._preflight import preflight, qlora_refusal
    from corral.training._sampling import DataPosition, batch_plan
    from corral.training._trainer import build_trainer, run_name_for

_MODULES = {
    "_checkpoint": ("CheckpointData", "read_checkpoint"),
    "_deepspeed": ("deepspeed_config",),
    "_events": (
        "CheckpointEvent",
        "CompletedEvent",
        "EventWriter",
        "FailedEvent",
        "JobSummary",
        "ProgressEvent",
        "StartedEvent",
        "read_events",
        "summarize",
    ),
    "_job": ("BaseModelSource", "DatasetSource", "TrainingJob", "load_job"),
    "_loop": ("LoopCallbacks", "LoopConfig", "LoopResult", "run_loop"),
    "_model": ("build_model",),
    "_output": ("model_card", "save_output"),
    "_preflight": ("preflight", "qlora_refusal"),
    "_sampling": ("DataPosition", "batch_plan"),
    "_trainer": ("build_trainer", "run_name_for"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "BaseModelSource",
    "CheckpointData",
    "CheckpointEvent",
    "CompletedEvent",
    "DataPosition",
    "DatasetSource",
    "EventWriter",
    "FailedEvent",
    "JobSummary",
    "LoopCallbacks",
    "LoopConfig",
    "LoopResult",
    "ProgressEvent",
    "StartedEvent",
    "TrainingJob",
    "batch_plan",
    "build_model",
    "build_trainer",
    "deepspeed_config",
    "load_job",
    "model_card",
    "preflight",
    "qlora_refusal",
    "read_checkpoint",
    "read_events",
    "run_loop",
    "run_name_for",
    "save_output",
    "summarize",
]
