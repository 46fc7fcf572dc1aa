"""The v1alpha1 types: defaults, cross-field rules, wire names, documentation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from corral.api.v1alpha1 import (
    KINDS,
    AutoscalingSpec,
    FineTuneJob,
    FineTuneJobSpec,
    GPUPoolSpec,
    LicenseSpec,
    LoRASpec,
    ModelDeploymentSpec,
    ModelSpec,
)


def _models(cls: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if cls in seen:
        return
    seen.add(cls)
    for info in cls.model_fields.values():
        stack: list[Any] = [info.annotation]
        while stack:
            ann = stack.pop()
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                _models(ann, seen)
            stack.extend(getattr(ann, "__args__", ()) or ())


def all_models() -> list[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    for cls in KINDS.values():
        _models(cls, seen)
    return sorted(seen, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", all_models(), ids=lambda c: c.__name__)
def test_every_field_is_documented_and_strict(cls: type[BaseModel]) -> None:
    # ObjectMeta belongs to the API server (which validates it and adds fields over versions):
    # unknown metadata fields are ignored, never an invalid object. Everything else is strict.
    assert cls.model_config.get("extra") == ("ignore" if cls.__name__ == "ObjectMeta" else "forbid"), cls
    assert cls.__doc__, cls
    for name, info in cls.model_fields.items():
        assert info.description, f"{cls.__name__}.{name} has no description"


def test_wire_names_are_camel_case() -> None:
    job = FineTuneJob.model_validate(
        {
            "metadata": {"name": "j", "namespace": "a"},
            "spec": {"baseModel": {"name": "m"}, "datasets": [{"name": "d"}], "hyperparameters": {"maxSeqLen": 64}},
        }
    )
    wire = job.to_dict()
    assert wire["apiVersion"] == "corral.dev/v1alpha1"
    assert wire["kind"] == "FineTuneJob"
    assert wire["spec"]["baseModel"] == {"name": "m"}
    assert wire["spec"]["hyperparameters"]["maxSeqLen"] == 64
    assert "max_seq_len" not in str(wire)
    assert FineTuneJob.model_validate(wire) == job


def test_lora_defaults_follow_llama_factory() -> None:
    spec = FineTuneJobSpec.model_validate({"baseModel": {"name": "m"}, "datasets": [{"name": "d"}]})
    assert spec.method == "lora"
    lora = spec.effective_lora
    assert lora is not None and lora.rank == 16 and lora.effective_alpha == 32
    assert LoRASpec(rank=8).effective_alpha == 16
    assert LoRASpec(rank=8, alpha=8).effective_alpha == 8
    full = FineTuneJobSpec.model_validate({"baseModel": {"name": "m"}, "datasets": [{"name": "d"}], "method": "full"})
    assert full.effective_lora is None


@pytest.mark.parametrize(
    ("cls", "data", "needle"),
    [
        (ModelSpec, {}, "exactly one of catalogName and uri"),
        (ModelSpec, {"catalogName": "x", "uri": "s3://b/k"}, "exactly one of catalogName and uri"),
        (ModelSpec, {"type": "adapter", "uri": "s3://b/k"}, "needs baseModel"),
        (ModelSpec, {"catalogName": "x", "revision": "main"}, "revision applies only to hf://"),
        (ModelSpec, {"uri": "ftp://x"}, "'ftp://x' is not an artifact URI"),
        (AutoscalingSpec, {"minReplicas": 3, "maxReplicas": 2}, "minReplicas=3, maxReplicas=2"),
        (ModelDeploymentSpec, {"model": {"name": "m"}, "replicas": 1, "autoscaling": {}}, "not both"),
        (
            ModelDeploymentSpec,
            {"model": {"name": "m"}, "adapters": [{"name": "a", "model": {"name": "x"}}] * 2},
            "repeated: a",
        ),
        (GPUPoolSpec, {"acceleratorType": "nvidia-a100-80gb", "gpusPerNode": 8, "maxNodes": 1}, "gpuMemory"),
        (GPUPoolSpec, {"acceleratorType": "cpu", "gpusPerNode": 0, "minNodes": 3, "maxNodes": 2}, "minNodes=3"),
        (GPUPoolSpec, {"acceleratorType": "cpu", "gpusPerNode": 0, "maxNodes": 1, "pricePerGpuHour": "1,5"}, "pattern"),
        (LicenseSpec, {"name": "x", "commercialUse": "conditional"}, "needs at least one entry in conditions"),
    ],
)
def test_cross_field_rules_quote_the_values(cls: type[BaseModel], data: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        cls.model_validate(data)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"method": "full", "lora": {"rank": 8}}, "lora is only allowed with method lora or qlora"),
        ({"method": "qlora"}, "qlora needs resources.gpusPerWorker >= 1"),
        ({"method": "full", "output": {"merge": True}}, "merge applies only to lora"),
        ({"hyperparameters": {"microBatchSize": 64, "globalBatchSize": 8}}, "microBatchSize=64, globalBatchSize=8"),
        ({"datasets": [{"name": "d"}, {"name": "d"}]}, "repeated: d"),
        ({"datasets": []}, "at least 1 item"),
    ],
)
def test_finetunejob_rules(patch: dict[str, Any], needle: str) -> None:
    data = {"baseModel": {"name": "m"}, "datasets": [{"name": "d"}], **patch}
    with pytest.raises(ValidationError) as info:
        FineTuneJobSpec.model_validate(data)
    assert needle in str(info.value)


def test_deepspeed_on_cpu_workers_is_accepted() -> None:
    spec = FineTuneJobSpec.model_validate(
        {"baseModel": {"name": "m"}, "datasets": [{"name": "d"}], "resources": {"strategy": "deepspeed-zero3"}}
    )
    assert spec.resources.strategy == "deepspeed-zero3" and spec.resources.gpus_per_worker == 0


def test_qlora_with_gpus_is_accepted() -> None:
    spec = FineTuneJobSpec.model_validate(
        {"baseModel": {"name": "m"}, "datasets": [{"name": "d"}], "method": "qlora", "resources": {"gpusPerWorker": 1}}
    )
    assert spec.effective_lora is not None


def test_replica_range() -> None:
    assert ModelDeploymentSpec.model_validate({"model": {"name": "m"}}).replica_range == (1, 1)
    assert ModelDeploymentSpec.model_validate({"model": {"name": "m"}, "replicas": 3}).replica_range == (3, 3)
    scaled = ModelDeploymentSpec.model_validate({"model": {"name": "m"}, "autoscaling": {"minReplicas": 0}})
    assert scaled.replica_range == (0, 1)


def test_object_meta_round_trips_what_the_api_server_sets() -> None:
    """A deleting object as a real kube-apiserver returns it (generateName, deletionGracePeriodSeconds...)."""
    from corral.api.v1alpha1 import Dataset

    meta = {
        "name": "gen-x7k2p",
        "generateName": "gen-",
        "namespace": "team-a",
        "uid": "0d6f5c1e-2f7a-4b7e-9f57-8f3f6c1a2b3c",
        "resourceVersion": "4711",
        "generation": 2,
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "deletionTimestamp": "2026-01-01T00:05:00Z",
        "deletionGracePeriodSeconds": 0,
        "selfLink": "/apis/corral.dev/v1alpha1/namespaces/team-a/datasets/gen-x7k2p",
        "labels": {"app": "bot"},
        "annotations": {"note": "x"},
        "finalizers": ["corral.dev/cleanup"],
        "ownerReferences": [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": "o",
                "uid": "u",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
        "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "corral.dev/v1alpha1"}],
        "someFieldOfALaterServer": {"x": 1},
    }
    doc = {
        "apiVersion": "corral.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": meta,
        "spec": {"uri": "s3://b/d.jsonl", "license": {"name": "MIT"}},
    }
    ds = Dataset.model_validate(doc)
    out = ds.to_dict()["metadata"]
    written = {k: v for k, v in meta.items() if k not in ("managedFields", "someFieldOfALaterServer")}
    assert {k: out[k] for k in written} == {**written, "creationTimestamp": out["creationTimestamp"]}
    assert out["deletionGracePeriodSeconds"] == 0 and out["generateName"] == "gen-"
    assert ds.metadata.managed_fields is not None  # read; the server keeps it on writes that leave it out
