"""Recoveries are told: a training restart, a re-attachment after a control plane restart, a resubmission."""

from __future__ import annotations

from corral.api.v1alpha1.finetunejob import CheckpointInfo, JobProgress
from corral.control import RecordEvent, SubmitJob, TrainingObservation
from corral.control._observe import training_restarts
from corral.control._observed import TrainingRestart
from corral.drivers import JobState
from corral.training._events import CheckpointEvent, CompletedEvent, ProgressEvent, StartedEvent
from tests.unit.test_control_finetunejob import NOW, cond, job, step, submitted, world


def _progress(step_: int, time: float) -> ProgressEvent:
    return ProgressEvent(step=step_, total_steps=100, epoch=1, loss=1.0, lr=0.001, tokens_per_second=1.0, time=time)


def _started(resumed: int, time: float) -> StartedEvent:
    return StartedEvent(run_name="r", resumed_from_step=resumed, total_steps=100, world_size=1, time=time)


def test_restarts_are_folded_from_the_events_file_with_the_pause() -> None:
    events = [
        _started(0, 100.0),
        *[_progress(s, 100.0 + s) for s in range(1, 85)],
        CheckpointEvent(step=50, uri="file:///c/50", time=150.0),
        _started(50, 190.0),
    ]
    assert training_restarts(events) == ()  # the new run has not logged a step yet: not told
    events.append(_progress(51, 196.8))
    assert training_restarts(events) == (TrainingRestart(stopped_at_step=84, resumed_from_step=50, seconds=12.8),)
    events += [_progress(100, 200.0), CompletedEvent(step=100, output_uri="file:///o", time=201.0)]
    assert len(training_restarts(events)) == 1


def test_a_worker_restart_is_an_event_and_the_running_reason_until_the_job_ends() -> None:
    obj = submitted(job())
    sid = obj.status.submission_id
    assert sid
    running = JobState(sid, "RUNNING", start_time=NOW.timestamp())
    obj, _ = step(obj, world(job=running, training=TrainingObservation(progress=JobProgress(step=84, total_steps=100))))
    restart = TrainingRestart(stopped_at_step=84, resumed_from_step=50, seconds=12.8)
    training = TrainingObservation(
        progress=JobProgress(step=51, total_steps=100), resumed_from_step=50, restarts=(restart,)
    )
    obj, result = step(obj, world(job=running, training=training))
    told = [a for a in result.actions if isinstance(a, RecordEvent) and a.reason == "TrainingResumed"]
    assert len(told) == 1 and told[0].type == "Warning"
    assert "stopped after step 84" in told[0].message and "checkpoint step 50" in told[0].message
    assert "12.8 s" in told[0].message
    assert obj.status.restarts == 1 and obj.status.resumed_from_step == 50
    assert cond(obj, "Running").reason == "Resumed"
    obj, result = step(obj, world(job=running, training=training))
    assert not [a for a in result.actions if isinstance(a, RecordEvent)]  # told once
    assert cond(obj, "Running").reason == "Resumed"


def test_first_pass_after_a_restart_reattaches_a_running_job_without_submitting() -> None:
    obj = submitted(job())
    sid = obj.status.submission_id
    assert sid
    running = JobState(sid, "RUNNING", start_time=NOW.timestamp())
    obj, _ = step(obj, world(job=running, training=TrainingObservation(progress=JobProgress(step=80, total_steps=100))))
    obj, result = step(obj, world(job=running, first_look=True))
    assert not [a for a in result.actions if isinstance(a, SubmitJob)]
    told = [a for a in result.actions if isinstance(a, RecordEvent) and a.reason == "Reattached"]
    assert len(told) == 1 and f"Re-attached to Ray job {sid} (step 80)" in told[0].message
    assert cond(obj, "Running").reason == "Reattached"


def test_a_job_the_current_ray_does_not_know_is_resubmitted_and_told() -> None:
    obj = submitted(job())
    sid = obj.status.submission_id
    assert sid
    training = TrainingObservation(
        progress=JobProgress(step=80, total_steps=100),
        checkpoints=(CheckpointInfo(step=50, uri="file:///c/50"),),
    )
    obj, _ = step(obj, world(job=JobState(sid, "RUNNING"), training=training))
    obj, result = step(obj, world(job=None, training=training))
    assert [a.submission_id for a in result.actions if isinstance(a, SubmitJob)] == [sid]
    told = [a for a in result.actions if isinstance(a, RecordEvent) and a.reason == "Resubmitted"]
    assert len(told) == 1 and "resuming from checkpoint step 50" in told[0].message
