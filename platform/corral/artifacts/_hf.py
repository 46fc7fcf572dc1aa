"""The read-only ``hf://`` store: Hugging Face Hub repositories through huggingface_hub's cache.

Files resolve through huggingface_hub's own cache (``hf_cache_dir`` or ``HF_HUB_CACHE``).
In offline mode (the ``hf_offline`` setting, or huggingface_hub's ``HF_HUB_OFFLINE=1``)
nothing is asked of the network: a file that is not cached is :class:`ArtifactNotFound`
with a message that says so. Writes raise :class:`ArtifactError`.
"""

from __future__ import annotations

import builtins
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from corral.artifacts._base import (
    ArtifactError,
    ArtifactInfo,
    ArtifactNotFound,
    ArtifactStore,
    format_size,
    safe_join,
    sha256_file,
    walk_files,
)
from corral.artifacts._local import atomic_write, read_chunks
from corral.artifacts._settings import ArtifactSettings
from corral.artifacts._uri import ArtifactURI

logger = logging.getLogger(__name__)

T = TypeVar("T")


class HfStore(ArtifactStore):
    """Read-only access to Hugging Face Hub repositories (models, datasets, spaces)."""

    scheme = "hf"

    def __init__(self, settings: ArtifactSettings | None = None) -> None:
        """Create the store.

        Args:
            settings: Offline mode, cache directory and token; unset fields use
                huggingface_hub's own defaults.
        """
        self._settings = settings or ArtifactSettings()

    def __repr__(self) -> str:
        """Describe the store without the token."""
        return f"HfStore(offline={self.offline}, cache_dir={self.cache_dir!r})"

    @property
    def offline(self) -> bool:
        """Whether only the local cache may be used (setting or ``HF_HUB_OFFLINE``)."""
        return self._settings.hf_offline or bool(getattr(constants, "HF_HUB_OFFLINE", False))

    @property
    def cache_dir(self) -> str:
        """The huggingface_hub cache directory in use."""
        if self._settings.hf_cache_dir is not None:
            return str(self._settings.hf_cache_dir)
        return str(constants.HF_HUB_CACHE)

    def _token(self) -> str | None:
        token = self._settings.hf_token
        return token.get_secret_value() if token is not None else None

    def _call(self, uri: ArtifactURI, operation: str, fn: Callable[[], T]) -> T:
        """Run a huggingface_hub call, translating its errors."""
        try:
            return fn()
        except (ArtifactError, ValueError):
            raise
        except Exception as err:  # translated below; the original is kept as the cause
            self._raise(err, operation, uri)

    def _raise(self, err: Exception, operation: str, uri: ArtifactURI) -> NoReturn:
        cause: Exception | None = err
        token = self._token()
        if token and token in str(err):
            cause = None
        if isinstance(err, LocalEntryNotFoundError):
            if type(err).__name__ == "IncompleteSnapshotError":  # huggingface_hub >= 1.x
                reason = f"the cached snapshot in {self.cache_dir} is incomplete"
            else:
                reason = f"it is not in the Hugging Face cache at {self.cache_dir}"
            if self.offline:
                reason += (
                    " and offline mode is on (hf_offline setting or HF_HUB_OFFLINE=1), so the Hub was not contacted"
                )
            raise ArtifactNotFound(str(uri), reason) from cause
        if isinstance(err, GatedRepoError):
            raise ArtifactError(
                f"Hugging Face {operation} failed for {uri}: the repository is gated; "
                "accept its terms and set hf_token (or HF_TOKEN)"
            ) from cause
        if isinstance(err, RepositoryNotFoundError):
            raise ArtifactNotFound(str(uri), "no such repository (or it is private)") from cause
        if isinstance(err, RevisionNotFoundError):
            raise ArtifactNotFound(str(uri), f"no revision {uri.revision!r}") from cause
        if isinstance(err, EntryNotFoundError):
            raise ArtifactNotFound(str(uri), "no such file in the repository") from cause
        if isinstance(err, OfflineModeIsEnabled):
            raise ArtifactError(
                f"Hugging Face {operation} failed for {uri}: offline mode is on (HF_HUB_OFFLINE=1)"
            ) from cause
        if isinstance(err, HfHubHTTPError):
            raise ArtifactError(f"Hugging Face {operation} failed for {uri}: {err}") from cause
        raise ArtifactError(f"Hugging Face {operation} failed for {uri}: {type(err).__name__}: {err}") from cause

    def _read_only(self, operation: str, uri: str | ArtifactURI) -> NoReturn:
        raise ArtifactError(f"Cannot {operation} {uri}: hf:// artifacts are read-only; write to file:// or s3://")

    def _cached_file(self, uri: ArtifactURI) -> Path:
        """Resolve one repository file to its path in the huggingface_hub cache."""
        if not uri.path:
            raise ValueError(f"{uri} names a repository, not a file")
        path = self._call(
            uri,
            "download",
            lambda: hf_hub_download(
                uri.repo_id,
                uri.path,
                repo_type=uri.repo_type,
                revision=uri.revision,
                cache_dir=self._settings.hf_cache_dir,
                token=self._token(),
                local_files_only=self.offline,
            ),
        )
        return Path(path)

    def _snapshot(self, uri: ArtifactURI) -> Path:
        """Resolve the repository (or the files under ``uri.path``) to a cached snapshot folder."""
        base = uri.path.rstrip("/")
        return Path(
            self._call(
                uri,
                "snapshot download",
                lambda: snapshot_download(
                    uri.repo_id,
                    repo_type=uri.repo_type,
                    revision=uri.revision,
                    cache_dir=self._settings.hf_cache_dir,
                    token=self._token(),
                    local_files_only=self.offline,
                    allow_patterns=[base, f"{base}/*"] if base else None,
                ),
            )
        )

    def put_file(self, local: str | os.PathLike[str], uri: str | ArtifactURI) -> ArtifactInfo:
        """Raise :class:`ArtifactError`: hf:// is read-only."""
        self._read_only("put", uri)

    def put_bytes(self, data: bytes, uri: str | ArtifactURI) -> ArtifactInfo:
        """Raise :class:`ArtifactError`: hf:// is read-only."""
        self._read_only("put", uri)

    def delete(self, uri: str | ArtifactURI) -> None:
        """Raise :class:`ArtifactError`: hf:// is read-only."""
        self._read_only("delete", uri)

    def upload_dir(self, local_dir: str | os.PathLike[str], uri: str | ArtifactURI) -> builtins.list[ArtifactInfo]:
        """Raise :class:`ArtifactError`: hf:// is read-only."""
        self._read_only("upload to", uri)

    def get_file(self, uri: str | ArtifactURI, local: str | os.PathLike[str]) -> ArtifactInfo:
        """Copy a repository file (via the cache) to ``local`` atomically.

        See :meth:`ArtifactStore.get_file`.
        """
        source = self._parse(uri)
        size, sha = atomic_write(Path(local), read_chunks(self._cached_file(source)))
        logger.info("Fetched %s to %s (%s)", source, local, format_size(size))
        return ArtifactInfo(str(source), size, sha)

    def get_bytes(self, uri: str | ArtifactURI) -> bytes:
        """Read a repository file (via the cache). See :meth:`ArtifactStore.get_bytes`."""
        return self._cached_file(self._parse(uri)).read_bytes()

    def exists(self, uri: str | ArtifactURI) -> bool:
        """Tell whether the file resolves (from the cache when offline).

        See :meth:`ArtifactStore.exists`.
        """
        target = self._parse(uri)
        if not target.path:
            return False
        try:
            self._cached_file(target)
        except ArtifactNotFound:
            return False
        return True

    def info(self, uri: str | ArtifactURI) -> ArtifactInfo:
        """Return size and SHA-256 of the cached file (fetched into the cache if online).

        See :meth:`ArtifactStore.info`.
        """
        target = self._parse(uri)
        size, sha = sha256_file(self._cached_file(target))
        return ArtifactInfo(str(target), size, sha)

    def list(self, prefix_uri: str | ArtifactURI) -> list[str]:
        """List repository files at or under the prefix. See :meth:`ArtifactStore.list`.

        Online this asks the Hub for the repository's file list; offline it lists the
        cached snapshot, which holds only the files that were downloaded before.
        """
        prefix = self._parse(prefix_uri)
        base = prefix.path.rstrip("/")
        if self.offline:
            folder = self._snapshot(prefix)
            files = [p.relative_to(folder).as_posix() for p in walk_files(folder)]
        else:
            api = HfApi(token=self._token())
            files = self._call(
                prefix,
                "list",
                lambda: api.list_repo_files(prefix.repo_id, revision=prefix.revision, repo_type=prefix.repo_type),
            )
        top = ArtifactURI("hf", prefix.repo_id, "", prefix.revision, prefix.repo_type)
        return sorted(str(top.joinpath(f)) for f in files if not base or f == base or f.startswith(base + "/"))

    def download_dir(self, uri: str | ArtifactURI, local_dir: str | os.PathLike[str]) -> builtins.list[ArtifactInfo]:
        """Fetch a snapshot (or the files under a path in it) into ``local_dir``.

        See :meth:`ArtifactStore.download_dir`.
        """
        source = self._parse(uri)
        base = source.path.rstrip("/")
        folder = self._snapshot(source)
        top = folder / base if base else folder
        dest_root = Path(local_dir)
        infos: builtins.list[ArtifactInfo] = []
        if top.is_file():
            size, sha = atomic_write(safe_join(dest_root, top.name), read_chunks(top))
            infos.append(ArtifactInfo(str(source), size, sha))
        elif top.is_dir():
            for path in sorted(walk_files(top)):
                relative = path.relative_to(top).as_posix()
                size, sha = atomic_write(safe_join(dest_root, relative), read_chunks(path))
                infos.append(ArtifactInfo(str(source.joinpath(relative)), size, sha))
        if not infos:
            raise ArtifactNotFound(str(source), "no files under this path in the snapshot")
        total = sum(i.size for i in infos)
        logger.info("Downloaded %s to %s (%d files, %s)", source, dest_root, len(infos), format_size(total))
        return infos
