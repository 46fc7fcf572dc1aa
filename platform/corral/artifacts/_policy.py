"""Which artifact URIs a namespace may reference: one rule for every URI a tenant hands the server.

A tenant's object may point only at

* its namespace's own artifact prefixes: its uploads (``<root>/files/<ns>/``) and its
  fine-tuning jobs' folders and outputs (``<root>/finetunejobs/<ns>/``);
* the shared catalog the server builds (``<root>/catalog/``);
* prefixes an administrator allowed in the settings, per namespace (``"*"``: every
  namespace), e.g. ``{"team-a": ["s3://team-a-data/"], "*": ["hf://"]}``. A prefix that is
  only a scheme (``hf://``) allows the whole scheme.

``file://`` paths are resolved (symlinks, ``..``) before they are compared, so a link or a
dotted path cannot step out of a prefix; ``s3://`` keys are compared segment by segment
and may not contain ``.`` or ``..`` segments. The refusal is the same whether or not the
target exists and never shows what it holds: the check reads no file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._uri import ArtifactURI, parse_uri

__all__ = ["URIPolicy", "URIRefused", "spec_uris"]

ALL_NAMESPACES = "*"


class URIRefused(ValueError):  # noqa: N818 - reads as what happened
    """A URI the namespace may not reference; the message names the URI (cut) and what is allowed."""


def _cut(uri: str, limit: int = 120) -> str:
    return uri if len(uri) <= limit else uri[: limit - 3] + "..."


@dataclass(frozen=True)
class URIPolicy:
    """The URI rule of one control plane.

    Attributes:
        artifact_root: The server's artifact root (``file:///.../artifacts`` or ``s3://...``);
            ``None``: namespaces have no own prefix (only ``allowed``).
        allowed: Namespace (or ``"*"``) -> extra prefixes an administrator allowed.
    """

    artifact_root: str | None
    allowed: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, artifact_root: str | None, data: Any, where: str = "settings") -> URIPolicy:
        """Build from decoded settings (``{namespace or "*": [prefix, ...]}``).

        Raises:
            ValueError: Not a mapping of names to lists of URI prefixes.
        """
        if data is None:
            return cls(artifact_root)
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: allowed URI prefixes must map a namespace (or '*') to a list of prefixes")
        allowed: dict[str, tuple[str, ...]] = {}
        for namespace, prefixes in data.items():
            if not isinstance(prefixes, list) or not all(isinstance(p, str) and p for p in prefixes):
                raise ValueError(f"{where}: allowed URI prefixes of {namespace!r} must be a list of URI prefixes")
            for prefix in prefixes:
                if not prefix.endswith("://"):
                    parse_uri(prefix)  # raises ValueError naming the prefix
            allowed[str(namespace)] = tuple(prefixes)
        return cls(artifact_root, allowed)

    def prefixes(self, namespace: str) -> list[str]:
        """Every prefix ``namespace`` may reference, own prefixes first."""
        own: list[str] = []
        if self.artifact_root:
            root = self.artifact_root.rstrip("/")
            own = [f"{root}/files/{namespace}/", f"{root}/finetunejobs/{namespace}/", f"{root}/catalog/"]
        return own + list(self.allowed.get(namespace, ())) + list(self.allowed.get(ALL_NAMESPACES, ()))

    def check(self, uri: str, namespace: str, field_path: str = "spec.uri") -> None:
        """Allow ``uri`` for ``namespace`` or raise.

        Raises:
            URIRefused: The URI is not under any prefix the namespace may reference (the
                message does not depend on whether the target exists).
        """
        try:
            target = parse_uri(uri)
        except ValueError:
            target = None
        if target is not None:
            for prefix in self.prefixes(namespace):
                if _under(target, prefix):
                    return
        allowed = ", ".join(self.prefixes(namespace)) or "none"
        raise URIRefused(
            f"{field_path}: {_cut(uri)!r} is not a URI namespace {namespace} may reference: an object may point "
            f"only at its namespace's own artifacts and the prefixes an administrator allowed for it ({allowed})"
        )


def _resolved(path: str) -> str:
    return os.path.realpath(path)


def _under(target: ArtifactURI, prefix: str) -> bool:
    if prefix.endswith("://"):
        return target.scheme == prefix[:-3].lower() and _clean(target)
    try:
        base = parse_uri(prefix)
    except ValueError:
        return False
    if (base.scheme, base.location) != (target.scheme, target.location) or not _clean(target):
        return False
    if target.scheme == "file":
        path, root = _resolved(target.path), _resolved(base.path)
        return path == root or path.startswith(root.rstrip("/") + "/")
    if target.scheme == "hf" and (
        base.repo_type != target.repo_type or (base.revision is not None and base.revision != target.revision)
    ):
        return False
    root = base.path.rstrip("/")
    return not root or target.path == root or target.path.startswith(root + "/")


def _clean(target: ArtifactURI) -> bool:
    """No ``.``/``..`` segments in an object key or repo path (a ``file`` path is resolved instead)."""
    return target.scheme == "file" or not any(part in (".", "..") for part in target.path.split("/"))


def spec_uris(spec: Any, path: str = "spec") -> Iterator[tuple[str, str]]:
    """Yield ``(field path, uri)`` for every ``uri`` string in a spec (wire form), at any depth."""
    stack: list[tuple[Any, str]] = [(spec, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "uri" and isinstance(value, str):
                    yield f"{where}.{key}", value
                else:
                    stack.append((value, f"{where}.{key}"))
        elif isinstance(item, list):
            stack.extend((value, f"{where}[{index}]") for index, value in enumerate(item))
