"""The ``corral.dev/v1alpha1`` API: the five Corral kinds as pydantic v2 models.

This package is the contract between users (YAML, the REST API), the control plane
and the cluster (the CRDs are generated from these types).
"""

from .common import (
    API_GROUP,
    API_VERSION,
    GROUP_VERSION,
    Condition,
    CorralModel,
    LicenseSpec,
    LocalObjectReference,
    ObjectMeta,
    OwnerReference,
    Placement,
    Resource,
    Toleration,
)
from .dataset import Dataset, DatasetReport, DatasetSpec, DatasetStatus
from .finetunejob import (
    FineTuneJob,
    FineTuneJobSpec,
    FineTuneJobStatus,
    Hyperparameters,
    LoRASpec,
    TrainingResources,
)
from .gpupool import GPUPool, GPUPoolSpec, GPUPoolStatus, NamespaceQuota
from .model import Model, ModelSpec, ModelStatus
from .modeldeployment import (
    SERVING_PHASES,
    AdapterSpec,
    AutoscalingSpec,
    ColdStartStatus,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
)

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "GROUP_VERSION",
    "KINDS",
    "AdapterSpec",
    "AutoscalingSpec",
    "ColdStartStatus",
    "Condition",
    "CorralModel",
    "Dataset",
    "DatasetReport",
    "DatasetSpec",
    "DatasetStatus",
    "FineTuneJob",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "GPUPool",
    "GPUPoolSpec",
    "GPUPoolStatus",
    "Hyperparameters",
    "LicenseSpec",
    "LoRASpec",
    "LocalObjectReference",
    "Model",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "SERVING_PHASES",
    "ModelSpec",
    "ModelStatus",
    "NamespaceQuota",
    "ObjectMeta",
    "OwnerReference",
    "Placement",
    "Resource",
    "Toleration",
    "TrainingResources",
]

KINDS: dict[str, type[Resource]] = {cls.KIND: cls for cls in (Model, Dataset, FineTuneJob, ModelDeployment, GPUPool)}
"""Every kind of the API by its ``kind`` name."""
