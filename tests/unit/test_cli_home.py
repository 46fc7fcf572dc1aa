"""One daemon per home: the lock, and a pid file naming a stranger is never acted on (no Ray here)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from corral.cli import app
from corral.cli._home import DAEMON_MODULE, DaemonRecord, HomeLock, Ports, daemon_lock_held, running_daemon
from corral.cli._up import stop_daemon


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not a Corral daemon (started and stopped by this test)."""
    proc = subprocess.Popen(["sleep", "120"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_admits_one_holder(tmp_path: Path) -> None:
    first, second = HomeLock(tmp_path), HomeLock(tmp_path)
    assert first.acquire()
    assert daemon_lock_held(tmp_path)
    assert not second.acquire()
    first.release()
    assert not daemon_lock_held(tmp_path)
    assert second.acquire()
    second.release()


def test_a_lock_holder_that_dies_frees_the_home(tmp_path: Path) -> None:
    code = (
        "import sys, time; sys.path[:0] = sys.argv[2:]; from pathlib import Path; "
        "from corral.cli._home import HomeLock; assert HomeLock(Path(sys.argv[1])).acquire(); "
        "print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), *sys.path], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        assert daemon_lock_held(tmp_path)
        holder.kill()  # kill -9: the kernel drops the lock
        holder.wait()
        assert not daemon_lock_held(tmp_path)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("form", ["bare pid", "record with the wrong command"])
def test_down_never_signals_a_stranger_named_by_the_pid_file(
    tmp_path: Path, stranger: subprocess.Popen[bytes], form: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if form == "bare pid":
        (data / "corral.pid").write_text(str(stranger.pid))
    else:
        me = psutil.Process(stranger.pid)
        fake = ["python", "-m", DAEMON_MODULE, "--data-dir", str(data)]
        DaemonRecord(pid=stranger.pid, start_time=me.create_time(), cmdline=fake).write(data)
    (data / "endpoints.json").write_text(json.dumps({"pid": stranger.pid, "api": "http://127.0.0.1:9"}))
    assert running_daemon(data) is None
    assert stop_daemon(data) is False
    assert stranger.poll() is None, "the stranger was signalled"
    assert not (data / "corral.pid").exists() and not (data / "endpoints.json").exists()
    result = CliRunner().invoke(app, ["down", "--data-dir", str(data)])
    assert result.exit_code == 0 and "Corral was not running." in result.output
    assert stranger.poll() is None


def test_a_record_matches_only_its_own_process(tmp_path: Path, stranger: subprocess.Popen[bytes]) -> None:
    me = psutil.Process(stranger.pid)
    real = DaemonRecord(pid=stranger.pid, start_time=me.create_time(), cmdline=me.cmdline())
    assert not real.matches()  # the right process, but not a daemon
    daemonish = DaemonRecord(pid=stranger.pid, start_time=me.create_time() - 10, cmdline=[DAEMON_MODULE])
    assert not daemonish.matches()


def test_ports_are_chosen_once_and_kept(tmp_path: Path) -> None:
    first = Ports.choose(tmp_path, "127.0.0.1")
    assert first.api and first.serve
    assert Ports.choose(tmp_path, "127.0.0.1") == first
    assert Ports.choose(tmp_path, "127.0.0.1", api=18080).api == 18080
    assert Ports.read(tmp_path) == Ports(api=18080, serve=first.serve)
