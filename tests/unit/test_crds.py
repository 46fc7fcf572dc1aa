"""The generated CRDs: current, structural, and giving the same verdict as the pydantic types.

Every example and fixture is checked against the CRD schema with ``jsonschema`` and the
CEL rules with ``cel-python`` (the API server is not available here), and a set of bad
resources is rejected both by the types and by the CRD.
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import pytest
import yaml

from corral.api import load_documents, parse_document, resolve_relative_uris
from corral.api.crdgen import check_crds, crd_for, render_crds
from corral.api.v1alpha1 import KINDS
from tests.conftest import REPO
from tests.support.crd_validator import CRDValidator, iter_rules

# Short names and resource names of built-in kinds and of the common add-ons (KubeRay, Kueue, KServe).
TAKEN_NAMES = {
    "cm",
    "cs",
    "csr",
    "ds",
    "deploy",
    "ep",
    "ev",
    "hpa",
    "ing",
    "limits",
    "netpol",
    "no",
    "ns",
    "pc",
    "pdb",
    "po",
    "pv",
    "pvc",
    "quota",
    "rc",
    "rs",
    "sa",
    "sc",
    "sts",
    "svc",
    "crd",
    "crds",
    "cj",
    "job",
    "pod",
    "model",
    "models",
    "dataset",
    "gpu",
    "isvc",
    "ig",
    "wl",
    "cq",
    "lq",
    "rf",
    "raycluster",
    "rayjob",
}


@pytest.fixture(scope="module")
def validators() -> dict[str, CRDValidator]:
    return {kind: CRDValidator(crd_for(cls)) for kind, cls in KINDS.items()}


def _examples() -> list[dict[str, Any]]:
    """Every Corral document of the examples (the Namespace documents are for kubectl)."""
    docs = []
    for path in sorted([*(REPO / "examples").glob("*/*.yaml"), *(REPO / "examples/cluster").glob("*/*.yaml")]):
        docs += [resolve_relative_uris(d, path.parent) for d in yaml.safe_load_all(path.read_text()) if d]
    return [d for d in docs if d["apiVersion"] == "corral.dev/v1alpha1"]


def test_committed_crds_are_current() -> None:
    assert check_crds(REPO / "charts" / "corral" / "crds") == []


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, sub in node.get("properties", {}).items():
            out += _walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            out += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_schema_is_structural(kind: str) -> None:
    crd = crd_for(KINDS[kind])
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = yaml.safe_dump(schema)
    for banned in ("$ref", "anyOf", "allOf", "oneOf", "title:", "additionalProperties: false", "const:"):
        assert banned not in text, banned
    for path, node in _walk(schema):
        assert "type" in node, f"{kind}{path} has no type"
        if path.startswith((".spec", ".status")) and not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{kind}{path} has no description"
        if node["type"] == "object" and "properties" in node and "additionalProperties" in node:
            raise AssertionError(f"{kind}{path}: properties and additionalProperties together")


@pytest.mark.parametrize("kind", list(KINDS))
def test_crd_conventions(kind: str) -> None:
    crd = crd_for(KINDS[kind])
    names = crd["spec"]["names"]
    assert names["categories"] == ["corral"]
    assert names["plural"] == KINDS[kind].PLURAL and crd["metadata"]["name"] == f"{names['plural']}.corral.dev"
    for short in names["shortNames"]:
        assert short not in TAKEN_NAMES, short
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    schema = version["schema"]["openAPIV3Schema"]
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
    paths = {path for path, _ in _walk(schema)}
    for column in version["additionalPrinterColumns"]:
        json_path = column["jsonPath"].split("[?")[0]
        assert json_path == ".metadata.creationTimestamp" or json_path in paths, column
    assert any(col["name"] == "Age" for col in version["additionalPrinterColumns"])


def test_short_names_unique_across_kinds() -> None:
    shorts = [s for cls in KINDS.values() for s in cls.SHORT_NAMES]
    assert len(shorts) == len(set(shorts))


def test_deployment_scale_subresource() -> None:
    scale = crd_for(KINDS["ModelDeployment"])["spec"]["versions"][0]["subresources"]["scale"]
    assert scale == {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.readyReplicas"}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_cel_rule_compiles(kind: str) -> None:
    schema = crd_for(KINDS[kind])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = list(iter_rules(schema))
    env = celpy.Environment()
    for _, rule in rules:
        env.compile(rule["rule"])
        assert rule["message"]


def test_render_is_deterministic() -> None:
    assert render_crds() == render_crds()


@pytest.mark.parametrize("doc", _examples(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_examples_pass_crd_schema_and_cel(doc: dict[str, Any], validators: dict[str, CRDValidator]) -> None:
    assert validators[doc["kind"]].errors(doc) == []
    parse_document(doc)


def test_examples_load_with_the_types() -> None:
    loaded = load_documents(REPO / "examples/support-bot") + load_documents(REPO / "examples/cluster", recursive=True)
    assert len(loaded) == len(_examples())


JOB = {
    "apiVersion": "corral.dev/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "j", "namespace": "a"},
    "spec": {"baseModel": {"name": "m"}, "datasets": [{"name": "d"}]},
}
MODEL = {"apiVersion": "corral.dev/v1alpha1", "kind": "Model", "metadata": {"name": "m"}, "spec": {"catalogName": "x"}}
DEPLOY = {
    "apiVersion": "corral.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "d"},
    "spec": {"model": {"name": "m"}},
}
POOL = {
    "apiVersion": "corral.dev/v1alpha1",
    "kind": "GPUPool",
    "metadata": {"name": "p"},
    "spec": {"acceleratorType": "nvidia-l4", "gpusPerNode": 1, "gpuMemory": "24Gi", "maxNodes": 2},
}
DATASET = {
    "apiVersion": "corral.dev/v1alpha1",
    "kind": "Dataset",
    "metadata": {"name": "d"},
    "spec": {"uri": "s3://b/k.jsonl", "license": {"name": "MIT", "commercialUse": "allowed"}},
}


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    node = doc
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return doc


_DELETE = object()

# (document, why it is bad). Each must be rejected by the pydantic types AND by the CRD (schema or CEL).
BAD = [
    (_with(JOB, "spec.method", "sft"), "enum"),
    (_with(JOB, "spec.lora", {"rank": 0}), "minimum"),
    (_with(JOB, "spec.lora", {"rank": 8, "alfa": 1}), "unknown field"),
    (_with(_with(JOB, "spec.method", "full"), "spec.lora", {"rank": 8}), "CEL lora only with lora/qlora"),
    (_with(JOB, "spec.method", "qlora"), "CEL qlora needs GPUs"),
    (_with(_with(JOB, "spec.method", "full"), "spec.output", {"merge": True}), "CEL merge"),
    (_with(JOB, "spec.hyperparameters", {"microBatchSize": 8, "globalBatchSize": 4}), "CEL micro <= global"),
    (_with(JOB, "spec.hyperparameters", {"learningRate": 0}), "exclusive minimum"),
    (_with(JOB, "spec.hyperparameters", {"validationSplitPercent": 80}), "maximum"),
    (_with(JOB, "spec.datasets", []), "minItems"),
    (_with(JOB, "spec.datasets", [{"name": "d"}, {"name": "d"}]), "list-map duplicate"),
    (_with(JOB, "spec.baseModel", _DELETE), "required"),
    (_with(JOB, "spec.intendedUse", "profit"), "enum"),
    (_with(JOB, "spec.resources", {"cpusPerWorker": "two"}), "quantity pattern"),
    (_with(MODEL, "spec.uri", "s3://b/k"), "CEL exactly one source"),
    (_with(MODEL, "spec", {}), "CEL exactly one source (none)"),
    (_with(MODEL, "spec", {"type": "adapter", "uri": "s3://b/a"}), "CEL adapter needs base"),
    (
        _with(MODEL, "spec", {"type": "merged", "catalogName": "x", "baseModel": {"name": "b"}, "revision": "v1"}),
        "CEL revision only hf",
    ),
    (_with(MODEL, "spec.uri", "http://x"), "uri pattern (and CEL)"),
    (_with(DATASET, "spec.uri", "file://relative/data.jsonl"), "relative file uri"),
    (_with(DEPLOY, "spec.autoscaling", {"minReplicas": 4, "maxReplicas": 2}), "CEL min <= max"),
    (_with(_with(DEPLOY, "spec.replicas", 2), "spec.autoscaling", {"maxReplicas": 2}), "CEL replicas xor autoscaling"),
    (
        _with(DEPLOY, "spec.adapters", [{"name": "a", "model": {"name": "x"}}, {"name": "a", "model": {"name": "y"}}]),
        "list-map duplicate",
    ),
    (_with(DEPLOY, "spec.engine", "tgi"), "enum"),
    (_with(POOL, "spec.gpuMemory", _DELETE), "CEL gpuMemory when GPUs"),
    (_with(POOL, "spec.minNodes", 3), "CEL minNodes <= maxNodes"),
    (_with(POOL, "spec.pricePerGpuHour", 1.5), "type string"),
    (_with(POOL, "spec.pricePerGpuHour", "-1"), "decimal pattern"),
    (_with(POOL, "spec.quotas", [{"namespace": "a", "maxGpus": 1}, {"namespace": "a", "maxGpus": 2}]), "list-map"),
    (_with(DATASET, "spec.format", "csv"), "enum"),
    (_with(DATASET, "spec.license", {"name": "custom", "commercialUse": "conditional"}), "CEL conditions"),
    (_with(DATASET, "spec.license", _DELETE), "required"),
]

GOOD = [
    JOB,
    _with(JOB, "spec.method", "full"),
    _with(_with(JOB, "spec.method", "qlora"), "spec.resources", {"gpusPerWorker": 1}),
    _with(JOB, "spec.resources", {"strategy": "deepspeed-zero2"}),  # DeepSpeed on CPU workers
    MODEL,
    _with(MODEL, "spec", {"type": "adapter", "uri": "s3://b/a", "baseModel": {"name": "b"}}),
    _with(MODEL, "spec", {"uri": "hf://meta-llama/Llama-3.1-8B", "revision": "main"}),
    DEPLOY,
    _with(DEPLOY, "spec.autoscaling", {"minReplicas": 0, "maxReplicas": 1}),
    POOL,
    _with(_with(POOL, "spec.gpusPerNode", 0), "spec.gpuMemory", _DELETE),
    DATASET,
    _with(DATASET, "spec.license", {"name": "llama3.1", "commercialUse": "conditional", "conditions": ["x"]}),
]


@pytest.mark.parametrize(("doc", "why"), BAD, ids=[why for _, why in BAD])
def test_bad_resources_rejected_by_types_and_crd(
    doc: dict[str, Any], why: str, validators: dict[str, CRDValidator]
) -> None:
    from corral.api import DocumentError

    with pytest.raises(DocumentError):
        parse_document(doc)
    assert validators[doc["kind"]].errors(doc), f"the CRD accepts a resource the types reject ({why})"


@pytest.mark.parametrize("doc", GOOD, ids=lambda d: f"{d['kind']}-{sorted(d['spec'])}")
def test_good_resources_accepted_by_types_and_crd(doc: dict[str, Any], validators: dict[str, CRDValidator]) -> None:
    parse_document(doc)
    assert validators[doc["kind"]].errors(doc) == []


def test_round_trip_of_typed_object_passes_crd(validators: dict[str, CRDValidator]) -> None:
    for doc in _examples():
        wire = parse_document(doc).to_dict()
        assert validators[doc["kind"]].errors(wire) == [], doc["metadata"]["name"]


def test_immutable_fields_rule_on_update(validators: dict[str, CRDValidator]) -> None:
    old = JOB
    assert validators["FineTuneJob"].errors(_with(JOB, "spec.suspend", True), old=old) == []
    changed = _with(JOB, "spec.baseModel", {"name": "other"})
    errors = validators["FineTuneJob"].errors(changed, old=old)
    assert any("immutable" in e for e in errors)
