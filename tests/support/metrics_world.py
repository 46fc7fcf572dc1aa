"""A small store of objects in every phase that matters to the metrics, and serving samples.

Used by the metrics contract, dashboard and promtool tests: :func:`populate` creates a
GPU pool, a Model and a Dataset, FineTuneJobs (running with progress, pending, failed)
with their events files, and a ModelDeployment with a placement, so the store collector
yields every family it can; :func:`serving_registry` records every serving metric
in-process (the ``prometheus`` backend of ``corral.serving``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from corral.api.v1alpha1 import (
    Dataset,
    FineTuneJob,
    Model,
    ModelDeployment,
    Resource,
)
from corral.control import ControlSettings, job_files
from corral.store import Store
from tests.support.objects import applied, finetunejob, gpupool

__all__ = ["NS", "populate", "serving_registry"]

NS = "team-a"


def _create(store: Store, obj: Resource, status: dict[str, Any] | None) -> None:
    created = store.create(obj)
    if status is not None:
        store.replace_status(created.model_copy(update={"status": type(created.status).model_validate(status)}))  # type: ignore[attr-defined]


def _job(name: str, gpus: int = 1) -> FineTuneJob:
    resources = {"workers": 1, "gpusPerWorker": gpus, "pool": "a100"}
    return applied(finetunejob(name, finalizers=(), baseModel={"name": "base"}, resources=resources))


def _write_events(uri: str, events: list[dict[str, Any]]) -> None:
    path = Path(uri.removeprefix("file://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


def populate(store: Store, artifact_root: str) -> None:
    """Create the objects (and the running job's events file under ``artifact_root``)."""
    _create(
        store,
        applied(
            gpupool(
                accelerator="a100-80g",
                gpus_per_node=8,
                max_nodes=2,
                price="2.5",
                quotas=[{"namespace": NS, "maxGpus": 8}],
            )
        ),
        {"nodes": 1, "allocatableGpus": 8, "allocatedGpus": 3, "allocations": [{"namespace": NS, "gpus": 3}]},
    )
    ready = [{"type": "Ready", "status": "True", "reason": "Ready"}]
    _create(
        store,
        Model.model_validate(
            {
                "metadata": {"name": "base", "namespace": NS},
                "spec": {"uri": "file:///models/base", "license": {"name": "Apache-2.0", "commercialUse": "allowed"}},
            }
        ),
        {"conditions": ready},
    )
    _create(
        store,
        Dataset.model_validate(
            {
                "metadata": {"name": "support", "namespace": NS},
                "spec": {"uri": "file:///data/support.jsonl", "license": {"name": "CC-BY-SA-3.0"}},
            }
        ),
        {"conditions": [{"type": "Ready", "status": "False", "reason": "Invalid"}]},
    )
    placement = {"pool": "a100", "acceleratorType": "a100-80g", "replicas": 1, "gpusPerReplica": 2, "gpus": 2}
    _create(
        store,
        _job("bot", gpus=2),
        {
            "phase": "Running",
            "submissionId": "corral-team-a.bot-1",
            "progress": {"step": 40, "totalSteps": 100, "epoch": 1, "percent": 40, "etaSeconds": 300},
            "metrics": {"loss": 1.25, "evalLoss": 1.5, "learningRate": 0.0002, "tokensPerSecond": 1234.5},
            # As a finished job reports it (kept on this one so every evaluation series is exported).
            "evaluation": {
                "splits": [
                    {
                        "name": split,
                        "examples": 6,
                        "fineTuned": {"loss": 0.4, "exactMatchPercent": 50.0, "similarityPercent": 80.0},
                        "base": {"loss": 2.5, "exactMatchPercent": 0.0, "similarityPercent": 10.0},
                    }
                    for split in ("heldOut", "trained")
                ]
            },
            "placement": placement,
            "preemptions": 1,
            "cost": {"gpuSeconds": 720, "usd": "0.5", "estimatedUsd": "1.25"},
        },
    )
    _create(store, _job("waiting", gpus=4), {"phase": "Pending"})
    _create(store, _job("broken"), {"phase": "Failed", "submissionId": "corral-team-a.broken-1"})
    settings = ControlSettings(artifact_root=artifact_root)
    _write_events(
        job_files(store.get(FineTuneJob, NS, "bot"), settings).events,
        [
            {"type": "started", "run_name": "r", "total_steps": 100, "world_size": 1},
            {"type": "checkpoint", "step": 20, "uri": "file:///c/20"},
            {"type": "started", "run_name": "r", "resumed_from_step": 20, "total_steps": 100, "world_size": 1},
            {"type": "checkpoint", "step": 40, "uri": "file:///c/40"},
        ],
    )
    _create(
        store,
        ModelDeployment.model_validate(
            {
                "metadata": {"name": "support", "namespace": NS},
                "spec": {
                    "model": {"name": "base"},
                    "servedName": "support-bot",
                    "replicas": 2,
                    "resources": {"gpusPerReplica": 1, "pool": "a100"},
                },
            }
        ),
        {
            "phase": "Ready",
            "replicas": 2,
            "readyReplicas": 1,
            "placement": {**placement, "replicas": 1, "gpusPerReplica": 1, "gpus": 1},
            "coldStart": {"count": 3, "lastSeconds": 12, "estimatedSeconds": 12, "holdTimeoutSeconds": 60},
        },
    )


def serving_registry() -> CollectorRegistry:
    """A registry where every serving metric has been recorded once (in-process backend)."""
    from corral.serving._metrics import ServingMetrics

    registry = CollectorRegistry()
    metrics = ServingMetrics("support-bot", registry=registry)
    metrics.request_started(None)
    metrics.request_finished(None, ttft=0.2, tpot=0.03, output_tokens=12, prompt_tokens=20, duration=0.55)
    metrics.request_started("billing")
    metrics.error("billing", 503)
    metrics.request_finished("billing", ttft=None, tpot=None, output_tokens=0)
    metrics.adapter_loaded("billing", 0.4)
    metrics.adapter_evicted("billing")
    metrics.replica_started({"imports": 2.5, "model_load": 0.4, "warmup": 0.1})
    metrics.request_held(7.5)
    return registry
