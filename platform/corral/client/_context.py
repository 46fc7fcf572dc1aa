"""Where the control API is and which token to use: the context file ``corral up`` writes.

The file (``$CORRAL_HOME/context.yaml``, default ``~/.corral/context.yaml``) is written with
mode 0600 because it holds a bearer token. ``CORRAL_SERVER``, ``CORRAL_TOKEN`` and
``CORRAL_NAMESPACE`` override it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

__all__ = ["Context", "corral_home", "load_context", "save_context"]


def corral_home(env: Mapping[str, str] | None = None) -> Path:
    """The directory Corral keeps local state in (``$CORRAL_HOME`` or ``~/.corral``)."""
    env = os.environ if env is None else env
    return Path(env.get("CORRAL_HOME", str(Path.home() / ".corral"))).expanduser()


@dataclass(frozen=True)
class Context:
    """How to reach a control API."""

    server: str
    token: str | None = field(default=None, repr=False)
    namespace: str = "default"
    extras: dict[str, str] = field(default_factory=dict)


def load_context(env: Mapping[str, str] | None = None) -> Context:
    """Read the context file, with environment overrides.

    Raises:
        FileNotFoundError: No context file and no ``CORRAL_SERVER``; the message says to run ``corral up``.
    """
    env = os.environ if env is None else env
    path = corral_home(env) / "context.yaml"
    data: dict[str, object] = {}
    if path.exists():
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if isinstance(loaded, dict):
            data = loaded
    server = env.get("CORRAL_SERVER") or data.get("server")
    if not server:
        raise FileNotFoundError(
            f"no control API known: {path} does not exist and CORRAL_SERVER is unset; run `corral up`"
        )
    token = env.get("CORRAL_TOKEN") or data.get("token")
    namespace = env.get("CORRAL_NAMESPACE") or data.get("namespace") or "default"
    raw_extras = data.get("extras")
    extras: dict[object, object] = raw_extras if isinstance(raw_extras, dict) else {}
    return Context(
        server=str(server),
        token=str(token) if token else None,
        namespace=str(namespace),
        extras={str(k): str(v) for k, v in extras.items()},
    )


def save_context(context: Context, env: Mapping[str, str] | None = None) -> Path:
    """Write ``context`` to the context file (mode 0600) and return its path."""
    home = corral_home(env)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "context.yaml"
    tmp = path.with_suffix(".tmp")
    body = {"server": context.server, "token": context.token, "namespace": context.namespace, "extras": context.extras}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(body, fh, sort_keys=False)
    os.replace(tmp, path)
    return path
