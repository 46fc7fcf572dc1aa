"""The test suite's real Kubernetes control plane (tests/support/kube.py) does what a cluster does.

These pin the behaviours the emulator got wrong and the rest of the suite relies on: RBAC
refuses a tenant without a binding, CRD schemas are enforced, integer-only query parameters are
refused as floats, KubeRay's CRDs are established server-side, and the controller manager's
garbage collector removes an owned object once its owner is gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import kubernetes.client
import pytest
import requests

from tests.support.kube import KubeCluster


def test_versions_are_within_the_supported_skew(kube: KubeCluster) -> None:
    import json

    out = json.loads(kube.kubectl("version", "-o", "json").stdout)
    server, client = out["serverVersion"], out["clientVersion"]
    assert server["major"] == "1" and abs(int(server["minor"]) - int(client["minor"])) <= 1, out


def test_rbac_refuses_a_tenant_without_a_binding(kube: KubeCluster, kube_namespace: Callable[[str], str]) -> None:
    ns = kube_namespace("rbac")
    denied = kube.kubectl("get", "finetunejobs", "-n", ns, user="alice", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    kube.kubectl("create", "rolebinding", "alice-view", "--clusterrole=view", "--user=alice", "-n", ns)
    assert kube.kubectl("auth", "can-i", "list", "pods", "-n", ns, user="alice", check=False).stdout.strip() == "yes"


def test_watch_timeouts_must_be_integers(kube: KubeCluster) -> None:
    """What stopped the operator in 2 seconds: kopf sent ``timeoutSeconds=300.0``."""
    headers = {"Authorization": f"Bearer {kube.tokens['admin']}"}
    url = f"{kube.url}/apis/corral.dev/v1alpha1/finetunejobs"
    bad = requests.get(
        url, params={"watch": "true", "timeoutSeconds": "300.0"}, headers=headers, verify=False, timeout=10
    )
    assert bad.status_code == 400 and "strconv.ParseInt" in bad.text
    ok = requests.get(url, params={"watch": "true", "timeoutSeconds": "1"}, headers=headers, verify=False, timeout=10)
    assert ok.status_code == 200


def test_crd_schema_is_enforced(kube: KubeCluster, kube_namespace: Callable[[str], str]) -> None:
    ns = kube_namespace("schema")
    doc = {
        "apiVersion": "corral.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": "d", "namespace": ns},
        "spec": {"uri": "file://./relative.jsonl"},
    }
    refused = kube.kubectl("apply", "-f", "-", stdin=__import__("yaml").safe_dump(doc), check=False)
    assert refused.returncode != 0 and "spec.uri" in refused.stderr


def test_kuberay_crds_are_established(kube: KubeCluster) -> None:
    names = {c["metadata"]["name"] for c in kube.get_json("crd")["items"]}
    assert {"rayjobs.ray.io", "rayservices.ray.io", "rayclusters.ray.io", "finetunejobs.corral.dev"} <= names


def test_the_garbage_collector_removes_owned_objects(kube: KubeCluster, kube_namespace: Callable[[str], str]) -> None:
    ns = kube_namespace("gc")
    with kube.api_client() as client:
        core = kubernetes.client.CoreV1Api(client)
        owner = core.create_namespaced_config_map(ns, {"metadata": {"name": "owner"}})
        ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
        core.create_namespaced_config_map(ns, {"metadata": {"name": "child", "ownerReferences": [ref]}})
        core.delete_namespaced_config_map("owner", ns)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                core.read_namespaced_config_map("child", ns)
            except kubernetes.client.ApiException as exc:
                if exc.status == 404:
                    return
                raise
            time.sleep(0.5)
    pytest.fail(f"the garbage collector did not remove the child: {kube.log_tail('kube-controller-manager')}")
