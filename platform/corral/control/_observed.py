"""What a reconciler is given: the settings, the referenced objects and the observed world.

The runner builds these from the store, the driver and the artifact stores; reconcilers
read them and nothing else (no clock, no environment, no I/O). Everything here is a plain
value, so tests build observed worlds by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from corral.api.v1alpha1 import Dataset, GPUPool, Model, ModelDeployment
from corral.api.v1alpha1.dataset import DatasetReport
from corral.api.v1alpha1.finetunejob import CheckpointInfo, Evaluation, JobCost, JobMetrics, JobProgress
from corral.artifacts import ArtifactSettings, URIPolicy, catalog_model_uri, job_files_under
from corral.drivers import JobState, ServeAppState
from corral.scheduler import Allocation, PlacementRequest

__all__ = [
    "FINALIZER",
    "ArtifactProbe",
    "ControlSettings",
    "DatasetCheck",
    "DatasetWorld",
    "DeploymentWorld",
    "FineTuneJobWorld",
    "GPUPoolWorld",
    "ModelWorld",
    "TrainingObservation",
    "TrainingRestart",
]

FINALIZER = "corral.dev/cleanup"
"""Finalizer on FineTuneJobs and ModelDeployments: the Ray job / Serve app is gone before the object."""


@dataclass(frozen=True)
class ControlSettings:
    """Where the control plane puts things and how it starts jobs (read once, outside reconcilers).

    Attributes:
        artifact_root: URI under which job folders and materialized catalog models live
            (``file:///.../artifacts`` embedded, ``s3://bucket/prefix`` on a cluster).
        python: Interpreter the Ray job entrypoint runs (``python -m corral.training``).
        job_runtime_env: Ray runtime environment of every fine-tune job.
        follow_seconds: How often a running job's events are re-read.
        deploying_seconds: How often a deploying application's status is re-read.
        remote_code_namespaces: Namespaces whose Models may run code shipped with their weights
            (``spec.trustRemoteCode``); ``*`` allows every namespace. Empty: none (the default).
        chat_tokens: ``(sha256, namespaces)`` of every token (``None`` namespaces: all); a
            deployment's chat endpoint accepts those of its namespace. ``None``: the endpoints ask
            for no token unless ``chat_tokens_env`` is set.
        chat_tokens_env: On a cluster: the environment variable of the Ray pods holding the
            namespace's chat tokens (from its Secret, mounted by the KubeRay builder); set, every
            chat endpoint asks for one of them (and refuses all calls when the Secret is absent).
        uri_policy: When set, the runner reads a Dataset's or Model's ``spec.uri`` only when
            the rule allows it for the object's namespace (on a cluster, objects applied with
            kubectl never passed the control API's check); ``None``: the control API is the
            only way in (the embedded default) and checked it already.
        namespace_artifacts: Namespace -> the artifact settings (S3 endpoint and credentials)
            its Datasets and Models are read with; a namespace without an entry is read with
            the server's own.
    """

    artifact_root: str
    python: str = "python"
    job_runtime_env: Mapping[str, Any] = field(default_factory=dict)
    follow_seconds: float = 2.0
    deploying_seconds: float = 2.0
    uri_policy: URIPolicy | None = None
    namespace_artifacts: Mapping[str, ArtifactSettings] = field(default_factory=dict)
    remote_code_namespaces: frozenset[str] = frozenset()
    chat_tokens: tuple[tuple[str, frozenset[str] | None], ...] | None = None
    chat_tokens_env: str | None = None

    def artifacts_for(self, namespace: str | None) -> ArtifactSettings | None:
        """The credentials a namespace's data is read with (``None``: the server's own chain)."""
        return self.namespace_artifacts.get(namespace or "")

    def chat_token_digests(self, namespace: str) -> list[str] | None:
        """SHA-256 digests of the tokens that may call ``namespace``'s chat endpoints (``None``: no token check)."""
        if self.chat_tokens is None:
            return [] if self.chat_tokens_env else None
        return sorted(
            {digest for digest, spaces in self.chat_tokens if spaces is None or "*" in spaces or namespace in spaces}
        )

    def allows_remote_code(self, namespace: str) -> bool:
        """Whether an administrator allowed Models in ``namespace`` to run code shipped with their weights."""
        return "*" in self.remote_code_namespaces or namespace in self.remote_code_namespaces

    def job_folder(self, namespace: str, name: str) -> str:
        """Artifact folder of a FineTuneJob: JOB.json, events, checkpoints and the output."""
        return job_files_under(self.artifact_root, namespace, name).folder

    def catalog_model_uri(self, catalog_name: str) -> str:
        """Where a locally built catalog model (the tiny presets) is materialized."""
        return catalog_model_uri(self.artifact_root, catalog_name)


@dataclass(frozen=True)
class DatasetCheck:
    """The outcome of reading and validating a Dataset's data (``corral.data.check_dataset``).

    Attributes:
        ok: True when training may use the data.
        format: The format read (detected for ``auto``).
        sha256: SHA-256 of the data file.
        report: The report in status form.
        summary: One line for the Ready condition (counts, first errors).
        error: Set when the data could not be read at all (missing file, unknown format).
    """

    ok: bool
    format: str | None = None
    sha256: str | None = None
    report: DatasetReport | None = None
    summary: str = ""
    error: str | None = None


@dataclass(frozen=True)
class ArtifactProbe:
    """What is stored at a Model's URI.

    Attributes:
        uri: The URI looked at.
        exists: True when at least one file is there.
        size_bytes: Total size of its files.
        sha256: SHA-256 over the sorted manifest of ``<relative path> <sha256>`` lines.
        architecture: ``model_type`` from ``config.json`` (or the adapter's base), when readable.
        parameters: Parameter count from ``config.json``, when it can be computed.
        context_length: ``max_position_embeddings`` from ``config.json``.
        remote_code: ``config.json`` maps classes to code shipped with the weights (``auto_map``).
        error: Why it could not be read (offline, permissions, ...).
    """

    uri: str
    exists: bool
    size_bytes: int = 0
    sha256: str | None = None
    architecture: str | None = None
    parameters: int | None = None
    context_length: int | None = None
    remote_code: bool = False
    error: str = ""


@dataclass(frozen=True)
class TrainingRestart:
    """One restart of the training loop within a job (a worker lost, a preemption, a Ray restart).

    Attributes:
        stopped_at_step: Last step logged before the restart (None: none was).
        resumed_from_step: Checkpoint step the new run started from.
        seconds: From the last step before the restart to the first step after it.
    """

    stopped_at_step: int | None
    resumed_from_step: int
    seconds: float | None


@dataclass(frozen=True)
class TrainingObservation:
    """A fine-tune's events file folded into status fields (``corral.training.summarize``).

    Attributes:
        progress: Step, epoch, percent, ETA.
        metrics: Latest loss, eval loss, learning rate, tokens/s.
        checkpoints: Kept checkpoints, oldest first.
        cost: GPU-seconds and USD so far.
        completed_output_uri: Output folder from the ``completed`` event.
        failed_reason: CamelCase reason of the last ``failed`` event.
        failed_message: Its message.
        resumed_from_step: Checkpoint step the latest run started from (0: fresh; None: no run started yet).
        restarts: Every restart whose new run has logged a step (or ended), oldest first.
        evaluation: Scores of the finished model and its base (None: not evaluated yet).
    """

    progress: JobProgress | None = None
    metrics: JobMetrics | None = None
    checkpoints: tuple[CheckpointInfo, ...] = ()
    cost: JobCost | None = None
    completed_output_uri: str | None = None
    failed_reason: str | None = None
    failed_message: str | None = None
    resumed_from_step: int | None = None
    restarts: tuple[TrainingRestart, ...] = ()
    evaluation: Evaluation | None = None


@dataclass(frozen=True)
class DatasetWorld:
    """What the Dataset reconciler sees.

    Attributes:
        now: Reconcile time.
        check: A fresh validation, or None when the status is already current (not re-read).
        file_stat: Size and mtime of the data file as it was just before ``check`` read it
            (``<bytes>:<mtime ns>``, ``missing``; None: not a local file).
    """

    now: datetime
    check: DatasetCheck | None = None
    file_stat: str | None = None


@dataclass(frozen=True)
class ModelWorld:
    """What the Model reconciler sees.

    Attributes:
        now: Reconcile time.
        settings: Control-plane settings.
        models: Models of the namespace by name (for the base chain).
        datasets: Datasets named by the model's training-data annotation.
        probe: The artifact at the model's URI, or None when the status is already current.
    """

    now: datetime
    settings: ControlSettings
    models: Mapping[str, Model] = field(default_factory=dict)
    datasets: Mapping[str, Dataset] = field(default_factory=dict)
    probe: ArtifactProbe | None = None


@dataclass(frozen=True)
class FineTuneJobWorld:
    """What the FineTuneJob reconciler sees.

    Attributes:
        now: Reconcile time.
        settings: Control-plane settings.
        models: Models of the namespace by name (base, its chain, the output).
        datasets: Datasets of the namespace by name.
        deployments: ModelDeployments of the namespace by name (deploy-on-success target).
        pools: Every GPUPool.
        allocations: GPUs held by admitted jobs and deployments (this job's own included when it holds any).
        queue: Jobs and deployments waiting for GPUs, in any namespace (FIFO within a priority).
        job: The Ray job of ``status.submissionId`` (None: not submitted or gone).
        training: The events file, folded (None: not read, e.g. before submission).
        first_look: This is the first pass of a (re)started control plane: a Ray job found
            running was started by an earlier one and is re-attached, not submitted.
    """

    now: datetime
    settings: ControlSettings
    models: Mapping[str, Model] = field(default_factory=dict)
    datasets: Mapping[str, Dataset] = field(default_factory=dict)
    deployments: Mapping[str, ModelDeployment] = field(default_factory=dict)
    pools: tuple[GPUPool, ...] = ()
    allocations: tuple[Allocation, ...] = ()
    queue: tuple[PlacementRequest, ...] = ()
    job: JobState | None = None
    training: TrainingObservation | None = None
    first_look: bool = False


@dataclass(frozen=True)
class DeploymentWorld:
    """What the ModelDeployment reconciler sees.

    Attributes:
        now: Reconcile time.
        settings: Control-plane settings.
        models: Models of the namespace by name.
        pools: Every GPUPool.
        allocations: GPUs held by admitted jobs and deployments (this one's own included when it holds any).
        queue: Jobs and deployments waiting for GPUs, in any namespace (FIFO within a priority).
        app: Serve's state of this deployment's application (None: not deployed).
        endpoint: Base URL of Serve's HTTP proxy.
    """

    now: datetime
    settings: ControlSettings
    models: Mapping[str, Model] = field(default_factory=dict)
    pools: tuple[GPUPool, ...] = ()
    allocations: tuple[Allocation, ...] = ()
    queue: tuple[PlacementRequest, ...] = ()
    app: ServeAppState | None = None
    endpoint: str | None = None


@dataclass(frozen=True)
class GPUPoolWorld:
    """What the GPUPool reconciler sees: the allocations placed on any pool."""

    now: datetime
    allocations: tuple[Allocation, ...] = ()
