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
