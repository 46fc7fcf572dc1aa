"""The ``GPUPool`` kind (cluster-scoped): a pool of nodes with one accelerator type
the scheduler may place work on, its price, and per-namespace quotas.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from .common import Condition, CorralModel, DecimalString, QuantityString, Resource, Toleration, repeated

__all__ = ["GPUPool", "GPUPoolSpec", "GPUPoolStatus", "NamespaceAllocation", "NamespaceQuota"]


class NamespaceQuota(CorralModel):
    """The most GPUs of this pool one namespace may hold at once."""

    namespace: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")] = Field(
        description="Namespace (tenant) the quota applies to; '*' is not allowed, list each namespace."
    )
    max_gpus: int = Field(ge=0, le=1000000, description="GPUs the namespace may hold in this pool at once.")


class GPUPoolSpec(CorralModel):
    """What a GPUPool declares."""

    accelerator_type: Annotated[
        str, Field(min_length=1, max_length=128, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    ] = Field(description="Accelerator type, e.g. nvidia-a100-80gb, nvidia-h100-80gb, nvidia-l4, or cpu.")
    gpus_per_node: int = Field(ge=0, le=64, description="GPUs on each node; 0 for a CPU pool.")
    gpu_memory: QuantityString | None = Field(
        default=None, description="Memory of one GPU, e.g. 80Gi; required when gpusPerNode > 0."
    )
    cpus_per_node: QuantityString | None = Field(default=None, description="Allocatable CPUs per node, e.g. 96.")
    memory_per_node: QuantityString | None = Field(default=None, description="Allocatable memory per node.")
    min_nodes: int = Field(default=0, ge=0, le=100000, description="Fewest nodes (the autoscaler keeps these).")
    max_nodes: int = Field(ge=1, le=100000, description="Most nodes the pool grows to.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Labels that select the pool's nodes; copied onto placed pods."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Tolerations placed pods need for the pool's taints."
    )
    price_per_gpu_hour: DecimalString = Field(
        default="0", description="US dollars per GPU-hour (per node-hour for CPU pools)."
    )
    spot: bool = Field(default=False, description="Spot/preemptible capacity: cheaper, may be reclaimed.")
    quotas: list[NamespaceQuota] = Field(
        default_factory=list,
        max_length=1024,
        description="Per-namespace GPU limits, one entry per namespace; a namespace not listed has no limit beyond "
        "the pool's size.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["namespace"]},
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.minNodes) || self.minNodes <= self.maxNodes",
                    "message": "minNodes must be <= maxNodes",
                },
                {
                    "rule": "self.gpusPerNode == 0 || has(self.gpuMemory)",
                    "message": "gpuMemory is required when gpusPerNode > 0",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _cross_field(self) -> GPUPoolSpec:
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"minNodes must be <= maxNodes (minNodes={self.min_nodes}, maxNodes={self.max_nodes})")
        if self.gpus_per_node > 0 and self.gpu_memory is None:
            raise ValueError(f"gpuMemory is required when gpusPerNode > 0 (gpusPerNode={self.gpus_per_node})")
        dupes = repeated([q.namespace for q in self.quotas])
        if dupes:
            raise ValueError(f"each namespace may have one quota entry (repeated: {dupes})")
        return self

    @property
    def capacity_gpus(self) -> int:
        """GPUs in the pool at its largest size."""
        return self.gpus_per_node * self.max_nodes


class NamespaceAllocation(CorralModel):
    """GPUs one namespace holds in the pool."""

    namespace: str = Field(description="Namespace.")
    gpus: int = Field(ge=0, description="GPUs allocated to the namespace.")


class GPUPoolStatus(CorralModel):
    """What the scheduler observed about a GPUPool."""

    observed_generation: int | None = Field(default=None, ge=0, description="Generation last reconciled.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready and other conditions.")
    nodes: int = Field(default=0, ge=0, description="Nodes currently in the pool.")
    allocatable_gpus: int = Field(
        default=0, ge=0, description="GPUs free to allocate now: the pool's capacity minus allocatedGpus (column FREE)."
    )
    allocated_gpus: int = Field(default=0, ge=0, description="GPUs held by placed work.")
    allocations: list[NamespaceAllocation] = Field(default_factory=list, description="GPUs held per namespace.")


class GPUPool(Resource):
    """A pool of accelerator nodes that Corral places fine-tunes and deployments on."""

    KIND: ClassVar[str] = "GPUPool"
    PLURAL: ClassVar[str] = "gpupools"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("gpool", "gp")
    NAMESPACED: ClassVar[bool] = False
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = (
        {"name": "Accelerator", "type": "string", "jsonPath": ".spec.acceleratorType"},
        {"name": "GPUs/Node", "type": "integer", "jsonPath": ".spec.gpusPerNode"},
        {"name": "Free", "type": "integer", "jsonPath": ".status.allocatableGpus"},
        {"name": "Allocated", "type": "integer", "jsonPath": ".status.allocatedGpus"},
        {"name": "Price", "type": "string", "jsonPath": ".spec.pricePerGpuHour"},
        {"name": "Spot", "type": "boolean", "jsonPath": ".spec.spot"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )

    kind: Literal["GPUPool"] = Field(default="GPUPool", description="Always GPUPool.")
    spec: GPUPoolSpec = Field(description="Desired state of the GPUPool.")
    status: GPUPoolStatus = Field(default_factory=GPUPoolStatus, description="Observed state of the GPUPool.")
