"""corral.training against S3 (moto on loopback): events, checkpoint discovery, Ray storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.artifacts import ArtifactSettings, open_store
from corral.training import CheckpointEvent, EventWriter, ProgressEvent, read_events, summarize
from corral.training._ray import _resume_point, stored_checkpoints
from corral.training._trainer import _storage
from tests.fixtures.s3 import MotoS3


@pytest.fixture
def corral_s3_env(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_S3_ENDPOINT_URL", moto_s3.endpoint_url)
    monkeypatch.setenv("CORRAL_S3_REGION", moto_s3.region)
    monkeypatch.setenv("CORRAL_S3_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("CORRAL_S3_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("CORRAL_S3_ADDRESSING_STYLE", "path")


@pytest.mark.usefixtures("corral_s3_env")
def test_events_on_s3(s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/jobs/bot/events.jsonl"
    assert read_events(uri) == []
    w = EventWriter(uri)
    w.write(ProgressEvent(step=1, total_steps=4, epoch=1, loss=2.0, lr=1e-3, tokens_per_second=10.0, eta_seconds=3.0))
    EventWriter(uri).write(CheckpointEvent(step=1, uri=f"s3://{s3_bucket}/ckpt/run/checkpoint_00000001"))
    events = read_events(uri)
    assert [e.type for e in events] == ["progress", "checkpoint"]  # the second writer appended
    assert summarize(events).checkpoints[0].step == 1


@pytest.mark.usefixtures("corral_s3_env")
def test_checkpoints_found_and_read_from_s3(s3_bucket: str, tmp_path: Path) -> None:
    import json

    import torch

    run = f"s3://{s3_bucket}/ckpt/default-bot"
    store = open_store(run, ArtifactSettings.from_env())
    for step in (2, 4):
        d = tmp_path / f"c{step}"
        d.mkdir()
        torch.save({"w": torch.ones(2) * step}, d / "model.pt")
        torch.save({"state": {}, "param_groups": []}, d / "optimizer.pt")
        torch.save({"last_epoch": step}, d / "scheduler.pt")
        state = {"global_step": step, "epoch": 0, "index": 4 * step}
        (d / "trainer_state.json").write_text(json.dumps(state))
        store.upload_dir(d, f"{run}/checkpoint_{step:08d}")
    store.put_bytes(b"{}", f"{run}/checkpoint_manager_snapshot.json")
    assert [s for s, _ in stored_checkpoints(run)] == [4, 2]
    resume = _resume_point(None, run)
    assert resume is not None and resume.step == 4 and float(resume.model["w"][0]) == 4.0


@pytest.mark.usefixtures("corral_s3_env")
def test_ray_storage_filesystem_writes_to_the_endpoint(s3_bucket: str) -> None:
    path, fs = _storage(f"s3://{s3_bucket}/ckpt")
    assert path == f"{s3_bucket}/ckpt"
    with fs.open_output_stream(f"{path}/probe.txt") as fh:
        fh.write(b"ok")
    assert (
        open_store(f"s3://{s3_bucket}", ArtifactSettings.from_env()).get_bytes(f"s3://{s3_bucket}/ckpt/probe.txt")
        == b"ok"
    )


@pytest.fixture
def pod_s3_env(moto_s3: MotoS3, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exactly the S3 variables the KubeRay builder and the chart give Ray pods (no CORRAL_*)."""
    for name in ArtifactSettings.env_names().values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_s3.endpoint_url)
    monkeypatch.setenv("AWS_REGION", moto_s3.region)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


@pytest.mark.usefixtures("pod_s3_env")
def test_the_entrypoint_reads_its_job_file_from_s3_with_the_pods_environment(
    s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 13: ``--job s3://...`` failed with "No such file or directory: 's3:/corral/...'"."""
    import json

    from corral.training.__main__ import EXIT_REFUSED, main

    root = f"s3://{s3_bucket}/artifacts/finetunejobs/team/bot-1"
    store = open_store(root, ArtifactSettings.from_env())
    data = f"{root}/data.jsonl"
    store.put_bytes(b'{"messages": [{"role": "user"}]}\n', data)  # invalid on purpose: refused before Ray
    job = {
        "name": "bot",
        "namespace": "team",
        "baseModel": {"name": "tiny-llama", "builtin": "llama", "chatTemplate": "chatml", "license": "Apache-2.0"},
        "datasets": [{"name": "d", "uri": data}],
        "spec": {"baseModel": {"name": "tiny-llama"}, "datasets": [{"name": "d"}]},
        "outputUri": f"{root}/output",
        "eventsUri": f"{root}/events.jsonl",
        "checkpointUri": f"{root}/checkpoints",
    }
    store.put_bytes(json.dumps(job).encode(), f"{root}/job.json")
    assert main(["--job", f"{root}/job.json"]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "invalid job file" not in err and "DatasetInvalid" in err and "line 1" in err
    events = read_events(f"{root}/events.jsonl")  # written to the same endpoint
    assert [e.type for e in events] == ["failed"]
    # Ray Train's checkpoint filesystem uses the same endpoint (it went to AWS before).
    path, fs = _storage(f"{root}/checkpoints")
    with fs.open_output_stream(f"{path}/probe.txt") as fh:
        fh.write(b"ok")
    assert store.get_bytes(f"{root}/checkpoints/probe.txt") == b"ok"
    # A missing job file is still a clear refusal naming it.
    assert main(["--job", f"{root}/missing.json"]) == EXIT_REFUSED
    assert f"invalid job file {root}/missing.json" in capsys.readouterr().err
