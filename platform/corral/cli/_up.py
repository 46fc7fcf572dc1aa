"""``corral up`` and ``corral down``: start and stop the embedded default in the background.

``up`` starts a private Ray head (or attaches to ``RAY_ADDRESS``), the reconcile loop and
the control API in one background process, creates an admin token on first use (only its
SHA-256 is kept in ``tokens.yaml``; the token itself goes into the 0600 context file the
other commands read), waits until the API is ready and prints where everything is.
``down`` stops that process, which stops everything it started.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
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

__all__ = ["ensure_up", "register", "stop_daemon"]


def _data_dir(data_dir: Path | None) -> Path:
    return (data_dir or corral_home() / "data").expanduser().resolve()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "corral.pid"
    if not pid_file.exists():
        return None
    try:
        pid = int(pid_file.read_text().strip())
    except ValueError:
        return None
    return pid if _alive(pid) else None


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ensure_token(data_dir: Path, server: str) -> str:
    """Return the admin token, creating it (and tokens.yaml) on first use."""
    from corral.controlapi import hash_token

    tokens_file = data_dir / "tokens.yaml"
    try:
        ctx = load_context()
    except FileNotFoundError:
        ctx = None
    if tokens_file.exists() and ctx is not None and ctx.token:
        entries = yaml.safe_load(tokens_file.read_text()) or {}
        hashes = {e.get("tokenSha256") for e in entries.get("tokens", [])}
        if hash_token(ctx.token) in hashes:
            return ctx.token
    token = secrets.token_urlsafe(32)
    body = {"tokens": [{"name": "admin", "tokenSha256": hash_token(token), "namespaces": ["*"], "cluster": True}]}
    fd = os.open(tokens_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(body, fh)
    return token


def ensure_up(
    data_dir: Path | None = None, port: int = 8080, host: str = "127.0.0.1", timeout: float = 300.0
) -> dict[str, Any]:
    """Start the background control plane unless it runs already; return its endpoints.

    Raises:
        RuntimeError: It did not come up in ``timeout`` seconds; the message carries the log's tail.
    """
    data = _data_dir(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    endpoints_file = data / "endpoints.json"
    if _running_pid(data) and endpoints_file.exists():
        return dict(json.loads(endpoints_file.read_text()))
    port = port or _free_port(host)
    server = f"http://{host}:{port}"
    token = _ensure_token(data, server)
    save_context(Context(server=server, token=token, namespace=_namespace_default()))
    log = open(data / "corral.log", "ab")  # noqa: SIM115 - handed to the child process
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "corral.cli._daemon", "--data-dir", str(data), "--host", host, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    (data / "corral.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the control plane exited with code {proc.returncode}:\n{_tail(data / 'corral.log')}")
        if endpoints_file.exists() and _ready(server):
            return dict(json.loads(endpoints_file.read_text()))
        time.sleep(0.5)
    raise RuntimeError(f"the control plane did not come up in {timeout:.0f} s:\n{_tail(data / 'corral.log')}")


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
    """Stop the background control plane; return False when none was running."""
    data = _data_dir(data_dir)
    pid = _running_pid(data)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    (data / "corral.pid").unlink(missing_ok=True)
    (data / "endpoints.json").unlink(missing_ok=True)
    return True


def print_endpoints(info: dict[str, Any]) -> None:
    """Print where the API, chat endpoints, dashboard and metrics are."""
    typer.echo(f"Control API     {info['api']}   (token in {corral_home() / 'context.yaml'})")
    typer.echo(f"Chat endpoints  {info.get('serve')}/<namespace>/<deployment>/v1   (OpenAI-compatible)")
    typer.echo(f"Ray dashboard   {info.get('dashboard')}")
    typer.echo(f"Metrics         {info['metrics']}")


DataDir = Annotated[Path | None, typer.Option("--data-dir", help="State directory (default $CORRAL_HOME/data).")]


def up(
    data_dir: DataDir = None,
    port: Annotated[int, typer.Option("--port", help="Control API port (0 picks a free one).")] = 8080,
) -> None:
    """Start the embedded control plane (local Ray, reconcile loop, control API) in the background."""
    try:
        info = ensure_up(data_dir, port)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
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
