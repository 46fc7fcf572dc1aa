"""Events file, status summary, the job file and the model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from corral.training import (
    CheckpointEvent,
    CompletedEvent,
    EventWriter,
    FailedEvent,
    ProgressEvent,
    StartedEvent,
    TrainingJob,
    model_card,
    read_events,
    summarize,
)


def _progress(step: int, **kw: Any) -> ProgressEvent:
    values: dict[str, Any] = {
        "step": step,
        "total_steps": 10,
        "epoch": 1,
        "loss": 2.0 / step,
        "lr": 1e-3,
        "tokens_per_second": 100.0,
        "eta_seconds": 10.0 - step,
        "gpu_seconds": 36.0 * step,
        "cost_usd": str(0.025 * step),
    }
    values.update(kw)
    return ProgressEvent(**values)


def test_write_read_and_summarize(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/job/events.jsonl"
    w = EventWriter(uri)
    w.write(StartedEvent(run_name="r", total_steps=10, world_size=2))
    w.write(_progress(1))
    w.write(CheckpointEvent(step=2, uri="file:///c/2"))
    w.write(_progress(4, eval_loss=1.5))
    w.write(CheckpointEvent(step=4, uri="file:///c/4"))
    w.write(CheckpointEvent(step=6, uri="file:///c/6"))
    events = read_events(uri)
    assert [e.type for e in events] == ["started", "progress", "checkpoint", "progress", "checkpoint", "checkpoint"]
    lines = (tmp_path / "job/events.jsonl").read_text().splitlines()
    assert json.loads(lines[1])["type"] == "progress" and "tokens_per_second" in json.loads(lines[1])

    s = summarize(events, keep=2)
    assert s.progress is not None and s.metrics is not None and s.cost is not None
    assert (s.progress.step, s.progress.total_steps, s.progress.percent, s.progress.eta_seconds) == (4, 10, 40, 6)
    assert s.metrics.loss == 0.5 and s.metrics.eval_loss == 1.5 and s.metrics.learning_rate == 1e-3
    assert s.cost.gpu_seconds == 144 and s.cost.usd == "0.1"
    assert [c.step for c in s.checkpoints] == [4, 6]
    assert s.completed is None and s.failed is None

    w.write(CompletedEvent(step=10, output_uri="file:///o", metrics={"loss": 0.1}))
    assert summarize(read_events(uri)).completed is not None


def test_restart_clears_a_failure_and_failure_is_terminal(tmp_path: Path) -> None:
    uri = str(tmp_path / "e.jsonl")
    w = EventWriter(uri)
    w.write(FailedEvent(reason="TrainingFailed", message="boom"))
    assert summarize(read_events(uri)).failed is not None
    w.write(StartedEvent(run_name="r", total_steps=10, world_size=1, resumed_from_step=4))
    assert summarize(read_events(uri)).failed is None


def test_torn_last_line_is_ignored_but_a_bad_middle_line_is_not(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    EventWriter(str(path)).write(_progress(1))
    with path.open("a") as fh:
        fh.write('{"type": "progr')
    assert len(read_events(str(path))) == 1
    path.write_text('{"type": "nope"}\n' + _progress(1).model_dump_json() + "\n")
    with pytest.raises(ValueError, match="line 1"):
        read_events(str(path))
    assert read_events(str(tmp_path / "absent.jsonl")) == []


def _job(**kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "support-bot",
        "baseModel": {"name": "tiny-llama", "builtin": "llama", "chatTemplate": "chatml", "license": "Apache-2.0"},
        "datasets": [{"name": "tickets", "uri": "s3://b/tickets.jsonl", "format": "sharegpt", "license": "CC-BY-4.0"}],
        "spec": {"baseModel": {"name": "tiny-llama"}, "datasets": [{"name": "tickets"}]},
        "outputUri": "s3://b/models/support-bot",
        "eventsUri": "s3://b/jobs/support-bot/events.jsonl",
        "checkpointUri": "s3://b/checkpoints",
        "pricePerGpuHour": "2.10",
    }
    doc.update(kw)
    return doc


def test_job_file_is_strict() -> None:
    job = TrainingJob.model_validate(_job())
    assert job.default_run_name == "default-support-bot" and job.model_name == "support-bot"
    assert str(job.price) == "2.10"
    assert TrainingJob.model_validate_json(job.model_dump_json()) == job
    with pytest.raises(ValidationError, match="extra"):
        TrainingJob.model_validate(_job(unknown=1))
    both = _job(baseModel={"name": "x", "builtin": "llama", "uri": "/m", "license": "MIT"})
    with pytest.raises(ValidationError, match="exactly one of uri and builtin"):
        TrainingJob.model_validate(both)


def test_model_card_front_matter() -> None:
    job = TrainingJob.model_validate(_job())
    card = model_card(
        job,
        relation="adapter",
        template_name="chatml",
        template="{{ x }}",
        metrics={"loss": 0.123456789, "eval_loss": float("nan")},
    )
    _, front, body = card.split("---", 2)
    meta = yaml.safe_load(front)
    assert meta["license"] == "Apache-2.0"
    assert meta["base_model"] == "tiny-llama"
    assert meta["base_model_relation"] == "adapter"
    assert meta["datasets"] == ["tickets"]
    assert meta["dataset_licenses"] == {"tickets": "CC-BY-4.0"}
    assert meta["chat_template"] == "chatml"
    assert meta["metrics"] == {"loss": 0.123457, "eval_loss": None}
    assert "{{ x }}" in body and "LoRA: rank 16, alpha 32" in body


def test_status_losses_have_four_significant_digits() -> None:
    """``kubectl get -o wide`` prints status.metrics.loss as stored: 0.355, not 0.3549874045632102."""
    s = summarize([_progress(3, loss=0.3549874045632102, eval_loss=12.345678)], keep=0)
    assert s.metrics is not None and (s.metrics.loss, s.metrics.eval_loss) == (0.355, 12.35)
