"""A Corral home driven like a user drives it: ``corral up``/``down`` as real processes, its
daemon, its Ray head and their PIDs, and polling with a deadline.

Tests kill only processes of the home they started (the daemon named by its verified pid
record, Ray processes of the head recorded in its data dir), by PID.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import yaml

from corral.cli._home import DAEMON_MODULE, DaemonRecord
from corral.client import CorralClient
from corral.drivers import HeadRecord
from corral.drivers.local import head_pids

__all__ = ["Home", "wait_until"]

T = TypeVar("T")


def wait_until(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.5) -> T:
    """Call ``probe`` until it returns something truthy (connection errors count as "not yet").

    Raises:
        AssertionError: ``what`` was not reached within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (httpx.HTTPError, OSError) as exc:
            last_error, value = exc, None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what} not reached within {timeout:.0f} s (last error: {last_error})")


class Home:
    """One ``CORRAL_HOME`` with its data dir, driven through the ``corral`` CLI in subprocesses."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.env = {
            **os.environ,
            "CORRAL_HOME": str(root),
            "OMP_NUM_THREADS": "1",
            "CORRAL_NAMESPACE": "support",
        }
        self.env.pop("RAY_ADDRESS", None)

    def command(self, *args: str) -> list[str]:
        """The ``corral`` command line (this interpreter, so the same code and environment)."""
        return [sys.executable, "-c", "from corral.cli import main; main()", *args]

    def cli(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run ``corral ARGS`` and return the finished process."""
        return subprocess.run(
            self.command(*args), env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def up(self, *args: str) -> str:
        """``corral up``; asserts it succeeded and returns its output."""
        done = self.cli("up", *args)
        assert done.returncode == 0, done.stdout + done.stderr + self.log_tail()
        return done.stdout

    def down(self) -> str:
        """``corral down``; asserts it succeeded and returns its output."""
        done = self.cli("down")
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def log_tail(self, lines: int = 40) -> str:
        """The daemon log's last lines."""
        log = self.data / "corral.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"

    def daemon(self) -> DaemonRecord:
        """The running daemon's verified record."""
        record = DaemonRecord.read(self.data)
        assert record is not None and record.matches(), "no running daemon"
        return record

    def head(self) -> HeadRecord:
        """The recorded Ray head."""
        record = HeadRecord.read(self.data)
        assert record is not None, "no Ray head recorded"
        return record

    def daemons(self) -> list[int]:
        """PIDs of every daemon process of this home."""
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if DAEMON_MODULE in cmdline and str(self.data) in cmdline:
                found.append(proc.info["pid"])
        return found

    def plane_processes(self) -> dict[int, float]:
        """PID -> start time of every process of this home: daemons and the recorded head's."""
        pids = set(self.daemons())
        record = HeadRecord.read(self.data)
        if record is not None:
            pids |= head_pids(record.temp_dir, record.pid, record.pid_start_time)
        out: dict[int, float] = {}
        for pid in pids:
            try:
                out[pid] = psutil.Process(pid).create_time()
            except psutil.NoSuchProcess:
                continue
        return out

    @staticmethod
    def still_running(processes: dict[int, float]) -> list[str]:
        """Those of ``processes`` still alive (same PID and start time), described."""
        alive = []
        for pid, started in processes.items():
            try:
                proc = psutil.Process(pid)
                if abs(proc.create_time() - started) < 0.05 and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {' '.join(proc.cmdline())[:120]}")
            except psutil.NoSuchProcess:
                continue
        return alive

    def client(self) -> CorralClient:
        """A control API client from the context ``corral up`` wrote."""
        ctx = yaml.safe_load((self.root / "context.yaml").read_text(encoding="utf-8"))
        return CorralClient(ctx["server"], token=ctx["token"], namespace="support")

    def ray_processes(self, marker: str) -> list[int]:
        """PIDs of the recorded head's processes whose command line contains ``marker``."""
        record = self.head()
        found = []
        for pid in head_pids(record.temp_dir, record.pid, record.pid_start_time):
            try:
                if marker in " ".join(psutil.Process(pid).cmdline()):
                    found.append(pid)
            except psutil.NoSuchProcess:
                continue
        return found

    def ray_jobs(self, submission_id: str) -> list[Any]:
        """Every Ray job with ``submission_id`` on the recorded head."""
        from ray.job_submission import JobSubmissionClient

        record = self.head()
        client = JobSubmissionClient(record.address, headers={"Authorization": f"Bearer {record.token()}"})
        return [j for j in client.list_jobs() if j.submission_id == submission_id]
