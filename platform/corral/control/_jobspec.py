"""A FineTuneJob's deterministic children: submission id, JOB.json, output Model, deployment change.

Pure functions of the job and the objects it names; the FineTuneJob reconciler calls them.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

from corral.api.v1alpha1 import (
    Dataset,
    FineTuneJob,
    LocalObjectReference,
    Model,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelSpec,
    ObjectMeta,
)
from corral.api.v1alpha1.modeldeployment import AdapterSpec
from corral.artifacts import JobFiles, job_files_under, parse_uri
from corral.catalog import Choice, choose_hyperparameters, load_catalog
from corral.training import TrainingJob

from ._actions import Action, CreateObject, PatchObject, RecordEvent
from ._lineage import DATASETS_ANNOTATION, SOURCE_JOB_ANNOTATION
from ._observed import ControlSettings

__all__ = [
    "JOB_LABEL",
    "JobFiles",
    "choose",
    "deployment_actions",
    "entrypoint",
    "job_file_bytes",
    "job_document",
    "job_files",
    "output_model",
    "output_model_name",
    "output_type",
    "owns_submission",
    "submission_id",
]

JOB_LABEL = "corral.dev/finetunejob"
"""Label on objects a FineTuneJob created (its output Model, a deployment it created)."""


def submission_id(job: FineTuneJob, restart: int = 0) -> str:
    """The deterministic Ray submission id: ``corral-<namespace>.<name>-<generation>``.

    The ``.`` cannot occur in a namespace (a DNS label), so the id names exactly one
    object: ``corral-a.b-c-1`` is job ``b-c`` of namespace ``a``, never job ``c`` of ``a-b``
    (with ``-`` both would share one Ray job).

    Args:
        job: The job.
        restart: Runs after preemptions (``status.preemptions``); ``-r<n>`` is appended when
            set, since a Ray submission id is never reused (the job file, and so the
            checkpoints it resumes from, stay the same).
    """
    base = f"corral-{job.metadata.namespace or 'default'}.{job.metadata.name}-{job.metadata.generation or 1}"
    return f"{base}-r{restart}" if restart else base


def owns_submission(job: FineTuneJob, sid: str | None) -> bool:
    """True when ``sid`` is a submission id this job could have produced.

    ``status.submissionId`` is acted on (followed, stopped), so the reconciler and the runner
    take it only when it names this object's own namespace and name and a generation it
    has had; anything else (a forged or stale status) is ignored.
    """
    if not sid:
        return False
    prefix = f"corral-{job.metadata.namespace or 'default'}.{job.metadata.name}-"
    if not sid.startswith(prefix):
        return False
    generation, _, restart = sid[len(prefix) :].partition("-r")
    if not generation.isdigit() or (restart and not restart.isdigit()):
        return False
    return 1 <= int(generation) <= (job.metadata.generation or 1)


def output_model_name(job: FineTuneJob) -> str:
    """Name of the output Model: ``spec.output.modelName`` or the job's name."""
    return job.spec.output.model_name or job.metadata.name


def output_type(job: FineTuneJob) -> str:
    """``adapter`` for LoRA/QLoRA without merge, else ``merged`` (full weights)."""
    return "adapter" if job.spec.method != "full" and not job.spec.output.merge else "merged"


def job_files(job: FineTuneJob, settings: ControlSettings) -> JobFiles:
    """The job's artifact folder and the files in it (see :func:`corral.artifacts.job_files_under`)."""
    return job_files_under(settings.artifact_root, job.metadata.namespace or "default", job.metadata.name)


def _license_id(model: Model) -> str:
    lineage = model.status.lineage
    links = [link for link in (lineage.links if lineage else []) if link.kind == "model"]
    if links:
        return links[-1].license[:64]
    return (model.spec.license.name if model.spec.license else "unknown")[:64]


def _dataset_entry(dataset: Dataset) -> dict[str, Any]:
    return {
        "name": dataset.metadata.name,
        "uri": dataset.spec.uri,
        "format": dataset.status.format or dataset.spec.format,
        "license": dataset.spec.license.name[:64],
    }


def choose(job: FineTuneJob, base: Model, datasets: Mapping[str, Dataset]) -> Choice:
    """The hyper-parameters ``job`` trains with: its own, ``auto`` ones from the base's recipe and the data size.

    Args:
        job: The job.
        base: Its base Model (``spec.catalogName`` picks the recipe; other bases get the default one).
        datasets: Its Datasets by name (their validated example counts size the run).
    """
    examples = 0
    for ref in job.spec.datasets:
        report = datasets[ref.name].status.report if ref.name in datasets else None
        examples += report.examples if report is not None else 0
    recipe = load_catalog().recipe_for_model(base.spec.catalog_name)
    return choose_hyperparameters(
        job.spec.hyperparameters,
        method=job.spec.method,
        recipe=recipe,
        examples=examples,
        workers=job.spec.resources.workers,
        has_validation_dataset=job.spec.validation_dataset is not None,
    )


def job_document(
    job: FineTuneJob,
    base: Model,
    datasets: Mapping[str, Dataset],
    settings: ControlSettings,
    price_per_gpu_hour: str = "0",
) -> dict[str, Any]:
    """The resolved job file (``corral.training.TrainingJob`` wire form) for ``python -m corral.training``.

    Args:
        job: The FineTuneJob.
        base: Its base Model (Ready: ``status.artifact`` is set).
        datasets: Its Datasets by name (Ready).
        settings: Control-plane settings (artifact root).
        price_per_gpu_hour: Price of the pool it was placed on.

    Returns:
        The job as :class:`~corral.training.TrainingJob` validated it (its JSON form): contract 1
        is checked where the job is built, so the control plane never writes a job file the
        entrypoint would refuse. (``corral.training`` imports no torch for this.)

    Raises:
        pydantic.ValidationError: The resolved job is not a valid job file (a bug, not bad input:
            every field comes from validated objects).
    """
    files = job_files(job, settings)
    spec = job.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    spec["hyperparameters"] = choose(job, base, datasets).hyperparameters.model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    artifact = base.status.artifact
    base_source: dict[str, Any] = {
        "name": base.metadata.name,
        "uri": artifact.uri if artifact else base.spec.uri,
        "chatTemplate": base.status.chat_template or base.spec.chat_template or "auto",
        "license": _license_id(base),
    }
    if base.spec.trust_remote_code:  # Ready: the namespace allows it (the Model reconciler checked)
        base_source["trustRemoteCode"] = True
    doc: dict[str, Any] = {
        "name": job.metadata.name,
        "namespace": job.metadata.namespace or "default",
        "baseModel": base_source,
        "datasets": [_dataset_entry(datasets[d.name]) for d in job.spec.datasets],
        "spec": spec,
        "outputUri": files.output,
        "outputModelName": output_model_name(job),
        "eventsUri": files.events,
        "checkpointUri": files.checkpoints,
        "pricePerGpuHour": price_per_gpu_hour,
    }
    if job.spec.validation_dataset is not None:
        doc["validationDataset"] = _dataset_entry(datasets[job.spec.validation_dataset.name])
    typed = TrainingJob.model_validate(doc)
    return typed.model_dump(mode="json", by_alias=True, exclude_none=True)


def job_file_bytes(doc: Mapping[str, Any]) -> bytes:
    """The job document as written to ``job.json`` (sorted keys: the same job gives the same bytes)."""
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def entrypoint(job_file_uri: str, settings: ControlSettings) -> str:
    """The Ray job entrypoint (DESIGN.md contract 1): ``python -m corral.training --job <file>``."""
    parsed = parse_uri(job_file_uri)
    path = parsed.path if parsed.scheme == "file" else str(parsed)
    return f"{shlex.quote(settings.python)} -m corral.training --job {shlex.quote(path)}"


def output_model(job: FineTuneJob, base: Model, output_uri: str) -> Model:
    """The Model a successful job creates: an adapter on (or merged weights of) its base."""
    return Model(
        metadata=ObjectMeta(
            name=output_model_name(job),
            namespace=job.metadata.namespace,
            labels={JOB_LABEL: job.metadata.name},
            annotations={
                SOURCE_JOB_ANNOTATION: job.metadata.name,
                DATASETS_ANNOTATION: ",".join(d.name for d in job.spec.datasets),
            },
        ),
        spec=ModelSpec(
            type="adapter" if output_type(job) == "adapter" else "merged",
            uri=output_uri,
            base_model=LocalObjectReference(name=base.metadata.name),
        ),
    )


def deployment_actions(job: FineTuneJob, deployment: ModelDeployment | None) -> list[Action]:
    """Create or update the deploy-on-success ModelDeployment so it serves the output (idempotent).

    An adapter output is added to ``spec.adapters`` (replacing an entry of the same served
    name that points elsewhere); a merged output becomes ``spec.model``. A deployment of
    another base cannot take the adapter: a Warning event says so.

    Returns:
        Nothing when the deployment already serves the output.
    """
    target = job.spec.deploy_on_success
    if target is None:
        return []
    output = output_model_name(job)
    base = job.spec.base_model.name
    served = target.served_name or output
    namespace = job.metadata.namespace
    if output_type(job) == "merged":
        if deployment is None:
            spec = ModelDeploymentSpec(model=LocalObjectReference(name=output), intended_use=job.spec.intended_use)
            return [CreateObject(_deployment(target.deployment, namespace, job, spec))]
        if deployment.spec.model.name == output:
            return []
        return [
            PatchObject(
                "ModelDeployment",
                namespace,
                target.deployment,
                {"spec": {"model": {"name": output}}},
                deployment.metadata.resource_version,
            )
        ]
    entry = AdapterSpec(name=served, model=LocalObjectReference(name=output))
    if deployment is None:
        spec = ModelDeploymentSpec(
            model=LocalObjectReference(name=base), adapters=[entry], intended_use=job.spec.intended_use
        )
        return [CreateObject(_deployment(target.deployment, namespace, job, spec))]
    if deployment.spec.model.name != base:
        return [
            RecordEvent(
                "Warning",
                "DeploymentBaseMismatch",
                f"ModelDeployment {target.deployment} serves {deployment.spec.model.name}, not {base}; "
                f"adapter {output} was not added",
            )
        ]
    adapters = list(deployment.spec.adapters)
    if any(a.name == served and a.model.name == output for a in adapters):
        return []
    adapters = [a for a in adapters if a.name != served] + [entry]
    return [
        PatchObject(
            "ModelDeployment",
            namespace,
            target.deployment,
            {"spec": {"adapters": [a.model_dump(mode="json", by_alias=True) for a in adapters]}},
            deployment.metadata.resource_version,
        )
    ]


def _deployment(name: str, namespace: str | None, job: FineTuneJob, spec: ModelDeploymentSpec) -> ModelDeployment:
    return ModelDeployment(
        metadata=ObjectMeta(name=name, namespace=namespace, labels={JOB_LABEL: job.metadata.name}), spec=spec
    )
