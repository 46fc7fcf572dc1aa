"""``python -m corral.training``: what it refuses before any Ray worker starts (exit code 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from corral.training import FailedEvent, read_events
from corral.training.__main__ import EXIT_REFUSED, main

FACTS = Path(__file__).resolve().parents[1] / "fixtures/data/train/facts8.jsonl"


def _write_job(tmp: Path, data: Path, **spec: Any) -> Path:
    doc = {
        "name": "bot",
        "baseModel": {"name": "tiny-llama", "builtin": "llama", "chatTemplate": "chatml", "license": "Apache-2.0"},
        "datasets": [{"name": "d", "uri": str(data)}],
        "spec": {"baseModel": {"name": "tiny-llama"}, "datasets": [{"name": "d"}], **spec},
        "outputUri": f"file://{tmp}/out",
        "eventsUri": f"file://{tmp}/events.jsonl",
        "checkpointUri": f"file://{tmp}/ckpt",
    }
    path = tmp / "job.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _no_ray_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def test_malformed_dataset_is_refused_with_its_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "bad.jsonl"
    good = FACTS.read_text(encoding="utf-8").splitlines()
    data.write_text("\n".join([good[0], "{not json", good[1], '{"messages": [{"role": "user"}]}']) + "\n")
    assert main(["--job", str(_write_job(tmp_path, data))]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "DatasetInvalid" in err and "line 2" in err and "line 4" in err
    events = read_events(f"file://{tmp_path}/events.jsonl")
    assert len(events) == 1 and isinstance(events[0], FailedEvent) and events[0].reason == "DatasetInvalid"
    assert "line 2" in events[0].message


def test_qlora_is_refused_up_front_on_a_cpu_machine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import ray
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    job = _write_job(tmp_path, FACTS, method="qlora", resources={"gpusPerWorker": 1})
    ray_was_up = ray.is_initialized()  # a session Ray from other tests may already run in this process
    assert main(["--job", str(job)]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "Unsupported" in err and "qlora needs a CUDA GPU" in err and "asks for 1 GPUs" in err
    assert ray.is_initialized() == ray_was_up, "nothing may start before the refusal"
    (event,) = read_events(f"file://{tmp_path}/events.jsonl")
    assert isinstance(event, FailedEvent) and event.reason == "Unsupported"


def test_deepspeed_on_cpu_workers_is_refused_only_what_cpus_cannot_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    # DeepSpeed itself trains on CPU workers (tests/integration/test_training_ray.py); fp16 and QLoRA do not.
    job = _write_job(
        tmp_path,
        FACTS,
        method="qlora",
        hyperparameters={"precision": "fp16"},
        resources={"gpusPerWorker": 1, "strategy": "deepspeed-zero2"},
    )
    assert main(["--job", str(job)]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "qlora trains with strategy ddp only (strategy=deepspeed-zero2)" in err
    assert "precision fp16 needs a GPU" in err
    assert "deepspeed-zero2 needs" not in err


def test_invalid_job_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"name": "bot", "surprise": 1}), encoding="utf-8")
    assert main(["--job", str(path)]) == EXIT_REFUSED
    assert "invalid job file" in capsys.readouterr().err


def test_a_vanished_data_file_fails_with_data_unreadable_naming_the_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = tmp_path / "deleted-after-validation.jsonl"
    assert main(["--job", str(_write_job(tmp_path, gone))]) == EXIT_REFUSED
    events = read_events(f"file://{tmp_path}/events.jsonl")
    assert len(events) == 1 and isinstance(events[0], FailedEvent)
    assert events[0].reason == "DataUnreadable"
    assert events[0].message == f"Dataset d: cannot read {gone}: the file does not exist"
    assert "DataUnreadable" in capsys.readouterr().err
