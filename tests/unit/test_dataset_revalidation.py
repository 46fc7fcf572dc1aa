"""A Dataset's file:// data is validated again when it changes or vanishes, without a new generation.

The loop on a real SQLite store (and an in-memory driver): the file is deleted after it was
validated, then put back with a corrupt line, then fixed in place; each change is noticed
on the next pass.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from corral.api.v1alpha1 import Dataset, DatasetSpec, LicenseSpec, ObjectMeta
from corral.control import ControlSettings, Runner
from corral.drivers import FakeDriver
from corral.store import SqliteStore

DOLLY = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "dolly.jsonl"


def _ready(store: SqliteStore) -> tuple[str, str, str]:
    ds = store.get(Dataset, "team-a", "support")
    ready = next(c for c in ds.status.conditions if c.type == "Ready")
    return ready.status, ready.reason, ready.message


def test_vanished_corrupted_and_fixed_files_are_noticed(tmp_path: Path) -> None:
    data = tmp_path / "support.jsonl"
    shutil.copy(DOLLY, data)
    store = SqliteStore(tmp_path / "corral.db")
    try:
        store.create(
            Dataset(
                metadata=ObjectMeta(name="support", namespace="team-a"),
                spec=DatasetSpec(uri=data.as_uri(), license=LicenseSpec(name="CC-BY-SA-3.0", commercial_use="allowed")),
            )
        )
        settings = ControlSettings(artifact_root=(tmp_path / "artifacts").as_uri(), python="python")
        runner = Runner(store, FakeDriver(), settings)
        runner.run_once()
        assert _ready(store)[:2] == ("True", "Valid")
        generation = store.get(Dataset, "team-a", "support").metadata.generation

        data.unlink()
        runner.run_once()
        status, reason, message = _ready(store)
        assert (status, reason) == ("False", "DataUnreadable") and str(data) in message

        lines = DOLLY.read_text(encoding="utf-8").splitlines()
        lines[1] = "{not json"
        data.write_text("\n".join(lines) + "\n", encoding="utf-8")
        runner.run_once()
        status, reason, message = _ready(store)
        assert (status, reason) == ("False", "Invalid") and "line 2" in message

        lines[1] = DOLLY.read_text(encoding="utf-8").splitlines()[1]
        data.write_text("\n".join(lines) + "\n", encoding="utf-8")
        stat = data.stat()
        os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a coarse clock must not hide the fix
        runner.run_once()
        assert _ready(store)[:2] == ("True", "Valid")
        assert store.get(Dataset, "team-a", "support").metadata.generation == generation  # no re-apply needed
        events = {e.reason: e.count for e in store.list_events(Dataset, "team-a", "support")}
        assert events == {"Valid": 2, "DataUnreadable": 1, "Invalid": 1}
    finally:
        store.close()
