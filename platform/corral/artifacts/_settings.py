"""Settings for artifact stores: S3 endpoint and credentials, multipart sizes, Hugging Face cache.

Every field defaults to "let the underlying library decide": unset S3 fields fall back to
boto3's standard chain (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL_S3``, profiles, IRSA ...),
unset Hugging Face fields to huggingface_hub's own (``HF_HUB_OFFLINE``, ``HF_HUB_CACHE``,
``HF_TOKEN``). The environment is read only by :meth:`ArtifactSettings.from_env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

#: Prefix of the environment variables read by :meth:`ArtifactSettings.from_env`.
ENV_PREFIX = "CORRAL_"

MiB = 1024 * 1024

#: Standard AWS variables read for the S3 endpoint when ``CORRAL_S3_ENDPOINT_URL`` is unset, in order.
S3_ENDPOINT_ENV_FALLBACKS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


class ArtifactSettings(BaseModel):
    """How Corral reaches artifact storage. Secrets are ``SecretStr`` and never printed."""

    # hide_input_in_errors: a mistyped field name must not echo its (secret) value.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint URL (MinIO, Ceph, moto); unset uses AWS_ENDPOINT_URL(_S3) or AWS.",
    )
    s3_region: str | None = Field(
        default=None, description="S3 region; unset uses AWS_REGION / AWS_DEFAULT_REGION / profile."
    )
    s3_access_key_id: str | None = Field(
        default=None,
        repr=False,
        description="S3 access key id; unset (with the secret) uses boto3's credential chain.",
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="S3 secret access key; set together with s3_access_key_id."
    )
    s3_session_token: SecretStr | None = Field(default=None, description="Session token for temporary S3 credentials.")
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto",
        description="S3 bucket addressing: 'path' is usually needed for MinIO-style endpoints.",
    )
    s3_max_concurrency: int = Field(default=8, ge=1, le=64, description="Threads per multipart transfer.")
    s3_max_attempts: int = Field(
        default=5, ge=1, le=20, description="Attempts per S3 request (botocore 'standard' retries)."
    )
    multipart_threshold_bytes: int = Field(
        default=64 * MiB, ge=1, description="Files at least this large are transferred multipart."
    )
    multipart_chunk_bytes: int = Field(
        default=64 * MiB,
        ge=5 * MiB,
        le=5 * 1024 * MiB,
        description="Part size of multipart transfers (S3 allows 5 MiB to 5 GiB).",
    )
    hf_offline: bool = Field(
        default=False,
        description="Resolve hf:// only from the local cache; HF_HUB_OFFLINE=1 also turns this on.",
    )
    hf_cache_dir: Path | None = Field(
        default=None, description="Hugging Face hub cache directory; unset uses HF_HUB_CACHE."
    )
    hf_token: SecretStr | None = Field(
        default=None, description="Hugging Face token for private or gated repositories."
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ArtifactSettings:
        """Build settings from ``CORRAL_<FIELD NAME>`` variables, e.g. ``CORRAL_S3_ENDPOINT_URL``.

        Empty variables count as unset. The S3 endpoint falls back to the standard
        ``AWS_ENDPOINT_URL_S3`` then ``AWS_ENDPOINT_URL`` (the name Ray pods are given), so
        every S3 client of a process (boto3 and pyarrow's checkpoint filesystem) uses one.

        Args:
            environ: Mapping to read instead of ``os.environ`` (for tests).

        Returns:
            The settings.

        Raises:
            pydantic.ValidationError: When a variable has an invalid value.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper(), "")
            if raw != "":
                values[name] = raw
        if "s3_endpoint_url" not in values:
            # The standard AWS names: what the KubeRay builder and the chart give Ray pods
            # (AWS_ENDPOINT_URL_S3), so the S3 client, the job-file reader and Ray Train's
            # checkpoint filesystem all reach the same endpoint.
            for name in S3_ENDPOINT_ENV_FALLBACKS:
                if env.get(name, ""):
                    values["s3_endpoint_url"] = env[name]
                    break
        return cls.model_validate(values)

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Map each field name to the environment variable :meth:`from_env` reads.

        Returns:
            ``{"s3_endpoint_url": "CORRAL_S3_ENDPOINT_URL", ...}``.
        """
        return {name: ENV_PREFIX + name.upper() for name in cls.model_fields}


def load_namespace_settings(path: str | os.PathLike[str]) -> dict[str, ArtifactSettings]:
    """Read per-namespace artifact settings: the credentials each tenant's data is read with.

    The file (YAML, keep it 0600: it holds secrets)::

        namespaces:
          team-a:
            s3_endpoint_url: https://s3.example.com
            s3_access_key_id: AKIA...
            s3_secret_access_key: ...

    Raises:
        ValueError: Not that shape, or an unknown field (the message never shows a value).
    """
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    namespaces = data.get("namespaces") if isinstance(data, dict) else None
    if not isinstance(namespaces, dict):
        raise ValueError(f"{path}: expected a top-level 'namespaces' mapping of namespace -> artifact settings")
    out: dict[str, ArtifactSettings] = {}
    for namespace, fields in namespaces.items():
        if not isinstance(fields, dict):
            raise ValueError(f"{path}: the settings of namespace {namespace!r} must be a mapping")
        try:
            out[str(namespace)] = ArtifactSettings.model_validate(fields)
        except ValueError as exc:
            raise ValueError(f"{path}: namespace {namespace!r}: {exc}") from None
    return out
