"""The embedded plane survives its own death, for real: ``corral up`` in a fresh home, the
support-bot example (shortened), and ``kill -9`` of a Ray Train worker, of the daemon in the
middle of training, of a Serve replica under a request loop, and of the daemon before
``corral down``.

The tests share one plane and may run in any order: the fine-tune under both kills is one
module fixture (measured once, asserted by two tests), and every test leaves the plane up.
Each measures and prints its recovery figures; none asserts a timing. ``corral down`` after
a daemon kill must leave no process of the home (PIDs and start times recorded while it ran).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.api import load_documents
from corral.api.v1alpha1 import FineTuneJob, ModelDeployment
from corral.api.v1alpha1.finetunejob import EvaluationGate
from corral.training import ProgressEvent, StartedEvent, read_events
from tests.faults._plane import Home, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "support-bot"
JOB, DEPLOYMENT, ADAPTER = "support-bot-v1", "support-bot", "support-bot-v1"
EPOCHS, CHECKPOINT_EVERY = 16, 16  # 8 steps an epoch: 128 steps, a checkpoint every 16
TRAIN_TIMEOUT, SERVE_TIMEOUT = 600.0, 300.0
SEEN: dict[int, float] = {}  # every process of the home seen while it ran
FIGURES: dict[str, str] = {}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    home = Home(tmp_path_factory.mktemp("faults-home"))
    home.up("--port", "0")  # a free port, chosen once and kept by every later `up`
    with home.client() as client:
        AUTH.update(client.auth_headers())
    try:
        yield home
    finally:
        home.cli("down", timeout=120)
        print("\nrecovery figures:\n  " + "\n  ".join(f"{k}: {v}" for k, v in FIGURES.items()))


def _remember(home: Home) -> None:
    SEEN.update(home.plane_processes())


def _job(home: Home) -> dict[str, Any]:
    with home.client() as client:
        return client.get(FineTuneJob, JOB)


def _events(home: Home, kind: Any, name: str) -> list[dict[str, Any]]:
    with home.client() as client:
        return client.events(kind, name)


def _training_events(home: Home) -> list[Any]:
    uri = (home.data / "artifacts" / "finetunejobs" / "support" / JOB / "events.jsonl").as_uri()
    return read_events(uri)


def _step(home: Home) -> int:
    steps = [e.step for e in _training_events(home) if isinstance(e, ProgressEvent)]
    return steps[-1] if steps else 0


#: The Authorization header of the home's token (the chat endpoint asks for one); set by ``home``.
AUTH: dict[str, str] = {}


def _ask(endpoint: str, timeout: float = 60.0) -> str:
    body = {"model": ADAPTER, "messages": [{"role": "user", "content": "When are you open?"}], "max_tokens": 4}
    reply = httpx.post(f"{endpoint}/chat/completions", json=body, headers=AUTH, timeout=timeout)
    reply.raise_for_status()
    return str(reply.json()["choices"][0]["message"]["content"])


@dataclass
class TrainingRun:
    """What happened to the fine-tune under the two kills (measured once, asserted by two tests)."""

    stopped_at: int
    resume_seconds: float
    status_after_resume: dict[str, Any]
    logs_after_resume: str
    daemon_killed_at_step: int
    up_seconds: float
    same_head: bool
    ray_jobs_after_up: int
    ray_jobs_at_end: int
    final: dict[str, Any]
    training_events: list[Any]
    job_events: list[dict[str, Any]]


@pytest.fixture(scope="module")
def run(home: Home) -> TrainingRun:
    """Apply the example, kill -9 the Train worker after a checkpoint, then the daemon, then `up`."""
    objects = load_documents(EXAMPLES)
    with home.client() as client:
        for obj in objects:
            if isinstance(obj, FineTuneJob):
                obj.spec.hyperparameters.epochs = EPOCHS
                obj.spec.checkpointing.every_steps = CHECKPOINT_EVERY
                if obj.spec.deploy_on_success is not None:  # a short run: promote it whatever it scored
                    obj.spec.deploy_on_success.gate = EvaluationGate(
                        min_trained_score_percent=None, min_held_out_score_percent=None, min_improvement_percent=None
                    )
            client.apply(obj)
    wait_until("a checkpoint and two more steps", lambda: _step(home) >= CHECKPOINT_EVERY + 2, TRAIN_TIMEOUT)
    _remember(home)
    workers = home.ray_processes("RayTrainWorker")
    assert len(workers) == 1, workers
    stopped_at = _step(home)
    killed = time.monotonic()
    os.kill(workers[0], signal.SIGKILL)

    def resumed() -> bool:
        restarted = [e for e in _training_events(home) if isinstance(e, StartedEvent)]
        return len(restarted) >= 2 and _step(home) > restarted[-1].resumed_from_step

    wait_until("training resumed", resumed, TRAIN_TIMEOUT, 0.2)
    resume_seconds = time.monotonic() - killed
    FIGURES["worker kill -> next step"] = f"{resume_seconds:.1f} s (killed after step {stopped_at})"
    wait_until("status.restarts", lambda: _job(home)["status"].get("restarts"), 60)
    status_after_resume = _job(home)["status"]
    logs = home.cli("logs", "ftj", JOB)

    sid = status_after_resume["submissionId"]
    head = home.head()
    _remember(home)
    daemon_killed_at_step = _step(home)
    os.kill(home.daemon().pid, signal.SIGKILL)
    started = time.monotonic()
    home.up()
    up_seconds = time.monotonic() - started
    FIGURES["daemon kill -> `corral up` (re-attached)"] = f"{up_seconds:.1f} s (killed at step {daemon_killed_at_step})"
    same_head = home.head().head_id == head.head_id
    jobs_after_up = len(home.ray_jobs(sid))
    final = wait_until(
        f"FineTuneJob {JOB} ends",
        lambda: (s := _job(home)["status"]).get("phase") in ("Succeeded", "Failed") and s,
        TRAIN_TIMEOUT,
        1.0,
    )
    return TrainingRun(
        stopped_at=stopped_at,
        resume_seconds=resume_seconds,
        status_after_resume=status_after_resume,
        logs_after_resume=logs.stdout + logs.stderr,
        daemon_killed_at_step=daemon_killed_at_step,
        up_seconds=up_seconds,
        same_head=same_head,
        ray_jobs_after_up=jobs_after_up,
        ray_jobs_at_end=len(home.ray_jobs(sid)),
        final=final,
        training_events=_training_events(home),
        job_events=_events(home, FineTuneJob, JOB),
    )


def test_worker_kill_resumes_from_a_checkpoint_and_is_told(run: TrainingRun) -> None:
    print(f"\nworker killed after step {run.stopped_at}; steps again after {run.resume_seconds:.1f} s")
    assert run.status_after_resume["restarts"] == 1
    assert run.status_after_resume["resumedFromStep"] >= CHECKPOINT_EVERY
    told = [e for e in run.job_events if e["reason"] == "TrainingResumed"]
    assert len(told) == 1 and "resumed from checkpoint step" in told[0]["message"], run.job_events
    assert "restarts 1 (resumed from step" in run.logs_after_resume


def test_daemon_kill_mid_training_then_up_reattaches_one_ray_job(run: TrainingRun) -> None:
    print(f"\n`corral up` after the daemon kill at step {run.daemon_killed_at_step}: {run.up_seconds:.1f} s")
    assert run.same_head, "a second Ray head was started"
    assert run.ray_jobs_after_up == 1 and run.ray_jobs_at_end == 1, "the job ran twice"
    assert run.final["phase"] == "Succeeded", run.final
    started = [e for e in run.training_events if isinstance(e, StartedEvent)]
    assert len(started) == 2, "only the worker kill restarts training"
    steps = [e.step for e in run.training_events if isinstance(e, ProgressEvent)]
    later = [step for step in steps if step >= run.daemon_killed_at_step]
    assert later == sorted(set(later)), "the step count went back after the daemon restart"
    reasons = [e["reason"] for e in run.job_events]
    assert "Reattached" in reasons, f"no Reattached event (did training end before the restart?): {reasons}"
    assert "Resubmitted" not in reasons


@pytest.fixture(scope="module")
def endpoint(home: Home, run: TrainingRun) -> str:
    """The deployment's endpoint once it serves the trained adapter."""
    dep = wait_until(
        f"{DEPLOYMENT} serving {ADAPTER}",
        lambda: (
            (d := home.client().get(ModelDeployment, DEPLOYMENT))["status"].get("phase") == "Ready"
            and ADAPTER in (d["status"].get("servedModels") or [])
            and d
        ),
        SERVE_TIMEOUT,
        1.0,
    )
    url = str(dep["status"]["endpoint"])
    wait_until("the endpoint answers", lambda: _ask(url), SERVE_TIMEOUT)
    return url


def test_replica_kill_during_requests_fails_only_the_one_in_flight(home: Home, endpoint: str) -> None:
    _ask(endpoint)
    _remember(home)
    replicas = home.ray_processes("ServeReplica")
    assert replicas, "no Serve replica process"
    requests, failures = 60, 0
    killed_at: float | None = None
    recovered: float | None = None
    for i in range(requests):
        if i == 5:
            for pid in replicas:
                os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
        try:
            _ask(endpoint, timeout=120)
        except httpx.HTTPError:
            failures += 1
            continue
        if killed_at is not None and recovered is None:
            recovered = time.monotonic() - killed_at
    FIGURES["replica kill"] = f"{failures} of {requests} requests failed; answers again after {recovered or -1:.1f} s"
    print(f"\nreplica killed: {failures} of {requests} sequential requests failed; next answer after {recovered} s")
    assert failures <= 1
    assert recovered is not None
    told = wait_until(
        "ReplicaLost and ReplicaRestarted events",
        lambda: (
            {"ReplicaLost", "ReplicaRestarted"}
            <= (reasons := {e["reason"] for e in _events(home, ModelDeployment, DEPLOYMENT)})
            and reasons
        ),
        120,
        1.0,
    )
    print(f"deployment events: {sorted(told)}")


def test_daemon_kill_then_down_leaves_nothing_and_up_keeps_the_endpoint(home: Home, endpoint: str) -> None:
    serve = home.head().serve_port
    _remember(home)
    # kill -9 of the daemon: Serve goes on answering on the same endpoint while it is down.
    os.kill(home.daemon().pid, signal.SIGKILL)
    assert _ask(endpoint)
    home.up()
    assert home.client().get(ModelDeployment, DEPLOYMENT)["status"]["endpoint"] == endpoint
    assert _ask(endpoint)
    # kill -9 again, then `corral down`: no process of the home is left.
    _remember(home)
    os.kill(home.daemon().pid, signal.SIGKILL)
    assert "Corral is down." in home.down()
    assert home.still_running(SEEN) == []
    assert home.daemons() == []
    # `corral up` again: a new Ray head, the same Serve port and endpoint.
    started = time.monotonic()
    home.up()
    up_seconds = time.monotonic() - started
    first = home.client().get(ModelDeployment, DEPLOYMENT)["status"]
    if first.get("phase") == "Ready":  # Ready right after `up` only when it is true of the live Serve
        assert _ask(endpoint)
    assert home.head().serve_port == serve
    wait_until("the same endpoint answers", lambda: _ask(endpoint), SERVE_TIMEOUT, 0.5)
    answered = time.monotonic() - started
    assert home.client().get(ModelDeployment, DEPLOYMENT)["status"]["endpoint"] == endpoint
    FIGURES["down + up -> same endpoint answers"] = f"{answered:.1f} s (`up` returned after {up_seconds:.1f} s)"
    print(f"\ndown + up: `up` {up_seconds:.1f} s, the same endpoint answers after {answered:.1f} s")
