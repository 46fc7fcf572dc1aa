"""The record of the Ray head a control plane started, kept in its data dir (``ray-head.json``).

One Ray per home: :class:`~corral.drivers.LocalRayDriver` writes this record when it starts
a private head and removes it when it stops that head. A restarted control plane reads it
and either re-attaches to the head (it is alive and answers with the recorded token) or
stops what is left of it by the recorded PIDs before starting a new one, so two heads never
run the same submission id. ``corral down`` uses it too when the daemon was killed.

Which processes belong to a head: the ``ray start --block`` process (recorded PID *and*
start time, so a reused PID is never taken for it), its descendants, the processes of its
process group (it is started as a session leader, so its PID is the group id; only
processes started after it count), and every process whose command line names the head's
private temp dir (Ray's raylet, GCS, dashboard, workers, job drivers and Serve replicas all
carry ``--temp-dir``/``--session-dir`` under it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "HEAD_RECORD",
    "HeadRecord",
    "head_pids",
    "process_start_time",
    "stop_head_processes",
    "stop_recorded_head",
]

logger = logging.getLogger(__name__)

HEAD_RECORD = "ray-head.json"
"""File name of the record in the data dir."""


class HeadRecord(BaseModel):
    """Where a started Ray head is and which processes are its own."""

    model_config = ConfigDict(extra="forbid")

    head_id: str = Field(description="Random id of this head; jobs record the head they were submitted to.")
    address: str = Field(description="Dashboard URL (job and Serve APIs).")
    gcs_address: str = Field(description="GCS address host:port.")
    temp_dir: str = Field(description="The head's private temp dir (its session dir is under it).")
    token_path: str = Field(description="File holding the dashboard token.")
    serve_port: int = Field(ge=1, le=65535, description="Port of Serve's HTTP proxy.")
    pid: int = Field(ge=1, description="PID of the `ray start --block` process (its own process group).")
    pid_start_time: float = Field(description="That process's start time (psutil create_time), against PID reuse.")

    @classmethod
    def read(cls, data_dir: Path) -> HeadRecord | None:
        """The record in ``data_dir``, or None when there is none (or it is unreadable)."""
        path = data_dir / HEAD_RECORD
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("Ignoring unreadable Ray head record %s: %s", path, exc)
            return None

    def write(self, data_dir: Path) -> None:
        """Write the record atomically (mode 0600)."""
        path = data_dir / HEAD_RECORD
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.model_dump_json(indent=1))
        tmp.replace(path)

    @staticmethod
    def remove(data_dir: Path) -> None:
        """Delete the record (absent is fine)."""
        (data_dir / HEAD_RECORD).unlink(missing_ok=True)

    def token(self) -> str | None:
        """The dashboard token, or None when its file is gone."""
        try:
            return Path(self.token_path).read_text(encoding="utf-8").strip() or None
        except OSError:
            return None


def process_start_time(pid: int) -> float | None:
    """Start time of ``pid`` (psutil ``create_time``), or None when it does not run."""
    import psutil  # type: ignore[import-untyped]

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _same_process(pid: int, start_time: float) -> bool:
    started = process_start_time(pid)
    return started is not None and abs(started - start_time) < 0.05


def head_pids(
    temp_dir: str | os.PathLike[str], pid: int | None = None, pid_start_time: float | None = None
) -> set[int]:
    """PIDs of a head's processes: the leader (when it is still the recorded process), its
    descendants, and every process naming ``temp_dir`` on its command line.

    Args:
        temp_dir: The head's private temp dir.
        pid: The ``ray start`` process.
        pid_start_time: Its recorded start time (None: trust ``pid``, it is our own child).
    """
    import psutil

    pids: set[int] = set()
    if pid is not None and (pid_start_time is None or _same_process(pid, pid_start_time)):
        try:
            leader = psutil.Process(pid)
            pids.add(leader.pid)
            pids.update(child.pid for child in leader.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    marker = str(temp_dir)
    for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
        try:
            cmdline = proc.info["cmdline"] or []
            in_group = (
                pid is not None
                and pid_start_time is not None
                and proc.info["create_time"] >= pid_start_time - 0.05
                and os.getpgid(proc.info["pid"]) == pid
            )
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            continue
        if in_group or any(marker in part for part in cmdline):
            pids.add(proc.info["pid"])
    pids.discard(os.getpid())
    return pids


def stop_head_processes(pids: set[int], timeout: float = 5.0) -> int:
    """SIGTERM the processes, SIGKILL those still alive after ``timeout``; return how many there were."""
    import psutil

    procs: list[Any] = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=5)
    return len(procs)


def stop_recorded_head(data_dir: Path, timeout: float = 5.0) -> int:
    """Stop the head recorded in ``data_dir`` by its PIDs and forget it; return the processes stopped.

    Used when no live control plane owns the head any more (``corral down`` after the daemon
    was killed, or a restart that cannot adopt it).
    """
    record = HeadRecord.read(data_dir)
    if record is None:
        return 0
    pids = head_pids(record.temp_dir, record.pid, record.pid_start_time)
    count = stop_head_processes(pids, timeout) if pids else 0
    if count:
        logger.info("Stopped %d processes of Ray head %s (temp dir %s)", count, record.gcs_address, record.temp_dir)
    shutil.rmtree(record.temp_dir, ignore_errors=True)
    HeadRecord.remove(data_dir)
    return count
