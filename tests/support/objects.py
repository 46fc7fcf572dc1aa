"""Test objects of every Kind, built in one place (Kubeflow Trainer's ``wrapper.go`` shape).

Plain functions with keyword overrides: each builds a valid object the way most tests want
it (namespace ``team-a``, generation 1, Corral's finalizer on work objects, references and
data Ready) and takes keywords for what a test varies. Spec overrides are given in the wire
form (camelCase, as in YAML) and merged into the default spec, e.g.
``finetunejob(suspend=True, resources={"gpusPerWorker": 4})``.

Tests build the *observed* world around these objects themselves; nothing here touches a
store, a driver or a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from corral.api.v1alpha1 import (
    Condition,
    Dataset,
    DatasetSpec,
    FineTuneJob,
    FineTuneJobSpec,
    GPUPool,
    GPUPoolSpec,
    LicenseSpec,
    LocalObjectReference,
    Model,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelSpec,
    ObjectMeta,
    Resource,
)
from corral.api.v1alpha1.dataset import DatasetReport, DatasetStatus, RoleTokenStats
from corral.api.v1alpha1.model import ModelArtifact, ModelLineage, ModelLineageLink, ModelStatus
from corral.control import FINALIZER

__all__ = [
    "NOW",
    "NS",
    "applied",
    "base_model",
    "dataset",
    "deployment",
    "finetunejob",
    "gpupool",
    "meta",
    "model",
    "ready",
]

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
"""The clock of every hand-built world."""
NS = "team-a"
"""The namespace objects are built in unless told."""

_UNSET: Any = object()
R = TypeVar("R", bound=Resource)


def meta(
    name: str,
    *,
    ns: str | None = NS,
    generation: int = 1,
    uid: str | None = _UNSET,
    created: datetime | None = None,
    **extra: Any,
) -> ObjectMeta:
    """Object metadata.

    Args:
        name: ``metadata.name``.
        ns: ``metadata.namespace`` (None for cluster-scoped objects).
        generation: ``metadata.generation``.
        uid: ``metadata.uid``; ``uid-<name>`` unless given (None for none).
        created: ``metadata.creationTimestamp``.
        **extra: More ObjectMeta fields (``finalizers``, ``annotations``, ``resource_version`` ...).
    """
    return ObjectMeta(
        name=name,
        namespace=ns,
        generation=generation,
        uid=f"uid-{name}" if uid is _UNSET else uid,
        creation_timestamp=created,
        **extra,
    )


def ready(
    message: str = "ok", *, status: str = "True", reason: str = "Ok", at: datetime | None = NOW
) -> list[Condition]:
    """A ``Ready`` condition list (``status="False"`` for one that is not)."""
    return [Condition(type="Ready", status=status, reason=reason, message=message, last_transition_time=at)]  # type: ignore[arg-type]


def applied(obj: R) -> R:
    """``obj`` as a user applies it: name, namespace, labels, annotations and finalizers; no status.

    For store tests, which create objects the way ``kubectl apply`` does (the store sets uid,
    generation, resourceVersion and timestamps).
    """
    m = obj.metadata
    bare = ObjectMeta(
        name=m.name, namespace=m.namespace, labels=m.labels, annotations=m.annotations, finalizers=m.finalizers
    )
    status = type(obj.status)()  # type: ignore[attr-defined]
    return obj.model_copy(update={"metadata": bare, "status": status})


def _merge(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **overrides}


def base_model(
    name: str = "tiny",
    *,
    ns: str | None = NS,
    chat_template: str | None = "chatml",
    observed_generation: int | None = 1,
    conditions: Sequence[Condition] | None = None,
    **meta_extra: Any,
) -> Model:
    """A Ready catalog base Model (``tiny-llama``) with its artifact materialized."""
    return Model(
        metadata=meta(name, ns=ns, **meta_extra),
        spec=ModelSpec(catalog_name="tiny-llama"),
        status=ModelStatus(
            observed_generation=observed_generation,
            conditions=list(conditions) if conditions is not None else ready(),
            artifact=ModelArtifact(uri="file:///srv/corral/artifacts/catalog/tiny-llama", size_bytes=10),
            architecture="llama",
            parameters=1377408,
            context_length=1024,
            chat_template=chat_template,
        ),
    )


def model(
    name: str,
    *,
    ns: str = NS,
    adapter_of: str | None = None,
    commercial: str = "allowed",
    is_ready: bool = True,
    root: str = "file:///srv/a",
    **meta_extra: Any,
) -> Model:
    """A URI Model (``<root>/<name>``), or an adapter on ``adapter_of``, with artifact and lineage.

    Args:
        name: Its name.
        ns: Its namespace.
        adapter_of: The base it is an adapter of; None for a base with a license.
        commercial: The license's (and the lineage's) commercial use.
        is_ready: Its Ready condition (reason ``R``, no message).
        root: The URI folder of its weights.
        **meta_extra: More metadata fields.
    """
    uri = f"{root}/{name}"
    spec = (
        ModelSpec(type="adapter", uri=uri, base_model=LocalObjectReference(name=adapter_of))
        if adapter_of
        else ModelSpec(uri=uri, license=LicenseSpec(name="x", commercial_use=commercial))  # type: ignore[arg-type]
    )
    lineage = ModelLineage(
        links=[ModelLineageLink(kind="model", name=name, relation="base", license="x", commercial_use=commercial)],  # type: ignore[arg-type]
        commercial_use=commercial,  # type: ignore[arg-type]
    )
    return Model(
        metadata=meta(name, ns=ns, **meta_extra),
        spec=spec,
        status=ModelStatus(
            conditions=[Condition(type="Ready", status="True" if is_ready else "False", reason="R", message="")],
            artifact=ModelArtifact(uri=uri),
            lineage=lineage,
        ),
    )


def dataset(
    name: str = "support",
    *,
    ns: str = NS,
    license_: str = "Apache-2.0",
    commercial: str = "allowed",
    ok: bool = True,
    observed_generation: int | None = 1,
    format_: str | None = "alpaca",
    conditions: Sequence[Condition] | None = None,
    **meta_extra: Any,
) -> Dataset:
    """A validated Dataset (12 examples) at ``file:///data/<name>.jsonl``; ``ok=False``: 3 invalid records."""
    if conditions is None:
        conditions = (
            ready("12 examples")
            if ok
            else [Condition(type="Ready", status="False", reason="Invalid", message="3 invalid records: line 2: bad")]
        )
    return Dataset(
        metadata=meta(name, ns=ns, **meta_extra),
        spec=DatasetSpec(
            uri=f"file:///data/{name}.jsonl",
            license=LicenseSpec(name=license_, commercial_use=commercial),  # type: ignore[arg-type]
        ),
        status=DatasetStatus(
            observed_generation=observed_generation,
            conditions=list(conditions),
            format=format_,  # type: ignore[arg-type]
            report=DatasetReport(
                examples=12, token_stats=[RoleTokenStats(role="all", min=5, p5=5, median=20, p95=40, max=50)]
            ),
        ),
    )


def finetunejob(
    name: str = "bot",
    *,
    ns: str | None = NS,
    generation: int = 1,
    finalizers: Sequence[str] = (FINALIZER,),
    created: datetime | None = None,
    meta_extra: dict[str, Any] | None = None,
    **spec: Any,
) -> FineTuneJob:
    """A FineTuneJob of base ``tiny`` on dataset ``support``; ``**spec`` overrides spec fields (camelCase).

    Args:
        name: Its name.
        ns: Its namespace.
        generation: ``metadata.generation``.
        finalizers: Its finalizers (Corral's unless told).
        created: ``metadata.creationTimestamp``.
        meta_extra: More metadata fields (``resource_version``, ``uid`` ...).
        **spec: Spec fields replacing the defaults.
    """
    fields = _merge({"baseModel": {"name": "tiny"}, "datasets": [{"name": "support"}]}, spec)
    return FineTuneJob(
        metadata=meta(
            name, ns=ns, generation=generation, created=created, finalizers=list(finalizers), **(meta_extra or {})
        ),
        spec=FineTuneJobSpec.model_validate(fields),
    )


def deployment(
    name: str = "support",
    *,
    ns: str | None = NS,
    generation: int = 1,
    finalizers: Sequence[str] = (FINALIZER,),
    adapters: Sequence[str | dict[str, Any]] = (),
    created: datetime | None = None,
    meta_extra: dict[str, Any] | None = None,
    **spec: Any,
) -> ModelDeployment:
    """A ModelDeployment of Model ``tiny``; ``adapters`` names adapter Models served as themselves.

    Args:
        name: Its name.
        ns: Its namespace (None for none: served as ``default``).
        generation: ``metadata.generation``.
        finalizers: Its finalizers (Corral's unless told).
        adapters: ``spec.adapters``: a name ``a`` is the adapter Model ``a`` served as ``a``
            (``{"name": a, "model": {"name": a}}``); a dict is written as it is.
        created: ``metadata.creationTimestamp``.
        meta_extra: More metadata fields.
        **spec: Spec fields replacing the defaults (camelCase).
    """
    defaults: dict[str, Any] = {"model": {"name": "tiny"}}
    if adapters:
        defaults["adapters"] = [{"name": a, "model": {"name": a}} if isinstance(a, str) else a for a in adapters]
    return ModelDeployment(
        metadata=meta(
            name, ns=ns, generation=generation, created=created, finalizers=list(finalizers), **(meta_extra or {})
        ),
        spec=ModelDeploymentSpec.model_validate(_merge(defaults, spec)),
    )


def gpupool(
    name: str = "a100",
    *,
    accelerator: str = "nvidia-a100-80gb",
    gpus_per_node: int = 4,
    gpu_memory: str | None = "80Gi",
    max_nodes: int = 1,
    price: str = "2.50",
    **spec: Any,
) -> GPUPool:
    """A cluster-scoped GPUPool (one node of four A100 80GB at 2.50 USD per GPU-hour unless told)."""
    fields = _merge(
        {
            "acceleratorType": accelerator,
            "gpusPerNode": gpus_per_node,
            "gpuMemory": gpu_memory,
            "maxNodes": max_nodes,
            "pricePerGpuHour": price,
        },
        spec,
    )
    return GPUPool(metadata=meta(name, ns=None, uid=None), spec=GPUPoolSpec.model_validate(fields))
