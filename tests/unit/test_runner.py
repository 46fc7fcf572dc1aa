"""The embedded loop on a real SQLite store and an in-memory driver: crash anywhere, restart, nothing twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from corral.api.v1alpha1 import (
    Dataset,
    DatasetSpec,
    FineTuneJob,
    FineTuneJobSpec,
    LicenseSpec,
    Model,
    ModelDeployment,
    ModelSpec,
    ObjectMeta,
    Resource,
)
from corral.control import FINALIZER, ControlSettings, Runner, job_files
from corral.drivers import FakeDriver, Handle, Owner
from corral.store import NotFound, SqliteStore
from tests.support.poll import wait_until

NS = "team-a"
DOLLY = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "dolly.jsonl"


class Crash(BaseException):
    """The process dies here (not an Exception: the runner must not swallow it)."""


class CrashingDriver(FakeDriver):
    def __init__(self) -> None:
        super().__init__(auto_ready=True)
        self.crash_before_submit = 0
        self.crash_after_submit = 0

    def submit_job(
        self, handle: Handle, submission_id: str, entrypoint: str, runtime_env: Any = None, resources: Any = None
    ) -> None:
        if self.crash_before_submit:
            self.crash_before_submit -= 1
            raise Crash("killed before the job reached Ray")
        super().submit_job(handle, submission_id, entrypoint, runtime_env, resources)
        if self.crash_after_submit:
            self.crash_after_submit -= 1
            raise Crash("killed after the job reached Ray")


class CrashingStore(SqliteStore):
    crash_on_status = 0

    def _replace_status(self, cls: type[Resource], obj: Resource) -> Resource:
        if self.crash_on_status and obj.kind == "FineTuneJob":
            self.crash_on_status -= 1
            raise Crash("killed while writing status")
        return super()._replace_status(cls, obj)


@pytest.fixture
def env(tmp_path: Path) -> tuple[CrashingStore, CrashingDriver, ControlSettings]:
    store = CrashingStore(tmp_path / "corral.db")
    settings = ControlSettings(artifact_root=(tmp_path / "artifacts").as_uri(), python="python")
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 512}))
    (base / "model.safetensors").write_bytes(b"w" * 64)
    store.create(
        Model(
            metadata=ObjectMeta(name="base", namespace=NS),
            spec=ModelSpec(uri=base.as_uri(), license=LicenseSpec(name="Apache-2.0", commercial_use="allowed")),
        )
    )
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
                    "deployOnSuccess": {"deployment": "support"},
                }
            ),
        )
    )
    return store, CrashingDriver(), settings


def job(store: SqliteStore) -> FineTuneJob:
    return store.get(FineTuneJob, NS, "bot")


def passes(runner: Runner, n: int) -> None:
    for _ in range(n):
        runner.run_once()


def test_references_become_ready_then_one_submission(env: Any) -> None:
    store, driver, settings = env
    runner = Runner(store, driver, settings)
    passes(runner, 3)
    j = job(store)
    assert j.status.phase == "Admitted"
    assert j.status.submission_id == "corral-team-a.bot-1"
    assert FINALIZER in j.metadata.finalizers
    assert driver.submitted == ["corral-team-a.bot-1"]
    # The runner passes the handle the reconciler built: the stored owner (uid included) and its placement.
    ((method, handle),) = driver.handles
    assert method == "submit_job" and handle.owner == Owner.of(j) and handle.owner.uid
    assert handle.placement is not None and handle.placement.replicas == j.spec.resources.workers
    job_file = Path(job_files(j, settings).job_file.removeprefix("file://"))
    assert json.loads(job_file.read_text())["name"] == "bot"
    passes(runner, 3)
    assert driver.submitted == ["corral-team-a.bot-1"] and len(driver.submit_calls) == 1
    reasons = [e.reason for e in store.list_events("FineTuneJob", NS, "bot")]
    assert "Submitted" in reasons


@pytest.mark.parametrize("crash", ["before_submit", "after_submit", "status_write"])
def test_crash_and_restart_never_submits_twice(env: Any, crash: str) -> None:
    store, driver, settings = env
    passes(Runner(store, driver, settings), 1)  # Dataset and Model Ready; the job saw them pending
    assert job(store).status.submission_id is None
    if crash == "before_submit":
        driver.crash_before_submit = 1
    elif crash == "after_submit":
        driver.crash_after_submit = 1
    else:
        store.crash_on_status = 1
    with pytest.raises(Crash):
        Runner(store, driver, settings).run_once()
    restarted = Runner(store, driver, settings)  # a new process: nothing carried over but the store and Ray
    passes(restarted, 3)
    assert driver.submitted == ["corral-team-a.bot-1"]
    assert job(store).status.submission_id == "corral-team-a.bot-1"
    assert job(store).status.phase == "Admitted"


def test_success_creates_output_and_deploys_once(env: Any, tmp_path: Path) -> None:
    store, driver, settings = env
    runner = Runner(store, driver, settings)
    passes(runner, 3)
    j = job(store)
    sid = j.status.submission_id
    assert sid
    files = job_files(j, settings)
    output = Path(files.output.removeprefix("file://"))
    output.mkdir(parents=True)
    (output / "adapter_config.json").write_text("{}")
    (output / "adapter_model.safetensors").write_bytes(b"a" * 16)
    lines = [
        {
            "type": "progress",
            "step": 6,
            "total_steps": 12,
            "epoch": 1,
            "loss": 2.0,
            "lr": 0.001,
            "tokens_per_second": 100.0,
            "eta_seconds": 10.0,
            "gpu_seconds": 0.0,
            "cost_usd": "0",
            "time": 1.0,
        },
        {"type": "completed", "step": 12, "output_uri": files.output, "metrics": {"loss": 1.5}, "time": 2.0},
    ]
    Path(files.events.removeprefix("file://")).write_text("".join(json.dumps(x) + "\n" for x in lines))
    driver.set_job(sid, "SUCCEEDED")
    passes(runner, 4)
    j = job(store)
    assert j.status.phase == "Succeeded" and j.status.output_model == "bot"
    assert j.status.progress is not None and j.status.progress.percent == 100
    bot = store.get(Model, NS, "bot")
    assert bot.spec.type == "adapter" and bot.status.conditions[0].status == "True"
    assert bot.status.lineage is not None
    assert [link.name for link in bot.status.lineage.links] == ["base", "bot", "support"]
    dep = store.get(ModelDeployment, NS, "support")
    assert [a.name for a in dep.spec.adapters] == ["bot"]
    assert dep.status.phase == "Ready"
    assert dep.status.endpoint == "http://127.0.0.1:8000/team-a/support/v1"
    deploys = len(driver.deploy_calls)
    rv = store.get(ModelDeployment, NS, "support").metadata.resource_version
    passes(runner, 3)
    assert len(driver.deploy_calls) == deploys
    assert store.get(ModelDeployment, NS, "support").metadata.resource_version == rv  # no status churn
    assert driver.submitted == [sid]


def test_delete_job_stops_ray_job_and_object_goes(env: Any) -> None:
    store, driver, settings = env
    runner = Runner(store, driver, settings)
    passes(runner, 3)
    sid = job(store).status.submission_id
    assert sid
    driver.set_job(sid, "RUNNING")
    runner.run_once()
    store.delete(FineTuneJob, NS, "bot")
    passes(runner, 3)
    assert driver.stopped == [sid]
    with pytest.raises(NotFound):
        job(store)


def test_background_loop_reacts_to_changes(env: Any) -> None:
    store, driver, settings = env
    runner = Runner(store, driver, settings, resync_seconds=0.5).start()
    try:
        wait_until("a submission", lambda: driver.submitted, 30, every=0.1)
        assert driver.submitted == ["corral-team-a.bot-1"]
    finally:
        runner.stop()


def test_embedded_control_plane_starts_and_stops(tmp_path: Path) -> None:
    import socket
    import urllib.request

    from corral.embedded import EmbeddedControlPlane

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    driver = FakeDriver()
    plane = EmbeddedControlPlane(tmp_path / "data", driver=driver, port=port, resync_seconds=0.5).start()
    try:
        assert plane.settings.artifact_root == (tmp_path / "data" / "artifacts").resolve().as_uri()
        # start() returns once the API listens: the first request is answered, no polling.
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).read()
        assert body
        assert plane.store is not None and plane.runner is not None
    finally:
        plane.stop()
    assert plane.runner is None and (tmp_path / "data" / "corral.db").exists()


def test_the_uri_rule_holds_in_the_reconcilers_too(env: Any, tmp_path: Path) -> None:
    """On a cluster objects arrive with kubectl, past no control API: the runner applies the URI rule itself."""
    from corral.artifacts import URIPolicy

    store, driver, settings = env
    policy = URIPolicy(settings.artifact_root, {"*": ["hf://"]})
    runner = Runner(store, driver, ControlSettings(**{**settings.__dict__, "uri_policy": policy}))
    passes(runner, 2)
    dataset = store.get(Dataset, NS, "support")
    ready = next(c for c in dataset.status.conditions if c.type == "Ready")
    assert ready.status == "False" and ready.reason == "DataUnreadable"
    assert "is not a URI namespace team-a may reference" in ready.message
    assert dataset.status.report is None  # nothing was read: no counts, no keys, no existence
    model = store.get(Model, NS, "base")
    ready = next(c for c in model.status.conditions if c.type == "Ready")
    assert ready.status == "False" and ready.reason == "ArtifactNotFound"
    assert "may reference" in ready.message and model.status.artifact is None
    assert driver.submitted == []


def test_datasets_are_checked_out_of_process(env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Structure, not memory: the runner's process never runs the check (it holds every example)."""
    import corral.data

    def in_process(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("check_dataset ran in the control plane's process")

    monkeypatch.setattr(corral.data, "check_dataset", in_process)
    monkeypatch.setattr("corral.data._report.check_dataset", in_process)
    store, driver, settings = env
    passes(Runner(store, driver, settings), 1)
    dataset = store.get(Dataset, NS, "support")
    ready = next(c for c in dataset.status.conditions if c.type == "Ready")
    assert ready.status == "True" and dataset.status.report is not None and dataset.status.report.examples > 0
