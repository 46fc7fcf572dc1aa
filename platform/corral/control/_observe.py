"""The I/O side of observing: read data, probe artifacts, fold training events, build tiny models.

These are the bridges to ``corral.data``, ``corral.artifacts``, ``corral.training`` and
``corral.models.tiny``; the runner calls them and hands the results to the pure
reconcilers. None of them loads the ML stack: the data check runs in a child process,
and a tiny model is copied from shipped files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from corral.api.v1alpha1 import Dataset
from corral.api.v1alpha1.dataset import DatasetReport
from corral.artifacts import ArtifactError, ArtifactSettings, open_store, parse_uri
from corral.data._isolated import DataCheckFailed, check_dataset_isolated
from corral.models import tiny
from corral.scheduler import ModelProfile
from corral.training._events import ProgressEvent, StartedEvent, read_events, summarize

from ._observed import ArtifactProbe, DatasetCheck, TrainingObservation, TrainingRestart

__all__ = [
    "check_dataset_data",
    "data_file_stat",
    "materialize_model",
    "probe_artifact",
    "read_training",
    "training_restarts",
    "write_file",
]

logger = logging.getLogger(__name__)

_MAX_SUMMARY_ERRORS = 3


def check_dataset_data(dataset: Dataset, artifact_settings: ArtifactSettings | None = None) -> DatasetCheck:
    """Read and validate a Dataset's data with ``corral.data.check_dataset``, in a capped child process.

    The check holds every example while it measures them; run in the control plane's
    process, a large file would grow the server by several times its size. The data is
    fetched here (``s3://`` with the namespace's credentials) and checked by
    :func:`corral.data._isolated.check_dataset_isolated`, so the server's memory stays flat.

    Args:
        dataset: The Dataset.
        artifact_settings: The credentials of the Dataset's namespace (``None``: the server's).

    Returns:
        The check; ``error`` is set when the data cannot be read at all.
    """
    spec = dataset.spec
    try:
        with _local_copy(spec.uri, artifact_settings) as local:
            checked = check_dataset_isolated(
                local, format=spec.format, max_seq_len=spec.max_seq_len, over_length=spec.over_length
            )
    except (DataCheckFailed, OSError, ValueError, ArtifactError) as exc:
        return DatasetCheck(ok=False, error=f"cannot read {spec.uri}: {exc}")
    status = DatasetReport.model_validate(checked.status)
    if checked.ok:
        summary = (
            f"{status.examples} examples ({checked.format}); {status.duplicates} duplicates, "
            f"{status.over_max_seq_len} over maxSeqLen {spec.max_seq_len}"
        )
    else:
        first = "; ".join(f"line {line}: {message}" for line, message in checked.first_errors[:_MAX_SUMMARY_ERRORS])
        extra = checked.error_count - _MAX_SUMMARY_ERRORS
        more = f" (and {extra} more)" if extra > 0 else ""
        summary = f"{status.invalid} invalid records, {status.examples} valid examples ({checked.format})" + (
            f": {first}{more}" if first else ""
        )
    return DatasetCheck(ok=checked.ok, format=checked.format, sha256=checked.sha256, report=status, summary=summary)


def data_file_stat(uri: str) -> str | None:
    """``<bytes>:<mtime ns>`` of a ``file://`` data file, ``missing`` when it is gone; None for
    other schemes (not watched: re-read on a new generation only).
    """
    try:
        parsed = parse_uri(uri)
    except ValueError:
        return None
    if parsed.scheme != "file":
        return None
    try:
        st = Path(parsed.path).stat()
    except FileNotFoundError:
        return "missing"
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


@contextmanager
def _local_copy(uri: str, artifact_settings: ArtifactSettings | None) -> Iterator[str]:
    """A local path of a Dataset's data: the file itself, or an ``s3://`` object fetched to a temp dir."""
    if not uri.startswith("s3://"):
        yield uri
        return
    with tempfile.TemporaryDirectory(prefix="corral-data-") as tmp:
        local = Path(tmp) / (uri.rstrip("/").rsplit("/", 1)[-1] or "data.jsonl")
        open_store(uri, artifact_settings).get_file(uri, local)
        yield str(local)


def probe_artifact(uri: str, artifact_settings: ArtifactSettings | None = None) -> ArtifactProbe:
    """Size, manifest sha256 and ``config.json`` facts of the folder at ``uri`` (read with ``artifact_settings``)."""
    try:
        store = open_store(uri, artifact_settings)
        files = store.list(uri)
        if not files:
            return ArtifactProbe(uri=uri, exists=False, error=f"nothing stored at {uri}")
        base = str(parse_uri(uri)).rstrip("/")
        manifest, size = [], 0
        for item in sorted(files):
            info = store.info(item)
            size += info.size
            rel = item[len(base) + 1 :] if item.startswith(base + "/") else item.rsplit("/", 1)[-1]
            manifest.append(f"{rel} {info.sha256 or ''}\n")
        digest = hashlib.sha256("".join(manifest).encode("utf-8")).hexdigest()
        architecture = parameters = context = None
        remote_code = False
        if f"{base}/config.json" in files:
            config = json.loads(store.get_bytes(f"{base}/config.json"))
            architecture = config.get("model_type")
            remote_code = bool(config.get("auto_map"))
            context = config.get("max_position_embeddings") or config.get("seq_length")
            try:
                parameters = ModelProfile.from_hf_config(config).params
            except (KeyError, ValueError, TypeError):
                parameters = None
        return ArtifactProbe(
            uri=uri,
            exists=True,
            size_bytes=size,
            sha256=digest,
            architecture=architecture,
            parameters=parameters,
            context_length=context,
            remote_code=remote_code,
        )
    except (ArtifactError, OSError, ValueError) as exc:
        return ArtifactProbe(uri=uri, exists=False, error=f"cannot read {uri}: {exc}")


def read_training(events_uri: str, keep: int | None = None) -> TrainingObservation:
    """Fold a job's events file (``corral.training``'s JSON lines) into status fields."""
    events = read_events(events_uri)
    summary = summarize(events, keep=keep)
    started = [e for e in events if isinstance(e, StartedEvent)]
    return TrainingObservation(
        progress=summary.progress,
        metrics=summary.metrics,
        checkpoints=tuple(summary.checkpoints),
        cost=summary.cost,
        completed_output_uri=summary.completed.output_uri if summary.completed else None,
        failed_reason=summary.failed.reason if summary.failed else None,
        failed_message=summary.failed.message if summary.failed else None,
        resumed_from_step=started[-1].resumed_from_step if started else None,
        restarts=training_restarts(events),
        evaluation=summary.evaluation,
    )


def training_restarts(events: list[Any]) -> tuple[TrainingRestart, ...]:
    """The restarts in an events file: every ``started`` event after the first, once its run
    has logged a step (or ended), with the step it stopped at and the seconds the steps paused.
    """
    restarts: list[TrainingRestart] = []
    seen_start = False
    last_step: int | None = None
    last_time: float | None = None
    pending: tuple[int | None, int, float | None] | None = None
    for ev in events:
        if isinstance(ev, StartedEvent):
            if pending is not None:  # restarted again before a step: the pause goes on
                restarts.append(TrainingRestart(pending[0], pending[1], None))
            if seen_start:
                pending = (last_step, ev.resumed_from_step, last_time if last_time is not None else ev.time)
            seen_start = True
        elif isinstance(ev, ProgressEvent):
            if pending is not None:
                since = pending[2]
                restarts.append(TrainingRestart(pending[0], pending[1], round(ev.time - since, 1) if since else None))
                pending = None
            last_step, last_time = ev.step, ev.time
        elif pending is not None and getattr(ev, "type", "") in ("completed", "failed"):
            restarts.append(TrainingRestart(pending[0], pending[1], None))
            pending = None
    return tuple(restarts)


def write_file(uri: str, content: bytes) -> None:
    """Write bytes to an artifact URI (creating parent folders for ``file://``)."""
    open_store(uri).put_bytes(content, uri)


def materialize_model(builtin: str, uri: str) -> None:
    """Build a tiny catalog model (``corral.models.tiny.build``) at ``uri``."""
    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        tiny.build(builtin, Path(parsed.path))
    else:
        with tempfile.TemporaryDirectory(prefix="corral-tiny-") as tmp:
            tiny.build(builtin, tmp)
            open_store(uri).upload_dir(tmp, uri)
    logger.info("Materialized catalog model %s at %s", builtin, uri)
