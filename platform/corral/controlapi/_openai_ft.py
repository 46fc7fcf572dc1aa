"""OpenAI-style fine-tuning jobs on top of Corral's resources: ``/v1/fine_tuning/jobs[...]``.

``POST /v1/fine_tuning/jobs`` maps OpenAI's body onto Corral objects, in the caller's namespace:

* each file (training, validation) -> a ``Dataset`` named like the file id (created once; the
  uploaded data, format ``auto``, license ``corral.license`` or the default
  ``{name: proprietary, commercialUse: allowed}``: the uploader's own data; OpenAI has no
  license field);
* ``model`` -> the ``Model`` of that name, or a base ``Model`` created from the catalog entry of
  that name (404 ``model_not_found`` otherwise);
* a ``FineTuneJob`` named like the job id (``ftjob-<24 hex>``) with ``deployOnSuccess`` to
  ``corral.deployment`` or ``openai-<base Model>`` (the reconciler creates it when missing) and
  ``servedName`` ``ft:<model>:<suffix or corral>:<job id>``: the ``fine_tuned_model``.

Hyper-parameters: ``n_epochs`` -> ``epochs``, ``batch_size`` -> ``globalBatchSize``,
``learning_rate_multiplier`` x the base model's recipe learning rate (``corral.catalog`` recipes; or
``corral.hyperparameters.learningRate``), ``seed`` -> ``seed``; ``auto`` (or leaving one out) leaves
the field unset, so the control plane chooses it from the data size and the base's recipe
(``corral.catalog.choose_hyperparameters``); the job object reports the chosen numbers once the job
is admitted, and an event says why. Only ``method.type=supervised``.

``corral.gate`` sets ``deployOnSuccess.gate`` (the evaluation thresholds for promotion); the chosen
hyper-parameters, the evaluation and ``result_files`` come from :mod:`._openai_ft_results`.

Statuses: no status yet -> ``validating_files``; waiting on a Dataset -> ``validating_files``
(an invalid one -> ``failed``, ``invalid_training_file``); Pending/Admitted/Suspended ->
``queued``; Running -> ``running``; Succeeded -> ``running`` until the deployment serves the
adapter, then ``succeeded`` (a failed deployment -> ``failed``; not promoted by the evaluation gate ->
``succeeded`` at once, its events saying which score missed which threshold); Failed -> ``failed``;
Cancelled, or the ``corral.dev/cancelled`` annotation -> ``cancelled``. Cancel sets
``spec.suspend`` (the Ray job stops, the object and its checkpoints stay) and that annotation.
Every FineTuneJob of the namespace is listed, also those applied as YAML.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from corral import catalog
from corral.api.v1alpha1 import SERVING_PHASES, Dataset, FineTuneJob, Model, ModelDeployment
from corral.api.v1alpha1.common import LicenseSpec
from corral.api.v1alpha1.finetunejob import Hyperparameters
from corral.store import AlreadyExists, NotFound, Store

from ._openai_common import Namespace, call_store, json_body, parse_model
from ._openai_files import FileStore
from ._openai_ft_results import corral_events, hyperparameters_of, result_files
from ._openai_schemas import (
    FineTuningJobCheckpoint,
    FineTuningJobCreate,
    FineTuningJobEvent,
    FineTuningJobObject,
    JobError,
    JobMethod,
    ListPage,
    OpenAIError,
    SupervisedIn,
)

__all__ = [
    "CANCELLED_ANNOTATION",
    "DEFAULT_LICENSE",
    "create_job",
    "fine_tuning_router",
    "job_object",
    "openai_status",
]

log = logging.getLogger(__name__)

OpenAIStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
CANCELLED_ANNOTATION = "corral.dev/cancelled"
A_MODEL = "corral.dev/openai-model"
A_TRAINING = "corral.dev/openai-training-file"
A_VALIDATION = "corral.dev/openai-validation-file"
A_SUFFIX = "corral.dev/openai-suffix"
A_METADATA = "corral.dev/openai-metadata"
LABEL_API = "corral.dev/api"
LABEL_FILE = "corral.dev/openai-file"
DEFAULT_LICENSE = LicenseSpec(
    name="proprietary",
    commercial_use="allowed",
    conditions=["Uploaded through the OpenAI-style files API: the uploader's own data."],
)
_DATA_WAIT = ("DatasetNotFound", "DatasetNotReady")
_NOT_PROMOTED = ("EvaluationBelowThreshold", "EvaluationMissing")
Limit = Annotated[int, Query(ge=1, le=1000)]
_INVALID_NAME = re.compile(r"[^a-z0-9.-]+")


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def _condition(job: FineTuneJob, type_: str) -> tuple[str, str] | None:
    found = next((c for c in job.status.conditions if c.type == type_), None)
    return (found.reason, found.message) if found is not None else None


def served_name(job: FineTuneJob) -> str:
    """The name the chat endpoint answers to for the job's output."""
    target = job.spec.deploy_on_success
    return (target.served_name if target else None) or job.spec.output.model_name or job.metadata.name


def openai_status(
    job: FineTuneJob, deployment: ModelDeployment | None, datasets: dict[str, Dataset]
) -> tuple[OpenAIStatus, JobError | None]:
    """Map a FineTuneJob (its deploy-on-success deployment, its Datasets) to OpenAI's status and error."""
    phase = job.status.phase
    if phase == "Cancelled" or job.metadata.annotations.get(CANCELLED_ANNOTATION) == "true":
        return "cancelled", None
    if phase == "Failed":
        reason, message = _condition(job, "Failed") or ("JobFailed", "the fine-tune failed")
        return "failed", JobError(code=reason, message=message)
    if phase == "Succeeded":
        target = job.spec.deploy_on_success
        promoted = _condition(job, "Promoted")
        if target is None or (promoted is not None and promoted[0] in _NOT_PROMOTED):
            return "succeeded", None  # the gate refused promotion: the job's events say why
        dep_status = deployment.status if deployment is not None else None
        serving = dep_status is not None and dep_status.phase in SERVING_PHASES
        if serving and dep_status is not None and served_name(job) in dep_status.served_models:
            return "succeeded", None
        if dep_status is not None and dep_status.phase == "Failed":
            ready = next((c for c in dep_status.conditions if c.type == "Ready"), None)
            message = ready.message if ready is not None else f"ModelDeployment {target.deployment} failed"
            return "failed", JobError(code="DeploymentFailed", message=message)
        return "running", None
    if phase == "Running":
        return "running", None
    for name, dataset in datasets.items():
        ready = next((c for c in dataset.status.conditions if c.type == "Ready"), None)
        if ready is not None and ready.status == "False" and ready.reason in ("Invalid", "DataUnreadable"):
            is_validation = job.spec.validation_dataset is not None and job.spec.validation_dataset.name == name
            param = "validation_file" if is_validation else "training_file"
            return "failed", JobError(code=f"invalid_{param}", message=ready.message, param=param)
    admitted = _condition(job, "Admitted")
    if phase is None or (phase == "Pending" and admitted is not None and admitted[0] in _DATA_WAIT):
        return "validating_files", None
    return "queued", None


def job_object(
    job: FineTuneJob,
    deployment: ModelDeployment | None,
    datasets: dict[str, Dataset],
    now: datetime | None = None,
    result_files: list[str] | None = None,
) -> FineTuningJobObject:
    """The ``fine_tuning.job`` object of a FineTuneJob (``result_files``: ids of its registered results)."""
    now = now or datetime.now(UTC)
    meta, st = job.metadata, job.status
    status, error = openai_status(job, deployment, datasets)
    hp = hyperparameters_of(job)
    estimated = None
    if status == "running" and st.progress is not None and st.progress.eta_seconds is not None:
        estimated = int(now.timestamp()) + st.progress.eta_seconds
    metadata = json.loads(meta.annotations[A_METADATA]) if A_METADATA in meta.annotations else None
    validation = job.spec.validation_dataset
    return FineTuningJobObject(
        id=meta.name,
        model=meta.annotations.get(A_MODEL, job.spec.base_model.name),
        created_at=_ts(meta.creation_timestamp) or int(now.timestamp()),
        finished_at=_ts(st.completion_time) if status in ("succeeded", "failed", "cancelled") else None,
        fine_tuned_model=served_name(job) if status == "succeeded" else None,
        organization_id=meta.namespace or "default",
        status=status,
        training_file=meta.annotations.get(A_TRAINING, job.spec.datasets[0].name),
        validation_file=meta.annotations.get(A_VALIDATION, validation.name if validation else None),
        hyperparameters=hp,
        result_files=list(result_files or []),
        method=JobMethod.supervised_with(hp),
        seed=job.spec.hyperparameters.seed,
        trained_tokens=None,
        error=error,
        suffix=meta.annotations.get(A_SUFFIX),
        estimated_finish=estimated,
        metadata=metadata,
    )


# -- create ---------------------------------------------------------------------------------


def _model_name(model: str) -> str:
    return _INVALID_NAME.sub("-", model.lower()).strip("-.")[:253] or "model"


def _ensure_model(store: Store, namespace: str, model: str) -> str:
    """The base Model to train: the namespace's Model called ``model``, or one made from the catalog."""
    name = _model_name(model)
    for candidate in dict.fromkeys((model, name)):
        try:
            store.get(Model, namespace, candidate)
            return candidate
        except (NotFound, ValueError):
            continue

    try:
        catalog.get(model)
    except KeyError:
        raise OpenAIError(
            404,
            f"The model '{model}' does not exist: name a Model of namespace {namespace} or a catalog entry "
            "(`corral catalog list`)",
            code="model_not_found",
            param="model",
        ) from None
    obj = Model.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace, "labels": {LABEL_API: "openai"}},
            "spec": {"type": "base", "catalogName": model},
        }
    )
    try:
        store.create(obj)
        log.info("Created Model %s/%s from catalog entry %s", namespace, name, model)
    except AlreadyExists:
        pass
    return name


def _ensure_dataset(
    store: Store, files: FileStore, namespace: str, file_id: str, *, license_: LicenseSpec, param: str
) -> str:
    """The Dataset of an uploaded file (created once; the first job's license stays)."""
    try:
        obj = files.get(namespace, file_id)
    except OpenAIError as exc:
        raise OpenAIError(400, exc.message, code="file_not_found", param=param) from None
    if obj.status != "processed":
        raise OpenAIError(
            400,
            f"File {file_id} is not a valid fine-tuning file: {obj.status_details}",
            code=f"invalid_{param}",
            param=param,
        )
    try:
        store.get(Dataset, namespace, file_id)
        return file_id
    except NotFound:
        pass
    dataset = Dataset.model_validate(
        {
            "metadata": {
                "name": file_id,
                "namespace": namespace,
                "labels": {LABEL_API: "openai", LABEL_FILE: file_id},
                "annotations": {"corral.dev/filename": obj.filename},
            },
            "spec": {
                "uri": files.data_uri(namespace, file_id),
                "format": "auto",
                "license": license_.model_dump(mode="json", by_alias=True, exclude_none=True),
                "description": f"Uploaded as {obj.filename} through /v1/files.",
            },
        }
    )
    try:
        store.create(dataset)
        log.info("Created Dataset %s/%s for %s", namespace, file_id, obj.filename)
    except AlreadyExists:
        pass
    return file_id


def _job_id(namespace: str, idempotency_key: str | None) -> str:
    seed = f"{namespace}\0{idempotency_key}" if idempotency_key else uuid.uuid4().hex
    return "ftjob-" + hashlib.sha256(seed.encode()).hexdigest()[:24]


def _merge_hyperparameters(req: FineTuningJobCreate) -> Hyperparameters:
    """OpenAI's hyper-parameters onto ``corral.hyperparameters``; ``auto`` leaves a field to the control plane."""
    ext = req.corral
    base = dict(ext.hyperparameters or {}) if ext is not None else {}
    try:
        hp = Hyperparameters.model_validate(base)
    except ValueError as exc:
        raise OpenAIError(400, str(exc), code="invalid_value", param="corral.hyperparameters") from None
    chosen = SupervisedIn()
    if req.hyperparameters is not None:
        chosen = req.hyperparameters
    if req.method is not None and req.method.supervised is not None and req.method.supervised.hyperparameters:
        chosen = req.method.supervised.hyperparameters
    update: dict[str, Any] = {}
    if isinstance(chosen.n_epochs, int):
        update["epochs"] = chosen.n_epochs
    if isinstance(chosen.batch_size, int):
        update["global_batch_size"] = chosen.batch_size
        update["micro_batch_size"] = min(hp.micro_batch_size, chosen.batch_size)
    multiplier = chosen.learning_rate_multiplier
    if isinstance(multiplier, float | int) and not isinstance(multiplier, bool):
        rate = hp.learning_rate or catalog.load_catalog().recipe_for_model(req.model).learning_rate("lora")
        update["learning_rate"] = rate * float(multiplier)
    if req.seed is not None:
        update["seed"] = req.seed
    try:
        return Hyperparameters.model_validate(hp.model_copy(update=update).model_dump())
    except ValueError as exc:
        raise OpenAIError(400, str(exc), code="invalid_value", param="method.supervised.hyperparameters") from None


def create_job(
    store: Store, files: FileStore, namespace: str, req: FineTuningJobCreate, idempotency_key: str | None = None
) -> FineTuneJob:
    """Create the Datasets, Model and FineTuneJob of an OpenAI-style job (see the module docstring).

    Returns:
        The stored FineTuneJob (the existing one when the idempotency key was seen before).

    Raises:
        OpenAIError: Unsupported method or integrations, unknown model or file, invalid file.
    """
    if req.method is not None and req.method.type != "supervised":
        raise OpenAIError(
            400, f"method {req.method.type!r} is not supported; use supervised", code="unsupported", param="method.type"
        )
    if req.integrations:
        raise OpenAIError(400, "integrations are not supported", code="unsupported", param="integrations")
    if req.model.startswith("ft:"):
        raise OpenAIError(400, "fine-tuning a fine-tuned model is not supported yet", code="unsupported", param="model")
    job_id = _job_id(namespace, idempotency_key)
    try:
        return store.get(FineTuneJob, namespace, job_id)
    except NotFound:
        pass
    ext = req.corral
    hyperparameters = _merge_hyperparameters(req)
    license_ = (ext.license if ext is not None else None) or DEFAULT_LICENSE
    base = _ensure_model(store, namespace, req.model)
    training = _ensure_dataset(store, files, namespace, req.training_file, license_=license_, param="training_file")
    validation = None
    if req.validation_file:
        validation = _ensure_dataset(
            store, files, namespace, req.validation_file, license_=license_, param="validation_file"
        )
    deployment = (ext.deployment if ext is not None else None) or f"openai-{base}"[:253].rstrip("-.")
    served = f"ft:{req.model}:{req.suffix or 'corral'}:{job_id}"
    annotations = {A_MODEL: req.model, A_TRAINING: req.training_file}
    if req.validation_file:
        annotations[A_VALIDATION] = req.validation_file
    if req.suffix:
        annotations[A_SUFFIX] = req.suffix
    if req.metadata:
        annotations[A_METADATA] = json.dumps(req.metadata, sort_keys=True)
    spec: dict[str, Any] = {
        "baseModel": {"name": base},
        "datasets": [{"name": training}],
        "method": "lora",
        "hyperparameters": hyperparameters.model_dump(mode="json", by_alias=True, exclude_none=True),
        "output": {"modelName": job_id},
        "deployOnSuccess": {"deployment": deployment, "servedName": served},
    }
    if validation is not None:
        spec["validationDataset"] = {"name": validation}
    if ext is not None and ext.lora is not None:
        spec["lora"] = ext.lora.model_dump(mode="json", by_alias=True, exclude_none=True)
    if ext is not None and ext.resources is not None:
        spec["resources"] = ext.resources.model_dump(mode="json", by_alias=True, exclude_none=True)
    if ext is not None and ext.intended_use is not None:
        spec["intendedUse"] = ext.intended_use
    if ext is not None and ext.gate is not None:
        spec["deployOnSuccess"]["gate"] = ext.gate.model_dump(mode="json", by_alias=True, exclude_none=True)
    try:
        job = FineTuneJob.model_validate(
            {
                "metadata": {
                    "name": job_id,
                    "namespace": namespace,
                    "labels": {LABEL_API: "openai"},
                    "annotations": annotations,
                },
                "spec": spec,
            }
        )
    except ValueError as exc:
        raise OpenAIError(400, f"invalid fine-tuning job: {exc}", code="invalid_value") from None
    try:
        created = store.create(job)
    except AlreadyExists:
        return store.get(FineTuneJob, namespace, job_id)
    log.info("Created FineTuneJob %s/%s (%s on %s, serves as %s)", namespace, job_id, base, training, served)
    return created


# -- read -----------------------------------------------------------------------------------


def _related(store: Store, job: FineTuneJob) -> tuple[ModelDeployment | None, dict[str, Dataset]]:
    namespace = job.metadata.namespace
    deployment = None
    if job.spec.deploy_on_success is not None:
        try:
            deployment = store.get(ModelDeployment, namespace, job.spec.deploy_on_success.deployment)
        except NotFound:
            deployment = None
    names = [d.name for d in job.spec.datasets]
    if job.spec.validation_dataset is not None:
        names.append(job.spec.validation_dataset.name)
    datasets: dict[str, Dataset] = {}
    for name in names:
        try:
            datasets[name] = store.get(Dataset, namespace, name)
        except NotFound:
            continue
    return deployment, datasets


def _get_job(store: Store, namespace: str, job_id: str) -> FineTuneJob:
    try:
        return store.get(FineTuneJob, namespace, job_id)
    except (NotFound, ValueError):
        message = f"No such fine-tuning job: {job_id}"
        raise OpenAIError(404, message, code="fine_tuning_job_not_found", param="id") from None


def _render(store: Store, job: FineTuneJob, files: FileStore | None = None) -> dict[str, Any]:
    deployment, datasets = _related(store, job)
    return job_object(job, deployment, datasets, result_files=result_files(store, files, job)).model_dump(mode="json")


def _retrieve(store: Store, namespace: str, job_id: str, files: FileStore | None = None) -> dict[str, Any]:
    return _render(store, _get_job(store, namespace, job_id), files)


def _list(store: Store, namespace: str, files: FileStore | None = None) -> list[dict[str, Any]]:
    jobs = store.list(FineTuneJob, namespace).items
    objects = [_render(store, job, files) for job in jobs]
    return sorted(objects, key=lambda o: (-o["created_at"], o["id"]))


def _cancel(store: Store, namespace: str, job_id: str) -> dict[str, Any]:
    job = _get_job(store, namespace, job_id)
    status, _ = openai_status(job, *_related(store, job))
    if status in ("succeeded", "failed", "cancelled"):
        raise OpenAIError(400, f"Job {job_id} has already {status}; it cannot be cancelled", code="invalid_state")
    patch = {"metadata": {"annotations": {CANCELLED_ANNOTATION: "true"}}, "spec": {"suspend": True}}
    job = store.patch(FineTuneJob, namespace, job_id, patch)
    store.record_event(job, "Normal", "Cancelled", "cancelled through POST /v1/fine_tuning/jobs/{id}/cancel")
    log.info("Cancelled FineTuneJob %s/%s", namespace, job_id)
    return _render(store, job)


def _event_id(*parts: object) -> str:
    return "ftevent-" + hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:24]


def _events(store: Store, namespace: str, job_id: str) -> list[dict[str, Any]]:
    """Events newest first: the store's events about the job, the latest metrics, and creation."""
    job = _get_job(store, namespace, job_id)
    out: list[FineTuningJobEvent] = []
    created = _ts(job.metadata.creation_timestamp) or 0
    out.append(
        FineTuningJobEvent(
            id=_event_id(job_id, "created"),
            created_at=created,
            level="info",
            message=f"Created fine-tuning job: {job_id}",
        )
    )
    for record in store.list_events(FineTuneJob, namespace, job_id):
        level: Literal["info", "warn", "error"] = "info" if record.type == "Normal" else "warn"
        if record.reason in ("Failed", "JobFailed") or record.reason.endswith("Failed"):
            level = "error" if record.type != "Normal" else level
        out.append(
            FineTuningJobEvent(
                id=_event_id(job_id, record.reason, record.first_timestamp.isoformat(), record.message),
                created_at=_ts(record.last_timestamp) or created,
                level=level,
                message=f"{record.reason}: {record.message}",
                data={"reason": record.reason, "count": record.count},
            )
        )
    out.extend(corral_events(job, created, out))
    progress, metrics = job.status.progress, job.status.metrics
    if progress is not None and progress.step:
        data: dict[str, Any] = {"step": progress.step, "total_steps": progress.total_steps, "epoch": progress.epoch}
        text = f"Step {progress.step}/{progress.total_steps}"
        if metrics is not None:
            data |= {"train_loss": metrics.loss, "valid_loss": metrics.eval_loss}
            if metrics.loss is not None:
                text += f": training loss={metrics.loss:.4f}"
        stamp = max([created] + [e.created_at for e in out])
        out.append(
            FineTuningJobEvent(
                id=_event_id(job_id, "metrics", progress.step),
                created_at=stamp,
                level="info",
                message=text,
                type="metrics",
                data=data,
            )
        )
    ordered = sorted(enumerate(out), key=lambda pair: (-pair[1].created_at, -pair[0]))
    return [event.model_dump(mode="json") for _, event in ordered]


def _checkpoints(store: Store, namespace: str, job_id: str) -> list[dict[str, Any]]:
    """Checkpoints newest first, as OpenAI's checkpoint objects."""
    job = _get_job(store, namespace, job_id)
    st = job.status
    created = _ts(job.metadata.creation_timestamp) or 0
    newest = max((c.step for c in st.checkpoints), default=None)
    out = []
    for ckpt in sorted(st.checkpoints, key=lambda c: -c.step):
        loss = st.metrics.loss if st.metrics is not None and ckpt.step == newest else None
        valid = st.metrics.eval_loss if st.metrics is not None and ckpt.step == newest else None
        out.append(
            FineTuningJobCheckpoint(
                id=f"ftckpt-{job_id.removeprefix('ftjob-')}-{ckpt.step}",
                created_at=_ts(ckpt.created_at) or created,
                fine_tuned_model_checkpoint=f"{served_name(job)}:ckpt-step-{ckpt.step}",
                fine_tuning_job_id=job_id,
                metrics={"step": float(ckpt.step), "train_loss": loss, "valid_loss": valid},
                step_number=ckpt.step,
            ).model_dump(mode="json")
        )
    return out


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _file_store(request: Request) -> FileStore:
    files: FileStore | None = getattr(request.app.state, "files", None)
    if files is None:
        raise OpenAIError(503, "fine-tuning files are not configured: no artifact root", code="files_unavailable")
    return files


def fine_tuning_router() -> APIRouter:
    """The ``/v1/fine_tuning/jobs`` routes."""
    router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["openai-fine-tuning"])

    @router.post("", operation_id="createFineTuningJob", summary="Create a fine-tuning job (OpenAI's body)")
    async def create(request: Request, namespace: Namespace) -> JSONResponse:
        req = parse_model(FineTuningJobCreate, await json_body(request))
        store, files = _store(request), _file_store(request)
        key = request.headers.get("idempotency-key")
        job = await call_store(create_job, store, files, namespace, req, key)
        return JSONResponse(await call_store(_render, store, job, files))

    @router.get("", operation_id="listFineTuningJobs", summary="List fine-tuning jobs, newest first")
    async def list_jobs(
        request: Request, namespace: Namespace, after: str | None = None, limit: Limit = 20
    ) -> JSONResponse:
        items = await call_store(_list, _store(request), namespace, getattr(request.app.state, "files", None))
        return JSONResponse(ListPage.of(items, after, limit).model_dump(mode="json"))

    @router.get("/{job_id}", operation_id="retrieveFineTuningJob", summary="Retrieve a fine-tuning job")
    async def retrieve(request: Request, namespace: Namespace, job_id: str) -> JSONResponse:
        files = getattr(request.app.state, "files", None)
        return JSONResponse(await call_store(_retrieve, _store(request), namespace, job_id, files))

    @router.post("/{job_id}/cancel", operation_id="cancelFineTuningJob", summary="Cancel a fine-tuning job")
    async def cancel(request: Request, namespace: Namespace, job_id: str) -> JSONResponse:
        return JSONResponse(await call_store(_cancel, _store(request), namespace, job_id))

    @router.get("/{job_id}/events", operation_id="listFineTuningEvents", summary="Events of a job, newest first")
    async def events(
        request: Request, namespace: Namespace, job_id: str, after: str | None = None, limit: Limit = 20
    ) -> JSONResponse:
        items = await call_store(_events, _store(request), namespace, job_id)
        return JSONResponse(ListPage.of(items, after, limit).model_dump(mode="json"))

    @router.get("/{job_id}/checkpoints", operation_id="listFineTuningJobCheckpoints", summary="Checkpoints of a job")
    async def checkpoints(
        request: Request, namespace: Namespace, job_id: str, after: str | None = None, limit: Limit = 10
    ) -> JSONResponse:
        items = await call_store(_checkpoints, _store(request), namespace, job_id)
        return JSONResponse(ListPage.of(items, after, limit).model_dump(mode="json"))

    return router
