"""One daemon per home: the lock, the pid record and the ports chosen once, in the data dir.

* ``corral.lock`` - the daemon holds an exclusive ``flock`` on it for its whole life, so a
  second daemon of the same home cannot run (the kernel drops the lock when the process
  dies, however it dies). "Is a daemon running?" is asked of the lock, not of a PID.
* ``up.lock`` - ``corral up`` holds it from "is one running?" to "it answers", so two
  ``corral up`` of one home start one daemon: the second waits, then attaches.
* ``corral.pid`` - JSON: the daemon's PID, start time and command line. ``corral down``
  signals a PID only when all three still match a live process, so a stale file naming a
  stranger (the PID reused) is never acted on.
* ``ports.json`` - the control API and Serve ports, chosen once per home and reused on every
  restart, so the URLs clients were given keep working.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DAEMON_MODULE",
    "DaemonRecord",
    "HomeLock",
    "Ports",
    "daemon_lock_held",
    "running_daemon",
    "up_lock",
]

logger = logging.getLogger(__name__)

DAEMON_MODULE = "corral.cli._daemon"
LOCK_FILE, UP_LOCK_FILE, PID_FILE, PORTS_FILE = "corral.lock", "up.lock", "corral.pid", "ports.json"


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


class HomeLock:
    """The daemon's exclusive lock on ``corral.lock``, held until :meth:`release` or exit."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        fd = _open_lock(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def daemon_lock_held(data_dir: Path) -> bool:
    """True while some process (a daemon) holds ``corral.lock``."""
    probe = HomeLock(data_dir)
    if probe.acquire():
        probe.release()
        return False
    return True


@contextlib.contextmanager
def up_lock(data_dir: Path, timeout: float) -> Iterator[None]:
    """Hold ``up.lock`` (waiting up to ``timeout`` seconds for another ``corral up``).

    Raises:
        TimeoutError: Another ``corral up`` held it for longer.
    """
    fd = _open_lock(data_dir / UP_LOCK_FILE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another `corral up` of {data_dir} is still starting") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


class DaemonRecord(BaseModel):
    """``corral.pid``: which process the daemon is, precisely enough to never signal another."""

    model_config = ConfigDict(extra="forbid")

    pid: int = Field(ge=1, description="The daemon's PID.")
    start_time: float = Field(description="Its start time (psutil create_time, Unix seconds).")
    cmdline: list[str] = Field(description="Its command line.")

    @classmethod
    def of_self(cls) -> DaemonRecord:
        """The record of the calling process."""
        import psutil  # type: ignore[import-untyped]

        me = psutil.Process()
        return cls(pid=me.pid, start_time=me.create_time(), cmdline=me.cmdline())

    @classmethod
    def read(cls, data_dir: Path) -> DaemonRecord | None:
        """The record in ``data_dir`` (None: absent, or an old/foreign format)."""
        try:
            return cls.model_validate(json.loads((data_dir / PID_FILE).read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("Ignoring unreadable pid file %s: %s", data_dir / PID_FILE, exc)
            return None

    def write(self, data_dir: Path) -> None:
        """Write the record atomically (mode 0600)."""
        path = data_dir / PID_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.model_dump_json())
        tmp.replace(path)

    def matches(self) -> bool:
        """True when the PID runs, started when recorded, and runs the daemon command."""
        import psutil

        try:
            proc = psutil.Process(self.pid)
            same_start = abs(proc.create_time() - self.start_time) < 0.05
            return same_start and proc.cmdline() == self.cmdline and DAEMON_MODULE in self.cmdline
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False


def running_daemon(data_dir: Path) -> DaemonRecord | None:
    """The live daemon of ``data_dir``: the lock is held *and* the pid record matches a live daemon."""
    if not daemon_lock_held(data_dir):
        return None
    record = DaemonRecord.read(data_dir)
    return record if record is not None and record.matches() else None


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Ports(BaseModel):
    """``ports.json``: the ports of a home, chosen once and reused on restart."""

    model_config = ConfigDict(extra="forbid")

    api: int | None = Field(default=None, ge=1, le=65535, description="Control API port.")
    serve: int | None = Field(default=None, ge=1, le=65535, description="Serve HTTP proxy port.")

    @classmethod
    def read(cls, data_dir: Path) -> Ports:
        """The home's ports (empty when none were chosen yet)."""
        try:
            return cls.model_validate(json.loads((data_dir / PORTS_FILE).read_text(encoding="utf-8")))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            logger.warning("Ignoring unreadable %s: %s", data_dir / PORTS_FILE, exc)
            return cls()

    def write(self, data_dir: Path) -> None:
        """Write the ports atomically."""
        tmp = data_dir / (PORTS_FILE + ".tmp")
        tmp.write_text(self.model_dump_json(exclude_none=True), encoding="utf-8")
        tmp.replace(data_dir / PORTS_FILE)

    @classmethod
    def choose(cls, data_dir: Path, host: str, *, api: int | None = None, serve: int | None = None) -> Ports:
        """The ports to use and record: an explicit one wins, then the recorded one, then a free one."""
        recorded = cls.read(data_dir)
        ports = cls(
            api=api or recorded.api or _free_port(host),
            serve=serve or recorded.serve or _free_port(host),
        )
        if ports != recorded:
            ports.write(data_dir)
        return ports
