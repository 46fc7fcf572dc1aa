"""The Ray Train worker side: the loop of :mod:`corral.training._loop` in each ``TorchTrainer`` worker.

(:mod:`corral.training._trainer` builds the ``TorchTrainer`` that runs :func:`train_worker`.)

* Each worker loads the base model and the data itself (deterministically), resumes from
  ``ray.train.get_checkpoint()`` when there is one, shards every step by rank, reports
  checkpoints with ``ray.train.report`` (a barrier on every worker), and rank 0 writes the
  events and, at the end, the output Model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from corral.api import Quantity
from corral.artifacts import ArtifactSettings, open_store, parse_uri
from corral.data import get_template
from corral.models import tiny
from corral.training._checkpoint import CheckpointData, read_checkpoint
from corral.training._data import PreparedData, load_conversations, prepare_units, split_validation
from corral.training._deepspeed import zero3_load_config
from corral.training._evaluate import base_of, evaluate
from corral.training._events import (
    CheckpointEvent,
    EvaluatedEvent,
    EventWriter,
    ProgressEvent,
    StartedEvent,
    read_events,
)
from corral.training._job import BaseModelSource, TrainingJob
from corral.training._loop import LoopCallbacks, LoopConfig, LoopResult, run_loop
from corral.training._memory_fit import memory_fit
from corral.training._model import build_model
from corral.training._output import save_output
from corral.training._sampling import steps_per_epoch
from corral.training._strategies import output_model

__all__ = [
    "loop_config",
    "materialize_base_model",
    "prepare_job_data",
    "stored_checkpoints",
    "train_worker",
    "worker_threads",
]

logger = logging.getLogger(__name__)


def materialize_base_model(source: BaseModelSource, directory: Path) -> Path:
    """Put the base model (weights + tokenizer) into a local directory.

    Args:
        source: A URI (local path, ``file://``, ``s3://``, ``hf://``) or a builtin tiny arch.
        directory: Where to put it when it must be downloaded or built.

    Returns:
        A local directory ``from_pretrained`` can read.
    """
    if source.builtin is not None:
        return tiny.build(source.builtin, directory)
    assert source.uri is not None  # the model validator guarantees one of the two
    uri = parse_uri(source.uri)
    if uri.scheme == "file":
        return Path(uri.path)
    open_store(source.uri, ArtifactSettings.from_env()).download_dir(source.uri, directory)
    return directory


def _local_base_path(source: BaseModelSource, directory: Path) -> Path:
    """Where :func:`materialize_base_model` put (or found) the base model."""
    if source.uri is not None and parse_uri(source.uri).scheme == "file":
        return Path(parse_uri(source.uri).path)
    return directory


def loop_config(job: TrainingJob) -> LoopConfig:
    """The loop's settings for ``job``."""
    spec = job.spec
    return LoopConfig(
        method=spec.method,
        strategy=spec.resources.strategy,
        lora=spec.effective_lora,
        hyperparameters=spec.hyperparameters.resolved(),
        checkpoint_every_steps=spec.checkpointing.every_steps,
        gpus_total=spec.resources.workers * spec.resources.gpus_per_worker,
        price_per_gpu_hour=job.price,
    )


def prepare_job_data(job: TrainingJob, tokenizer: Any) -> tuple[PreparedData, str, str]:
    """Load, split and tokenize the job's data.

    Returns:
        The units, the chat template's name and its source.
    """
    data, template_name, template, _ = prepare_job_data_with_conversations(job, tokenizer)
    return data, template_name, template


def prepare_job_data_with_conversations(
    job: TrainingJob, tokenizer: Any
) -> tuple[PreparedData, str, str, tuple[list[Any], list[Any]]]:
    """As :func:`prepare_job_data`, also returning the (train, validation) conversations (for evaluation)."""
    hp = job.spec.hyperparameters.resolved()
    template_name = job.spec.chat_template or job.base_model.chat_template
    template = get_template(template_name, tokenizer)
    train = load_conversations([(d.uri, d.format) for d in job.datasets])
    if job.validation_dataset is not None:
        validation = load_conversations([(job.validation_dataset.uri, job.validation_dataset.format)])
    else:
        train, validation = split_validation(train, hp.validation_split_percent, hp.seed)
    data = prepare_units(
        train,
        validation,
        tokenizer,
        template,
        max_seq_len=hp.max_seq_len,
        loss_on=hp.loss_on,
        packing=hp.packing,
    )
    return data, template_name, template, (train, validation)


class _RayCallbacks(LoopCallbacks):
    def __init__(self, job: TrainingJob, rank: int, world_size: int, run_uri: str) -> None:
        self.job, self.rank, self.world_size, self.run_uri = job, rank, world_size, run_uri
        self.events = EventWriter(job.events_uri) if rank == 0 else None

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(value)
        return value

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        # ddp only: fsdp and DeepSpeed wrap the model themselves (corral.training._strategies).
        if self.world_size == 1:
            return model
        import ray.train.torch

        return ray.train.torch.prepare_model(model, move_to_device=False, parallel_strategy="ddp")

    def on_progress(self, event: ProgressEvent) -> None:
        if self.events is not None:
            self.events.write(event)

    def on_checkpoint(self, step: int, write: Any, metrics: dict[str, Any]) -> None:
        import ray.train

        name = f"checkpoint_{step:08d}"
        with tempfile.TemporaryDirectory(prefix="corral-ckpt-") as tmp:
            write(Path(tmp))
            # Rank 0 writes Corral's files; under DeepSpeed every rank also writes its optimizer partition.
            # Ray Train copies every reporting rank's files into the same checkpoint folder.
            wrote = self.rank == 0 or any(Path(tmp).iterdir())
            checkpoint = ray.train.Checkpoint.from_directory(tmp) if wrote else None
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
        if self.events is not None:
            self.events.write(CheckpointEvent(step=step, uri=str(parse_uri(self.run_uri).joinpath(name))))


def train_worker(config: dict[str, Any]) -> None:
    """The per-worker training function that ``TorchTrainer`` runs.

    Args:
        config: ``{"job": <TrainingJob as JSON-able dict>, "run_uri": <URI of the run folder>}``
            and, for tests, ``"stop_after_step"`` and ``"fail_at_step"`` (``{"step": N, "rank": R,
            "marker": PATH}``: rank R exits hard once at step N, unless the marker file exists).
    """
    entered = time.monotonic()  # setup_seconds counts this function's imports too
    import functools

    import ray.train
    import ray.train.torch
    from transformers import AutoTokenizer


    job = TrainingJob.model_validate(config["job"])
    worker_threads(job.spec.resources.cpus_per_worker)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if job.spec.resources.gpus_per_worker > 0 else torch.device("cpu")
    ray_cb = _RayCallbacks(job, rank, world, config["run_uri"])
    cb: _RayCallbacks | _FailingCallbacks = ray_cb
    fail = config.get("fail_at_step")
    if fail and rank == fail["rank"]:
        cb = _FailingCallbacks(ray_cb, fail["step"], Path(fail["marker"]))
    base_dir = _node_shared_dir(Path(parse_uri(config["run_uri"]).path).name, rank, world)
    try:
        # One copy per node: local rank 0 downloads (or builds) it, the others wait and read it.
        if ctx.get_local_rank() == 0:
            base_dir.mkdir(parents=True, exist_ok=True)
            materialize_base_model(job.base_model, base_dir / "base")
        _barrier(world)
        base = _local_base_path(job.base_model, base_dir / "base")
        if not (base / "config.json").is_file():
            raise FileNotFoundError(
                f"rank {rank}: the base model was not materialised at {base} (no config.json); a builtin tiny model "
                "is written by transformers on global rank 0 only, so builtin bases need a single node"
            )
        remote_code = job.base_model.trust_remote_code
        tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=remote_code)
        data, template_name, template, (train_convs, val_convs) = prepare_job_data_with_conversations(job, tokenizer)
        cfg = loop_config(job)
        hp = job.spec.hyperparameters.resolved()
        checkpointing = hp.gradient_checkpointing
        if device.type == "cuda" and not checkpointing:
            fit = memory_fit(
                json.loads((base / "config.json").read_text(encoding="utf-8")),
                job.spec,
                torch.cuda.get_device_properties(device).total_memory,
            )
            checkpointing = fit.gradient_checkpointing
            if checkpointing:
                logger.warning("rank %d: gradient checkpointing on: %s", rank, fit.reason)
        model = build_model(
            base,
            job.spec.method,
            job.spec.effective_lora,
            seed=hp.seed,
            gradient_checkpointing=checkpointing,
            # LoRA under ddp on a GPU: the frozen base in 16 bits; sharded strategies keep one dtype
            precision=hp.precision if cfg.strategy == "ddp" else "fp32",
            device=device,
            # deepspeed-zero3: each rank loads only its partition; initialize gets the same config dict
            zero3_config=zero3_load_config(cfg.strategy, hp, world_size=world, device=device),
            trust_remote_code=remote_code,
        )
        _barrier(world)
        # resume: never gives each submission its own run name, so only in-run restarts find checkpoints here.
        resume = _resume_point(ray.train.get_checkpoint(), config["run_uri"])
        if rank == 0 and cb.events is not None:
            cb.events.write(
                StartedEvent(
                    run_name=Path(parse_uri(config["run_uri"]).path).name,
                    resumed_from_step=resume.step if resume else 0,
                    total_steps=steps_per_epoch(len(data.train), hp.global_batch_size) * hp.epochs,
                    world_size=world,
                    setup_seconds=time.monotonic() - entered,
                    worker_start_seconds=max(0.0, _process_age() - (time.monotonic() - entered)),
                )
            )
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        result: LoopResult = run_loop(
            model,
            data.train,
            data.validation,
            cfg,
            pad_id=pad_id,
            callbacks=cb,
            resume=resume,
            stop_after_step=config.get("stop_after_step"),
            device=device,
        )
        if rank == 0 and result.global_step >= result.total_steps:
            # Sharded strategies gathered the weights on rank 0: they go into a fresh, unsharded model on CPU.
            rebuild = functools.partial(
                build_model, base, job.spec.method, job.spec.effective_lora, seed=hp.seed, trust_remote_code=remote_code
            )
            trained_model = output_model(model, result.final_weights, rebuild)
            evaluation = evaluate(
                trained_model,
                tokenizer,
                template,
                trained=train_convs,
                held_out=val_convs,
                base=base_of(trained_model, functools.partial(_plain_base, base, device, remote_code)),
                spec=job.spec.evaluation,
                seed=hp.seed,
            )
            if ray_cb.events is not None:
                ray_cb.events.write(EvaluatedEvent(evaluation=evaluation))
                write_results_csv(job)
            save_output(
                trained_model,
                tokenizer,
                job,
                template_name=template_name,
                template=template,
                metrics={**result.final_metrics, "steps": result.global_step},
            )
    finally:
        if ray_cb.events is not None:
            ray_cb.events.flush()
        if ctx.get_local_rank() == 0:
            shutil.rmtree(base_dir, ignore_errors=True)


def _plain_base(path: Path, device: torch.device, trust_remote_code: bool = False) -> torch.nn.Module:
    """The base weights alone (to score the base beside a full fine-tune)."""
    from transformers import AutoModelForCausalLM

    model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code)
    return model.to(device)


RESULTS_FILE = "results.csv"
"""The step metrics CSV written next to the output Model (OpenAI's ``result_files``)."""


def write_results_csv(job: TrainingJob) -> str:
    """Write ``<outputUri>/results.csv``: one row per logged step, as OpenAI's result file has.

    Columns: ``step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy``
    (Corral measures no token accuracy: those columns stay empty). The rows come from the
    events file, so a resumed run's earlier steps are included.

    Returns:
        The CSV's URI.
    """
    import csv
    import io

    rows: dict[int, ProgressEvent] = {}
    for event in read_events(job.events_uri):
        if isinstance(event, ProgressEvent):
            rows[event.step] = event
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"])
    for step in sorted(rows):
        ev = rows[step]
        valid = "" if ev.eval_loss is None else f"{ev.eval_loss:.6f}"
        writer.writerow([step, f"{ev.loss:.6f}", "", valid, ""])
    uri = str(parse_uri(job.output_uri).joinpath(RESULTS_FILE))
    if parse_uri(uri).scheme == "file":
        Path(parse_uri(uri).path).parent.mkdir(parents=True, exist_ok=True)
    open_store(uri, ArtifactSettings.from_env()).put_bytes(buffer.getvalue().encode("utf-8"), uri)
    return uri


class _FailingCallbacks(LoopCallbacks):
    """Test hook: kill this worker process once at a step (Ray Train restarts it)."""

    def __init__(self, inner: _RayCallbacks, step: int, marker: Path) -> None:
        self.inner, self.step, self.marker = inner, step, marker
        self.rank, self.world_size, self.events = inner.rank, inner.world_size, inner.events

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        return self.inner.all_reduce_sum(value)

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.inner.wrap_model(model)

    def on_progress(self, event: ProgressEvent) -> None:
        self.inner.on_progress(event)
        if event.step == self.step and not self.marker.exists():
            self.marker.write_text(str(event.step), encoding="utf-8")
            logger.warning("test hook: worker rank %d exits at step %d", self.rank, event.step)
            os._exit(1)

    def on_checkpoint(self, step: int, write: Any, metrics: dict[str, Any]) -> None:
        self.inner.on_checkpoint(step, write, metrics)


def stored_checkpoints(run_uri: str) -> list[tuple[int, str]]:
    """Checkpoint folders of a run in storage, as ``(step, uri)``, newest first.

    Args:
        run_uri: The Ray Train run folder (``<checkpointUri>/<run name>``).
    """
    store = open_store(run_uri, ArtifactSettings.from_env())
    base = parse_uri(run_uri)
    found: dict[int, str] = {}
    for uri in store.list(run_uri):
        parts = base.relative(parse_uri(uri)).split("/")
        if len(parts) == 2 and parts[1] == "trainer_state.json" and parts[0].startswith("checkpoint_"):
            step = parts[0].removeprefix("checkpoint_")
            if step.isdigit():
                found[int(step)] = str(base.joinpath(parts[0]))
    return sorted(found.items(), reverse=True)


def _read_stored(uri: str) -> CheckpointData:
    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        return read_checkpoint(parsed.path)
    with tempfile.TemporaryDirectory(prefix="corral-resume-") as tmp:
        open_store(uri, ArtifactSettings.from_env()).download_dir(uri, tmp)
        return read_checkpoint(tmp)


def _resume_point(registered: Any, run_uri: str) -> CheckpointData | None:
    """The newest readable checkpoint: Ray's registered one or a newer one already in storage.

    Ray Train registers a reported checkpoint when its controller next polls the workers; a
    worker or driver that dies right after ``ray.train.report`` can leave the newest
    checkpoint persisted but unregistered. Resuming from what storage holds means that such
    a checkpoint is not lost (and its steps are not trained twice).
    """
    best: CheckpointData | None = None
    if registered is not None:
        with registered.as_directory() as directory:
            best = read_checkpoint(directory)
    for step, uri in stored_checkpoints(run_uri):
        if best is not None and step <= best.step:
            break
        try:
            best = _read_stored(uri)
        except Exception as exc:  # a checkpoint cut short by the failure (torch.load raises many types)
            logger.warning("skipping unreadable checkpoint %s: %s", uri, exc)
            continue
        logger.info("resuming from %s (step %d), newer than Ray's registered checkpoint", uri, step)
        break
    return best


def worker_threads(cpus_per_worker: str) -> int:
    """Give torch one intra-op thread per CPU the worker was given; keep tokenizers single-threaded.

    Called first thing in the worker, in the thread that trains (torch's thread setting is made
    there), instead of a ``worker_runtime_env``: the threads follow ``cpusPerWorker`` rather than a
    fixed 1, and Ray needs no extra runtime environment for the workers.

    Args:
        cpus_per_worker: ``spec.resources.cpusPerWorker`` (``"2"``, ``"500m"``).

    Returns:
        The torch thread count set (at least 1).
    """
    threads = max(1, int(Quantity.parse(cpus_per_worker)))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # read by tokenizers when it first batches
    torch.set_num_threads(threads)
    return threads


def _process_age() -> float:
    """Seconds since this process started (0.0 where the start time cannot be read)."""
    try:
        import psutil  # type: ignore[import-untyped]  # a Ray dependency

        return max(0.0, time.time() - float(psutil.Process().create_time()))
    except Exception:  # psutil missing or /proc unreadable: the field is diagnostic only
        return 0.0


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _node_shared_dir(run_name: str, rank: int, world: int) -> Path:
    """A directory name every worker agrees on (rank 0 draws it), unique per worker-group start."""
    token = [uuid.uuid4().hex[:12] if rank == 0 else None]
    if world > 1:
        import torch.distributed as dist

        dist.broadcast_object_list(token, src=0)
    return Path(tempfile.gettempdir()) / "corral-base" / f"{run_name}-{token[0]}"
