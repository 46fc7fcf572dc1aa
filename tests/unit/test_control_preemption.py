"""Preemption in the pure reconcilers: victim chosen and stopped, preemptor waits, victim queued and resumed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from corral.api.v1alpha1 import (
    Condition,
    FineTuneJob,
    ModelDeployment,
)
from corral.api.v1alpha1.finetunejob import CheckpointInfo
from corral.control import (
    ControlSettings,
    DeploymentWorld,
    DeployServe,
    FineTuneJobWorld,
    RecordEvent,
    Result,
    StopJob,
    SubmitJob,
    TrainingObservation,
    WriteFile,
    reconcile_deployment,
    reconcile_finetunejob,
)
from corral.control._placement import allocation_of, waiting_request
from corral.drivers import Handle, JobState
from corral.scheduler import Allocation, PlacementRequest
from tests.support import objects
from tests.support.objects import NOW, base_model, dataset, finetunejob, gpupool, ready

SETTINGS = ControlSettings(artifact_root="file:///srv/corral/artifacts", python="/opt/venv/bin/python")

BASE = base_model(chat_template=None, observed_generation=None, conditions=ready(), created=NOW)
DATA = dataset(observed_generation=None, format_=None, conditions=ready(), created=NOW)
POOL = gpupool()
MODELS = {"tiny": BASE}
DATASETS = {"support": DATA}


def job(
    name: str = "bot", *, priority: int = 0, preemptible: bool = True, age_h: float = 1, **spec: Any
) -> FineTuneJob:
    resources = {"workers": 1, "gpusPerWorker": 4, "priority": priority, "preemptible": preemptible}
    return finetunejob(name, created=NOW - timedelta(hours=age_h), **{"resources": resources, **spec})


def deployment(name: str = "chat", priority: int = 100) -> ModelDeployment:
    return objects.deployment(name, created=NOW, resources={"gpusPerReplica": 4, "priority": priority})


def job_world(**kw: Any) -> FineTuneJobWorld:
    base: dict[str, Any] = {"models": MODELS, "datasets": DATASETS, "pools": (POOL,)}
    base.update(kw)
    return FineTuneJobWorld(now=NOW, settings=SETTINGS, **base)


def dep_world(**kw: Any) -> DeploymentWorld:
    base: dict[str, Any] = {"models": MODELS, "pools": (POOL,), "endpoint": "http://127.0.0.1:8000"}
    base.update(kw)
    return DeploymentWorld(now=NOW, settings=SETTINGS, **base)


def step_job(obj: FineTuneJob, w: FineTuneJobWorld) -> tuple[FineTuneJob, Result]:
    result = reconcile_finetunejob(obj, w)
    return obj.model_copy(update={"status": result.status}), result


def step_dep(obj: ModelDeployment, w: DeploymentWorld) -> tuple[ModelDeployment, Result]:
    result = reconcile_deployment(obj, w)
    return obj.model_copy(update={"status": result.status}), result


def cond(obj: FineTuneJob | ModelDeployment, type_: str) -> Condition:
    return next(c for c in obj.status.conditions if c.type == type_)


def events(result: Result) -> list[RecordEvent]:
    return [a for a in result.actions if isinstance(a, RecordEvent)]


def held(*objs: FineTuneJob | ModelDeployment) -> tuple[Allocation, ...]:
    return tuple(a for a in (allocation_of(o) for o in objs) if a is not None)


def running(obj: FineTuneJob, checkpoint_step: int | None = 40) -> FineTuneJob:
    """Admit ``obj`` on the empty pool, then let its Ray job run (with a checkpoint written)."""
    obj, _ = step_job(obj, job_world())
    assert obj.status.phase == "Admitted" and obj.status.placement is not None and obj.status.placement.gpus == 4
    sid = obj.status.submission_id
    assert sid is not None
    obj, _ = step_job(obj, job_world(job=JobState(sid, "RUNNING"), allocations=held(obj)))
    assert obj.status.phase == "Running"
    if checkpoint_step is not None:
        ckpt = CheckpointInfo(step=checkpoint_step, uri=f"file:///ckpt/checkpoint_{checkpoint_step:06d}")
        obj = obj.model_copy(update={"status": obj.status.model_copy(update={"checkpoints": [ckpt]})})
    return obj


def waiting_chat(allocations: tuple[Allocation, ...]) -> tuple[ModelDeployment, PlacementRequest]:
    """The deployment after its first reconcile (Pending: it must preempt), and its queued request."""
    dep, _ = step_dep(deployment(), dep_world(allocations=allocations))
    request = waiting_request(dep, MODELS, {})
    assert request is not None
    return dep, request


# -- the preemptor ----------------------------------------------------------------------


def test_deployment_waits_preempting_while_the_victim_holds_its_gpus() -> None:
    victim = running(job())
    dep, result = step_dep(deployment(), dep_world(allocations=held(victim)))
    assert dep.status.phase == "Pending"
    ready = cond(dep, "Ready")
    assert ready.status == "False" and ready.reason == "Preempting"
    assert ready.message.startswith(
        "preempting lower-priority preemptible FineTuneJob/team-a/bot to free 4 x nvidia-a100-80gb"
    )
    assert dep.status.placement is not None and dep.status.placement.pool == "a100"
    assert dep.status.placement.gpus == 0  # nothing is booked twice: the victim still holds them
    assert allocation_of(dep) is None
    assert not any(isinstance(a, DeployServe) for a in result.actions)
    assert [e.reason for e in events(result)] == ["Preempting"]
    # Once the victim has released its GPUs the deployment is placed and deployed.
    dep, result = step_dep(dep, dep_world(allocations=()))
    assert dep.status.placement is not None and dep.status.placement.gpus == 4
    assert any(isinstance(a, DeployServe) for a in result.actions)


def test_higher_priority_job_waits_preempting() -> None:
    victim = running(job())
    urgent, result = step_job(
        job("urgent", priority=50, preemptible=False, age_h=0), job_world(allocations=held(victim))
    )
    assert urgent.status.phase == "Pending"
    assert cond(urgent, "Admitted").reason == "Preempting"
    assert not any(isinstance(a, SubmitJob) for a in result.actions)


# -- the victim ----------------------------------------------------------------------------


def test_victim_is_stopped_with_an_actionable_message_and_keeps_its_gpus_until_stopped() -> None:
    victim = running(job())
    sid = victim.status.submission_id
    assert sid is not None
    _, chat = waiting_chat(held(victim))
    victim, result = step_job(victim, job_world(job=JobState(sid, "RUNNING"), allocations=held(victim), queue=(chat,)))
    message = (
        "preempted by ModelDeployment/team-a/chat (priority 100) to free 4 x nvidia-a100-80gb in pool a100; "
        "resumes from checkpoint step 40 when capacity returns"
    )
    assert victim.status.phase == "Preempted"
    assert victim.status.preemptions == 1
    assert cond(victim, "Admitted").reason == "Preempted" and cond(victim, "Admitted").message == message
    assert cond(victim, "Running").status == "False" and cond(victim, "Running").reason == "Preempted"
    assert StopJob(Handle.of(victim), sid) in result.actions
    assert [(e.type, e.reason, e.message) for e in events(result)] == [("Warning", "Preempted", message)]
    # The Ray job is still stopping: it keeps its GPUs (and asks again), it is not queued yet.
    assert held(victim) and held(victim)[0].gpus == 4
    victim, result = step_job(victim, job_world(job=JobState(sid, "RUNNING"), allocations=held(victim), queue=(chat,)))
    assert result.actions == [StopJob(Handle.of(victim), sid)] and victim.status.preemptions == 1
    assert waiting_request(victim, MODELS, DATASETS) is None
    # Stopped: the GPUs are released and the job queues behind the deployment it made room for.
    victim, result = step_job(victim, job_world(job=JobState(sid, "STOPPED"), allocations=held(victim), queue=(chat,)))
    assert victim.status.phase == "Preempted"
    assert victim.status.placement is not None and victim.status.placement.gpus == 0
    assert held(victim) == ()
    assert cond(victim, "Admitted").reason == "InsufficientCapacity"
    assert cond(victim, "Running").reason == "Preempted"
    assert not any(isinstance(a, SubmitJob) for a in result.actions)
    queued = waiting_request(victim, MODELS, DATASETS)
    assert queued is not None and queued.key == "FineTuneJob/team-a/bot" and queued.priority == 0


def test_preempted_job_is_resubmitted_with_the_same_job_file_and_resumes() -> None:
    _, submitted = step_job(job(), job_world())
    write = next(a for a in submitted.actions if isinstance(a, WriteFile))
    entry = next(a for a in submitted.actions if isinstance(a, SubmitJob))
    victim = running(job())
    sid = victim.status.submission_id
    assert sid == "corral-team-a.bot-1"
    _, chat = waiting_chat(held(victim))
    victim, _ = step_job(victim, job_world(job=JobState(sid, "RUNNING"), allocations=held(victim), queue=(chat,)))
    victim, _ = step_job(victim, job_world(job=JobState(sid, "STOPPED"), allocations=held(victim), queue=(chat,)))
    # The deployment is gone: capacity returns, the job is re-admitted under a new id.
    victim, result = step_job(victim, job_world(job=JobState(sid, "STOPPED")))
    assert victim.status.phase == "Admitted"
    assert victim.status.submission_id == "corral-team-a.bot-1-r1"
    admitted = cond(victim, "Admitted")
    assert admitted.reason == "Resubmitted"
    assert "after 1 preemption(s); resumes from checkpoint step 40" in admitted.message
    rewrite = next(a for a in result.actions if isinstance(a, WriteFile))
    resubmit = next(a for a in result.actions if isinstance(a, SubmitJob))
    # Same job file (checkpoint folder, run name, resume: auto), same entrypoint: training resumes.
    assert (rewrite.uri, rewrite.content) == (write.uri, write.content)
    assert resubmit.entrypoint == entry.entrypoint and resubmit.submission_id == "corral-team-a.bot-1-r1"
    assert b'"resume": "auto"' in rewrite.content
    assert [e.reason for e in events(result)] == ["Resubmitted"]
    # The new run's started event says where it resumed from.
    new_sid = victim.status.submission_id
    victim, _ = step_job(
        victim,
        job_world(
            job=JobState(new_sid, "RUNNING"),
            allocations=held(victim),
            training=TrainingObservation(resumed_from_step=40),
        ),
    )
    assert victim.status.phase == "Running" and victim.status.resumed_from_step == 40
    assert victim.status.preemptions == 1


def test_job_without_checkpoint_or_with_resume_never_says_so() -> None:
    victim = running(job(), checkpoint_step=None)
    _, chat = waiting_chat(held(victim))
    victim, _ = step_job(
        victim, job_world(job=JobState("corral-team-a.bot-1", "RUNNING"), allocations=held(victim), queue=(chat,))
    )
    assert (
        "restarts from step 0 (no checkpoint yet; one is written every 100 steps)" in cond(victim, "Admitted").message
    )
    never = running(job(checkpointing={"resume": "never"}))
    never, _ = step_job(
        never, job_world(job=JobState("corral-team-a.bot-1", "RUNNING"), allocations=held(never), queue=(chat,))
    )
    assert "starts over (checkpointing.resume is never)" in cond(never, "Admitted").message


def test_job_that_never_reached_ray_releases_at_once() -> None:
    victim, _ = step_job(job(), job_world())
    _, chat = waiting_chat(held(victim))
    victim, result = step_job(victim, job_world(job=None, allocations=held(victim), queue=(chat,)))
    assert victim.status.phase == "Preempted" and held(victim) == ()
    assert not any(isinstance(a, StopJob | SubmitJob) for a in result.actions)


def test_non_preemptible_job_is_never_preempted() -> None:
    victim = running(job(preemptible=False))
    sid = victim.status.submission_id
    assert sid is not None
    dep, result = step_dep(deployment(), dep_world(allocations=held(victim)))
    assert dep.status.phase == "Pending" and cond(dep, "Ready").reason == "InsufficientCapacity"
    chat = waiting_request(dep, MODELS, {})
    assert chat is not None
    victim, result = step_job(victim, job_world(job=JobState(sid, "RUNNING"), allocations=held(victim), queue=(chat,)))
    assert victim.status.phase == "Running" and victim.status.preemptions == 0
    assert StopJob(Handle.of(victim), sid) not in result.actions


def test_equal_or_lower_priority_never_preempts() -> None:
    victim = running(job(priority=10))
    sid = victim.status.submission_id
    assert sid is not None
    for priority in (0, 10):
        peer, _ = step_job(job(f"peer-{priority}", priority=priority, age_h=0), job_world(allocations=held(victim)))
        assert cond(peer, "Admitted").reason == "InsufficientCapacity"
        queued = waiting_request(peer, MODELS, DATASETS)
        assert queued is not None
        after, result = step_job(
            victim, job_world(job=JobState(sid, "RUNNING"), allocations=held(victim), queue=(queued,))
        )
        assert after.status.phase == "Running" and StopJob(Handle.of(victim), sid) not in result.actions


def test_higher_priority_job_preempts_a_lower_one() -> None:
    victim = running(job())
    sid = victim.status.submission_id
    assert sid is not None
    urgent, _ = step_job(job("urgent", priority=50, age_h=0), job_world(allocations=held(victim)))
    queued = waiting_request(urgent, MODELS, DATASETS)
    assert queued is not None and queued.priority == 50
    victim, result = step_job(
        victim, job_world(job=JobState(sid, "RUNNING"), allocations=held(victim), queue=(queued,))
    )
    assert victim.status.phase == "Preempted" and StopJob(Handle.of(victim), sid) in result.actions
    assert cond(victim, "Admitted").message.startswith("preempted by FineTuneJob/team-a/urgent (priority 50)")


def test_finished_run_is_not_preempted() -> None:
    victim = running(job())
    sid = victim.status.submission_id
    assert sid is not None
    _, chat = waiting_chat(held(victim))
    done, result = step_job(victim, job_world(job=JobState(sid, "SUCCEEDED"), allocations=held(victim), queue=(chat,)))
    assert done.status.phase == "Succeeded" and done.status.preemptions == 0
    assert not any(isinstance(a, StopJob) for a in result.actions)


def test_requeued_job_keeps_its_place_in_fifo_order() -> None:
    """Same priority: the preempted (older) job goes before a newer one when capacity returns."""
    older = running(job("older", age_h=3))
    sid = older.status.submission_id
    assert sid is not None
    _, chat = waiting_chat(held(older))
    older, _ = step_job(older, job_world(job=JobState(sid, "RUNNING"), allocations=held(older), queue=(chat,)))
    older, _ = step_job(older, job_world(job=JobState(sid, "STOPPED"), allocations=held(older), queue=(chat,)))
    newer, _ = step_job(job("newer", age_h=1), job_world(queue=(chat,)))
    assert newer.status.phase == "Pending"
    queue = tuple(r for r in (waiting_request(o, MODELS, DATASETS) for o in (older, newer)) if r is not None)
    assert [r.key for r in queue] == ["FineTuneJob/team-a/older", "FineTuneJob/team-a/newer"]
    # The deployment is gone. Whatever order the reconcilers run in, the older job is placed first.
    newer_after, _ = step_job(newer, job_world(queue=queue))
    assert newer_after.status.phase == "Pending" and newer_after.status.submission_id is None
    older_after, _ = step_job(older, job_world(job=JobState(sid, "STOPPED"), queue=queue))
    assert older_after.status.phase == "Admitted"


def test_run_that_finished_before_the_stop_landed_succeeds() -> None:
    victim = running(job())
    sid = victim.status.submission_id
    assert sid is not None
    _, chat = waiting_chat(held(victim))
    victim, _ = step_job(victim, job_world(job=JobState(sid, "RUNNING"), allocations=held(victim), queue=(chat,)))
    assert victim.status.phase == "Preempted"
    done, result = step_job(victim, job_world(job=JobState(sid, "SUCCEEDED"), allocations=held(victim), queue=(chat,)))
    assert done.status.phase == "Succeeded" and done.status.submission_id == sid
    assert not any(isinstance(a, SubmitJob) for a in result.actions)


def test_a_job_and_a_deployment_with_one_name_do_not_share_gpus() -> None:
    # Keys carry the kind: with "team-a/chat" for both, the deployment took the job's allocation for its own
    # and was admitted onto the 4 GPUs the job holds.
    same_name = running(job("chat", preemptible=False))
    dep, _ = step_dep(deployment("chat"), dep_world(allocations=held(same_name)))
    assert dep.status.phase == "Pending" and cond(dep, "Ready").reason == "InsufficientCapacity"
    assert [a.key for a in held(same_name)] == ["FineTuneJob/team-a/chat"]


def test_suspended_job_holds_its_gpus_until_its_ray_job_has_stopped() -> None:
    obj = running(job())
    sid = obj.status.submission_id
    assert sid is not None
    suspended = obj.model_copy(update={"spec": obj.spec.model_copy(update={"suspend": True})})
    stopping, result = step_job(suspended, job_world(job=JobState(sid, "RUNNING"), allocations=held(obj)))
    assert stopping.status.phase == "Suspended" and StopJob(Handle.of(obj), sid) in result.actions
    assert [a.gpus for a in held(stopping)] == [4]  # still running: nobody else may be placed on them yet
    stopped, result = step_job(stopping, job_world(job=JobState(sid, "STOPPED"), allocations=held(stopping)))
    assert stopped.status.phase == "Suspended" and StopJob(Handle.of(obj), sid) not in result.actions
    assert held(stopped) == () and stopped.status.placement is not None and stopped.status.placement.pool == "a100"
