"""The I/O side of observing: read data, probe artifacts, fold training events, build tiny models.

These are the bridges to ``corral.data``, ``corral.artifacts``, ``corral.training`` and
``corral.models.tiny``; the runner calls them and hands the results to the pure
reconcilers. Heavy modules are imported on first use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path

from corral.api.v1alpha1 import Dataset
from corral.artifacts import ArtifactError, open_store, parse_uri

from ._observed import ArtifactProbe, DatasetCheck, TrainingObservation

__all__ = ["check_dataset_data", "materialize_model", "probe_artifact", "read_training", "write_file"]

logger = logging.getLogger(__name__)

_MAX_SUMMARY_ERRORS = 3


def check_dataset_data(dataset: Dataset) -> DatasetCheck:
    """Read and validate a Dataset's data with ``corral.data.check_dataset``.

    Returns:
        The check; ``error`` is set when the data cannot be read at all.
    """
    from corral.data import check_dataset

    spec = dataset.spec
    try:
        report = check_dataset(spec.uri, format=spec.format, max_seq_len=spec.max_seq_len, over_length=spec.over_length)
    except (OSError, ValueError, ArtifactError) as exc:  # FormatDetectionError and TemplateError are ValueErrors
        return DatasetCheck(ok=False, error=f"cannot read {spec.uri}: {exc}")
    status = report.to_status()
    if report.ok:
        summary = (
            f"{status.examples} examples ({report.format}); {status.duplicates} duplicates, "
            f"{status.over_max_seq_len} over maxSeqLen {spec.max_seq_len}"
        )
    else:
        errors = report.errors
        first = "; ".join(f"line {e.line}: {e.message}" for e in errors[:_MAX_SUMMARY_ERRORS])
        more = f" (and {len(errors) - _MAX_SUMMARY_ERRORS} more)" if len(errors) > _MAX_SUMMARY_ERRORS else ""
        summary = f"{status.invalid} invalid records, {status.examples} valid examples ({report.format})" + (
            f": {first}{more}" if first else ""
        )
    return DatasetCheck(ok=report.ok, format=report.format, sha256=report.train.sha256, report=status, summary=summary)


def probe_artifact(uri: str) -> ArtifactProbe:
    """Size, manifest sha256 and ``config.json`` facts of the folder at ``uri``."""
    try:
        store = open_store(uri)
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
        if f"{base}/config.json" in files:
            config = json.loads(store.get_bytes(f"{base}/config.json"))
            architecture = config.get("model_type")
            context = config.get("max_position_embeddings") or config.get("seq_length")
            try:
                from corral.scheduler import ModelProfile

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
        )
    except (ArtifactError, OSError, ValueError) as exc:
        return ArtifactProbe(uri=uri, exists=False, error=f"cannot read {uri}: {exc}")


def read_training(events_uri: str, keep: int | None = None) -> TrainingObservation:
    """Fold a job's events file (``corral.training``'s JSON lines) into status fields."""
    from corral.training._events import StartedEvent, read_events, summarize

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
        evaluation=summary.evaluation,
    )


def write_file(uri: str, content: bytes) -> None:
    """Write bytes to an artifact URI (creating parent folders for ``file://``)."""
    open_store(uri).put_bytes(content, uri)


def materialize_model(builtin: str, uri: str) -> None:
    """Build a tiny catalog model (``corral.models.tiny.build``) at ``uri``."""
    from corral.models import tiny

    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        tiny.build(builtin, Path(parsed.path))
    else:
        with tempfile.TemporaryDirectory(prefix="corral-tiny-") as tmp:
            tiny.build(builtin, tmp)
            open_store(uri).upload_dir(tmp, uri)
    logger.info("Materialized catalog model %s at %s", builtin, uri)
