"""Parsing and joining artifact URIs: ``file://``, plain absolute paths, ``s3://`` and ``hf://``.

Accepted forms::

    /abs/path, file:///abs/path, file://localhost/abs/path   (percent-decoded)
    s3://bucket/key/with/slashes                             (key taken literally)
    hf://org/name[@revision][/path/in/repo]                  (model repositories)
    hf://datasets/org/name[@revision][/path]                 (also spaces/)

A revision containing ``/`` (``refs/pr/1``) is written percent-encoded: ``@refs%2Fpr%2F1``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

Scheme = Literal["file", "s3", "hf"]

#: Schemes :func:`parse_uri` accepts, for error messages.
ALLOWED_SCHEMES = ("file://", "s3://", "hf://", "an absolute path")

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_HF_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
_HF_REPO_TYPES = {"datasets": "dataset", "spaces": "space"}


@dataclass(frozen=True)
class ArtifactURI:
    """A parsed artifact URI. ``str(uri)`` gives the canonical form.

    Attributes:
        scheme: ``file``, ``s3`` or ``hf``.
        location: S3 bucket or Hugging Face repo id (``org/name``); empty for ``file``.
        path: Absolute local path (``file``), object key (``s3``, no leading slash) or
            path inside the repository (``hf``); may be empty for a bucket/repo root.
        revision: Hugging Face revision (branch, tag or commit); ``None`` means ``main``.
        repo_type: Hugging Face repository type: ``model``, ``dataset`` or ``space``.
    """

    scheme: Scheme
    location: str
    path: str
    revision: str | None = None
    repo_type: str = "model"

    @property
    def bucket(self) -> str:
        """The S3 bucket (``s3`` URIs)."""
        return self.location

    @property
    def key(self) -> str:
        """The S3 object key (``s3`` URIs)."""
        return self.path

    @property
    def repo_id(self) -> str:
        """The Hugging Face repository id (``hf`` URIs)."""
        return self.location

    def __str__(self) -> str:
        """Return the canonical URI string."""
        if self.scheme == "file":
            return "file://" + quote(self.path, safe="/:@!$&'()*+,;=-._~")
        if self.scheme == "s3":
            return f"s3://{self.location}/{self.path}" if self.path else f"s3://{self.location}"
        prefix = {"dataset": "datasets/", "space": "spaces/"}.get(self.repo_type, "")
        rev = f"@{quote(self.revision, safe='')}" if self.revision is not None else ""
        tail = f"/{self.path}" if self.path else ""
        return f"hf://{prefix}{self.location}{rev}{tail}"

    def joinpath(self, relative: str) -> ArtifactURI:
        """Return the URI of ``relative`` (a POSIX path) under this one.

        Args:
            relative: Path such as ``checkpoints/step-10/model.safetensors``.

        Returns:
            The joined URI.

        Raises:
            ValueError: When ``relative`` is absolute or contains ``..``.
        """
        rel = PurePosixPath(relative)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"Cannot join {relative!r} onto {self}: must be relative, without '..'")
        if str(rel) == ".":
            return self
        if self.scheme == "file":
            joined = str(PurePosixPath(self.path) / rel)
        else:
            joined = f"{self.path.rstrip('/')}/{rel}" if self.path.strip("/") else str(rel)
        return ArtifactURI(self.scheme, self.location, joined, self.revision, self.repo_type)

    def relative(self, child: ArtifactURI) -> str:
        """Return ``child``'s path relative to this URI taken as a directory.

        Args:
            child: A URI at or under this one (same scheme and location).

        Returns:
            The relative POSIX path; empty when ``child`` is this URI itself.

        Raises:
            ValueError: When ``child`` is not under this URI.
        """
        base = self.path.rstrip("/")
        same_root = (child.scheme, child.location) == (self.scheme, self.location)
        if same_root and child.path == base:
            return ""
        if same_root and (not base or child.path.startswith(base + "/")):
            return child.path[len(base) :].lstrip("/")
        raise ValueError(f"{child} is not under {self}")


def parse_uri(uri: str | ArtifactURI) -> ArtifactURI:
    """Parse an artifact URI.

    Args:
        uri: ``file://...``, an absolute path, ``s3://bucket/key`` or ``hf://org/name@rev/path``.

    Returns:
        The parsed URI.

    Raises:
        ValueError: Naming the value and the allowed schemes when it cannot be parsed.
    """
    if isinstance(uri, ArtifactURI):
        return uri
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"Invalid artifact URI {uri!r}: expected one of {', '.join(ALLOWED_SCHEMES)}")
    if uri.startswith("/"):
        return _file(uri, uri)
    scheme, sep, _rest = uri.partition("://")
    if not sep:
        raise ValueError(
            f"Invalid artifact URI {uri!r}: relative paths are not allowed; "
            f"expected one of {', '.join(ALLOWED_SCHEMES)}"
        )
    scheme = scheme.lower()
    if scheme == "file":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"Invalid file URI {uri!r}: host {parts.netloc!r} is not local")
        if parts.query or parts.fragment:
            raise ValueError(f"Invalid file URI {uri!r}: query and fragment are not allowed")
        return _file(uri, unquote(parts.path))
    if scheme == "s3":
        return _s3(uri)
    if scheme == "hf":
        return _hf(uri)
    raise ValueError(
        f"Unsupported artifact URI scheme {scheme!r} in {uri!r}: expected one of {', '.join(ALLOWED_SCHEMES)}"
    )


def _file(uri: str, path: str) -> ArtifactURI:
    if not path.startswith("/"):
        raise ValueError(f"Invalid file URI {uri!r}: the path must be absolute")
    if "\x00" in path:
        raise ValueError(f"Invalid file URI {uri!r}: NUL byte in path")
    normalized = str(PurePosixPath(path))
    if ".." in PurePosixPath(normalized).parts:
        raise ValueError(f"Invalid file URI {uri!r}: '..' is not allowed")
    return ArtifactURI("file", "", normalized)


def _s3(uri: str) -> ArtifactURI:
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ValueError(
            f"Invalid S3 URI {uri!r}: bucket {bucket!r} must be 3-63 characters of "
            "lowercase letters, digits, '.' and '-' (form: s3://bucket/key)"
        )
    if "//" in key:
        raise ValueError(f"Invalid S3 URI {uri!r}: empty path segment in key")
    return ArtifactURI("s3", bucket, key)


def _hf(uri: str) -> ArtifactURI:
    rest = uri[len("hf://") :]
    segments = rest.split("/")
    repo_type = "model"
    if segments and segments[0] in _HF_REPO_TYPES:
        repo_type = _HF_REPO_TYPES[segments.pop(0)]
    if len(segments) < 2 or not segments[0] or not segments[1]:
        raise ValueError(f"Invalid Hugging Face URI {uri!r}: expected hf://org/name[@revision][/path]")
    org, name_rev, tail = segments[0], segments[1], segments[2:]
    if tail and tail[-1] == "":
        tail = tail[:-1]  # a trailing slash names the same prefix
    name, at, revision = name_rev.partition("@")
    for part in (org, name):
        if not _HF_NAME_RE.match(part):
            raise ValueError(f"Invalid Hugging Face URI {uri!r}: bad repository name part {part!r}")
    if at and not revision:
        raise ValueError(f"Invalid Hugging Face URI {uri!r}: empty revision after '@'")
    path = "/".join(tail)
    if any(p in ("", "..", ".") for p in tail):
        raise ValueError(f"Invalid Hugging Face URI {uri!r}: bad path {path!r}")
    return ArtifactURI("hf", f"{org}/{name}", path, unquote(revision) if at else None, repo_type)
