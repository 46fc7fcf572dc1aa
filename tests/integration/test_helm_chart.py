"""The Helm chart, rendered by a real Helm 3.17 (``scripts/install_helm.sh``) and checked object by object.

Every rendered object (default values and a non-default set) is validated with
``kubernetes-validate`` against Kubernetes 1.30 and the newest schema it knows; ``helm lint
--strict`` passes; the dashboards ConfigMaps match ``infra/grafana/dashboards``; the
control-plane pods are non-root with read-only root filesystems; S3 credentials reach pods only
as ``secretKeyRef``; the operator's KubeRay settings parse as :class:`KubeRaySettings`.

Against the session's real kube-apiserver (``tests/fixtures/kube.py``): every rendered object,
default and non-default values, passes ``kubectl apply --dry-run=server``, and a real
``helm install`` into a namespace succeeds and ``helm uninstall`` removes what it made.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from corral.drivers.kuberay import KubeRaySettings
from tests.support.kube import KubeCluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "corral"
HELM = os.environ.get("HELM") or (str(REPO / ".tools/bin/helm") if (REPO / ".tools/bin/helm").exists() else None)
HELM = HELM or shutil.which("helm")

kubernetes_validate = pytest.importorskip("kubernetes_validate")
pytestmark = pytest.mark.skipif(HELM is None, reason="no helm binary: run scripts/install_helm.sh (or set HELM)")

K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
NOT_BUILT_IN = {"monitoring.coreos.com/v1"}  # Prometheus Operator CRDs: checked by hand below

NON_DEFAULT = {
    "operator": {
        "replicas": 2,
        "watchNamespaces": ["team-a", "team-b"],
        "namespaceArtifactsSecret": "corral-namespace-artifacts",
        "podDisruptionBudget": {"enabled": True},
        "nodeSelector": {"kubernetes.io/os": "linux"},
    },
    "controlApi": {"replicas": 3, "service": {"type": "LoadBalancer", "port": 443}},
    "artifacts": {
        "root": "s3://models/corral",
        "s3": {"endpointUrl": "http://minio.minio:9000", "existingSecret": "corral-s3", "region": "eu-west-1"},
    },
    "ray": {"gpuImage": "ghcr.io/corral-dev/corral-ray-gpu:0.1.0", "submissionMode": "HTTPMode"},
    "metrics": {
        "serviceMonitor": {
            "enabled": True,
            "labels": {"release": "prometheus"},
            "authorization": {"secretName": "prometheus-scrape-token"},
            "prometheusServiceAccount": {"name": "prometheus", "namespace": "monitoring"},
        }
    },
    "networkPolicy": {"enabled": True, "apiIngressFrom": [{"namespaceSelector": {"matchLabels": {"team": "ml"}}}]},
    "dashboards": {"namespace": "monitoring"},
    "imagePullSecrets": ["regcred"],
}


def helm(*args: str) -> str:
    assert HELM is not None
    result = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def render(tmp_path: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    args = ["template", "corral", str(CHART), "--namespace", "corral-system", "--include-crds"]
    if values is not None:
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["-f", str(path)]
    return [doc for doc in yaml.safe_load_all(helm(*args)) if doc]


@pytest.fixture(scope="module")
def default_objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def custom_objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(tmp_path_factory.mktemp("custom"), NON_DEFAULT)


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_helm_lint_strict(tmp_path: Path) -> None:
    helm("lint", "--strict", str(CHART))
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(NON_DEFAULT))
    helm("lint", "--strict", str(CHART), "-f", str(values))


@pytest.mark.parametrize("which", ["default_objects", "custom_objects"])
def test_every_object_validates_for_kubernetes_1_30_and_later(which: str, request: pytest.FixtureRequest) -> None:
    objects = request.getfixturevalue(which)
    checked = 0
    for obj in objects:
        if obj["apiVersion"] in NOT_BUILT_IN:
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
        checked += 1
    assert checked >= 15


def test_default_render_has_the_control_plane(default_objects: list[dict[str, Any]]) -> None:
    deployments = by_kind(default_objects, "Deployment")
    assert set(deployments) == {"corral-operator", "corral-api"}
    assert deployments["corral-operator"]["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "python",
        "-m",
        "corral_operator",
    ]
    assert set(by_kind(default_objects, "Service")) == {"corral-api"}
    assert {"corral-operator", "corral-api", "corral-ray"} == set(by_kind(default_objects, "ServiceAccount"))
    crds = set(by_kind(default_objects, "CustomResourceDefinition"))
    assert {"finetunejobs.corral.dev", "modeldeployments.corral.dev", "clusterkopfpeerings.kopf.dev"} <= crds
    assert not by_kind(default_objects, "ServiceMonitor") and not by_kind(default_objects, "NetworkPolicy")


def test_pods_are_non_root_with_read_only_root(custom_objects: list[dict[str, Any]]) -> None:
    for deployment in by_kind(custom_objects, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"] and container["resources"]["limits"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def _kuberay_settings(objects: list[dict[str, Any]]) -> KubeRaySettings:
    operator = by_kind(objects, "Deployment")["corral-operator"]
    env = {e["name"]: e for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    return KubeRaySettings.model_validate(json.loads(env["CORRAL_OPERATOR_KUBERAY"]["value"]))


def test_s3_credentials_only_as_secret_refs(custom_objects: list[dict[str, Any]]) -> None:
    operator = by_kind(custom_objects, "Deployment")["corral-operator"]
    env = {e["name"]: e for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "corral-s3",
        "key": "AWS_SECRET_ACCESS_KEY",
    }
    assert "value" not in env["AWS_ACCESS_KEY_ID"]
    assert env["CORRAL_OPERATOR_NAMESPACES"]["value"] == "team-a,team-b"
    kuberay = KubeRaySettings.model_validate(json.loads(env["CORRAL_OPERATOR_KUBERAY"]["value"]))
    assert kuberay.s3_secret_name == "corral-s3" and kuberay.submission_mode == "HTTPMode"
    assert kuberay.gpu_image == "ghcr.io/corral-dev/corral-ray-gpu:0.1.0"
    assert kuberay.service_account == "corral-ray"
    assert kuberay.image == "ghcr.io/corral-dev/corral-ray:0.1.0"
    assert "Secret" not in {o["kind"] for o in custom_objects}
    # Per-namespace S3 credentials: a Secret the kubelet mounts read-only, never read through the API.
    pod = operator["spec"]["template"]["spec"]
    path = env["CORRAL_OPERATOR_NAMESPACE_ARTIFACTS_FILE"]["value"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "namespace-artifacts"]
    assert mount["readOnly"] and path.startswith(mount["mountPath"] + "/")
    (volume,) = [v for v in pod["volumes"] if v["name"] == "namespace-artifacts"]
    assert volume["secret"]["secretName"] == "corral-namespace-artifacts" and volume["secret"]["defaultMode"] == 0o400


def test_non_default_values_switch_on_optional_objects(custom_objects: list[dict[str, Any]]) -> None:
    monitors = by_kind(custom_objects, "ServiceMonitor")
    assert monitors["corral-api"]["metadata"]["labels"]["release"] == "prometheus"
    assert monitors["corral-api"]["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitors["corral-api"]["spec"]["endpoints"][0]["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "prometheus-scrape-token", "key": "token"},
    }
    reader = by_kind(custom_objects, "ClusterRole")["corral-metrics-reader"]
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    binding = by_kind(custom_objects, "ClusterRoleBinding")["corral-metrics-reader"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}]
    assert set(by_kind(custom_objects, "NetworkPolicy")) == {"corral-api", "corral-operator"}
    assert set(by_kind(custom_objects, "PodDisruptionBudget")) == {"corral-api", "corral-operator"}
    assert by_kind(custom_objects, "Service")["corral-api"]["spec"]["type"] == "LoadBalancer"
    dashboards = [o for o in by_kind(custom_objects, "ConfigMap").values() if "dashboard" in o["metadata"]["name"]]
    assert dashboards and all(o["metadata"]["namespace"] == "monitoring" for o in dashboards)
    # The Ray ServiceAccount may review chat callers' tokens in the release namespace and each watched one.
    delegator = by_kind(custom_objects, "ClusterRoleBinding")["corral-ray-auth-delegator"]
    assert [(s["name"], s["namespace"]) for s in delegator["subjects"]] == [
        ("corral-ray", "corral-system"),
        ("corral-ray", "team-a"),
        ("corral-ray", "team-b"),
    ]


def test_kubernetes_auth_at_the_chat_endpoints_can_be_turned_off(tmp_path: Path) -> None:
    objects = render(tmp_path, {"ray": {"chatKubernetesAuth": {"enabled": False, "namespaces": ["team-a"]}}})
    assert "corral-ray-auth-delegator" not in by_kind(objects, "ClusterRoleBinding")
    assert _kuberay_settings(objects).chat_kubernetes_auth is False
    listed = render(tmp_path, {"ray": {"chatKubernetesAuth": {"namespaces": ["team-c", "team-c", "team-d"]}}})
    delegator = by_kind(listed, "ClusterRoleBinding")["corral-ray-auth-delegator"]
    assert [s["namespace"] for s in delegator["subjects"]] == ["team-c", "team-d"]


def test_least_privilege_rbac(default_objects: list[dict[str, Any]]) -> None:
    roles = by_kind(default_objects, "ClusterRole")
    operator_rules = roles["corral-operator"]["rules"]
    assert not any(r["resources"] == ["*"] or r["verbs"] == ["*"] for rules in roles.values() for r in rules["rules"])
    ray = next(r for r in operator_rules if r["apiGroups"] == ["ray.io"])
    assert set(ray["resources"]) == {"rayjobs", "rayservices"}
    corral = next(r for r in operator_rules if r["apiGroups"] == ["corral.dev"] and "models" in r["resources"])
    assert "delete" not in corral["verbs"] and "update" not in corral["verbs"]  # spec is patched, never replaced
    api_rules = roles["corral-api"]["rules"]
    assert any(r["resources"] == ["tokenreviews"] for r in api_rules)
    assert any(r["resources"] == ["subjectaccessreviews"] for r in api_rules)
    assert not any("secrets" in r["resources"] for rules in roles.values() for r in rules["rules"])
    api_status = next(r for r in api_rules if "finetunejobs/status" in r.get("resources", []))
    assert set(api_status["verbs"]) == {"get", "patch", "update"}  # PATCH .../status through the API was a 500
    view, edit = roles["corral-view"], roles["corral-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert {v for r in view["rules"] for v in r["verbs"]} == {"get", "list", "watch"}
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit["metadata"]["labels"]
    edited = {res for r in edit["rules"] for res in r["resources"]}
    assert "gpupools" not in edited and not any(res.endswith("/status") for res in edited)
    # Chat endpoints check Kubernetes tokens as the Ray ServiceAccount: Kubernetes' own auth-delegator role,
    # bound by Helm in the release namespace (the default: no watched namespaces listed). The operator gets no
    # right to grant roles.
    delegator = by_kind(default_objects, "ClusterRoleBinding")["corral-ray-auth-delegator"]
    assert delegator["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "system:auth-delegator",
    }
    assert delegator["subjects"] == [{"kind": "ServiceAccount", "name": "corral-ray", "namespace": "corral-system"}]
    assert not any("rbac.authorization.k8s.io" in r["apiGroups"] for r in operator_rules)
    assert not any(r["verbs"] in (["bind"], ["escalate"]) for r in operator_rules)
    settings = _kuberay_settings(default_objects)
    assert settings.chat_kubernetes_auth is True


def test_dashboards_copies_match_infra(default_objects: list[dict[str, Any]]) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import sync_dashboards
    finally:
        sys.path.pop(0)
    assert sync_dashboards.drift() == [], "run: python scripts/sync_dashboards.py"
    shipped = {
        key: value
        for o in by_kind(default_objects, "ConfigMap").values()
        if "dashboard" in o["metadata"]["name"]
        for key, value in o["data"].items()
    }
    sources = {p.name: json.loads(p.read_text()) for p in (REPO / "infra/grafana/dashboards").glob("*.json")}
    assert {k: json.loads(v) for k, v in shipped.items()} == sources


def test_values_are_documented_key_by_key() -> None:
    """Every leaf key has a comment above it, or sits inside a default documented as a whole ("# -- ...")."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented: list[int] = []  # indents of ancestors whose whole value is documented
    undocumented = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        documented = [d for d in documented if d < indent]
        key, _, rest = stripped.partition(":")
        commented = lines[index - 1].strip().startswith("#")
        if commented and lines[index - 1].strip().startswith("# --") and rest.strip() == "":
            documented.append(indent)
        is_section = rest.strip() == ""
        if not (commented or is_section or documented):
            undocumented.append(f"{key} (line {index + 1})")
    assert undocumented == []


def test_schema_rejects_unknown_and_bad_values(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"operator": {"replicas": "two"}, "nope": 1}))
    assert HELM is not None
    result = subprocess.run(
        [HELM, "template", "corral", str(CHART), "-f", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0 and "values don't meet the specifications of the schema" in result.stderr


def test_service_monitor_without_a_scrape_token_is_refused(tmp_path: Path) -> None:
    """/metrics needs a token: a ServiceMonitor without one would only ever scrape 401s."""
    assert HELM is not None
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"metrics": {"serviceMonitor": {"enabled": True}}}))
    result = subprocess.run(
        [HELM, "template", "corral", str(CHART), "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0 and "authorization.secretName is required" in result.stderr


# -- against the session's real kube-apiserver ----------------------------------------------------


def _helm_env(kube: KubeCluster, tmp_path: Path) -> dict[str, str]:
    kubeconfig = kube.write_kubeconfig(tmp_path / "admin.kubeconfig", "admin")
    return {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "helm-config"),
        "HELM_DATA_HOME": str(tmp_path / "helm-data"),
    }


def _server_dry_run(kube: KubeCluster, objects: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    body = yaml.safe_dump_all(objects)
    return kube.kubectl("apply", "--dry-run=server", "-f", "-", stdin=body, check=False)


@pytest.mark.parametrize("values", [None, NON_DEFAULT], ids=["default", "non-default"])
def test_the_api_server_accepts_every_rendered_object(
    kube: KubeCluster, tmp_path: Path, values: dict[str, Any] | None
) -> None:
    """``helm template | kubectl apply --dry-run=server``: schemas, defaulting and admission of a real server.

    The ServiceMonitor is the one object left out: the Prometheus Operator's CRD is not on the
    test server (nothing here ships it); its fields are checked by hand in
    ``test_non_default_values_switch_on_optional_objects``.
    """
    objects = render(tmp_path, values)
    for ns in ("corral-system", "monitoring"):  # the release's and the non-default dashboards' namespace
        kube.kubectl("create", "namespace", ns, check=False)
    sent = [o for o in objects if o["apiVersion"] not in NOT_BUILT_IN]
    result = _server_dry_run(kube, sent)
    assert result.returncode == 0, result.stderr
    applied = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(sent), result.stdout
    if values is not None:
        assert by_kind(objects, "ServiceMonitor")  # the one object not sent


def test_a_broken_object_is_refused_by_the_dry_run(kube: KubeCluster, tmp_path: Path) -> None:
    """The dry run above can fail: a Deployment with a bad field is refused by the server."""
    deployment = json.loads(json.dumps(by_kind(render(tmp_path), "Deployment")["corral-api"]))
    deployment["spec"]["replicas"] = "three"
    result = _server_dry_run(kube, [deployment])
    assert result.returncode != 0 and "replicas" in result.stderr


def test_helm_install_and_uninstall_on_a_real_server(kube: KubeCluster, tmp_path: Path) -> None:
    """A real ``helm install`` into a namespace; ``helm uninstall`` removes what it made (no pods run: no kubelet)."""
    import uuid

    suffix = uuid.uuid4().hex[:5]
    release, namespace = f"corral-it-{suffix}", f"corral-helm-{suffix}"
    env = _helm_env(kube, tmp_path)
    assert HELM is not None

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=180, env=env, check=False)

    # kopf's ClusterKopfPeering CRD is cluster-wide and may exist already (kubectl-applied here, no Helm
    # ownership): the chart leaves it alone instead of failing with "cannot be imported into the release".
    peering = by_kind(render(tmp_path), "CustomResourceDefinition")["clusterkopfpeerings.kopf.dev"]
    kube.apply([peering])
    installed = run("install", release, str(CHART), "--namespace", namespace, "--create-namespace")
    assert installed.returncode == 0, installed.stderr
    assert "kubectl apply --server-side" in installed.stdout  # NOTES: KubeRay's CRDs are too large otherwise
    assert "STATUS: deployed" in installed.stdout
    selector = f"app.kubernetes.io/instance={release}"
    deployments = kube.get_json("deployments", "-n", namespace, "-l", selector)
    assert {d["metadata"]["name"] for d in deployments["items"]} == {f"{release}-operator", f"{release}-api"}
    roles = kube.get_json("clusterroles", "-l", selector)
    assert {f"{release}-operator", f"{release}-api", f"{release}-view", f"{release}-edit"} <= {
        r["metadata"]["name"] for r in roles["items"]
    }
    listed = run("list", "--namespace", namespace, "-o", "json")
    assert [r["status"] for r in json.loads(listed.stdout)] == ["deployed"], listed.stderr

    uninstalled = run("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s")
    assert uninstalled.returncode == 0, uninstalled.stderr
    left = {
        kind: [o["metadata"]["name"] for o in (kube.get_json(kind, *scope, "-l", selector) or {}).get("items", [])]
        for kind, scope in (
            ("deployments,services,serviceaccounts,configmaps,roles,rolebindings", ("-n", namespace)),
            ("clusterroles,clusterrolebindings", ()),
        )
    }
    assert left == {k: [] for k in left}
    kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
