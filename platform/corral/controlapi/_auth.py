"""Bearer-token authentication for the embedded control API: tokens mapped to namespaces.

The tokens file (YAML)::

    tokens:
      - name: team-a                    # who; shows in logs and 403 messages (never the token)
        tokenSha256: 9f86d08...          # sha256 hex of the token (preferred), or
        # token: s3cret                 # the token itself (development only)
        namespaces: [team-a]             # ["*"] for every namespace
        cluster: false                   # may write cluster-scoped kinds (GPUPool)
        controller: false                # may write /status (the controller's own principal)
        metrics: false                   # may read /metrics (a Prometheus scrape token)

Every authenticated caller may read cluster-scoped objects (pools are shared capacity);
only ``cluster: true`` may create, change or delete them. Status belongs to the controller:
only ``controller: true`` (and an admin, ``namespaces: ["*"]``, for repair) may write
``/status``. ``/metrics`` shows every namespace's names, so only ``metrics: true`` (and an
admin) may read it. Tokens are compared as SHA-256
digests with :func:`hmac.compare_digest` against every entry, and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from ._status import APIError

__all__ = ["AccessCheck", "Authenticator", "Principal", "TokenAuth", "TokenEntry", "hash_token"]

log = logging.getLogger(__name__)

ALL_NAMESPACES = "*"


def hash_token(token: str) -> str:
    """Return the sha256 hex digest of a token, as the tokens file's ``tokenSha256`` stores it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


AccessCheck = Callable[[str, str, str | None, str], bool]
"""``(verb, resource, namespace, subresource) -> allowed``: one request's authorization.

``resource`` is a ``corral.dev`` plural (``finetunejobs``), ``namespace`` ``None`` for a
cluster-scoped kind or a cluster-wide request, ``subresource`` ``""`` or ``"status"``.
"""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    Attributes:
        name: The token's name (for logs and messages).
        namespaces: Namespaces it may use; ``None`` means every namespace.
        cluster: Whether it may write cluster-scoped objects.
        controller: Whether it is the controller, which alone writes ``/status``.
        metrics: Whether it may read ``/metrics`` (every namespace's names and numbers).
        access: When set, every request is authorized by this check (verb, resource,
            namespace, subresource) instead of the namespace, ``cluster`` and ``controller``
            rules above; the cluster's authenticator sets it (SubjectAccessReview per request).
            ``namespaces`` then only picks the default namespace of OpenAI-style calls.
    """

    name: str
    namespaces: frozenset[str] | None
    cluster: bool = False
    controller: bool = False
    metrics: bool = False
    access: AccessCheck | None = field(default=None, compare=False, repr=False)

    @property
    def all_namespaces(self) -> bool:
        """True for an admin that sees every namespace."""
        return self.namespaces is None

    def can_use(self, namespace: str | None) -> bool:
        """Return whether the caller may read and write objects in ``namespace``."""
        return self.namespaces is None or (namespace is not None and namespace in self.namespaces)

    @property
    def writes_status(self) -> bool:
        """True for the controller, and for an admin (to repair a status by hand)."""
        return self.controller or self.all_namespaces

    @property
    def reads_metrics(self) -> bool:
        """True for a metrics (scrape) token, and for an admin."""
        return self.metrics or self.all_namespaces


class Authenticator(Protocol):
    """Turns an ``Authorization`` header into a :class:`Principal` (tokens file, or TokenReview on a cluster)."""

    def authenticate(self, token: str | None) -> Principal:
        """Return the caller of a bearer token.

        Raises:
            APIError: 401 Unauthorized for a missing or unknown token.
        """
        ...


@dataclass(frozen=True)
class TokenEntry:
    """One entry of the tokens file."""

    name: str
    sha256: str
    namespaces: frozenset[str] | None
    cluster: bool = False
    controller: bool = False
    metrics: bool = False

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "tokens file") -> TokenEntry:
        """Read one ``tokens[]`` entry.

        Raises:
            ValueError: The entry is malformed (the message never contains the token).
        """
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: every token needs a name")
        plain, digest = data.get("token"), data.get("tokenSha256")
        if (plain is None) == (digest is None):
            raise ValueError(f"{where}: token {name!r} needs exactly one of token and tokenSha256")
        if plain is not None:
            if not isinstance(plain, str) or len(plain) < 8:
                raise ValueError(f"{where}: token {name!r} must be a string of at least 8 characters")
            digest = hash_token(plain)
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{where}: tokenSha256 of {name!r} must be 64 lowercase hex characters")
        namespaces = data.get("namespaces", [])
        if not isinstance(namespaces, list) or not all(isinstance(ns, str) and ns for ns in namespaces):
            raise ValueError(f'{where}: namespaces of {name!r} must be a list of names (or ["*"])')
        granted = None if ALL_NAMESPACES in namespaces else frozenset(namespaces)
        flags = {}
        for flag in ("cluster", "controller", "metrics"):
            value = data.get(flag, False)
            if not isinstance(value, bool):
                raise ValueError(f"{where}: {flag} of {name!r} must be true or false")
            flags[flag] = value
        return cls(name=name, sha256=digest, namespaces=granted, **flags)


class TokenAuth:
    """Static bearer tokens from a tokens file (the embedded default's :class:`Authenticator`)."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self.entries = tuple(entries)
        names = [entry.name for entry in self.entries]
        if len(set(names)) != len(names):
            raise ValueError("token names must be unique")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "tokens file") -> TokenAuth:
        """Build from the decoded tokens file (``{"tokens": [...]}``)."""
        tokens = data.get("tokens")
        if not isinstance(tokens, list):
            raise ValueError(f"{where}: expected a top-level 'tokens' list")
        return cls(TokenEntry.from_mapping(item, where) for item in tokens)

    @classmethod
    def from_file(cls, path: str | Path) -> TokenAuth:
        """Load a tokens file (YAML)."""
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        auth = cls.from_mapping(data, str(path))
        log.info("Loaded %d tokens from %s", len(auth.entries), path)
        return auth

    def authenticate(self, token: str | None) -> Principal:
        """Return the caller of ``token`` (see :meth:`Authenticator.authenticate`)."""
        if not token:
            raise _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        digest = hash_token(token).encode()
        found: TokenEntry | None = None
        for entry in self.entries:  # compare with every entry: timing does not tell which one matched
            if hmac.compare_digest(digest, entry.sha256.encode()):
                found = entry
        if found is None:
            raise _unauthorized("invalid bearer token")
        return Principal(found.name, found.namespaces, found.cluster, found.controller, found.metrics)


def _unauthorized(message: str) -> APIError:
    return APIError(401, "Unauthorized", f"Unauthorized: {message}", headers={"WWW-Authenticate": "Bearer"})
