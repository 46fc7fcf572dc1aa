"""The FineTuneJob reconciler: admit, submit, follow, finish (output Model, deploy-on-success).

Phases: ``Pending`` (waiting for its base model, data or GPUs) -> ``Admitted`` (submitted,
the Ray job pending) -> ``Running`` -> ``Succeeded`` / ``Failed`` / ``Cancelled``;
``Suspended`` while ``spec.suspend`` is set; ``Preempted`` when higher-priority work took
its GPUs (``spec.resources.preemptible``), until it is re-admitted and resumes from its
newest checkpoint (see :mod:`corral.control._preemption`). Conditions: ``Admitted``,
``Running``, ``Succeeded``, ``Failed``.

Recoveries are told: a restart of the training loop inside the Ray job (a worker lost) is a
``TrainingResumed`` event (the step it stopped at, the checkpoint it resumed from, the
seconds the steps paused) and ``Running`` reason ``Resumed``; a control plane restart that
finds the Ray job running is a ``Reattached`` event and reason; a Ray job the current Ray
does not know is ``Resubmitted`` (event and reason).

Crash safety: the submission id is deterministic (``corral-<ns>.<name>-<generation>``) and
written to ``status.submissionId`` *before* the job is submitted (the runner stores the
status first); a restart finds the id in the status and either sees the job or submits the
same id again (an existing id is success). Nothing is submitted twice.

A pass is :data:`_STEPS`, run in order over one :class:`_Pass` (KubeRay's ``reconcileFuncs``
shape): ownership of the submission id, finalizer (and deletion), the training events, a
finished job, suspension, a preempted job's GPUs, then admission (references, license,
admit, submit) or, once submitted, preemption, resubmission and following the Ray job. A
step returns a Result to end the pass; see :mod:`corral.control._steps`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from corral.api.v1alpha1 import Dataset, FineTuneJob, GPUPool, Model
from corral.api.v1alpha1.finetunejob import FineTuneJobStatus, JobCost
from corral.catalog import check_policy
from corral.drivers import Handle, JobState

from ._actions import Action, CreateObject, RecordEvent, Result, StopJob, SubmitJob, WriteFile
from ._conditions import set_condition
from ._finalizer import ensure_finalizer, release_finalizer
from ._gate import evaluation_summary, gate_decision
from ._jobspec import (
    choose,
    deployment_actions,
    entrypoint,
    job_document,
    job_file_bytes,
    job_files,
    output_model,
    output_model_name,
    output_type,
    owns_submission,
    submission_id,
)
from ._lineage import LineageError, job_lineage
from ._observed import FineTuneJobWorld, TrainingRestart
from ._placement import place_job
from ._preemption import preempted_message, preempting_message, preemptor_of, released, resume_note
from ._steps import Step, run_steps

__all__ = ["reconcile_finetunejob"]


@dataclass(frozen=True)
class _Refusal:
    phase: str  # Pending (waits) or Failed (the spec must change)
    reason: str
    message: str


@dataclass(frozen=True)
class _Admission:
    base: Model
    datasets: dict[str, Dataset]
    price: str
    message: str
    policy_message: str
    pool: GPUPool | None  # where the scheduler placed the job (its workers' node selector, tolerations)


def _check_references(job: FineTuneJob, world: FineTuneJobWorld) -> _Refusal | tuple[Model, dict[str, Dataset]]:
    base = world.models.get(job.spec.base_model.name)
    if base is None:
        return _Refusal("Pending", "BaseModelNotFound", f"base Model {job.spec.base_model.name} not found")
    if base.spec.type == "adapter":
        return _Refusal(
            "Failed",
            "InvalidSpec",
            f"base Model {base.metadata.name} is an adapter; fine-tune its base or a merged model instead",
        )
    ready = next((c for c in base.status.conditions if c.type == "Ready"), None)
    if ready is None or ready.status != "True":
        detail = f": {ready.message}" if ready is not None and ready.message else ""
        return _Refusal("Pending", "BaseModelNotReady", f"base Model {base.metadata.name} is not Ready{detail}")
    names = [d.name for d in job.spec.datasets]
    if job.spec.validation_dataset is not None:
        names.append(job.spec.validation_dataset.name)
    datasets: dict[str, Dataset] = {}
    for name in names:
        dataset = world.datasets.get(name)
        if dataset is None:
            return _Refusal("Pending", "DatasetNotFound", f"Dataset {name} not found")
        ready = next((c for c in dataset.status.conditions if c.type == "Ready"), None)
        if ready is None or ready.status != "True":
            detail = f": {ready.message}" if ready is not None and ready.message else ""
            return _Refusal("Pending", "DatasetNotReady", f"Dataset {name} is not Ready{detail}")
        datasets[name] = dataset
    return base, datasets


def _submit_actions(job: FineTuneJob, world: FineTuneJobWorld, admission: _Admission, sid: str) -> list[Action]:
    files = job_files(job, world.settings)
    doc = job_document(job, admission.base, admission.datasets, world.settings, admission.price)
    return [
        WriteFile(files.job_file, job_file_bytes(doc)),
        SubmitJob(
            handle=Handle.for_job(job, admission.pool),
            submission_id=sid,
            entrypoint=entrypoint(files.job_file, world.settings),
            runtime_env=dict(world.settings.job_runtime_env),
        ),
    ]


def _ts(value: float | None, fallback: datetime) -> datetime:
    return datetime.fromtimestamp(value, UTC) if value else fallback


@dataclass
class _Pass:
    """One reconcile of one FineTuneJob: what its steps share."""

    job: FineTuneJob
    world: FineTuneJobWorld
    old: FineTuneJobStatus
    st: FineTuneJobStatus
    actions: list[Action] = field(default_factory=list)
    sid: str | None = None  # the submission id this job owns, once _ownership has looked
    ray_job: JobState | None = None  # the Ray job of that id, when Ray knows it
    resumed_note: str | None = None  # a restart of the training loop seen in this pass
    admitting: bool = False  # first submission, or resuming after a suspension or a preemption
    refs: tuple[Model, dict[str, Dataset]] | None = None  # the base and the datasets, while admitting
    policy_message: str = ""
    admission: _Admission | None = None
    placed: FineTuneJobStatus | None = None

    @property
    def follow_seconds(self) -> float:
        return self.world.settings.follow_seconds

    def cond(self, type_: str, status: str, reason: str, message: str) -> None:
        gen, now = self.job.metadata.generation, self.world.now
        self.st.conditions = set_condition(self.st.conditions, type_, status, reason, message, generation=gen, now=now)  # type: ignore[arg-type]

    def stop(self, sid: str) -> None:
        """Ask the driver to stop the Ray job ``sid`` (the one place a StopJob is built)."""
        self.actions.append(StopJob(Handle.of(self.job), sid))

    def finish(self, requeue: float | None = None) -> Result:
        st, old = self.st, self.old
        st.observed_generation = self.job.metadata.generation
        if st.phase != old.phase:
            failed = st.phase in ("Failed", "Cancelled", "Preempted") or (
                st.phase == "Pending" and old.phase is not None
            )
            reason, message = _phase_reason(st)
            self.actions.append(RecordEvent("Warning" if failed else "Normal", reason, message))
        return Result(status=st, actions=self.actions, requeue_after=requeue)


def _ownership(p: _Pass) -> Result | None:
    """Never act on a Ray job another object owns: drop the id and admit this job afresh."""
    st, meta = p.st, p.job.metadata
    sid = st.submission_id
    if sid is not None and not owns_submission(p.job, sid):
        legacy = sid.startswith(f"corral-{meta.namespace or 'default'}-{meta.name}-")
        p.actions.append(
            RecordEvent(
                "Warning",
                "ForeignSubmissionIgnored",
                f"status.submissionId {sid[:100]!r} does not name this FineTuneJob ({meta.namespace}/{meta.name}); "
                + (
                    "it has the format of earlier versions (corral-<namespace>-<name>-<generation>, which two "
                    "objects can share), so it is neither followed nor stopped: if that Ray job still runs, stop "
                    "it by hand (`ray job stop <id>`, or delete its RayJob); this job is submitted afresh"
                    if legacy
                    else "ignored"
                ),
            )
        )
        if st.phase not in ("Succeeded", "Failed", "Cancelled"):  # a finished job stays finished
            sid = st.submission_id = None
            if st.phase in ("Admitted", "Running"):
                st.phase = "Pending"
    own = sid is not None and owns_submission(p.job, sid)
    p.sid = sid
    job = p.world.job
    p.ray_job = job if job is not None and own and job.submission_id == sid else None
    return None


def _finalizer(p: _Pass) -> Result | None:
    """Deletion: stop the Ray job, then let the object go. Otherwise: hold it with the finalizer."""
    meta = p.job.metadata
    if meta.deletion_timestamp is None:
        _append(p.actions, ensure_finalizer("FineTuneJob", meta))
        return None
    ray_job = p.ray_job
    if ray_job is not None and ray_job.active:
        p.stop(ray_job.submission_id)
        p.st.phase = "Cancelled"
        p.cond("Running", "False", "Deleted", f"stopping Ray job {ray_job.submission_id}: the FineTuneJob is deleted")
        return p.finish(p.follow_seconds)
    _append(p.actions, release_finalizer("FineTuneJob", meta))
    return Result(status=p.old, actions=p.actions)


def _fold_training(p: _Pass) -> Result | None:
    """Fold the events file into progress, metrics, checkpoints, cost and restarts."""
    st, training = p.st, p.world.training
    if training is None:
        return None
    st.progress = training.progress or st.progress
    st.metrics = training.metrics or st.metrics
    st.checkpoints = list(training.checkpoints) or st.checkpoints
    if training.cost is not None:
        estimated = st.cost.estimated_usd if st.cost is not None else None
        st.cost = training.cost.model_copy(update={"estimated_usd": estimated})
    if training.resumed_from_step is not None:
        st.resumed_from_step = training.resumed_from_step
    if training.evaluation is not None:
        st.evaluation = training.evaluation
    if len(training.restarts) > st.restarts:
        for restart in training.restarts[st.restarts :]:
            p.resumed_note = _restart_message(restart)
            p.actions.append(RecordEvent("Warning", "TrainingResumed", p.resumed_note))
        st.restarts = len(training.restarts)
    return None


def _finished(p: _Pass) -> Result | None:
    """Done: keep the children in place (a crash may have cut the last pass short)."""
    if p.st.phase == "Succeeded":
        _complete_progress(p.st)
        p.actions.extend(_success_children(p.job, p.world, p.st))
        return p.finish()
    if p.st.phase in ("Failed", "Cancelled") and p.sid is not None:
        return p.finish()
    return None


def _suspend(p: _Pass) -> Result | None:
    """Suspended: stop, and resume from the checkpoint once unset.

    Its GPUs stay held until Ray says the run has stopped, as after a preemption.
    """
    if not p.job.spec.suspend:
        return None
    st, ray_job = p.st, p.ray_job
    stopping = ray_job is not None and ray_job.active
    if ray_job is not None and stopping:
        p.stop(ray_job.submission_id)
    elif st.placement is not None and st.placement.gpus:
        st.placement = released(st.placement, "released while suspended; unset spec.suspend to resume")
    st.phase = "Suspended"
    p.cond("Running", "False", "Suspended", "spec.suspend is set; unset it to resume from the last checkpoint")
    return p.finish(p.follow_seconds if stopping else None)


def _release_preempted(p: _Pass) -> Result | None:
    """Preempted: the run is stopped; its GPUs stay held until Ray says it has stopped."""
    st, ray_job = p.st, p.ray_job
    if not (st.phase == "Preempted" and st.placement is not None and st.placement.gpus):
        return None
    if ray_job is not None and ray_job.active:
        p.stop(ray_job.submission_id)
        return p.finish(p.follow_seconds)
    if ray_job is not None and ray_job.status == "SUCCEEDED":
        st.phase = "Running"  # it finished before the stop landed: follow it to success below
    else:
        message = f"released after preemption; {resume_note(p.job, st)} when re-admitted"
        st.placement = released(st.placement, message)
    return None


def _wind_down(p: _Pass) -> Result | None:
    """Admission is due (first time, or resuming): wait until a stopped run has wound down."""
    if p.sid is not None and p.st.phase not in ("Suspended", "Preempted"):
        return None
    if p.ray_job is not None and p.ray_job.active:
        return p.finish(p.follow_seconds)  # the stopped run is still winding down
    p.admitting = True
    return None


def _refuse(p: _Pass, refusal: _Refusal) -> Result:
    """Not admitted: Pending waits (a preempted job stays Preempted), Failed needs a spec change."""
    if refusal.phase != "Pending" or p.st.phase != "Preempted":
        p.st.phase = refusal.phase  # type: ignore[assignment]
    p.cond("Admitted", "False", refusal.reason, refusal.message)
    if refusal.phase == "Failed":
        p.cond("Failed", "True", refusal.reason, refusal.message)
    return p.finish()


def _references(p: _Pass) -> Result | None:
    """While admitting: the base Model and the Datasets exist and are Ready."""
    if not p.admitting:
        return None
    checked = _check_references(p.job, p.world)
    if isinstance(checked, _Refusal):
        return _refuse(p, checked)
    p.refs = checked
    return None


def _license(p: _Pass) -> Result | None:
    """While admitting: the lineage of the output model and the license policy allow the job."""
    if p.refs is None:
        return None
    job, world = p.job, p.world
    base, datasets = p.refs
    training = [datasets[d.name] for d in job.spec.datasets]
    try:
        lineage = job_lineage(
            base,
            world.models,
            training,
            output_model_name(job),
            "adapter" if output_type(job) == "adapter" else "finetune",
        )
    except LineageError as exc:
        return _refuse(p, _Refusal("Pending" if exc.reason == "BaseModelNotFound" else "Failed", exc.reason, str(exc)))
    decision = check_policy(lineage, job.spec.intended_use)
    if not decision.allowed:
        return _refuse(p, _Refusal("Failed", decision.reason, decision.message))
    p.policy_message = decision.message
    return None


def _admit(p: _Pass) -> Result | None:
    """While admitting: place the job on a pool (placement and estimated cost), or keep it Pending."""
    if p.refs is None:
        return None
    job, world = p.job, p.world
    base, datasets = p.refs
    chosen = job.status.model_copy(update={"hyperparameters": choose(job, base, datasets).status})
    decision = place_job(
        job.model_copy(update={"status": chosen}), base, datasets, world.pools, world.allocations, queue=world.queue
    )
    if not decision.admitted:
        return _refuse(p, _Refusal("Pending", decision.reason, decision.message))
    if decision.preempt:  # admitted once the victims' Ray jobs have stopped and their GPUs are free
        return _refuse(p, _Refusal("Pending", "Preempting", preempting_message(decision)))
    pool = next((x for x in world.pools if x.metadata.name == decision.pool), None)
    price = pool.spec.price_per_gpu_hour if pool is not None else "0"
    p.placed = FineTuneJobStatus(
        placement=decision.placement(),
        cost=JobCost(estimated_usd=str(decision.cost_usd) if decision.cost_usd is not None else None),
    )
    p.admission = _Admission(base, datasets, price, decision.message, p.policy_message, pool)
    return None


def _submit(p: _Pass) -> Result | None:
    """Admitted: write the submission id, JOB.json, and submit the Ray job."""
    admission, placed, st, job = p.admission, p.placed, p.st, p.job
    if admission is None or placed is None:
        return None
    new_sid = submission_id(job, st.preemptions)
    st.submission_id = new_sid
    st.placement = placed.placement
    if st.cost is None or st.cost.estimated_usd is None:
        base_cost = st.cost or JobCost()
        st.cost = base_cost.model_copy(update={"estimated_usd": placed.cost.estimated_usd if placed.cost else None})
    reason, note = "Submitted", ""
    if st.phase == "Preempted":
        reason = "Resubmitted"
        note = f" (run {st.preemptions + 1}, after {st.preemptions} preemption(s); {resume_note(job, st)})"
    st.phase = "Admitted"
    st.hyperparameters = choose(job, admission.base, admission.datasets).status
    st.conditions = [c for c in st.conditions if c.type != "Failed"]
    p.cond(
        "Admitted",
        "True",
        reason,
        f"Submitted Ray job {new_sid}{note}: {admission.message}. {admission.policy_message}",
    )
    p.cond("Running", "False", "JobPending", f"Ray job {new_sid} is starting")
    p.actions.extend(_submit_actions(job, p.world, admission, new_sid))
    return p.finish(p.follow_seconds)


def _preempt(p: _Pass) -> Result | None:
    """A queued request that outranks this job needs its GPUs (see _preemption)."""
    st, ray_job = p.st, p.ray_job
    if st.phase not in ("Admitted", "Running") or (ray_job is not None and not ray_job.active):
        return None
    by = preemptor_of(p.job, p.world.pools, p.world.allocations, p.world.queue)
    if by is None:
        return None
    message = preempted_message(p.job, st, by)
    st.phase = "Preempted"
    st.preemptions += 1
    p.cond("Admitted", "False", "Preempted", message)
    p.cond("Running", "False", "Preempted", message)
    if ray_job is not None:
        p.stop(ray_job.submission_id)
        return p.finish(p.follow_seconds)
    st.placement = released(st.placement, message)  # nothing runs: the GPUs are free now
    return p.finish()


def _resubmit(p: _Pass) -> Result | None:
    """The Ray job is unknown: submit the same id again; training resumes from its newest checkpoint.

    It was submitted by a pass that crashed before the job reached Ray, or the Ray that ran it
    is gone (the driver never leaves a second head running it).
    """
    sid, st, world = p.sid, p.st, p.world
    if p.ray_job is not None or sid is None:
        return None
    checked = _check_references(p.job, world)
    if isinstance(checked, _Refusal):
        st.phase = "Failed"
        p.cond("Failed", "True", checked.reason, f"cannot resubmit Ray job {sid}: {checked.message}")
        return p.finish()
    if p.old.phase in ("Admitted", "Running"):
        step = st.checkpoints[-1].step if st.checkpoints else 0
        message = (
            f"Ray job {sid} is unknown to the Ray that runs now (the one that ran it is gone); "
            f"submitted it again, resuming from checkpoint step {step}"
        )
        p.actions.append(RecordEvent("Warning", "Resubmitted", message))
        p.cond("Running", "False", "Resubmitted", message)
    base, datasets = checked
    pool = next((x for x in world.pools if st.placement and x.metadata.name == st.placement.pool), None)
    admission = _Admission(base, datasets, pool.spec.price_per_gpu_hour if pool else "0", "", "", pool)
    p.actions.extend(_submit_actions(p.job, world, admission, sid))
    return p.finish(p.follow_seconds)


def _follow(p: _Pass) -> Result | None:
    """Follow the Ray job: pending, running (deadline), succeeded (children), failed, stopped."""
    ray_job, st, now, world = p.ray_job, p.st, p.world.now, p.world
    if ray_job is None:
        return None
    sid = ray_job.submission_id
    reattached = None
    if world.first_look and ray_job.active and p.old.phase in ("Admitted", "Running"):
        step = st.progress.step if st.progress is not None else 0
        reattached = f"Re-attached to Ray job {sid} (step {step}) after a control plane restart; it was not resubmitted"
        p.actions.append(RecordEvent("Normal", "Reattached", reattached))
    if ray_job.status == "PENDING":
        st.phase = "Admitted"
        if ray_job.reason:  # the backend says why it waits (KubeRay: Pending in Kueue, Retrying)
            p.cond("Running", "False", ray_job.reason, ray_job.message or reattached or f"Ray job {sid} is pending")
        else:
            p.cond("Running", "False", "JobPending", reattached or f"Ray job {sid} is pending")
        return p.finish(p.follow_seconds)
    if ray_job.status == "RUNNING":
        st.phase = "Running"
        st.start_time = st.start_time or _ts(ray_job.start_time, now)
        p.cond("Running", "True", *_running_reason(st, sid, reattached, p.resumed_note))
        deadline = p.job.spec.active_deadline_seconds
        if deadline is not None and (now - st.start_time).total_seconds() > deadline:
            p.stop(sid)
            st.phase = "Failed"
            st.completion_time = now
            message = f"the job ran longer than activeDeadlineSeconds={deadline}; Ray job {sid} stopped"
            p.cond("Running", "False", "DeadlineExceeded", message)
            p.cond("Failed", "True", "DeadlineExceeded", message)
            return p.finish()
        return p.finish(p.follow_seconds)
    st.completion_time = st.completion_time or _ts(ray_job.end_time, now)
    st.start_time = st.start_time or _ts(ray_job.start_time, now)
    if ray_job.status == "SUCCEEDED":
        st.phase = "Succeeded"
        st.output_model = output_model_name(p.job)
        p.cond("Running", "False", "JobSucceeded", f"Ray job {sid} succeeded")
        p.cond("Succeeded", "True", "JobSucceeded", f"training finished; output Model {st.output_model}")
        _complete_progress(st)
        p.actions.extend(_success_children(p.job, world, st))
        return p.finish()
    training = world.training
    if ray_job.status == "FAILED":
        st.phase = "Failed"
        # The training's own reason first (it knows best), then the backend's (KubeRay: DeadlineExceeded...).
        trained = training.failed_reason if training else None
        reason = trained or ray_job.reason or "JobFailed"
        told = None if trained else (ray_job.message if ray_job.reason else None)
        message = told or (training.failed_message if training else None) or ray_job.message or f"Ray job {sid} failed"
        p.cond("Running", "False", "JobFailed", f"Ray job {sid} failed")
        p.cond("Failed", "True", reason, message)
        return p.finish()
    st.phase = "Cancelled"  # STOPPED by someone else
    p.cond("Running", "False", "JobStopped", f"Ray job {sid} was stopped outside Corral")
    message = f"Ray job {sid} was stopped outside Corral; create a new FineTuneJob to retry"
    p.cond("Failed", "True", "JobStopped", message)
    return p.finish()


_STEPS: tuple[Step[_Pass], ...] = (
    _ownership,
    _finalizer,
    _fold_training,
    _finished,
    _suspend,
    _release_preempted,
    _wind_down,
    _references,
    _license,
    _admit,
    _submit,
    _preempt,
    _resubmit,
    _follow,
)
"""The steps of a pass, in order; the first to return a Result ends it."""


def reconcile_finetunejob(job: FineTuneJob, world: FineTuneJobWorld) -> Result:
    """Reconcile one FineTuneJob by running its steps (:data:`_STEPS`) in order.

    Args:
        job: The job.
        world: Its references, pools, the Ray job of ``status.submissionId`` and its events.

    Returns:
        The new status and the actions: add the finalizer, write JOB.json and submit, stop
        (suspend, delete, deadline), create the output Model, create or update the
        deploy-on-success ModelDeployment, events on phase changes.
    """
    return run_steps(_STEPS, _Pass(job=job, world=world, old=job.status, st=job.status.model_copy(deep=True)))


def _append(actions: list[Action], action: Action | None) -> None:
    if action is not None:
        actions.append(action)


def _success_children(job: FineTuneJob, world: FineTuneJobWorld, st: FineTuneJobStatus) -> list[Action]:
    actions: list[Action] = []
    name = output_model_name(job)
    base = world.models.get(job.spec.base_model.name)
    if name not in world.models and base is not None:
        uri = (world.training.completed_output_uri if world.training else None) or job_files(job, world.settings).output
        actions.append(CreateObject(output_model(job, base, uri)))
    target = job.spec.deploy_on_success
    if target is not None:
        decision = gate_decision(target.gate, st.evaluation)
        old = next((c for c in st.conditions if c.type == "Promoted"), None)
        st.conditions = set_condition(
            st.conditions,
            "Promoted",
            "True" if decision.promote else "False",
            decision.reason,
            decision.message,
            generation=job.metadata.generation,
            now=world.now,
        )
        if old is None or old.reason != decision.reason:
            kind: Literal["Normal", "Warning"] = "Normal" if decision.reason == "EvaluationPassed" else "Warning"
            verb = "Promoting" if decision.promote else "Not promoting"
            actions.append(
                RecordEvent(
                    kind, decision.reason, f"{verb} {name} to ModelDeployment {target.deployment}: {decision.message}"
                )
            )
        if decision.promote:
            actions.extend(deployment_actions(job, world.deployments.get(target.deployment)))
    elif st.evaluation is not None and not any(c.type == "Evaluated" for c in st.conditions):
        actions.append(RecordEvent("Normal", "Evaluated", evaluation_summary(st.evaluation)))
        st.conditions = set_condition(
            st.conditions,
            "Evaluated",
            "True",
            "Evaluated",
            evaluation_summary(st.evaluation),
            generation=job.metadata.generation,
            now=world.now,
        )
    return actions


def _restart_message(restart: TrainingRestart) -> str:
    at = restart.stopped_at_step
    stopped = f"after step {at}" if at is not None else "before its first step"
    pause = f"; steps went on {restart.seconds:.1f} s after the last one" if restart.seconds is not None else ""
    return (
        f"Training restarted (a worker lost, a preemption or a Ray restart): the run stopped {stopped} "
        f"and resumed from checkpoint step {restart.resumed_from_step}{pause}"
    )


def _running_reason(st: FineTuneJobStatus, sid: str, reattached: str | None, resumed: str | None) -> tuple[str, str]:
    """The Running condition's reason: a recovery stays told until the job leaves Running."""
    if reattached is not None:
        return "Reattached", reattached
    if resumed is not None:
        return "Resumed", resumed
    current = next((c for c in st.conditions if c.type == "Running"), None)
    if current is not None and current.status == "True" and current.reason in ("Reattached", "Resumed"):
        return current.reason, current.message
    return "JobRunning", f"Ray job {sid} is running"


def _complete_progress(st: FineTuneJobStatus) -> None:
    if st.progress is not None and st.progress.total_steps:
        st.progress = st.progress.model_copy(update={"percent": 100, "eta_seconds": 0})


def _phase_reason(st: FineTuneJobStatus) -> tuple[str, str]:
    order = {
        "Succeeded": "Succeeded",
        "Failed": "Failed",
        "Cancelled": "Running",
        "Suspended": "Running",
        "Preempted": "Admitted",
        "Running": "Running",
        "Admitted": "Admitted",
        "Pending": "Admitted",
    }
    wanted = order.get(st.phase or "", "Admitted")
    for condition in st.conditions:
        if condition.type == wanted:
            return condition.reason, condition.message
    return st.phase or "Pending", f"phase {st.phase}"
