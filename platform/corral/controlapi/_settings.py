"""Settings of the embedded control API, read from the environment in one place.

``CORRAL_API_HOST`` (default ``127.0.0.1``), ``CORRAL_API_PORT`` (``8080``),
``CORRAL_STATE_DB`` (``~/.corral/state.db``), ``CORRAL_TOKENS_FILE`` (``~/.corral/tokens.yaml``),
``CORRAL_WATCH_TIMEOUT_SECONDS`` (``1800``), ``CORRAL_MAX_WATCHES_PER_TOKEN`` (``20``),
``CORRAL_ALLOWED_URI_PREFIXES`` (JSON: namespace or ``"*"`` -> URI prefixes a tenant's objects
may reference besides its own artifacts; default ``{"*": ["hf://"]}``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ControlAPISettings"]


@dataclass(frozen=True)
class ControlAPISettings:
    """Where the control API listens and what it serves from."""

    host: str = "127.0.0.1"
    port: int = 8080
    state_db: Path = Path.home() / ".corral" / "state.db"
    tokens_file: Path = Path.home() / ".corral" / "tokens.yaml"
    watch_timeout_seconds: float = 1800.0
    max_watches_per_token: int = 20
    allowed_uri_prefixes: Mapping[str, list[str]] = field(default_factory=lambda: {"*": ["hf://"]})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ControlAPISettings:
        """Read the settings from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        default = cls()
        return cls(
            host=env.get("CORRAL_API_HOST", default.host),
            port=int(env.get("CORRAL_API_PORT", default.port)),
            state_db=Path(env.get("CORRAL_STATE_DB", default.state_db)).expanduser(),
            tokens_file=Path(env.get("CORRAL_TOKENS_FILE", default.tokens_file)).expanduser(),
            watch_timeout_seconds=float(env.get("CORRAL_WATCH_TIMEOUT_SECONDS", default.watch_timeout_seconds)),
            max_watches_per_token=int(env.get("CORRAL_MAX_WATCHES_PER_TOKEN", default.max_watches_per_token)),
            allowed_uri_prefixes=(
                json.loads(env["CORRAL_ALLOWED_URI_PREFIXES"])
                if env.get("CORRAL_ALLOWED_URI_PREFIXES")
                else default.allowed_uri_prefixes
            ),
        )
