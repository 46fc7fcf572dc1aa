"""``corral up`` and ``corral down``: start and stop the embedded default in the background.

``up`` starts a private Ray head (or attaches to ``RAY_ADDRESS``), the reconcile loop and
the control API in one background process, creates an admin token on first use (only its
SHA-256 is kept in ``tokens.yaml``; the token itself goes into the 0600 context file the
other commands read), waits until the API is ready and prints where everything is. An
existing ``tokens.yaml`` is never rewritten: when it has no entry for the context's token,
``up`` appends one admin entry (every other entry stays byte for byte) or refuses with a
message saying what to do. The data dir is 0700 and everything in it 0600.
``down`` stops that process, which stops everything it started, after checking that the pid
in ``corral.pid`` is still Corral's daemon for this data dir (a reused pid is never signalled).
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

__all__ = ["TokensFileError", "ensure_up", "register", "stop_daemon"]


DAEMON_MODULE = "corral.cli._daemon"


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


def _is_our_daemon(pid: int, data_dir: Path) -> bool:
    """True when ``pid`` runs Corral's daemon for ``data_dir`` (not a process that reused the pid)."""
    import psutil  # type: ignore[import-untyped]

    try:
        cmdline = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    if DAEMON_MODULE not in cmdline or "--data-dir" not in cmdline:
        return False
    given = cmdline[cmdline.index("--data-dir") + 1] if cmdline.index("--data-dir") + 1 < len(cmdline) else ""
    try:
        return Path(given).resolve() == data_dir.resolve()
    except OSError:
        return False


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
    return pid if _alive(pid) and _is_our_daemon(pid, data_dir) else None


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class TokensFileError(RuntimeError):
    """``tokens.yaml`` exists but cannot take an admin entry safely; the message says what to do."""


def _ensure_token(data_dir: Path, server: str) -> str:
    """Return the admin token: the context's when ``tokens.yaml`` knows it, else a new one.

    A missing ``tokens.yaml`` is created (0600) with one admin entry. An existing one is
    never rewritten: a new admin entry is appended to it (the other entries stay as they
    are), or, when the file cannot take one safely, :class:`TokensFileError` says why.
    """
    from corral.controlapi import TokenAuth, hash_token

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
    if after is None or after.entries[: len(existing.entries)] != existing.entries or len(after.entries) != len(
        existing.entries
    ) + 1:
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
    data_dir: Path | None = None, port: int = 8080, host: str = "127.0.0.1", timeout: float = 300.0
) -> dict[str, Any]:
    """Start the background control plane unless it runs already; return its endpoints.

    Raises:
        RuntimeError: It did not come up in ``timeout`` seconds; the message carries the log's tail.
    """
    data = _data_dir(data_dir)
    _private_dir(data)
    endpoints_file = data / "endpoints.json"
    if _running_pid(data) and endpoints_file.exists():
        return dict(json.loads(endpoints_file.read_text()))
    port = port or _free_port(host)
    server = f"http://{host}:{port}"
    token = _ensure_token(data, server)
    save_context(Context(server=server, token=token, namespace=_namespace_default()))
    log = os.fdopen(os.open(data / "corral.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", DAEMON_MODULE, "--data-dir", str(data), "--host", host, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    log.close()
    fd = os.open(data / "corral.pid", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(str(proc.pid))
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
    """Stop the background control plane; return False when none was running.

    Only a process that still runs Corral's daemon for this data dir is signalled: a pid
    file left behind by a crash may name a process that has reused the pid since.
    """
    data = _data_dir(data_dir)
    pid = _running_pid(data)
    if pid is None:
        (data / "corral.pid").unlink(missing_ok=True)  # stale: its process is gone or is not ours
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and _is_our_daemon(pid, data) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid) and _is_our_daemon(pid, data):
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
    except RuntimeError as exc:  # TokensFileError too
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
