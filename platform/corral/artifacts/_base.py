"""The store contract shared by every artifact backend: errors, ``ArtifactInfo``, ``ArtifactStore``.

Backends implement the per-object operations; directory transfers are written once here
on top of them, so ``file://``, ``s3://`` and ``hf://`` behave the same way.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from corral.artifacts._uri import ArtifactURI, parse_uri

logger = logging.getLogger(__name__)

#: Read/write block size for streaming copies and hashing.
CHUNK_BYTES = 1024 * 1024

#: Marker in the names of in-flight temporary files; listings skip them.
TEMP_MARKER = ".corral-tmp"


class ArtifactError(Exception):
    """An artifact operation failed. Messages name the URI and never carry credentials."""


class ArtifactNotFound(ArtifactError):  # noqa: N818 - public name fixed by the API
    """The artifact named by :attr:`uri` does not exist (or is not reachable offline).

    Attributes:
        uri: The URI that was looked up.
    """

    def __init__(self, uri: str, detail: str = "") -> None:
        """Create the error.

        Args:
            uri: The URI that was not found.
            detail: Extra explanation appended to the message (for example, offline mode).
        """
        self.uri = uri
        message = f"Artifact not found: {uri}"
        super().__init__(f"{message}: {detail}" if detail else message)


@dataclass(frozen=True)
class ArtifactInfo:
    """What is known about one stored artifact.

    Attributes:
        uri: Canonical URI of the artifact.
        size: Size in bytes.
        sha256: Hex SHA-256 of the content, or ``None`` when an S3 object was written
            without Corral's ``sha256`` metadata and has not been downloaded.
    """

    uri: str
    size: int
    sha256: str | None


def format_size(size: int) -> str:
    """Format a byte count for log messages, e.g. ``12 MB``.

    Args:
        size: Number of bytes.

    Returns:
        A short human-readable size (decimal units).
    """
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{size} B" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def sha256_file(path: Path) -> tuple[int, str]:
    """Hash a local file by streaming it.

    Args:
        path: File to read.

    Returns:
        ``(size, hex sha256)``.
    """
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def walk_files(root: Path) -> Iterator[Path]:
    """Yield the regular files under ``root`` recursively, skipping in-flight temp files.

    Args:
        root: Directory to walk.

    Yields:
        Paths of files (symlinks to files included, symlinked directories not followed),
        in no particular order.
    """
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if TEMP_MARKER in name:
                continue
            path = Path(dirpath, name)
            if path.is_file():
                yield path


def safe_join(root: Path, relative: str) -> Path:
    """Join a store-relative POSIX path onto a local directory, refusing escapes.

    Args:
        root: Local destination directory.
        relative: Relative key such as ``a/b.bin`` (from a listing).

    Returns:
        The destination path under ``root``.

    Raises:
        ArtifactError: When ``relative`` is absolute or climbs out of ``root``.
    """
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or any(p in ("..", ".") for p in parts):
        raise ArtifactError(f"Refusing unsafe relative path {relative!r} under {root}")
    return root.joinpath(*parts)


class ArtifactStore(ABC):
    """Put, get, list and delete artifacts addressed by URI.

    One store serves every URI of its scheme (any bucket, any repository, any path).
    Methods accept either a URI string or a parsed :class:`ArtifactURI`.
    """

    #: The URI scheme this store serves (``file``, ``s3`` or ``hf``).
    scheme: str

    def _parse(self, uri: str | ArtifactURI) -> ArtifactURI:
        parsed = uri if isinstance(uri, ArtifactURI) else parse_uri(uri)
        if parsed.scheme != self.scheme:
            raise ValueError(f"{type(self).__name__} serves {self.scheme}:// URIs, got {str(parsed)!r}")
        return parsed

    @abstractmethod
    def put_file(self, local: str | os.PathLike[str], uri: str | ArtifactURI) -> ArtifactInfo:
        """Store a local file at ``uri``, replacing any existing artifact.

        Args:
            local: Path of the file to upload.
            uri: Destination URI.

        Returns:
            Size and SHA-256 of what was stored.
        """

    @abstractmethod
    def get_file(self, uri: str | ArtifactURI, local: str | os.PathLike[str]) -> ArtifactInfo:
        """Fetch ``uri`` into a local file, atomically (temp file + rename).

        Args:
            uri: Source URI.
            local: Destination path; parent directories are created.

        Returns:
            Size and SHA-256 of what was written (verified against recorded metadata
            where the backend has it).
        """

    @abstractmethod
    def put_bytes(self, data: bytes, uri: str | ArtifactURI) -> ArtifactInfo:
        """Store ``data`` at ``uri``.

        Args:
            data: Content to store.
            uri: Destination URI.

        Returns:
            Size and SHA-256 of what was stored.
        """

    @abstractmethod
    def get_bytes(self, uri: str | ArtifactURI) -> bytes:
        """Read the whole artifact into memory (for small artifacts such as configs).

        Args:
            uri: Source URI.

        Returns:
            The content.
        """

    @abstractmethod
    def exists(self, uri: str | ArtifactURI) -> bool:
        """Tell whether an artifact (a file or object, not a prefix) exists at ``uri``.

        Args:
            uri: URI to check.

        Returns:
            ``True`` when it exists.
        """

    @abstractmethod
    def list(self, prefix_uri: str | ArtifactURI) -> list[str]:
        """List artifacts at or under a directory-like prefix, recursively.

        ``s3://b/data`` matches ``s3://b/data`` itself and ``s3://b/data/...``, not
        ``s3://b/database``.

        Args:
            prefix_uri: The prefix.

        Returns:
            Sorted URIs of the artifacts; empty when there are none.
        """

    @abstractmethod
    def delete(self, uri: str | ArtifactURI) -> None:
        """Delete one artifact; a missing artifact is not an error.

        Args:
            uri: URI to delete.
        """

    @abstractmethod
    def info(self, uri: str | ArtifactURI) -> ArtifactInfo:
        """Describe one artifact without downloading it where the backend allows.

        Args:
            uri: URI to describe.

        Returns:
            Its size and SHA-256.

        Raises:
            ArtifactNotFound: When nothing is stored at ``uri``.
        """

    def upload_dir(self, local_dir: str | os.PathLike[str], uri: str | ArtifactURI) -> builtins.list[ArtifactInfo]:
        """Upload every file under ``local_dir`` to ``uri/<relative path>``.

        Args:
            local_dir: Directory to upload.
            uri: Destination prefix.

        Returns:
            One :class:`ArtifactInfo` per file, sorted by URI.
        """
        root = Path(local_dir)
        if not root.is_dir():
            raise ArtifactError(f"Cannot upload {root}: not a directory")
        base = self._parse(uri)
        infos = [
            self.put_file(path, base.joinpath(path.relative_to(root).as_posix())) for path in sorted(walk_files(root))
        ]
        total = sum(i.size for i in infos)
        logger.info("Uploaded directory %s (%d files, %s)", base, len(infos), format_size(total))
        return infos

    def download_dir(self, uri: str | ArtifactURI, local_dir: str | os.PathLike[str]) -> builtins.list[ArtifactInfo]:
        """Download every artifact under ``uri`` into ``local_dir``, keeping relative paths.

        Args:
            uri: Source prefix.
            local_dir: Destination directory (created if needed).

        Returns:
            One :class:`ArtifactInfo` per file, sorted by URI.

        Raises:
            ArtifactNotFound: When nothing is stored under ``uri``.
        """
        base = self._parse(uri)
        root = Path(local_dir)
        found = self.list(base)
        if not found:
            raise ArtifactNotFound(str(base), "no artifacts under this prefix")
        infos: builtins.list[ArtifactInfo] = []
        for item in found:
            relative = base.relative(parse_uri(item)) or PurePosixPath(parse_uri(item).path).name
            infos.append(self.get_file(item, safe_join(root, relative)))
        total = sum(i.size for i in infos)
        logger.info(
            "Downloaded directory %s to %s (%d files, %s)",
            base,
            root,
            len(infos),
            format_size(total),
        )
        return infos
