"""Operator settings: read once from ``CORRAL_OPERATOR_*`` environment variables (the Helm chart sets them).

:func:`configure_kopf` applies them to kopf at startup: the finalizer name, progress and
diff-base storage in annotations, peering for leader election, watch timeouts and posting.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from corral.artifacts import URIPolicy, load_namespace_settings
from corral.control import ControlSettings
from corral.drivers.kuberay import CHAT_TOKENS_ENV, KubeRaySettings

__all__ = ["ENV_PREFIX", "OperatorSettings", "configure_kopf"]

ENV_PREFIX = "CORRAL_OPERATOR_"

ANNOTATION_PREFIX = "corral.dev"
KOPF_FINALIZER = "corral.dev/operator"


class OperatorSettings(BaseModel):
    """How the operator runs (everything but credentials, which come from the pod's identity)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespaces: list[str] = Field(default_factory=list, description="Namespaces to watch; empty: the whole cluster.")
    remote_code_namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces whose Models may run code shipped with their weights (spec.trustRemoteCode); "
        "'*' allows all; empty: none.",
    )
    artifact_root: str = Field(
        default="s3://corral/artifacts", description="Where job folders live (s3:// on a cluster)."
    )
    python: str = Field(default="python", description="Interpreter of the training entrypoint inside the Ray image.")
    job_runtime_env: dict[str, Any] = Field(default_factory=dict, description="Ray runtime env of fine-tune jobs.")
    resync_seconds: float = Field(default=10.0, gt=0, description="Timer interval: how often children are observed.")
    peering_name: str = Field(default="corral-operator", description="kopf peering object used for leader election.")
    priority: int = Field(default=0, description="kopf peering priority of this replica (highest leads).")
    standalone: bool = Field(default=False, description="Skip peering (one replica, or tests).")
    watch_server_timeout: int = Field(
        default=300,
        gt=0,
        description="Server-side timeout of each watch request, whole seconds (the API server refuses "
        "timeoutSeconds=300.0 with 400 strconv.ParseInt).",
    )
    watch_client_timeout: float = Field(default=330.0, gt=0, description="Client-side timeout of each watch request.")
    health_port: int = Field(default=8080, ge=1, le=65535, description="Port of the /healthz liveness endpoint.")
    kuberay: KubeRaySettings = Field(default_factory=KubeRaySettings, description="RayJob / RayService settings.")
    namespace_artifacts_file: str | None = Field(
        default=None,
        description="YAML file (a mounted Secret) of per-namespace artifact settings: the S3 credentials each "
        "namespace's Datasets and Models are read with (corral.artifacts.load_namespace_settings); unset: the "
        "operator's own.",
    )
    allowed_uri_prefixes: dict[str, list[str]] = Field(
        default_factory=lambda: {"*": ["hf://"]},
        description="Namespace (or '*') -> URI prefixes its Datasets and Models may read besides its own artifacts "
        "(corral.artifacts.URIPolicy); objects applied with kubectl bypass the control API, so the reconcilers "
        "apply this rule themselves.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """Read ``CORRAL_OPERATOR_<FIELD>`` variables (lists, dicts and ``KUBERAY`` as JSON)."""
        env = os.environ if environ is None else environ
        data: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            if name in ("namespaces", "remote_code_namespaces"):
                data[name] = [n.strip() for n in raw.split(",") if n.strip()]
            elif name in ("job_runtime_env", "kuberay", "allowed_uri_prefixes"):
                data[name] = json.loads(raw)
            else:
                data[name] = raw  # pydantic converts numbers and booleans
        return cls.model_validate(data)

    def control(self) -> ControlSettings:
        """The control-plane settings the reconcilers see."""
        return ControlSettings(
            artifact_root=self.artifact_root,
            python=self.python,
            job_runtime_env=dict(self.job_runtime_env),
            follow_seconds=self.resync_seconds,
            deploying_seconds=self.resync_seconds,
            remote_code_namespaces=frozenset(self.remote_code_namespaces),
            uri_policy=URIPolicy.from_mapping(self.artifact_root, self.allowed_uri_prefixes, "allowed_uri_prefixes"),
            namespace_artifacts=(
                load_namespace_settings(self.namespace_artifacts_file) if self.namespace_artifacts_file else {}
            ),
            # The replicas read the namespace's chat tokens from its Secret (mounted by the builder).
            chat_tokens_env=CHAT_TOKENS_ENV if self.kuberay.chat_tokens_secret else None,
        )


def configure_kopf(kopf_settings: Any, settings: OperatorSettings) -> None:
    """Apply Corral's choices to ``kopf.OperatorSettings`` (called from the startup handler)."""
    import kopf

    kopf_settings.persistence.finalizer = KOPF_FINALIZER
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    kopf_settings.peering.name = settings.peering_name
    kopf_settings.peering.priority = settings.priority
    kopf_settings.peering.clusterwide = True  # one ClusterKopfPeering, whatever the watched namespaces
    kopf_settings.peering.mandatory = not settings.standalone
    kopf_settings.peering.standalone = settings.standalone
    kopf_settings.watching.server_timeout = settings.watch_server_timeout
    kopf_settings.watching.client_timeout = settings.watch_client_timeout
    kopf_settings.watching.connect_timeout = 30
    kopf_settings.posting.level = 20  # logging.INFO: Normal events and warnings reach the object
    kopf_settings.posting.reporting_component = "corral-operator"
    kopf_settings.posting.event_name_prefix = "corral-"
    kopf_settings.execution.max_workers = 8
