"""LocalRayDriver against a real private Ray head: token auth, idempotent jobs, Serve REST deploys, clean down.

One head for the module (starting Ray is the slow part); the last test stops it.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.drivers import Handle, LocalRayDriver, Owner
from tests.support.poll import wait_until

REPO = Path(__file__).resolve().parents[2]

JOB = Handle(Owner("FineTuneJob", "hello", "test", "uid-1"))
APP = Handle(Owner("ModelDeployment", "echo", "test", "uid-2"))
"""One Ray runs every owner's work: the local driver needs nothing of a handle."""


@pytest.fixture(scope="module")
def driver() -> Iterator[LocalRayDriver]:
    d = LocalRayDriver(num_cpus=1, env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    d.start()
    try:
        yield d
    finally:
        d.down()


def _get(url: str, token: str | None = None, timeout: float = 10) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait(predicate: Any, timeout: float, what: str) -> None:
    wait_until(what, predicate, timeout)


def test_dashboard_requires_the_token(driver: LocalRayDriver) -> None:
    assert driver.started_head and driver.address and driver.token
    assert _get(f"{driver.address}/api/jobs/")[0] == 401
    assert _get(f"{driver.address}/api/jobs/", token="wrong")[0] == 403
    assert _get(f"{driver.address}/api/jobs/", token=driver.token)[0] == 200
    assert driver.temp_dir is not None and (driver.temp_dir / "auth_token").read_text() == driver.token


def test_the_private_head_listens_on_loopback_only(driver: LocalRayDriver) -> None:
    """The embedded default's Ray accepts no connection from another host, and its temp dir is private."""
    import psutil

    pids = driver.owned_pids()
    listening = [
        (c.laddr.ip, c.laddr.port, c.pid)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]
    assert listening, "the head's processes listen somewhere"  # (runs before test_down_...)
    outside = [(ip, port, psutil.Process(pid).name()) for ip, port, pid in listening if not _loopback(ip)]
    assert outside == []
    assert driver.temp_dir is not None and (driver.temp_dir.stat().st_mode & 0o077) == 0


def _loopback(ip: str) -> bool:
    import ipaddress

    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def test_same_submission_id_is_one_job(driver: LocalRayDriver) -> None:
    sid = "corral-test-hello-1"
    entrypoint = "python -c \"print('hi')\""
    driver.submit_job(JOB, sid, entrypoint)
    driver.submit_job(JOB, sid, entrypoint)  # a restarted control plane re-submitting: success, no second job
    _wait(lambda: (s := driver.job_status(JOB, sid)) is not None and not s.active, 120, "the job to finish")
    state = driver.job_status(JOB, sid)
    assert state is not None and state.status == "SUCCEEDED"
    assert state.start_time is not None and state.end_time is not None and state.end_time >= state.start_time
    assert "hi" in driver.job_logs(JOB, sid)
    _, body = _get(f"{driver.address}/api/jobs/", token=driver.token)
    assert [j["submission_id"] for j in json.loads(body)].count(sid) == 1
    assert driver.job_status(JOB, "corral-test-nope-1") is None
    assert driver.stop_job(JOB, sid) is False


def _echo(name: str, version: str) -> dict[str, Any]:
    return {
        "name": name,
        "route_prefix": f"/t/{name}",
        "import_path": "tests.fixtures.serve_echo:build",
        "args": {"version": version},
    }


def test_serve_deploy_update_in_place_and_delete(driver: LocalRayDriver) -> None:
    endpoint = driver.endpoint()
    assert endpoint is not None
    driver.deploy_serve(APP, {"applications": [_echo("one", "v1")]})
    _wait(lambda: (a := driver.serve_status(APP, "one")) is not None and a.status == "RUNNING", 120, "app one")
    status, body = _get(f"{endpoint}/t/one/v1/models")
    assert status == 200 and json.loads(body) == {"version": "v1", "path": "/t/one/v1/models"}
    app = driver.serve_status(APP, "one")
    assert app is not None
    assert app.deployments["Echo"] == (1, 1) and app.route_prefix == "/t/one"
    assert app.deployed_config is not None and app.deployed_config["args"] == {"version": "v1"}

    driver.deploy_serve(APP, {"applications": [_echo("two", "v1")]})  # upsert: "one" stays
    _wait(lambda: (a := driver.serve_status(APP, "two")) is not None and a.status == "RUNNING", 120, "app two")
    assert set(driver.applications()) == {"one", "two"}

    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            code, text = _get(f"{endpoint}/t/one/x", timeout=30)
            if code != 200:
                failures.append(f"{code}: {text[:200]}")
            else:
                seen.add(json.loads(text)["version"])

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        driver.deploy_serve(APP, {"applications": [_echo("one", "v2")]})  # in-place update
        _wait(lambda: "v2" in seen, 120, "the update to answer")
    finally:
        stop.set()
        thread.join(40)
    assert failures == []
    assert seen <= {"v1", "v2"}

    driver.delete_serve_app(APP, "two")
    _wait(lambda: driver.serve_status(APP, "two") is None, 60, "app two to go")
    assert _get(f"{endpoint}/t/one/x")[0] == 200
    driver.delete_serve_app(APP, "two")  # absent: success


def test_down_stops_everything_it_started(driver: LocalRayDriver) -> None:
    import psutil  # type: ignore[import-untyped]

    pids = driver.owned_pids()
    temp_dir = driver.temp_dir
    assert len(pids) > 3
    driver.down()
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    assert temp_dir is not None and not temp_dir.exists()
    assert not driver.started_head
    driver.down()  # idempotent
    # And a stopped driver starts a fresh head (the module's other tests may run after this one
    # in random order, `make test-repeat`).
    driver.start()
    assert driver.started_head and driver.temp_dir is not None and driver.temp_dir != temp_dir
