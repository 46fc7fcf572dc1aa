"""The ``s3://`` store (boto3), for AWS S3 and any S3-compatible endpoint.

Large files are transferred multipart with boto3's ``TransferConfig`` (threshold and part
size from :class:`ArtifactSettings`). Each object carries its SHA-256 as user metadata
(``x-amz-meta-sha256``), so :meth:`S3Store.info` answers without downloading and
:meth:`S3Store.get_file` verifies what it wrote. botocore errors are re-raised as
:class:`ArtifactError` naming the operation, bucket, key and error code, with any
configured secret redacted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from corral.artifacts._base import (
    ArtifactError,
    ArtifactInfo,
    ArtifactNotFound,
    ArtifactStore,
    format_size,
    sha256_file,
)
from corral.artifacts._local import commit_temp, temp_path_for
from corral.artifacts._settings import ArtifactSettings
from corral.artifacts._uri import ArtifactURI

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

#: User-metadata key holding the hex SHA-256 of the object's content.
SHA256_METADATA_KEY = "sha256"

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class S3Store(ArtifactStore):
    """Artifacts in S3 buckets. One store (one boto3 client) serves every bucket."""

    scheme = "s3"

    def __init__(self, settings: ArtifactSettings | None = None) -> None:
        """Create the store; the boto3 client is built on first use.

        Args:
            settings: Endpoint, region, credentials and multipart sizes; unset fields use
                boto3's standard configuration chain.
        """
        self._settings = settings or ArtifactSettings()
        self._client: S3Client | None = None
        self._lock = threading.Lock()
        self._transfer = TransferConfig(
            multipart_threshold=self._settings.multipart_threshold_bytes,
            multipart_chunksize=self._settings.multipart_chunk_bytes,
            max_concurrency=self._settings.s3_max_concurrency,
            use_threads=True,
            preferred_transfer_client="classic",
        )

    def __repr__(self) -> str:
        """Describe the store without credentials."""
        s = self._settings
        return f"S3Store(endpoint_url={s.s3_endpoint_url!r}, region={s.s3_region!r})"

    @property
    def client(self) -> S3Client:
        """The boto3 S3 client (created lazily, thread-safe)."""
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> S3Client:
        s = self._settings
        session = boto3.session.Session(
            aws_access_key_id=s.s3_access_key_id,
            aws_secret_access_key=(s.s3_secret_access_key.get_secret_value() if s.s3_secret_access_key else None),
            aws_session_token=s.s3_session_token.get_secret_value() if s.s3_session_token else None,
            region_name=s.s3_region,
        )
        config = Config(
            s3={"addressing_style": s.s3_addressing_style},
            retries={"mode": "standard", "max_attempts": s.s3_max_attempts},
            max_pool_connections=max(10, s.s3_max_concurrency * 2),
        )
        return session.client("s3", endpoint_url=s.s3_endpoint_url, config=config)

    # -- error handling -------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        s = self._settings
        for secret in (s.s3_secret_access_key, s.s3_session_token):
            if secret is not None and secret.get_secret_value():
                text = text.replace(secret.get_secret_value(), "***")
        return text

    def _raise(self, err: Exception, operation: str, uri: ArtifactURI) -> NoReturn:
        """Re-raise a boto error as an ArtifactError that names the operation and object."""
        where = f"{uri} (bucket {uri.bucket!r}, key {uri.key!r})"
        if isinstance(err, S3UploadFailedError) and isinstance(err.__context__, ClientError):
            err = err.__context__
        if isinstance(err, ClientError):
            error = err.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
            if code in _NOT_FOUND_CODES:
                raise ArtifactNotFound(str(uri)) from err
            if code == "NoSuchBucket":
                raise ArtifactNotFound(str(uri), f"bucket {uri.bucket!r} does not exist") from err
            detail = self._redact(str(error.get("Message", ""))).strip()
            message = f"S3 {operation} failed for {where}: {code} (HTTP {status})"
            if code.isdigit():  # HEAD responses have no body, hence no error code
                message = f"S3 {operation} failed for {where}: HTTP {status}"
                detail = f"{detail} (check credentials, permissions and endpoint)".strip()
            raise ArtifactError(f"{message}: {detail}" if detail else message) from self._cause(err)
        if isinstance(err, NoCredentialsError | PartialCredentialsError):
            raise ArtifactError(
                f"S3 {operation} failed for {where}: no usable credentials; set "
                "CORRAL_S3_ACCESS_KEY_ID/CORRAL_S3_SECRET_ACCESS_KEY or the standard AWS "
                "variables, profile or role"
            ) from None
        if isinstance(err, EndpointConnectionError):
            raise ArtifactError(
                f"S3 {operation} failed for {where}: cannot connect to the S3 endpoint {self.client.meta.endpoint_url}"
            ) from self._cause(err)
        raise ArtifactError(
            f"S3 {operation} failed for {where}: {type(err).__name__}: {self._redact(str(err))}"
        ) from self._cause(err)

    def _cause(self, err: Exception) -> Exception | None:
        """Keep the original error as ``__cause__`` unless its text would leak a secret."""
        return err if self._redact(str(err)) == str(err) else None

    # -- operations -----------------------------------------------------------------------

    def _head(self, uri: ArtifactURI) -> dict[str, Any]:
        try:
            return dict(self.client.head_object(Bucket=uri.bucket, Key=uri.key))
        except (ClientError, BotoCoreError) as err:
            self._raise(err, "HeadObject", uri)

    def put_file(self, local: str | os.PathLike[str], uri: str | ArtifactURI) -> ArtifactInfo:
        """Upload a local file, multipart above the threshold. See :meth:`ArtifactStore.put_file`.

        The SHA-256 is computed in a pass over the local file before the upload, because S3
        takes user metadata when the (multipart) upload starts.
        """
        target = self._require_key(self._parse(uri))
        source = Path(local)
        if not source.is_file():
            raise ArtifactNotFound(str(source), "local source file does not exist")
        size, sha = sha256_file(source)
        try:
            self.client.upload_file(
                str(source),
                target.bucket,
                target.key,
                ExtraArgs={"Metadata": {SHA256_METADATA_KEY: sha}},
                Config=self._transfer,
            )
        except (ClientError, BotoCoreError, S3UploadFailedError) as err:
            self._raise(err, "upload", target)
        multipart = size >= self._settings.multipart_threshold_bytes
        logger.info("Uploaded %s (%s%s)", target, format_size(size), ", multipart" if multipart else "")
        return ArtifactInfo(str(target), size, sha)

    def get_file(self, uri: str | ArtifactURI, local: str | os.PathLike[str]) -> ArtifactInfo:
        """Download to a local file atomically and verify its SHA-256.

        See :meth:`ArtifactStore.get_file`.
        """
        source = self._require_key(self._parse(uri))
        head = self._head(source)
        expected = head.get("Metadata", {}).get(SHA256_METADATA_KEY)
        dest = Path(local)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path_for(dest)
        try:
            try:
                self.client.download_file(source.bucket, source.key, str(tmp), Config=self._transfer)
            except (ClientError, BotoCoreError) as err:
                self._raise(err, "download", source)
            size, sha = sha256_file(tmp)
            self._verify(source, expected, sha)
            commit_temp(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        logger.info("Downloaded %s to %s (%s)", source, dest, format_size(size))
        return ArtifactInfo(str(source), size, sha)

    @staticmethod
    def _verify(uri: ArtifactURI, expected: str | None, actual: str) -> None:
        if expected is not None and expected != actual:
            raise ArtifactError(
                f"SHA-256 mismatch for {uri}: object metadata says {expected}, content is "
                f"{actual} (object changed during the transfer, or is corrupt)"
            )

    def put_bytes(self, data: bytes, uri: str | ArtifactURI) -> ArtifactInfo:
        """Upload ``data`` in one request. See :meth:`ArtifactStore.put_bytes`."""
        target = self._require_key(self._parse(uri))
        sha = hashlib.sha256(data).hexdigest()
        try:
            self.client.put_object(
                Bucket=target.bucket,
                Key=target.key,
                Body=data,
                Metadata={SHA256_METADATA_KEY: sha},
            )
        except (ClientError, BotoCoreError) as err:
            self._raise(err, "PutObject", target)
        logger.info("Uploaded %s (%s)", target, format_size(len(data)))
        return ArtifactInfo(str(target), len(data), sha)

    def get_bytes(self, uri: str | ArtifactURI) -> bytes:
        """Read an object into memory, verifying its SHA-256.

        See :meth:`ArtifactStore.get_bytes`.
        """
        source = self._require_key(self._parse(uri))
        try:
            response = self.client.get_object(Bucket=source.bucket, Key=source.key)
            data = response["Body"].read()
        except (ClientError, BotoCoreError) as err:
            self._raise(err, "GetObject", source)
        expected = response.get("Metadata", {}).get(SHA256_METADATA_KEY)
        self._verify(source, expected, hashlib.sha256(data).hexdigest())
        return data

    def exists(self, uri: str | ArtifactURI) -> bool:
        """HEAD the object. See :meth:`ArtifactStore.exists`."""
        target = self._parse(uri)
        if not target.key:
            return False
        try:
            self._head(target)
        except ArtifactNotFound:
            return False
        return True

    def list(self, prefix_uri: str | ArtifactURI) -> list[str]:
        """List objects at or under the prefix (paginated). See :meth:`ArtifactStore.list`."""
        prefix = self._parse(prefix_uri)
        base = prefix.key.rstrip("/")
        found: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=prefix.bucket, Prefix=base):
                for item in page.get("Contents", []):
                    key = item.get("Key", "")
                    if key.endswith("/"):
                        continue  # "folder" marker objects hold no artifact
                    if not base or key == base or key.startswith(base + "/"):
                        found.append(str(ArtifactURI("s3", prefix.bucket, key)))
        except (ClientError, BotoCoreError) as err:
            self._raise(err, "ListObjectsV2", prefix)
        return sorted(found)

    def delete(self, uri: str | ArtifactURI) -> None:
        """Delete one object; missing is fine. See :meth:`ArtifactStore.delete`."""
        target = self._require_key(self._parse(uri))
        try:
            self.client.delete_object(Bucket=target.bucket, Key=target.key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in _NOT_FOUND_CODES:
                return
            self._raise(err, "DeleteObject", target)
        except BotoCoreError as err:
            self._raise(err, "DeleteObject", target)
        logger.info("Deleted %s", target)

    def info(self, uri: str | ArtifactURI) -> ArtifactInfo:
        """Size and recorded SHA-256 from a HEAD request. See :meth:`ArtifactStore.info`."""
        target = self._require_key(self._parse(uri))
        head = self._head(target)
        sha = head.get("Metadata", {}).get(SHA256_METADATA_KEY)
        return ArtifactInfo(str(target), int(head.get("ContentLength", 0)), sha)

    @staticmethod
    def _require_key(uri: ArtifactURI) -> ArtifactURI:
        if not uri.key or uri.key.endswith("/"):
            raise ValueError(f"{uri} names a bucket or prefix, not an object")
        return uri
