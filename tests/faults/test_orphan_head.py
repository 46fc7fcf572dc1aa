"""A Ray head left behind that cannot be re-attached is stopped by its recorded PIDs, and the
job is resubmitted once: never two Ray jobs with one submission id.

``kill -9`` of the daemon mid-training, then its head's token file is removed (the head
still runs, but the next daemon cannot talk to it); ``corral up`` must stop every process of
that head before starting a new one, and the job resumes there from its checkpoint.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.api import load_documents
from corral.api.v1alpha1 import FineTuneJob, ModelDeployment
from corral.training import ProgressEvent, StartedEvent, read_events
from tests.faults._plane import Home, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "support-bot"
JOB = "support-bot-v1"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    home = Home(tmp_path)
    home.up("--port", "0")
    try:
        yield home
    finally:
        home.cli("down", timeout=120)


def _events(home: Home) -> list[Any]:
    return read_events((home.data / "artifacts" / "finetunejobs" / "support" / JOB / "events.jsonl").as_uri())


def _step(home: Home) -> int:
    steps = [e.step for e in _events(home) if isinstance(e, ProgressEvent)]
    return steps[-1] if steps else 0


def test_an_orphaned_head_that_cannot_be_adopted_is_stopped_and_the_job_resubmitted_once(home: Home) -> None:
    with home.client() as client:
        for obj in load_documents(EXAMPLES):
            if isinstance(obj, ModelDeployment):
                continue
            if isinstance(obj, FineTuneJob):
                obj.spec.hyperparameters.epochs = 8
                obj.spec.checkpointing.every_steps = 16
                obj.spec.deploy_on_success = None
            client.apply(obj)
    wait_until("a checkpoint and two more steps", lambda: _step(home) >= 18, 600)
    with home.client() as client:
        sid = client.get(FineTuneJob, JOB)["status"]["submissionId"]
    old_head = home.head()
    old_processes = home.plane_processes()
    os.kill(home.daemon().pid, signal.SIGKILL)
    Path(old_head.token_path).unlink()
    started = time.monotonic()
    home.up()
    print(f"\n`corral up` with an orphaned head it cannot adopt: {time.monotonic() - started:.1f} s")
    assert home.head().head_id != old_head.head_id
    old_only = {pid: t for pid, t in old_processes.items() if pid not in home.plane_processes()}
    assert home.still_running(old_only) == [], "the orphaned head still runs"
    with home.client() as client:
        final = wait_until(
            f"FineTuneJob {JOB} ends",
            lambda: (s := client.get(FineTuneJob, JOB)["status"]).get("phase") in ("Succeeded", "Failed") and s,
            600,
            1.0,
        )
        reasons = [e["reason"] for e in client.events(FineTuneJob, JOB)]
    assert final["phase"] == "Succeeded", final
    assert len(home.ray_jobs(sid)) == 1
    assert "Resubmitted" in reasons, reasons
    started_events = [e for e in _events(home) if isinstance(e, StartedEvent)]
    resumed = started_events[-1].resumed_from_step
    assert len(started_events) == 2 and resumed > 0 and resumed % 16 == 0, started_events
