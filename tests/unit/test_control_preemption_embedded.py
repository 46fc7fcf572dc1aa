"""Preemption end to end through the embedded control plane (SQLite store, in-memory driver, real loop).

A preemptible fine-tune runs on a one-node pool; a deployment arrives that needs the same
GPUs; the job is stopped (and only then is the deployment deployed); the deployment is
deleted; the job is re-admitted and re-submitted with the same job file, so training resumes
from its checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from corral.api.v1alpha1 import (
    Dataset,
    DatasetSpec,
    FineTuneJob,
    FineTuneJobSpec,
    GPUPool,
    GPUPoolSpec,
    LicenseSpec,
    Model,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelSpec,
    ObjectMeta,
)
from corral.control import job_files
from corral.drivers import FakeDriver, Handle
from corral.embedded import EmbeddedControlPlane
from corral.store import NotFound, SqliteStore
from tests.support.poll import wait_until

NS = "team-a"
DOLLY = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "dolly.jsonl"
T = TypeVar("T")


class RecordingDriver(FakeDriver):
    """FakeDriver that also logs job stops and Serve deploys in the order they happen."""

    def __init__(self) -> None:
        super().__init__(auto_ready=True)
        self.log: list[tuple[str, str]] = []

    def stop_job(self, handle: Handle, submission_id: str) -> bool:
        stopped = super().stop_job(handle, submission_id)
        if stopped:
            self.log.append(("stop", submission_id))
        return stopped

    def deploy_serve(self, handle: Handle, config: Mapping[str, Any]) -> None:
        super().deploy_serve(handle, config)
        self.log += [("deploy", str(app["name"])) for app in config.get("applications", [])]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Poll ``probe`` until it returns something truthy (a deadline, never a fixed sleep)."""
    return wait_until(what, probe, timeout, every=0.05)


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[EmbeddedControlPlane, RecordingDriver]]:
    driver = RecordingDriver()
    control = EmbeddedControlPlane(tmp_path / "data", driver=driver, port=0, resync_seconds=0.1).start()
    try:
        yield control, driver
    finally:
        control.stop()


def _base_model(folder: Path) -> Model:
    folder.mkdir(parents=True)
    config = {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "vocab_size": 256,
        "max_position_embeddings": 512,
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"w" * 64)
    return Model(
        metadata=ObjectMeta(name="base", namespace=NS),
        spec=ModelSpec(uri=folder.as_uri(), license=LicenseSpec(name="Apache-2.0", commercial_use="allowed")),
    )


def _events(path: Path, *lines: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(line) + "\n" for line in lines)


def test_deployment_preempts_a_running_finetune_which_resumes_after(
    plane: tuple[EmbeddedControlPlane, RecordingDriver], tmp_path: Path
) -> None:
    control, driver = plane
    store = control.store
    assert isinstance(store, SqliteStore)
    store.create(
        GPUPool(
            metadata=ObjectMeta(name="a100"),
            spec=GPUPoolSpec(
                accelerator_type="nvidia-a100-80gb",
                gpus_per_node=4,
                gpu_memory="80Gi",
                max_nodes=1,
                price_per_gpu_hour="2.50",
            ),
        )
    )
    store.create(_base_model(tmp_path / "base"))
    store.create(
        Dataset(
            metadata=ObjectMeta(name="support", namespace=NS),
            spec=DatasetSpec(uri=DOLLY.as_uri(), license=LicenseSpec(name="CC-BY-SA-3.0", commercial_use="allowed")),
        )
    )
    store.create(
        FineTuneJob(
            metadata=ObjectMeta(name="bot", namespace=NS),
            spec=FineTuneJobSpec.model_validate(
                {
                    "baseModel": {"name": "base"},
                    "datasets": [{"name": "support"}],
                    "resources": {"workers": 1, "gpusPerWorker": 4, "preemptible": True},
                }
            ),
        )
    )

    def job() -> FineTuneJob:
        return store.get(FineTuneJob, NS, "bot")

    # 1. The job is admitted on the pool and runs; it has written a checkpoint at step 40.
    first = wait_for("the job's submission", lambda: driver.submitted[:1])[0]
    assert first == "corral-team-a.bot-1"
    assert job().status.placement is not None and job().status.placement.gpus == 4
    events = Path(job_files(job(), control.settings).events.removeprefix("file://"))
    _events(
        events,
        {"type": "started", "run_name": "team-a-bot", "resumed_from_step": 0, "total_steps": 100, "world_size": 1},
        {"type": "checkpoint", "step": 40, "uri": "file:///ckpt/team-a-bot/checkpoint_000040"},
    )
    driver.set_job(first, "RUNNING")
    wait_for("the job to run", lambda: job().status.phase == "Running" and job().status.checkpoints)

    # 2. A deployment (priority 100 by default) arrives needing the same 4 GPUs.
    store.create(
        ModelDeployment(
            metadata=ObjectMeta(name="chat", namespace=NS),
            spec=ModelDeploymentSpec.model_validate({"model": {"name": "base"}, "resources": {"gpusPerReplica": 4}}),
        )
    )

    # 3. The job is preempted: its Ray job is stopped, and only then is the deployment deployed.
    wait_for("the job to be preempted", lambda: ("stop", first) in driver.log)
    deployed = wait_for(
        "the deployment to be Ready",
        lambda: (d := store.get(ModelDeployment, NS, "chat")).status.phase == "Ready" and d,
    )
    assert driver.log.index(("stop", first)) < driver.log.index(("deploy", "team-a-chat"))
    assert deployed.status.placement is not None and deployed.status.placement.gpus == 4
    preempted = job()
    assert preempted.status.phase == "Preempted" and preempted.status.preemptions == 1
    assert preempted.status.placement is not None and preempted.status.placement.gpus == 0
    message = (
        "preempted by ModelDeployment/team-a/chat (priority 100) to free 4 x nvidia-a100-80gb in pool a100; "
        "resumes from checkpoint step 40 when capacity returns"
    )
    running = next(c for c in preempted.status.conditions if c.type == "Running")
    assert (running.reason, running.message) == ("Preempted", message)
    warnings = [(e.type, e.reason, e.message) for e in store.list_events("FineTuneJob", NS, "bot")]
    assert ("Warning", "Preempted", message) in warnings
    chat_reasons = [e.reason for e in store.list_events("ModelDeployment", NS, "chat")]
    assert chat_reasons[:1] == ["Preempting"]
    pool = wait_for(
        "the pool's status", lambda: (p := store.get(GPUPool, None, "a100")).status.allocated_gpus == 4 and p
    )
    assert [(a.namespace, a.gpus) for a in pool.status.allocations] == [(NS, 4)]
    assert driver.submitted == [first]  # the job waits: nothing re-submitted while the deployment holds the GPUs

    # 4. The deployment is deleted: capacity returns and the job is re-submitted with the same job file.
    store.delete(ModelDeployment, NS, "chat")
    wait_for("the deployment to go", lambda: _gone(store, "chat"))
    second = wait_for("the re-submission", lambda: driver.submitted[1:2])[0]
    assert second == "corral-team-a.bot-1-r1"
    assert driver.submit_calls[-1][1] == driver.submit_calls[0][1]  # same entrypoint, same job file
    resumed = wait_for("the job to be re-admitted", lambda: (j := job()).status.submission_id == second and j)
    admitted = next(c for c in resumed.status.conditions if c.type == "Admitted")
    assert admitted.reason == "Resubmitted"
    assert "after 1 preemption(s); resumes from checkpoint step 40" in admitted.message
    assert resumed.status.placement is not None and resumed.status.placement.gpus == 4

    # 5. The new run resumes from the checkpoint, and the status says so.
    _events(
        events,
        {"type": "started", "run_name": "team-a-bot", "resumed_from_step": 40, "total_steps": 100, "world_size": 1},
    )
    driver.set_job(second, "RUNNING")
    final = wait_for(
        "the resumed run", lambda: (j := job()).status.phase == "Running" and j.status.resumed_from_step and j
    )
    assert final.status.resumed_from_step == 40 and final.status.preemptions == 1
    assert driver.submitted == [first, second] and driver.stopped == [first]


def _gone(store: SqliteStore, name: str) -> bool:
    try:
        store.get(ModelDeployment, NS, name)
    except NotFound:
        return True
    return False


def test_one_pass_never_books_the_same_gpus_twice(tmp_path: Path) -> None:
    """Two jobs want the same 4 GPUs in one pass: the second sees what the first took (the snapshot is a ledger)."""
    from corral.control import ControlSettings, Runner

    store = SqliteStore(tmp_path / "corral.db")
    store.create(
        GPUPool(
            metadata=ObjectMeta(name="a100"),
            spec=GPUPoolSpec(accelerator_type="nvidia-a100-80gb", gpus_per_node=4, gpu_memory="80Gi", max_nodes=1),
        )
    )
    store.create(_base_model(tmp_path / "base"))
    store.create(
        Dataset(
            metadata=ObjectMeta(name="support", namespace=NS),
            spec=DatasetSpec(uri=DOLLY.as_uri(), license=LicenseSpec(name="CC-BY-SA-3.0", commercial_use="allowed")),
        )
    )
    driver = FakeDriver()
    runner = Runner(store, driver, ControlSettings(artifact_root=(tmp_path / "artifacts").as_uri()))
    runner.run_once()  # the Model and the Dataset become Ready
    for name, suspend in (("one", True), ("two", False)):
        store.create(
            FineTuneJob(
                metadata=ObjectMeta(name=name, namespace=NS),
                spec=FineTuneJobSpec.model_validate(
                    {
                        "baseModel": {"name": "base"},
                        "datasets": [{"name": "support"}],
                        "resources": {"gpusPerWorker": 4},
                        "suspend": suspend,
                    }
                ),
            )
        )
        if suspend:
            runner.run_once()
            assert store.get(FineTuneJob, NS, name).status.phase == "Suspended"
    # "one" is unsuspended (a Suspended job is not queued); both are placed in the same pass, "one" first.
    store.patch(FineTuneJob, NS, "one", {"spec": {"suspend": False}})
    runner.run_once()
    one, two = (store.get(FineTuneJob, NS, n) for n in ("one", "two"))
    assert one.status.phase == "Admitted" and one.status.placement is not None and one.status.placement.gpus == 4
    assert two.status.phase == "Pending" and two.status.submission_id is None
    assert next(c for c in two.status.conditions if c.type == "Admitted").reason == "InsufficientCapacity"
    assert driver.submitted == ["corral-team-a.one-2"]
    runner.run_once()
    assert driver.submitted == ["corral-team-a.one-2"]
    store.close()
