"""``corral up`` and ``corral down``: start and stop the embedded default in the background.

``up`` starts a private Ray head (or attaches to ``RAY_ADDRESS``), the reconcile loop and
the control API in one background process, creates an admin token on first use (only its
SHA-256 is kept in ``tokens.yaml``; the token itself goes into the 0600 context file the
other commands read), waits until the API is ready and prints where everything is.
``down`` stops that process, which stops everything it started.

One plane per home (:mod:`._home`): the daemon holds an exclusive lock for its life, a
second ``up`` attaches to it, and ``down`` signals only the process the pid record names
when its start time and command line still match. The ports are chosen once per home
(``ports.json``) and reused, so the URLs printed here stay valid across restarts. A Ray head
left running by a killed daemon is re-attached by the next ``up`` and stopped by ``down``.

An existing ``tokens.yaml`` is never rewritten: when it has no entry for the context's token,
``up`` appends one admin entry (every other entry stays byte for byte) or refuses with a
message saying what to do. The data dir is 0700 and everything in it 0600.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import yaml

from ..client import Context, save_context
from ..client._context import corral_home, load_context
from ..drivers import stop_recorded_head
from ._home import DAEMON_MODULE, DaemonRecord, Ports, daemon_lock_held, running_daemon, up_lock

__all__ = ["TokensFileError", "ensure_up", "register", "stop_daemon"]

logger = logging.getLogger(__name__)


def _data_dir(data_dir: Path | None) -> Path:
    return (data_dir or corral_home() / "data").expanduser().resolve()


def _private_dir(path: Path) -> None:
    """Create ``path`` (0700) and make it and what is directly in it private: dirs 0700, files 0600."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    for child in path.iterdir():
        if child.is_symlink():
            continue
        child.chmod(0o700 if child.is_dir() else 0o600)


class TokensFileError(RuntimeError):
    """``tokens.yaml`` exists but cannot take an admin entry safely; the message says what to do."""


def _ensure_token(data_dir: Path, server: str) -> str:
    """Return the admin token: the context's when ``tokens.yaml`` knows it, else a new one.

    A missing ``tokens.yaml`` is created (0600) with one admin entry. An existing one is
    never rewritten: a new admin entry is appended to it (the other entries stay as they
    are), or, when the file cannot take one safely, :class:`TokensFileError` says why.
    """
    from corral.controlapi import TokenAuth, hash_token  # lazy: FastAPI only for `corral up`, not every command

    tokens_file = data_dir / "tokens.yaml"
    try:
        ctx = load_context()
    except FileNotFoundError:
        ctx = None
    token = secrets.token_urlsafe(32)
    if not tokens_file.exists():
        body = {"tokens": [{"name": "admin", "tokenSha256": hash_token(token), "namespaces": ["*"], "cluster": True}]}
        fd = os.open(tokens_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yaml.safe_dump(body, fh)
        return token
    text = tokens_file.read_text(encoding="utf-8")
    try:
        existing = TokenAuth.from_mapping(yaml.safe_load(text) or {}, str(tokens_file))
    except (ValueError, yaml.YAMLError) as exc:
        raise TokensFileError(
            f"{tokens_file} is not a valid tokens file ({str(exc)[:200]}); fix it, or move it away to have "
            "`corral up` create a new one"
        ) from None
    if ctx is not None and ctx.token and hash_token(ctx.token) in {e.sha256 for e in existing.entries}:
        return ctx.token
    names = {e.name for e in existing.entries}
    name = next(f"admin-{n}" for n in range(2, len(names) + 3) if f"admin-{n}" not in names)
    name = "admin" if "admin" not in names else name
    entry = (
        f"  - name: {name}\n    tokenSha256: {hash_token(token)}\n    namespaces: ['*']\n    cluster: true\n"
        "    # added by `corral up`: the context's token was not in this file\n"
    )
    appended = text + ("" if text.endswith("\n") or not text else "\n") + entry
    try:
        after = TokenAuth.from_mapping(yaml.safe_load(appended) or {}, str(tokens_file))
    except (ValueError, yaml.YAMLError):
        after = None
    if (
        after is None
        or after.entries[: len(existing.entries)] != existing.entries
        or len(after.entries) != len(existing.entries) + 1
    ):
        raise TokensFileError(
            f"{tokens_file} has no entry for the token in {corral_home() / 'context.yaml'}, and an admin entry "
            "cannot be appended to it safely (its 'tokens' list is not the last block of the file). Add an entry "
            "with namespaces ['*'] and put its token in context.yaml, or move the file away"
        )
    tmp = tokens_file.with_suffix(".yaml.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(appended)
    tmp.replace(tokens_file)
    return token


def ensure_up(
    data_dir: Path | None = None, port: int | None = None, host: str = "127.0.0.1", timeout: float = 300.0
) -> dict[str, Any]:
    """Start the background control plane unless one runs for this home; return its endpoints.

    One daemon per home: ``up.lock`` makes concurrent calls take turns, and the daemon's own
    lock on ``corral.lock`` says whether one runs (a PID in a file says nothing: it may be a
    stranger's). A second call attaches to the running daemon (``info["attached"]`` is True).

    Args:
        data_dir: The home's data dir (default ``$CORRAL_HOME/data``).
        port: Control API port: None keeps the home's recorded port (first time 8080), 0
            picks a free one the first time and keeps it, any other value is used and recorded.
        host: Interface the API and Serve bind to.
        timeout: Seconds to wait for the API to answer.

    Raises:
        RuntimeError: It did not come up in ``timeout`` seconds (the message carries the log's
            tail), or a daemon holds the lock but does not answer.
    """
    data = _data_dir(data_dir)
    _private_dir(data)
    deadline = time.monotonic() + timeout
    try:
        with up_lock(data, timeout):
            return _ensure_up_locked(data, port, host, deadline)
    except TimeoutError as exc:
        raise RuntimeError(str(exc)) from None


def _ensure_up_locked(data: Path, port: int | None, host: str, deadline: float) -> dict[str, Any]:
    endpoints_file = data / "endpoints.json"
    if daemon_lock_held(data):
        record = running_daemon(data)
        if record is None:
            raise RuntimeError(
                f"a Corral daemon holds {data / 'corral.lock'} but its pid file does not name it; "
                "it is starting or stopping: try again in a moment"
            )
        info = _wait_ready(data, None, record.pid, deadline)
        return {**info, "attached": True}
    stale = DaemonRecord.read(data)
    if stale is not None or (data / "corral.pid").exists():
        logger.info("Removing a stale pid file (no daemon holds the lock)")
    (data / "corral.pid").unlink(missing_ok=True)
    endpoints_file.unlink(missing_ok=True)
    recorded = Ports.read(data)
    api_port = port if port else (recorded.api or (None if port == 0 else 8080))
    ports = Ports.choose(data, host, api=api_port)
    server = f"http://{host}:{ports.api}"
    token = _ensure_token(data, server)
    save_context(Context(server=server, token=token, namespace=_namespace_default()))
    log = os.fdopen(os.open(data / "corral.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [
        sys.executable,
        "-m",
        DAEMON_MODULE,
        "--data-dir",
        str(data),
        "--host",
        host,
        "--port",
        str(ports.api),
        "--serve-port",
        str(ports.serve),
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    log.close()
    return _wait_ready(data, proc, proc.pid, deadline)


def _wait_ready(data: Path, proc: subprocess.Popen[bytes] | None, pid: int, deadline: float) -> dict[str, Any]:
    endpoints_file = data / "endpoints.json"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the control plane exited with code {proc.returncode}:\n{_tail(data / 'corral.log')}")
        if proc is None and not _pid_alive(pid):
            raise RuntimeError(f"the running control plane (pid {pid}) exited:\n{_tail(data / 'corral.log')}")
        if endpoints_file.exists():
            info = dict(json.loads(endpoints_file.read_text()))
            if info.get("pid") == pid and _ready(str(info["api"])):
                return info
        time.sleep(0.5)
    raise RuntimeError(f"the control plane did not come up in time:\n{_tail(data / 'corral.log')}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespace_default() -> str:
    return os.environ.get("CORRAL_NAMESPACE", "default")


def _ready(server: str) -> bool:
    try:
        return httpx.get(f"{server}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop_daemon(data_dir: Path | None = None, timeout: float = 60.0) -> bool:
    """Stop the home's control plane and its Ray head; return False when nothing was running.

    Only the daemon that holds the home's lock *and* matches the pid record (PID, start time,
    command line) is signalled; a pid file naming any other process is removed, the process
    left alone. When the daemon was killed and left its Ray head running, that head is
    stopped by the PIDs recorded in ``ray-head.json``.
    """
    data = _data_dir(data_dir)
    stopped = False
    record = running_daemon(data)
    if record is not None:
        os.kill(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while record.matches() and time.monotonic() < deadline:
            time.sleep(0.2)
        if record.matches():
            logger.warning("Daemon %d did not stop in %.0f s; killing it", record.pid, timeout)
            os.kill(record.pid, signal.SIGKILL)
        stopped = True
    elif (data / "corral.pid").exists():
        stale = DaemonRecord.read(data)
        who = f"process {stale.pid}" if stale is not None else "a process"
        logger.info("Pid file names %s that is not this home's daemon; left alone", who)
    if not daemon_lock_held(data):
        (data / "corral.pid").unlink(missing_ok=True)
        (data / "endpoints.json").unlink(missing_ok=True)
        orphans = stop_recorded_head(data)
        if orphans:
            typer.echo(f"Stopped {orphans} processes of an orphaned Ray head.")
            stopped = True
    return stopped


def print_endpoints(info: dict[str, Any]) -> None:
    """Print where the API, chat endpoints, dashboard and metrics are."""
    typer.echo(f"Control API     {info['api']}   (token in {corral_home() / 'context.yaml'})")
    typer.echo(f"Chat endpoints  {info.get('serve')}/<namespace>/<deployment>/v1   (OpenAI-compatible)")
    typer.echo(f"Ray dashboard   {info.get('dashboard')}")
    typer.echo(f"Metrics         {info['metrics']}")


DataDir = Annotated[Path | None, typer.Option("--data-dir", help="State directory (default $CORRAL_HOME/data).")]


def up(
    data_dir: DataDir = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="Control API port (default: this home's, first time 8080; 0 picks a free one)."),
    ] = None,
) -> None:
    """Start the embedded control plane (local Ray, reconcile loop, control API) in the background.

    One per home: when it runs already, this attaches to it and prints its endpoints.
    """
    try:
        info = ensure_up(data_dir, port)
    except RuntimeError as exc:  # TokensFileError too
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if info.get("attached"):
        typer.echo(f"Corral is already up (pid {info.get('pid')}); attached.")
    else:
        typer.echo("Corral is up.")
    print_endpoints(info)


def down(data_dir: DataDir = None) -> None:
    """Stop the embedded control plane and everything it started."""
    if stop_daemon(data_dir):
        typer.echo("Corral is down.")
    else:
        typer.echo("Corral was not running.")


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command("up")(up)
    app.command("down")(down)
