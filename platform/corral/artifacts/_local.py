"""The ``file://`` store, and the atomic local write every backend uses for downloads.

A write goes to a temporary file next to the destination (same filesystem), is fsynced,
then renamed over the final name: a crash never leaves a half-written file under it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from corral.artifacts._base import (
    CHUNK_BYTES,
    TEMP_MARKER,
    ArtifactError,
    ArtifactInfo,
    ArtifactNotFound,
    ArtifactStore,
    format_size,
    sha256_file,
    walk_files,
)
from corral.artifacts._uri import ArtifactURI

logger = logging.getLogger(__name__)


def temp_path_for(dest: Path) -> Path:
    """Return a fresh temporary path beside ``dest`` that listings ignore.

    Args:
        dest: The final destination.

    Returns:
        ``<dir>/.<name>.<random>.corral-tmp``.
    """
    return dest.with_name(f".{dest.name}.{secrets.token_hex(6)}{TEMP_MARKER}")


def atomic_write(dest: Path, chunks: Iterable[bytes]) -> tuple[int, str]:
    """Write ``chunks`` to ``dest`` atomically, hashing while streaming.

    Args:
        dest: Final path; parent directories are created.
        chunks: The content, in order.

    Returns:
        ``(size, hex sha256)`` of what was written.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(dest)
    digest = hashlib.sha256()
    size = 0
    # os.open with 0o666 honours the umask (mkstemp would force 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


def commit_temp(tmp: Path, dest: Path) -> None:
    """Flush ``tmp`` to disk and rename it over ``dest`` (after a backend wrote ``tmp``).

    Args:
        tmp: Completely written temporary file beside ``dest``.
        dest: Final path.
    """
    with tmp.open("rb+") as handle:
        os.fsync(handle.fileno())
    tmp.replace(dest)


def read_chunks(path: Path) -> Iterator[bytes]:
    """Yield a file's content in blocks.

    Args:
        path: File to read.

    Yields:
        Blocks of at most ``CHUNK_BYTES``.
    """
    with path.open("rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            yield block


class LocalStore(ArtifactStore):
    """Artifacts on a local (or mounted) filesystem, addressed by ``file://`` URIs."""

    scheme = "file"

    def __repr__(self) -> str:
        """Return a short description."""
        return "LocalStore()"

    def _existing_file(self, uri: ArtifactURI) -> Path:
        path = Path(uri.path)
        if path.is_dir():
            raise ArtifactError(f"{uri} is a directory, not a file")
        if not path.is_file():
            raise ArtifactNotFound(str(uri))
        return path

    def put_file(self, local: str | os.PathLike[str], uri: str | ArtifactURI) -> ArtifactInfo:
        """Copy a local file to ``uri`` atomically. See :meth:`ArtifactStore.put_file`."""
        target = self._parse(uri)
        source = Path(local)
        if not source.is_file():
            raise ArtifactNotFound(str(source), "local source file does not exist")
        size, sha = atomic_write(Path(target.path), read_chunks(source))
        logger.info("Stored %s (%s)", target, format_size(size))
        return ArtifactInfo(str(target), size, sha)

    def get_file(self, uri: str | ArtifactURI, local: str | os.PathLike[str]) -> ArtifactInfo:
        """Copy ``uri`` to a local file atomically. See :meth:`ArtifactStore.get_file`."""
        source_uri = self._parse(uri)
        source = self._existing_file(source_uri)
        size, sha = atomic_write(Path(local), read_chunks(source))
        logger.info("Fetched %s to %s (%s)", source_uri, local, format_size(size))
        return ArtifactInfo(str(source_uri), size, sha)

    def put_bytes(self, data: bytes, uri: str | ArtifactURI) -> ArtifactInfo:
        """Write ``data`` to ``uri`` atomically. See :meth:`ArtifactStore.put_bytes`."""
        target = self._parse(uri)
        size, sha = atomic_write(Path(target.path), [data])
        logger.info("Stored %s (%s)", target, format_size(size))
        return ArtifactInfo(str(target), size, sha)

    def get_bytes(self, uri: str | ArtifactURI) -> bytes:
        """Read ``uri``. See :meth:`ArtifactStore.get_bytes`."""
        return self._existing_file(self._parse(uri)).read_bytes()

    def exists(self, uri: str | ArtifactURI) -> bool:
        """Tell whether a file exists at ``uri``. See :meth:`ArtifactStore.exists`."""
        return Path(self._parse(uri).path).is_file()

    def list(self, prefix_uri: str | ArtifactURI) -> list[str]:
        """List files at or under ``prefix_uri``. See :meth:`ArtifactStore.list`."""
        prefix = self._parse(prefix_uri)
        root = Path(prefix.path)
        if root.is_file():
            return [str(prefix)]
        if not root.is_dir():
            return []
        return sorted(str(ArtifactURI("file", "", str(p))) for p in walk_files(root))

    def delete(self, uri: str | ArtifactURI) -> None:
        """Delete the file at ``uri``; missing is fine. See :meth:`ArtifactStore.delete`."""
        target = self._parse(uri)
        path = Path(target.path)
        if path.is_dir():
            raise ArtifactError(f"Cannot delete {target}: it is a directory; delete its files")
        try:
            path.unlink()
        except FileNotFoundError:
            return
        logger.info("Deleted %s", target)

    def info(self, uri: str | ArtifactURI) -> ArtifactInfo:
        """Size and SHA-256 of the file at ``uri`` (hashes it). See :meth:`ArtifactStore.info`."""
        target = self._parse(uri)
        size, sha = sha256_file(self._existing_file(target))
        return ArtifactInfo(str(target), size, sha)
