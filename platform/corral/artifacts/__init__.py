"""Artifact storage behind one URI-addressed API: ``file://``, ``s3://`` and ``hf://``.

Checkpoints, adapters, merged weights and datasets are read and written through
:func:`open_store`::

    store = open_store("s3://corral-artifacts/models/support-bot")
    info = store.put_file("adapter.safetensors", "s3://corral-artifacts/models/support-bot/adapter.safetensors")
    store.download_dir("hf://corral/tiny-llama@main", "/tmp/base")

Every put records the content's SHA-256 (as ``sha256`` object metadata on S3); every get
writes atomically (temp file + rename) and verifies it where the backend recorded one.
``hf://`` is read-only and honours huggingface_hub's offline mode and cache.

:func:`job_files_under` and :func:`catalog_model_uri` spell where Corral keeps its own
files under the artifact root (job folders, materialized catalog models).
"""

from __future__ import annotations

from corral.artifacts._base import ArtifactError, ArtifactInfo, ArtifactNotFound, ArtifactStore
from corral.artifacts._layout import JobFiles, catalog_model_uri, job_files_under
from corral.artifacts._local import LocalStore
from corral.artifacts._policy import URIPolicy, URIRefused, spec_uris
from corral.artifacts._settings import ArtifactSettings, load_namespace_settings
from corral.artifacts._uri import ArtifactURI, parse_uri

__all__ = [
    "ArtifactError",
    "ArtifactInfo",
    "ArtifactNotFound",
    "ArtifactSettings",
    "ArtifactStore",
    "ArtifactURI",
    "JobFiles",
    "URIPolicy",
    "URIRefused",
    "catalog_model_uri",
    "job_files_under",
    "load_namespace_settings",
    "open_store",
    "parse_uri",
    "spec_uris",
]


def open_store(uri: str | ArtifactURI, settings: ArtifactSettings | None = None) -> ArtifactStore:
    """Return the store that serves ``uri``'s scheme.

    The S3 and Hugging Face backends (and so boto3 and huggingface_hub) are imported only
    when such a URI is opened.

    Args:
        uri: Any URI of the wanted scheme (``file://``/absolute path, ``s3://``, ``hf://``).
        settings: Store settings; ``None`` uses :class:`ArtifactSettings` defaults, which
            leave S3 and Hugging Face configuration to their libraries' standard chains.
            Use ``ArtifactSettings.from_env()`` to read ``CORRAL_*`` variables.

    Returns:
        A store for that scheme.

    Raises:
        ValueError: When ``uri`` is not a valid artifact URI.
    """
    scheme = parse_uri(uri).scheme
    if scheme == "s3":
        from corral.artifacts._s3 import S3Store  # lazy: boto3 only when an s3:// URI is opened

        return S3Store(settings)
    if scheme == "hf":
        from corral.artifacts._hf import HfStore  # lazy: huggingface_hub only when an hf:// URI is opened

        return HfStore(settings)
    return LocalStore()
