"""The events writer against a remote store: progress uploads are throttled, nothing is lost or reordered."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from corral.artifacts import ArtifactInfo, ArtifactNotFound, ArtifactStore
from corral.training import CheckpointEvent, EventWriter, ProgressEvent, StartedEvent


class _MemoryStore(ArtifactStore):
    """A remote store in memory that counts uploads (only the byte calls the writer makes)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts = 0

    def put_bytes(self, data: bytes, uri: Any) -> ArtifactInfo:
        self.objects[str(uri)] = data
        self.puts += 1
        return ArtifactInfo(uri=str(uri), size=len(data), sha256=None)

    def get_bytes(self, uri: Any) -> bytes:
        if str(uri) not in self.objects:
            raise ArtifactNotFound(str(uri))
        return self.objects[str(uri)]

    def _unused(self, *args: Any) -> Any:
        raise AssertionError("the events writer only reads and writes whole objects")

    put_file = get_file = exists = list = delete = info = _unused  # type: ignore[assignment]


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


URI = "s3://bucket/jobs/bot/events.jsonl"


def _progress(step: int) -> ProgressEvent:
    return ProgressEvent(step=step, total_steps=100, epoch=1, loss=1.0, lr=1e-3, tokens_per_second=10.0)


def _steps(store: _MemoryStore) -> list[int | str]:
    import json

    lines = store.objects[URI].decode().splitlines()
    return [json.loads(x).get("step", json.loads(x)["type"]) for x in lines]


def test_progress_is_uploaded_at_most_once_per_interval() -> None:
    store, clock = _MemoryStore(), _Clock()
    w = EventWriter(URI, progress_interval_s=5.0, store=store, clock=clock)
    w.write(_progress(1))  # the first write uploads at once
    assert store.puts == 1
    for step in range(2, 50):  # 48 steps within the interval: held back
        clock.now += 0.1
        w.write(_progress(step))
    assert store.puts == 1 and _steps(store) == [1]
    clock.now += 0.5  # 5.3 s after the first upload
    w.write(_progress(50))
    assert store.puts == 2 and _steps(store) == list(range(1, 51))


def test_other_events_and_flush_upload_at_once_in_order() -> None:
    store, clock = _MemoryStore(), _Clock()
    w = EventWriter(URI, progress_interval_s=60.0, store=store, clock=clock)
    w.write(StartedEvent(run_name="r", total_steps=4, world_size=1))
    w.write(_progress(1))
    w.write(_progress(2))
    assert _steps(store) == ["started"]
    w.write(CheckpointEvent(step=2, uri="s3://bucket/ckpt/2"))  # carries the held-back progress along
    assert _steps(store) == ["started", 1, 2, 2] and store.puts == 2
    w.write(_progress(3))
    w.flush()
    w.flush()  # nothing pending: no upload
    assert _steps(store) == ["started", 1, 2, 2, 3] and store.puts == 3


def test_a_new_writer_appends_to_what_is_stored() -> None:
    store, clock = _MemoryStore(), _Clock()
    EventWriter(URI, store=store, clock=clock).write(_progress(1))
    EventWriter(URI, store=store, clock=clock).write(CheckpointEvent(step=1, uri="s3://bucket/ckpt/1"))
    assert _steps(store) == [1, 1]


def test_a_failed_upload_keeps_the_lines_for_the_next_one() -> None:
    store, clock = _MemoryStore(), _Clock()
    w = EventWriter(URI, progress_interval_s=0.0, store=store, clock=clock)
    w.write(_progress(1))
    real_put = store.put_bytes

    def failing(data: bytes, uri: Any) -> ArtifactInfo:
        raise ConnectionError("S3 is down")

    store.put_bytes = failing  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        w.write(_progress(2))
    store.put_bytes = real_put  # type: ignore[method-assign]
    w.write(_progress(3))
    assert _steps(store) == [1, 2, 3]


def test_local_files_get_every_event_and_a_bad_interval_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    w = EventWriter(str(path), progress_interval_s=3600.0)
    for step in (1, 2, 3):
        w.write(_progress(step))
    assert len(path.read_text().splitlines()) == 3
    w.flush()
    with pytest.raises(ValueError, match="progress_interval_s must be >= 0"):
        EventWriter(URI, progress_interval_s=-1.0)


def test_started_event_carries_the_worker_start_up() -> None:
    ev = StartedEvent(run_name="r", total_steps=4, world_size=1, setup_seconds=2.5, worker_start_seconds=7.25)
    assert ev.worker_start_seconds == 7.25
    with pytest.raises(ValueError, match="worker_start_seconds"):
        StartedEvent(run_name="r", total_steps=4, world_size=1, worker_start_seconds=-1.0)


def test_worker_threads_follow_the_cpus_given(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from corral.training._ray import worker_threads

    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    before = torch.get_num_threads()
    try:
        assert worker_threads("2") == 2 and torch.get_num_threads() == 2
        assert worker_threads("500m") == 1 and torch.get_num_threads() == 1
        assert worker_threads("1") == 1
        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    finally:
        torch.set_num_threads(before)
