"""Pure builders of KubeRay objects: a FineTuneJob becomes a ``RayJob``, a ModelDeployment a ``RayService``.

Nothing here talks to Kubernetes: each builder returns the ``ray.io/v1`` object as a plain
dict, ready for ``create_namespaced_custom_object``. The KubeRay driver creates them from the
:class:`~corral.drivers.Handle` a call carries (the owner and the scheduler's placement);
tests compare them field by field.

* The ``RayJob``'s ``spec.entrypoint`` is contract 1 (``python -m corral.training --job ...``),
  its ``spec.jobId`` the FineTuneJob's deterministic submission id.
* The ``RayService``'s ``spec.serveConfigV2`` is contract 2 (``corral.serving.serve_config``)
  as YAML.
* Placement (a GPUPool's node selector, tolerations and accelerator) becomes the worker
  pods' ``nodeSelector``, ``tolerations``, ``nvidia.com/gpu`` limits and a Ray
  ``accelerator_type:<X>`` custom resource.
* Names are deterministic and short enough for KubeRay (which derives cluster and pod names
  from them); every child carries an owner reference to its Corral object.
* S3 credentials reach pods only as ``secretKeyRef`` environment variables.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from corral.scheduler import ray_accelerator_type

from .._handle import Handle, Owner, PodPlacement

__all__ = [
    "CHAT_TOKENS_ENV",
    "NETWORK_POLICY_NAME",
    "RAY_POD_LABELS",
    "build_ray_network_policy",
    "KUBERAY_API_VERSION",
    "KUEUE_QUEUE_LABEL",
    "MAX_NAME_LENGTH",
    "OWNER_LABELS",
    "KubeRaySettings",
    "build_rayjob",
    "build_rayservice",
    "child_name",
    "owner_reference",
    "ray_accelerator_type",
    "rayjob_name",
    "rayservice_name",
]

KUBERAY_API_VERSION = "ray.io/v1"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MAX_NAME_LENGTH = 47
"""KubeRay refuses RayJob/RayService names longer than this (it appends suffixes to them)."""

OWNER_LABELS = ("corral.dev/kind", "corral.dev/name")
"""Labels on every child: the owner's kind and name (for selection and cleanup checks)."""

_GPU_RESOURCE = "nvidia.com/gpu"

RAY_POD_LABELS = {"corral.dev/ray": "true"}
"""Labels on every Ray pod Corral's clusters run (the NetworkPolicy selects them)."""
NETWORK_POLICY_NAME = "corral-ray"
_RAY_SERVE_PORT, _RAY_DASHBOARD_PORT = 8000, 8265

CHAT_TOKENS_ENV = "CORRAL_CHAT_TOKENS"
"""Environment variable of RayService pods holding the namespace's chat tokens (from its Secret)."""
CHAT_KUBERNETES_AUTH_ENV = "CORRAL_CHAT_KUBERNETES_AUTH"
"""Set to ``true`` in RayService pods whose chat endpoints also accept Kubernetes tokens."""


class KubeRaySettings(BaseModel):
    """How Corral's Ray clusters look on Kubernetes (from the Helm values, read once at startup)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(
        default="ghcr.io/corral-dev/corral-ray:latest",
        description="Ray image with Corral installed, for CPU pods (head and CPU workers).",
    )
    gpu_image: str | None = Field(default=None, description="Image for GPU workers; unset uses image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Pull policy of every Ray container."
    )
    ray_version: str = Field(default="2.60.0", description="Ray version in the image (RayClusterSpec.rayVersion).")
    service_account: str | None = Field(default="corral-ray", description="ServiceAccount of Ray pods.")
    head_cpus: str = Field(default="1", description="CPU request and limit of the head pod.")
    head_memory: str = Field(default="4Gi", description="Memory request and limit of the head pod.")
    default_worker_memory: str = Field(default="8Gi", description="Worker memory when the spec sets none.")
    s3_secret_name: str | None = Field(
        default=None, description="Secret holding S3 credentials; unset: pods use their own identity (IRSA...)."
    )
    s3_access_key_id_key: str = Field(default="AWS_ACCESS_KEY_ID", description="Key of the access key id.")
    s3_secret_access_key_key: str = Field(default="AWS_SECRET_ACCESS_KEY", description="Key of the secret key.")
    s3_endpoint_url: str | None = Field(default=None, description="S3 endpoint URL given to pods (not a secret).")
    submission_mode: Literal["K8sJobMode", "HTTPMode", "SidecarMode"] = Field(
        default="K8sJobMode", description="How KubeRay submits the Ray job to its cluster."
    )
    backoff_limit: int = Field(default=0, ge=0, le=100, description="RayJob retries (new cluster each).")
    ttl_seconds_after_finished: int = Field(
        default=300, ge=0, description="Seconds a finished RayJob's cluster lingers (logs) before deletion."
    )
    upgrade_strategy: Literal["NewCluster", "NewClusterWithIncrementalUpgrade", "None"] = Field(
        default="NewCluster", description="RayService upgrade strategy on cluster-level changes."
    )
    extra_env: dict[str, str] = Field(default_factory=dict, description="Plain environment for every Ray container.")
    chat_tokens_secret: str | None = Field(
        default="corral-chat-tokens",
        description="Secret of each namespace whose key chat_tokens_key holds the tokens its chat endpoints accept "
        "(one per line); RayService pods mount it as CORRAL_CHAT_TOKENS (optional: without it every call is "
        "refused). None: the endpoints ask for no token.",
    )
    chat_tokens_key: str = Field(default="tokens", description="Key of the tokens in chat_tokens_secret.")
    chat_kubernetes_auth: bool = Field(
        default=False,
        description="Chat endpoints also accept Kubernetes bearer tokens (TokenReview, then a SubjectAccessReview for "
        "get on the ModelDeployment): RayService pods get CORRAL_CHAT_KUBERNETES_AUTH=true and their ServiceAccount's "
        "token, and that account needs system:auth-delegator in each namespace.",
    )
    network_policy: bool = Field(
        default=True,
        description="Create a NetworkPolicy (corral-ray) in each namespace with Corral Ray pods: GCS, Ray client, "
        "object manager and every other Ray port only from that namespace's Corral Ray pods; the dashboard (8265) "
        "from the namespace (KubeRay's submitter runs there) and from control_plane_namespaces; Serve (8000, "
        "token-checked) from anywhere. Needs a CNI that enforces NetworkPolicies.",
    )
    control_plane_namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces whose pods may reach Ray dashboards: the operator's and the control API's, and "
        "KubeRay's operator (it reads job and Serve status from the dashboard).",
    )
    ray_auth: Literal["token", "disabled"] = Field(
        default="token",
        description="Ray's own token authentication on every RayCluster Corral creates (RayClusterSpec.authOptions."
        "mode): KubeRay (>= 1.5.1) generates a token Secret per cluster and gives it to every Ray container, so the "
        "dashboard, job submission and GCS answer only callers holding it. 'disabled' leaves them open to anyone "
        "who reaches the pods.",
    )


def child_name(base: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """A DNS-1123 label of at most ``max_length`` characters; long names keep a hash of the whole.

    Deterministic: the same ``base`` always gives the same name.
    """
    clean = re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-") or "corral"
    if len(clean) <= max_length:
        return clean
    digest = hashlib.sha256(base.encode("utf-8")).hexdigest()[:8]
    return f"{clean[: max_length - 9].rstrip('-')}-{digest}"


def rayjob_name(submission_id: str) -> str:
    """Name of the RayJob of a submission id: ``corral-<ns>.<name>-<gen>`` becomes ``corral-<ns>-<name>-<gen>``."""
    return child_name(submission_id)


def rayservice_name(deployment_name: str) -> str:
    """Name of a ModelDeployment's RayService (same namespace): ``corral-<name>``."""
    return child_name(f"corral-{deployment_name}")


def owner_reference(owner: Owner) -> dict[str, Any]:
    """A controller owner reference to ``owner`` (garbage collection deletes the child with it).

    Raises:
        ValueError: ``owner`` has no uid (it was never stored).
    """
    if not owner.uid:
        raise ValueError(f"{owner.kind} {owner.name} has no uid; owner references need a stored object")
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(name: str, handle: Handle) -> dict[str, Any]:
    owner = handle.owner
    labels = {
        "app.kubernetes.io/managed-by": "corral",
        OWNER_LABELS[0]: owner.kind,
        OWNER_LABELS[1]: child_name(owner.name, 63),
    }
    if handle.queue:
        labels[KUEUE_QUEUE_LABEL] = handle.queue
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(owner)],
    }


def _placement(handle: Handle) -> PodPlacement:
    if handle.placement is None:
        raise ValueError(f"{handle.owner.kind} {handle.owner.name}: starting work needs the scheduler's placement")
    return handle.placement


def _env(settings: KubeRaySettings, *, serve: bool = False) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(settings.extra_env.items())]
    if serve and settings.chat_tokens_secret:
        ref = {"name": settings.chat_tokens_secret, "key": settings.chat_tokens_key, "optional": True}
        env.append({"name": CHAT_TOKENS_ENV, "valueFrom": {"secretKeyRef": ref}})
    if serve and settings.chat_kubernetes_auth:
        env.append({"name": CHAT_KUBERNETES_AUTH_ENV, "value": "true"})
    if settings.s3_endpoint_url:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": settings.s3_endpoint_url})
    if settings.s3_secret_name:
        for var, key in (
            ("AWS_ACCESS_KEY_ID", settings.s3_access_key_id_key),
            ("AWS_SECRET_ACCESS_KEY", settings.s3_secret_access_key_key),
        ):
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": settings.s3_secret_name, "key": key}}})
    return env


def _container(
    name: str,
    image: str,
    settings: KubeRaySettings,
    resources: dict[str, Any],
    ports: list[dict[str, Any]],
    *,
    serve: bool = False,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "resources": resources,
        "env": _env(settings, serve=serve),
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    if ports:
        container["ports"] = ports
    return container


def _pod_spec(container: dict[str, Any], settings: KubeRaySettings, placement: PodPlacement | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [container]}
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    if any(e["name"] == CHAT_KUBERNETES_AUTH_ENV for e in container["env"]):
        spec["automountServiceAccountToken"] = True  # the replica asks the API server about Kubernetes tokens
    if placement is not None:
        if placement.node_selector:
            spec["nodeSelector"] = dict(placement.node_selector)
        if placement.tolerations:
            spec["tolerations"] = [dict(t) for t in placement.tolerations]
    return spec


def _head_group(settings: KubeRaySettings, *, serve: bool) -> dict[str, Any]:
    res = {"cpu": settings.head_cpus, "memory": settings.head_memory}
    ports = [
        {"containerPort": 6379, "name": "gcs-server"},
        {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": 10001, "name": "client"},
    ]
    if serve:
        ports.append({"containerPort": 8000, "name": "serve"})
    container = _container("ray-head", settings.image, settings, {"requests": res, "limits": res}, ports, serve=serve)
    return {
        # num-cpus 0: no training worker or Serve replica lands on the head.
        "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
        "template": {"metadata": {"labels": dict(RAY_POD_LABELS)}, "spec": _pod_spec(container, settings, None)},
    }


def _worker_group(name: str, placement: PodPlacement, settings: KubeRaySettings, *, serve: bool) -> dict[str, Any]:
    memory = placement.memory or settings.default_worker_memory
    requests: dict[str, Any] = {"cpu": placement.cpus, "memory": memory}
    limits: dict[str, Any] = {"memory": memory}
    params: dict[str, str] = {}
    image = settings.image
    if placement.gpus > 0:
        requests[_GPU_RESOURCE] = str(placement.gpus)
        limits[_GPU_RESOURCE] = str(placement.gpus)
        params["num-gpus"] = str(placement.gpus)
        image = settings.gpu_image or settings.image
    accel = ray_accelerator_type(placement.accelerator_type)
    if accel is not None:
        # rayStartParams' resources is a JSON object inside a string, quoted for the shell.
        params["resources"] = "'" + json.dumps({f"accelerator_type:{accel}": 1}, separators=(",", ":")) + "'"
    container = _container("ray-worker", image, settings, {"requests": requests, "limits": limits}, [], serve=serve)
    high = placement.max_replicas if placement.max_replicas is not None else placement.replicas
    return {
        "groupName": name,
        "replicas": placement.replicas,
        "minReplicas": placement.replicas,
        "maxReplicas": max(high, placement.replicas),
        "rayStartParams": params,
        "template": {"metadata": {"labels": dict(RAY_POD_LABELS)}, "spec": _pod_spec(container, settings, placement)},
    }


def _cluster_spec(placement: PodPlacement, settings: KubeRaySettings, *, serve: bool) -> dict[str, Any]:
    group = "gpu-workers" if placement.gpus > 0 else "cpu-workers"
    spec: dict[str, Any] = {
        "rayVersion": settings.ray_version,
        "headGroupSpec": _head_group(settings, serve=serve),
        "workerGroupSpecs": [_worker_group(group, placement, settings, serve=serve)],
    }
    if placement.max_replicas is not None and placement.max_replicas > placement.replicas:
        spec["enableInTreeAutoscaling"] = True
    if settings.ray_auth == "token":
        spec["authOptions"] = {"mode": "token"}
    return spec


def build_ray_network_policy(namespace: str, settings: KubeRaySettings) -> dict[str, Any]:
    """The NetworkPolicy that keeps a namespace's Corral Ray clusters to their users (see ``network_policy``)."""
    ray_pods = {"podSelector": {"matchLabels": dict(RAY_POD_LABELS)}}
    dashboard_from: list[dict[str, Any]] = [{"podSelector": {}}]  # this namespace (KubeRay's submitter Job)
    if settings.control_plane_namespaces:
        dashboard_from.append(
            {
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "In",
                            "values": sorted(set(settings.control_plane_namespaces)),
                        }
                    ]
                }
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": NETWORK_POLICY_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "corral"},
        },
        "spec": {
            "podSelector": {"matchLabels": dict(RAY_POD_LABELS)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [ray_pods]},  # Ray's own traffic: GCS, raylets, object manager, workers
                {"from": dashboard_from, "ports": [{"protocol": "TCP", "port": _RAY_DASHBOARD_PORT}]},
                {"ports": [{"protocol": "TCP", "port": _RAY_SERVE_PORT}]},  # chat: the replicas check tokens
            ],
        },
    }


def build_rayjob(
    handle: Handle,
    settings: KubeRaySettings,
    *,
    submission_id: str,
    entrypoint: str,
    runtime_env: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``RayJob`` that runs one fine-tune (contract 1) on its own Ray cluster.

    Args:
        handle: The FineTuneJob (stored: it has a uid), its placement, queue and deadline.
        settings: Images, service account, S3 secret, submission options.
        submission_id: The deterministic Ray submission id (``status.submissionId``).
        entrypoint: ``python -m corral.training --job <uri>`` (``corral.control`` builds it).
        runtime_env: Ray runtime environment of the job.

    Returns:
        The ``ray.io/v1`` RayJob as a dict. With a queue it is labelled for Kueue and created
        suspended (Kueue unsuspends it on admission).

    Raises:
        ValueError: The handle has no placement, or its owner no uid.
    """
    spec: dict[str, Any] = {
        "entrypoint": entrypoint,
        "jobId": submission_id,
        "submissionMode": settings.submission_mode,
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
        "backoffLimit": settings.backoff_limit,
        "rayClusterSpec": _cluster_spec(_placement(handle), settings, serve=False),
    }
    if runtime_env:
        spec["runtimeEnvYAML"] = yaml.safe_dump(dict(runtime_env), sort_keys=True)
    if handle.deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = handle.deadline_seconds
    if handle.queue:
        spec["suspend"] = True
    return {
        "apiVersion": KUBERAY_API_VERSION,
        "kind": "RayJob",
        "metadata": _metadata(rayjob_name(submission_id), handle),
        "spec": spec,
    }


def build_rayservice(handle: Handle, serve_config: Mapping[str, Any], settings: KubeRaySettings) -> dict[str, Any]:
    """The ``RayService`` that serves one ModelDeployment (contract 2) on its own Ray cluster.

    Args:
        handle: The ModelDeployment (stored: it has a uid), its placement and Kueue queue.
        serve_config: The ``serveConfigV2`` dict (``{"applications": [...]}``).
        settings: Images, service account, S3 secret, upgrade strategy.

    Returns:
        The ``ray.io/v1`` RayService as a dict; ``spec.serveConfigV2`` is ``serve_config``
        as YAML (keys in insertion order, so the same config gives the same text).

    Raises:
        ValueError: The handle has no placement, or its owner no uid.
    """
    spec: dict[str, Any] = {
        "serveConfigV2": yaml.safe_dump(dict(serve_config), sort_keys=False),
        "rayClusterConfig": _cluster_spec(_placement(handle), settings, serve=True),
        "upgradeStrategy": {"type": settings.upgrade_strategy},
    }
    return {
        "apiVersion": KUBERAY_API_VERSION,
        "kind": "RayService",
        "metadata": _metadata(rayservice_name(handle.owner.name), handle),
        "spec": spec,
    }
