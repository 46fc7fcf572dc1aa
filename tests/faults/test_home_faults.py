"""One plane per home, for real: two concurrent ``corral up``, and a pid file naming a live stranger.

Each test has its own ``CORRAL_HOME``, starts a real daemon and Ray head, and ends with
``corral down`` leaving none of the home's processes behind (checked by PID and start time).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from corral.cli._home import DAEMON_MODULE, DaemonRecord
from tests.faults._plane import Home


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    home = Home(tmp_path)
    try:
        yield home
    finally:
        home.cli("down", timeout=120)


def _gcs_servers_under(pids: list[int]) -> int:
    count = 0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            count += sum(1 for child in proc.children(recursive=True) if child.name() == "gcs_server")
        except psutil.NoSuchProcess:
            continue
    return count


def test_two_concurrent_up_make_one_plane(home: Home) -> None:
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            home.command("up", "--port", "0"), env=home.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    print(f"two concurrent `corral up`: {time.monotonic() - started:.1f} s")
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum("Corral is up." in out for out in outputs) == 1, outputs
    assert sum("Corral is already up" in out for out in outputs) == 1, outputs
    api_lines = {next(line for line in out.splitlines() if line.startswith("Control API")) for out in outputs}
    assert len(api_lines) == 1, outputs
    daemons = home.daemons()
    assert len(daemons) == 1, daemons
    assert _gcs_servers_under(daemons) == 1, "one Ray head per home"
    assert home.daemon().pid == daemons[0]
    processes = home.plane_processes()
    assert "Corral is down." in home.down()
    assert home.still_running(processes) == []


def test_a_pid_file_naming_a_live_stranger_is_left_alone(home: Home) -> None:
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        home.data.mkdir(parents=True)
        (home.data / "corral.pid").write_text(str(stranger.pid))
        stale = {"pid": stranger.pid, "api": "http://127.0.0.1:9", "serve": "http://127.0.0.1:9"}
        (home.data / "endpoints.json").write_text(json.dumps(stale))

        assert "Corral was not running." in home.down()
        assert stranger.poll() is None, "corral down signalled a stranger"

        (home.data / "corral.pid").write_text(str(stranger.pid))
        out = home.up("--port", "0")
        assert "Corral is up." in out and "127.0.0.1:9 " not in out
        record = home.daemon()
        assert record.pid != stranger.pid and DAEMON_MODULE in record.cmdline
        assert json.loads((home.data / "endpoints.json").read_text())["pid"] == record.pid

        # The stranger in a well-formed record that does not match it: still left alone.
        processes = home.plane_processes()
        assert "Corral is down." in home.down()
        assert home.still_running(processes) == []
        me = psutil.Process(stranger.pid)
        DaemonRecord(pid=stranger.pid, start_time=me.create_time(), cmdline=record.cmdline).write(home.data)
        assert "Corral was not running." in home.down()
        assert stranger.poll() is None, "corral down signalled a stranger"
    finally:
        stranger.kill()
        stranger.wait()
