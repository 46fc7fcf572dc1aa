"""The ``ModelDeployment`` kind: a Model plus LoRA adapters served on the same
replicas as one OpenAI-compatible endpoint on Ray Serve.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from .common import (
    Condition,
    CorralModel,
    IntendedUse,
    LocalObjectReference,
    Placement,
    QuantityString,
    Resource,
    repeated,
)

__all__ = [
    "AdapterSpec",
    "AutoscalingSpec",
    "ColdStartStatus",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "SERVING_PHASES",
    "ServingResources",
]

SERVING_PHASES = frozenset({"Ready", "ScaledToZero", "ScalingUp"})
"""Phases in which the endpoint answers (at zero replicas a request waits for a replica to start)."""

ServedName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]


class AdapterSpec(CorralModel):
    """A LoRA adapter served on the deployment's replicas next to the base."""

    name: ServedName = Field(description="Name clients pass as model to reach this adapter.")
    model: LocalObjectReference = Field(description="The adapter Model (type adapter) to load.")


class AutoscalingSpec(CorralModel):
    """Replica autoscaling, mapped onto Ray Serve's autoscaling_config."""

    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest replicas; 0 scales to zero when idle.")
    max_replicas: int = Field(default=1, ge=1, le=1000, description="Most replicas.")
    target_ongoing_requests: int = Field(
        default=4, ge=1, le=10000, description="Ongoing requests per replica the autoscaler aims for."
    )
    upscale_delay_seconds: int = Field(default=30, ge=0, le=3600, description="Load must last this long to scale up.")
    downscale_delay_seconds: int = Field(
        default=600, ge=0, le=86400, description="Load must stay low this long to scale down."
    )
    hold_timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        le=3600,
        description=(
            "With minReplicas 0: how long a request waits for a replica (while one starts from zero) before it "
            "is answered 503 with Retry-After; unset: three estimated cold starts, at least 60."
        ),
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
                    "message": "minReplicas must be <= maxReplicas",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas must be <= maxReplicas (minReplicas={self.min_replicas}, maxReplicas={self.max_replicas})"
            )
        return self


class ServingResources(CorralModel):
    """Compute for each replica and where it runs."""

    gpus_per_replica: int = Field(default=0, ge=0, le=16, description="GPUs per replica; 0 serves on CPUs.")
    cpus_per_replica: QuantityString = Field(default="1", description="CPUs per replica, e.g. 500m or 4.")
    memory_per_replica: QuantityString | None = Field(default=None, description="Memory per replica, e.g. 24Gi.")
    pool: Annotated[str, Field(min_length=1, max_length=253)] | None = Field(
        default=None, description="Pin the replicas to this GPUPool; unset lets the scheduler choose."
    )
    accelerator_type: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="Only pools with this accelerator type."
    )
    priority: int = Field(default=100, ge=-1000, le=1000, description="Higher first; serving outranks training.")


class ModelDeploymentSpec(CorralModel):
    """What a ModelDeployment declares."""

    model: LocalObjectReference = Field(description="The base or merged Model to serve.")
    served_name: ServedName | None = Field(
        default=None, description="Name clients pass as model for the base; unset uses the Model's name."
    )
    adapters: list[AdapterSpec] = Field(
        default_factory=list,
        max_length=256,
        description="LoRA adapters served on the same replicas; names are unique.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    engine: Literal["auto", "vllm", "transformers"] = Field(
        default="auto", description="vllm (Ray Serve LLM, GPUs), transformers (CPU), or auto: vllm when GPUs."
    )
    replicas: int | None = Field(
        default=None, ge=0, le=1000, description="Fixed replica count; mutually exclusive with autoscaling."
    )
    autoscaling: AutoscalingSpec | None = Field(default=None, description="Autoscaling; unset means fixed replicas.")
    resources: ServingResources = Field(default_factory=ServingResources, description="Compute per replica.")
    max_adapters_per_replica: int = Field(
        default=8, ge=1, le=1024, description="Adapters a replica keeps loaded (least recently used evicted)."
    )
    max_context_length: int | None = Field(
        default=None, ge=16, le=1048576, description="Longest prompt + answer in tokens; unset uses the model's."
    )
    max_concurrent_sequences: int = Field(
        default=16, ge=1, le=4096, description="Sequences a replica generates at once (batch size, KV cache)."
    )
    intended_use: IntendedUse = Field(
        default="research", description="research or commercial; commercial is refused when a license forbids it."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.replicas) && has(self.autoscaling))",
                    "message": "set replicas or autoscaling, not both",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _cross_field(self) -> ModelDeploymentSpec:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError(f"set replicas or autoscaling, not both (replicas={self.replicas})")
        dupes = repeated([a.name for a in self.adapters])
        if dupes:
            raise ValueError(f"adapter names must be unique (repeated: {dupes})")
        return self

    @property
    def replica_range(self) -> tuple[int, int]:
        """(min, max) replicas: the fixed count twice, the autoscaling range, or (1, 1)."""
        if self.autoscaling is not None:
            return self.autoscaling.min_replicas, self.autoscaling.max_replicas
        fixed = 1 if self.replicas is None else self.replicas
        return fixed, fixed


class ColdStartStatus(CorralModel):
    """Scale-from-zero facts of a deployment with autoscaling.minReplicas 0."""

    last_active_time: datetime | None = Field(
        default=None,
        description="Last time a ready replica was seen before the deployment scaled to zero; unset before that.",
    )
    scaling_up_since: datetime | None = Field(
        default=None, description="When the scale-up from zero under way was first seen; unset otherwise."
    )
    count: int = Field(default=0, ge=0, description="Scale-ups from zero seen so far.")
    last_seconds: int | None = Field(
        default=None,
        ge=0,
        description="Seconds the last scale-up from zero took until a replica was ready (seen by the control loop).",
    )
    estimated_seconds: int = Field(
        default=0, ge=0, description="Seconds the next cold start should take: the last one seen, else an estimate."
    )
    hold_timeout_seconds: int = Field(
        default=0, ge=0, description="Seconds a request waits for a replica before it is answered 503 with Retry-After."
    )


class ModelDeploymentStatus(CorralModel):
    """What Corral observed about a ModelDeployment."""

    observed_generation: int | None = Field(default=None, ge=0, description="Generation last reconciled.")
    phase: Literal["Pending", "Deploying", "Ready", "ScaledToZero", "ScalingUp", "Updating", "Failed"] | None = Field(
        default=None,
        description=(
            "Pending, Deploying, Ready, ScaledToZero (no replica; the next request starts one and waits for it), "
            "ScalingUp (a replica is starting from zero; requests wait), Updating or Failed."
        ),
    )
    conditions: list[Condition] = Field(default_factory=list, description="Ready and other conditions.")
    replicas: int = Field(default=0, ge=0, description="Desired replicas right now.")
    ready_replicas: int = Field(default=0, ge=0, description="Replicas serving traffic.")
    endpoint: str | None = Field(default=None, description="Base URL of the OpenAI-compatible endpoint.")
    served_models: list[str] = Field(default_factory=list, description="Names the endpoint answers to.")
    placement: Placement | None = Field(default=None, description="Where the scheduler placed the replicas.")
    cold_start: ColdStartStatus | None = Field(
        default=None, description="Scale-from-zero facts; set when autoscaling.minReplicas is 0."
    )


class ModelDeployment(Resource):
    """A served Model with its adapters behind one OpenAI-compatible endpoint."""

    KIND: ClassVar[str] = "ModelDeployment"
    PLURAL: ClassVar[str] = "modeldeployments"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("mdep", "mdeploy")
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = (
        {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
        {"name": "Engine", "type": "string", "jsonPath": ".spec.engine"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "Desired", "type": "integer", "jsonPath": ".status.replicas"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
        {"name": "Last-Active", "type": "date", "jsonPath": ".status.coldStart.lastActiveTime", "priority": 1},
        {"name": "Cold-Start", "type": "integer", "jsonPath": ".status.coldStart.estimatedSeconds", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )
    SCALE: ClassVar[dict[str, str] | None] = {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.readyReplicas",
    }

    kind: Literal["ModelDeployment"] = Field(default="ModelDeployment", description="Always ModelDeployment.")
    spec: ModelDeploymentSpec = Field(description="Desired state of the ModelDeployment.")
    status: ModelDeploymentStatus = Field(
        default_factory=ModelDeploymentStatus, description="Observed state of the ModelDeployment."
    )
