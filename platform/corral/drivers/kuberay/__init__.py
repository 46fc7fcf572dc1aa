"""The KubeRay backend: each fine-tune a ``RayJob``, each deployment a ``RayService``, on its own Ray cluster.

* Builders (pure, :mod:`._builders`): :func:`build_rayjob`, :func:`build_rayservice`,
  :func:`build_ray_network_policy`, :class:`KubeRaySettings`; names and owner references.
* Status mappers (pure, :mod:`._status`): :func:`finetunejob_status_from_rayjob` and
  :func:`deployment_status_from_rayservice` read KubeRay's status back as the driver's
  :class:`~corral.drivers.JobState` / :class:`~corral.drivers.ServeAppState`, reasons included.
* :class:`KubeRayDriver` (:mod:`._driver`): the :class:`~corral.drivers.Driver` protocol over
  those objects through the Kubernetes API (the ``kubernetes`` client is imported on first use).

Example:
    >>> from corral.drivers.kuberay import finetunejob_status_from_rayjob
    >>> finetunejob_status_from_rayjob({"status": {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}}).phase
    'Running'
"""

from .._handle import PodPlacement
from ._builders import (
    CHAT_TOKENS_ENV,
    KUBERAY_API_VERSION,
    KUEUE_QUEUE_LABEL,
    MAX_NAME_LENGTH,
    NETWORK_POLICY_NAME,
    OWNER_LABELS,
    RAY_POD_LABELS,
    KubeRaySettings,
    build_ray_network_policy,
    build_rayjob,
    build_rayservice,
    child_name,
    owner_reference,
    ray_accelerator_type,
    rayjob_name,
    rayservice_name,
)
from ._driver import RAY_GROUP, RAY_VERSION, ChildRefusedError, KubeRayDriver
from ._status import (
    RayJobObservation,
    RayServiceObservation,
    deployment_status_from_rayservice,
    finetunejob_status_from_rayjob,
    serve_config_of,
)

__all__ = [
    "CHAT_TOKENS_ENV",
    "KUBERAY_API_VERSION",
    "KUEUE_QUEUE_LABEL",
    "MAX_NAME_LENGTH",
    "NETWORK_POLICY_NAME",
    "OWNER_LABELS",
    "RAY_GROUP",
    "RAY_POD_LABELS",
    "RAY_VERSION",
    "ChildRefusedError",
    "KubeRayDriver",
    "KubeRaySettings",
    "PodPlacement",
    "RayJobObservation",
    "RayServiceObservation",
    "build_ray_network_policy",
    "build_rayjob",
    "build_rayservice",
    "child_name",
    "deployment_status_from_rayservice",
    "finetunejob_status_from_rayjob",
    "owner_reference",
    "ray_accelerator_type",
    "rayjob_name",
    "rayservice_name",
    "serve_config_of",
]
