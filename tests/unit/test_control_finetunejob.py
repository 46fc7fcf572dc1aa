"""The FineTuneJob reconciler with hand-built observed worlds: every transition, idempotence, license refusal."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from corral.api.v1alpha1 import (
    Condition,
    FineTuneJob,
    GPUPool,
    GPUPoolSpec,
    LocalObjectReference,
    Model,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelSpec,
    ObjectMeta,
)
from corral.api.v1alpha1.finetunejob import JobCost, JobMetrics, JobProgress
from corral.api.v1alpha1.model import ModelStatus
from corral.api.v1alpha1.modeldeployment import AdapterSpec
from corral.control import (
    FINALIZER,
    ControlSettings,
    CreateObject,
    FineTuneJobWorld,
    PatchObject,
    RecordEvent,
    Result,
    StopJob,
    SubmitJob,
    TrainingObservation,
    WriteFile,
    reconcile_finetunejob,
)
from corral.drivers import Handle, JobState, Owner
from tests.support.objects import NOW, NS, base_model, dataset, meta, ready
from tests.support.objects import finetunejob as job

SETTINGS = ControlSettings(artifact_root="file:///srv/corral/artifacts", python="/opt/venv/bin/python")


def world(**kw: Any) -> FineTuneJobWorld:
    base = {"models": {"tiny": base_model()}, "datasets": {"support": dataset()}}
    base.update(kw)
    return FineTuneJobWorld(now=kw.pop("now", NOW), settings=SETTINGS, **{k: v for k, v in base.items() if k != "now"})


def step(obj: FineTuneJob, w: FineTuneJobWorld) -> tuple[FineTuneJob, Result]:
    result = reconcile_finetunejob(obj, w)
    return obj.model_copy(update={"status": result.status}), result


def cond(obj: FineTuneJob, type_: str) -> Condition:
    return next(c for c in obj.status.conditions if c.type == type_)


def kinds(result: Result) -> list[type]:
    return [type(a) for a in result.actions if not isinstance(a, RecordEvent)]


def submitted(obj: FineTuneJob) -> FineTuneJob:
    obj, _ = step(obj, world())
    return obj


# -- admission ------------------------------------------------------------------------


def test_missing_base_model_waits() -> None:
    obj, result = step(job(), world(models={}))
    assert obj.status.phase == "Pending"
    assert cond(obj, "Admitted").reason == "BaseModelNotFound"
    assert cond(obj, "Admitted").observed_generation == 1
    assert not any(isinstance(a, SubmitJob) for a in result.actions)


def test_dataset_not_ready_waits_with_its_message() -> None:
    obj, _ = step(job(), world(datasets={"support": dataset(ok=False)}))
    assert obj.status.phase == "Pending"
    admitted = cond(obj, "Admitted")
    assert admitted.reason == "DatasetNotReady"
    assert "line 2" in admitted.message


def test_adapter_base_is_invalid() -> None:
    adapter = Model(
        metadata=meta("tiny"),
        spec=ModelSpec(type="adapter", uri="file:///a", base_model=LocalObjectReference(name="x")),
        status=ModelStatus(conditions=ready()),
    )
    obj, _ = step(job(), world(models={"tiny": adapter}))
    assert obj.status.phase == "Failed"
    assert cond(obj, "Failed").reason == "InvalidSpec"


def test_commercial_use_refused_by_dataset_license() -> None:
    data = dataset(license_="CC-BY-NC-4.0", commercial="forbidden")
    obj, result = step(job(intendedUse="commercial"), world(datasets={"support": data}))
    assert obj.status.phase == "Failed"
    failed = cond(obj, "Failed")
    assert failed.reason == "LicenseForbidsCommercialUse"
    assert "dataset support" in failed.message and "CC-BY-NC-4.0" in failed.message
    assert "research" in failed.message
    assert obj.status.submission_id is None
    assert not any(isinstance(a, SubmitJob) for a in result.actions)
    events = [a for a in result.actions if isinstance(a, RecordEvent)]
    assert events and events[0].type == "Warning" and events[0].reason == "LicenseForbidsCommercialUse"
    # the same data for research is admitted (the refusal is re-evaluated, not terminal)
    research = job(generation=2, intendedUse="research").model_copy(update={"status": obj.status})
    obj2, _ = step(research, world(datasets={"support": data}))
    assert obj2.status.phase == "Admitted"
    assert not any(c.type == "Failed" for c in obj2.status.conditions)


def test_admit_writes_job_file_then_submits_deterministic_id() -> None:
    obj, result = step(job(generation=3), world())
    assert obj.status.phase == "Admitted"
    assert obj.status.submission_id == "corral-team-a.bot-3"
    assert cond(obj, "Admitted").reason == "Submitted"
    assert "Submitted Ray job corral-team-a.bot-3" in cond(obj, "Admitted").message
    assert kinds(result) == [WriteFile, SubmitJob]
    write, submit = (a for a in result.actions if isinstance(a, WriteFile | SubmitJob))
    assert isinstance(write, WriteFile) and isinstance(submit, SubmitJob)
    assert write.uri == "file:///srv/corral/artifacts/finetunejobs/team-a/bot/job.json"
    assert submit.entrypoint == (
        "/opt/venv/bin/python -m corral.training --job /srv/corral/artifacts/finetunejobs/team-a/bot/job.json"
    )
    assert result.requeue_after is not None


def test_job_file_is_a_valid_training_job() -> None:
    from corral.training._job import TrainingJob

    _, result = step(job(output={"modelName": "bot-v1"}), world())
    write = next(a for a in result.actions if isinstance(a, WriteFile))
    doc = TrainingJob.model_validate(json.loads(write.content))
    assert doc.base_model.uri == "file:///srv/corral/artifacts/catalog/tiny-llama"
    assert doc.datasets[0].uri == "file:///data/support.jsonl" and doc.datasets[0].format == "alpaca"
    assert doc.output_uri.endswith("/finetunejobs/team-a/bot/output")
    assert doc.events_uri.endswith("/finetunejobs/team-a/bot/events.jsonl")
    assert doc.model_name == "bot-v1"


def test_finalizer_added_once() -> None:
    _, result = step(job(finalizers=()), world())
    patches = [a for a in result.actions if isinstance(a, PatchObject)]
    assert patches == [PatchObject("FineTuneJob", NS, "bot", {"metadata": {"finalizers": [FINALIZER]}})]
    _, again = step(job(), world())
    assert not any(isinstance(a, PatchObject) for a in again.actions)


def test_gpu_job_placed_on_a_pool_with_estimated_cost() -> None:
    pool = GPUPool(
        metadata=ObjectMeta(name="a100", generation=1),
        spec=GPUPoolSpec(
            accelerator_type="nvidia-a100-80gb",
            gpus_per_node=8,
            gpu_memory="80Gi",
            max_nodes=2,
            price_per_gpu_hour="2.50",
        ),
    )
    obj, result = step(job(resources={"gpusPerWorker": 1}), world(pools=(pool,)))
    assert obj.status.phase == "Admitted"
    assert obj.status.placement is not None and obj.status.placement.pool == "a100"
    assert obj.status.placement.gpus == 1
    assert obj.status.cost is not None and obj.status.cost.estimated_usd is not None
    write = next(a for a in result.actions if isinstance(a, WriteFile))
    assert json.loads(write.content)["pricePerGpuHour"] == "2.50"


def test_submit_carries_the_owner_and_the_placement_just_decided() -> None:
    pool = GPUPool(
        metadata=ObjectMeta(name="a100", generation=1),
        spec=GPUPoolSpec.model_validate(
            {
                "acceleratorType": "nvidia-a100-80gb",
                "gpusPerNode": 8,
                "gpuMemory": "80Gi",
                "maxNodes": 2,
                "nodeSelector": {"pool": "a100"},
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            }
        ),
    )
    spec = {"resources": {"workers": 2, "gpusPerWorker": 1, "queue": "training"}, "activeDeadlineSeconds": 600}
    _, result = step(job(**spec), world(pools=(pool,)))
    submit = next(a for a in result.actions if isinstance(a, SubmitJob))
    handle = submit.handle
    assert handle.owner == Owner("FineTuneJob", "bot", NS, "uid-bot")
    assert handle.queue == "training" and handle.deadline_seconds == 600
    placement = handle.placement
    assert placement is not None and placement.pool == "a100"
    assert (placement.replicas, placement.gpus, placement.accelerator_type) == (2, 1, "nvidia-a100-80gb")
    assert placement.node_selector == {"pool": "a100"}
    assert [dict(t) for t in placement.tolerations] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_gpu_job_without_pools_waits_unschedulable() -> None:
    obj, result = step(job(resources={"gpusPerWorker": 1}), world())
    assert obj.status.phase == "Pending"
    assert cond(obj, "Admitted").status == "False"
    assert cond(obj, "Admitted").reason == "Unschedulable"
    assert not any(isinstance(a, SubmitJob) for a in result.actions)


# -- following ------------------------------------------------------------------------


def test_crash_before_submit_resubmits_the_same_id() -> None:
    obj = submitted(job())
    # the status (with the id) was stored, the process died before SubmitJob: Ray has no such job
    obj2, result = step(obj, world(job=None))
    submits = [a for a in result.actions if isinstance(a, SubmitJob)]
    assert [s.submission_id for s in submits] == ["corral-team-a.bot-1"]
    assert obj2.status.submission_id == obj.status.submission_id


def test_pending_then_running_with_progress() -> None:
    obj = submitted(job())
    sid = obj.status.submission_id
    assert sid is not None
    obj, result = step(obj, world(job=JobState(sid, "PENDING")))
    assert obj.status.phase == "Admitted" and kinds(result) == []
    training = TrainingObservation(
        progress=JobProgress(step=3, total_steps=12, epoch=1, percent=25, eta_seconds=30),
        metrics=JobMetrics(loss=2.5, learning_rate=0.001, tokens_per_second=900.0),
        cost=JobCost(gpu_seconds=0, usd="0"),
    )
    obj, result = step(obj, world(job=JobState(sid, "RUNNING", start_time=NOW.timestamp()), training=training))
    assert obj.status.phase == "Running"
    assert cond(obj, "Running").reason == "JobRunning"
    assert obj.status.progress is not None and obj.status.progress.percent == 25
    assert obj.status.metrics is not None and obj.status.metrics.loss == 2.5
    assert obj.status.start_time == NOW
    assert kinds(result) == []
    again, result2 = step(obj, world(job=JobState(sid, "RUNNING", start_time=NOW.timestamp()), training=training))
    assert again.status == obj.status and kinds(result2) == []
    assert not any(isinstance(a, RecordEvent) for a in result2.actions)


def test_running_condition_keeps_transition_time() -> None:
    obj = submitted(job())
    sid = obj.status.submission_id
    assert sid
    obj, _ = step(obj, world(job=JobState(sid, "RUNNING")))
    first = cond(obj, "Running").last_transition_time
    obj, _ = step(obj, world(job=JobState(sid, "RUNNING"), now=NOW + timedelta(minutes=5)))
    assert cond(obj, "Running").last_transition_time == first


def success_world(**kw: Any) -> FineTuneJobWorld:
    training = TrainingObservation(
        progress=JobProgress(step=12, total_steps=12, epoch=3, percent=100),
        completed_output_uri="file:///srv/corral/artifacts/finetunejobs/team-a/bot/output",
    )
    return world(training=training, **kw)


def test_success_creates_output_model_and_deployment_once() -> None:
    obj = submitted(job(deployOnSuccess={"deployment": "support", "servedName": "support-bot"}))
    sid = obj.status.submission_id
    assert sid
    obj, result = step(obj, success_world(job=JobState(sid, "SUCCEEDED")))
    assert obj.status.phase == "Succeeded"
    assert obj.status.output_model == "bot"
    assert cond(obj, "Succeeded").reason == "JobSucceeded"
    creates = [a.obj for a in result.actions if isinstance(a, CreateObject)]
    model, deployment = creates
    assert isinstance(model, Model) and model.spec.type == "adapter"
    assert model.spec.base_model is not None and model.spec.base_model.name == "tiny"
    assert model.spec.uri == "file:///srv/corral/artifacts/finetunejobs/team-a/bot/output"
    assert model.metadata.annotations["corral.dev/training-datasets"] == "support"
    assert isinstance(deployment, ModelDeployment)
    assert deployment.spec.model.name == "tiny"
    assert [(a.name, a.model.name) for a in deployment.spec.adapters] == [("support-bot", "bot")]
    # both exist now: reconciling again creates nothing
    created_dep = deployment.model_copy(update={"metadata": meta("support")})
    w = success_world(
        job=JobState(sid, "SUCCEEDED"),
        models={"tiny": base_model(), "bot": model.model_copy(update={"metadata": meta("bot")})},
        deployments={"support": created_dep},
    )
    obj2, result2 = step(obj, w)
    assert kinds(result2) == []
    assert obj2.status == obj.status


def test_success_adds_adapter_to_existing_deployment_once() -> None:
    existing = ModelDeployment(
        metadata=meta("support", resource_version="7"),
        spec=ModelDeploymentSpec(
            model=LocalObjectReference(name="tiny"),
            adapters=[AdapterSpec(name="other", model=LocalObjectReference(name="other"))],
        ),
    )
    obj = submitted(job(deployOnSuccess={"deployment": "support"}))
    sid = obj.status.submission_id
    assert sid
    obj, result = step(obj, success_world(job=JobState(sid, "SUCCEEDED"), deployments={"support": existing}))
    patch = next(a for a in result.actions if isinstance(a, PatchObject))
    assert patch.kind == "ModelDeployment" and patch.resource_version == "7"
    assert patch.patch == {
        "spec": {"adapters": [{"name": "other", "model": {"name": "other"}}, {"name": "bot", "model": {"name": "bot"}}]}
    }
    updated = existing.model_copy(
        update={
            "spec": existing.spec.model_copy(
                update={
                    "adapters": [
                        *existing.spec.adapters,
                        AdapterSpec(name="bot", model=LocalObjectReference(name="bot")),
                    ]
                }
            )
        }
    )
    _, again = step(obj, success_world(job=JobState(sid, "SUCCEEDED"), deployments={"support": updated}))
    assert not any(isinstance(a, PatchObject) for a in again.actions)


def test_deployment_of_another_base_is_not_touched() -> None:
    other = ModelDeployment(metadata=meta("support"), spec=ModelDeploymentSpec(model=LocalObjectReference(name="x")))
    obj = submitted(job(deployOnSuccess={"deployment": "support"}))
    sid = obj.status.submission_id
    assert sid
    _, result = step(obj, success_world(job=JobState(sid, "SUCCEEDED"), deployments={"support": other}))
    assert not any(isinstance(a, PatchObject) for a in result.actions)
    assert any(isinstance(a, RecordEvent) and a.reason == "DeploymentBaseMismatch" for a in result.actions)


def test_merged_output_is_a_merged_model() -> None:
    obj = submitted(job(method="full"))
    sid = obj.status.submission_id
    assert sid
    _, result = step(obj, success_world(job=JobState(sid, "SUCCEEDED")))
    model = next(a.obj for a in result.actions if isinstance(a, CreateObject))
    assert isinstance(model, Model) and model.spec.type == "merged"


def test_failure_reports_the_training_reason() -> None:
    obj = submitted(job())
    sid = obj.status.submission_id
    assert sid
    training = TrainingObservation(failed_reason="DatasetInvalid", failed_message="line 3: missing output")
    obj, result = step(obj, world(job=JobState(sid, "FAILED", message="exit 2"), training=training))
    assert obj.status.phase == "Failed"
    assert cond(obj, "Failed").reason == "DatasetInvalid"
    assert "line 3" in cond(obj, "Failed").message
    assert any(isinstance(a, RecordEvent) and a.type == "Warning" for a in result.actions)
    # terminal: nothing is resubmitted even if Ray forgets the job
    obj2, result2 = step(obj, world(job=None))
    assert obj2.status == obj.status and kinds(result2) == []


def test_the_backends_failure_reason_reaches_the_failed_condition() -> None:
    from corral.drivers.kuberay import finetunejob_status_from_rayjob

    obj = submitted(job())
    sid = obj.status.submission_id
    assert sid
    rayjob = {"status": {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": "ran too long"}}
    failed = finetunejob_status_from_rayjob(rayjob).job_state(sid)
    assert (failed.status, failed.reason, failed.message) == ("FAILED", "DeadlineExceeded", "ran too long")
    done, _ = step(obj, world(job=failed))
    assert (cond(done, "Failed").reason, cond(done, "Failed").message) == ("DeadlineExceeded", "ran too long")
    assert cond(done, "Running").reason == "JobFailed"
    # The training's own reason is better than the backend's.
    training = TrainingObservation(failed_reason="OutOfMemory", failed_message="CUDA out of memory")
    done, _ = step(obj, world(job=failed, training=training))
    assert (cond(done, "Failed").reason, cond(done, "Failed").message) == ("OutOfMemory", "CUDA out of memory")
    # A backend without reasons (the local Ray) keeps the generic one.
    done, _ = step(obj, world(job=JobState(sid, "FAILED", message="exit 1")))
    assert (cond(done, "Failed").reason, cond(done, "Failed").message) == ("JobFailed", "exit 1")


def test_a_job_waiting_in_kueue_says_so_on_running() -> None:
    from corral.drivers.kuberay import finetunejob_status_from_rayjob

    obj = submitted(job())
    sid = obj.status.submission_id
    assert sid
    rayjob = {"spec": {"suspend": True}, "status": {"jobDeploymentStatus": "Suspended"}}
    queued = finetunejob_status_from_rayjob(rayjob).job_state(sid)
    waiting, _ = step(obj, world(job=queued))
    assert waiting.status.phase == "Admitted"
    assert cond(waiting, "Running").reason == "Pending" and "Kueue" in cond(waiting, "Running").message
    starting = finetunejob_status_from_rayjob({"status": {"jobDeploymentStatus": "Initializing"}}).job_state(sid)
    assert starting.reason == ""  # the status says it all: the generic reason
    waiting, _ = step(obj, world(job=starting))
    assert cond(waiting, "Running").reason == "JobPending"


def test_stopped_outside_is_cancelled() -> None:
    obj = submitted(job())
    sid = obj.status.submission_id
    assert sid
    obj, _ = step(obj, world(job=JobState(sid, "STOPPED")))
    assert obj.status.phase == "Cancelled"


def test_deadline_stops_the_job() -> None:
    obj = submitted(job(activeDeadlineSeconds=60))
    sid = obj.status.submission_id
    assert sid
    running = JobState(sid, "RUNNING", start_time=NOW.timestamp())
    obj, _ = step(obj, world(job=running))
    obj, result = step(obj, world(job=running, now=NOW + timedelta(seconds=61)))
    assert obj.status.phase == "Failed"
    assert cond(obj, "Failed").reason == "DeadlineExceeded"
    assert StopJob(Handle.of(obj), sid) in result.actions


# -- suspend and delete ---------------------------------------------------------------


def test_suspend_stops_and_unsuspend_resubmits_with_new_generation() -> None:
    obj = submitted(job())
    sid = obj.status.submission_id
    assert sid == "corral-team-a.bot-1"
    running = JobState(sid, "RUNNING")
    obj, _ = step(obj, world(job=running))
    suspended = job(generation=2, suspend=True).model_copy(update={"status": obj.status})
    obj, result = step(suspended, world(job=running))
    assert obj.status.phase == "Suspended"
    assert StopJob(Handle.of(obj), sid) in result.actions
    assert cond(obj, "Running").reason == "Suspended"
    obj, result = step(obj, world(job=JobState(sid, "STOPPED")))
    assert obj.status.phase == "Suspended" and kinds(result) == []
    resumed = job(generation=3, suspend=False).model_copy(update={"status": obj.status})
    obj, result = step(resumed, world(job=JobState(sid, "STOPPED")))
    assert obj.status.phase == "Admitted"
    assert obj.status.submission_id == "corral-team-a.bot-3"
    assert [a.submission_id for a in result.actions if isinstance(a, SubmitJob)] == ["corral-team-a.bot-3"]


def test_unsuspend_waits_for_the_stopping_run() -> None:
    obj = submitted(job())
    sid = obj.status.submission_id
    assert sid
    obj, _ = step(
        job(generation=2, suspend=True).model_copy(update={"status": obj.status}), world(job=JobState(sid, "RUNNING"))
    )
    resumed = job(generation=3).model_copy(update={"status": obj.status})
    obj2, result = step(resumed, world(job=JobState(sid, "RUNNING")))
    assert not any(isinstance(a, SubmitJob) for a in result.actions)
    assert obj2.status.submission_id == sid


def test_delete_stops_the_job_then_releases_the_finalizer() -> None:
    obj = submitted(job())
    sid = obj.status.submission_id
    assert sid
    deleting = obj.model_copy(update={"metadata": obj.metadata.model_copy(update={"deletion_timestamp": NOW})})
    obj2, result = step(deleting, world(job=JobState(sid, "RUNNING")))
    assert StopJob(Handle.of(obj), sid) in result.actions
    assert obj2.status.phase == "Cancelled"
    _, result = step(obj2, world(job=JobState(sid, "STOPPED")))
    assert result.actions == [PatchObject("FineTuneJob", NS, "bot", {"metadata": {"finalizers": []}})]


@pytest.mark.parametrize("status", ["PENDING", "RUNNING"])
def test_suspend_before_admission_submits_nothing(status: str) -> None:
    obj, result = step(job(suspend=True), world())
    assert obj.status.phase == "Suspended"
    assert not any(isinstance(a, SubmitJob) for a in result.actions)


# -- status is not trusted to name another object's Ray job -----------------------------------


@pytest.mark.parametrize(
    "foreign",
    [
        "corral-team-b.victim-1",  # another namespace's job
        "corral-team-a.other-1",  # another job of the same namespace
        "corral-team-a-bot-1",  # the old, ambiguous form (also team-a-bot's job "1"...)
        "corral-team-a.bot-9",  # a generation this job never had
        "raysubmit_0123456789",  # not Corral's at all
    ],
)
def test_a_forged_submission_id_is_never_stopped_or_followed(foreign: str) -> None:
    """A status naming another Ray job (written by anyone) is ignored: no StopJob, no phase taken from it."""
    obj = job(generation=2, suspend=True).model_copy(
        update={"status": submitted(job()).status.model_copy(update={"submission_id": foreign, "phase": "Running"})}
    )
    victim = JobState(foreign, "RUNNING")
    for deleting in (False, True):
        current = obj
        if deleting:
            current = obj.model_copy(update={"metadata": obj.metadata.model_copy(update={"deletion_timestamp": NOW})})
        new, result = step(current, world(job=victim))
        assert not any(isinstance(a, StopJob) for a in result.actions), result.actions
        (event,) = [a for a in result.actions if isinstance(a, RecordEvent) and a.reason == "ForeignSubmissionIgnored"]
        # The old format is not followed (two objects can share it), but the event says what to do about it.
        assert ("stop it by hand" in event.message) == (foreign == "corral-team-a-bot-1"), event.message
        if not deleting:
            assert new.status.submission_id != foreign and new.status.phase == "Suspended"


def test_a_forged_submission_id_on_a_running_job_is_replaced_by_its_own() -> None:
    obj = submitted(job())
    forged = obj.model_copy(update={"status": obj.status.model_copy(update={"submission_id": "corral-team-b.x-1"})})
    new, result = step(forged, world(job=JobState("corral-team-b.x-1", "SUCCEEDED")))
    assert new.status.phase == "Admitted" and new.status.submission_id == "corral-team-a.bot-1"
    assert [a.submission_id for a in result.actions if isinstance(a, SubmitJob)] == ["corral-team-a.bot-1"]
