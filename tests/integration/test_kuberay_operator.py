"""The real KubeRay operator accepts the RayJob and RayService Corral builds, and makes their clusters.

KubeRay's ``ray-operator`` (v1.5.0, built from its Go module by ``scripts/install_kuberay.sh``)
runs against the session's real API server, which holds KubeRay v1.7.0's CRDs (the newest
schema Corral validates against; v1.5.0's controller reads the same ``ray.io/v1`` fields). The
support-bot example's FineTuneJob and ModelDeployment are stored on that server; the RayJob and
the RayService are built from them by Corral's own builders (``corral.drivers.kuberay``) with the
entrypoint, runtime env and Serve config the reconcilers compute, exactly what the operator's
KubeRay driver creates. KubeRay then has to accept each object and create its RayCluster and
the cluster's head Pod carrying Corral's image, environment and resources. No kubelet runs
here, so the pods stay Pending: the test checks objects, not Ray.

The operator process is started here and stopped by its PID.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from corral.api import parse_document
from corral.api.v1alpha1 import FineTuneJob, Model, ModelDeployment
from corral.api.v1alpha1.model import ModelArtifact, ModelStatus
from corral.control import ControlSettings, app_config, job_files
from corral.control._jobspec import entrypoint, submission_id
from corral.drivers import Handle
from corral.drivers.kuberay import (
    KubeRaySettings,
    build_rayjob,
    build_rayservice,
    rayjob_name,
    rayservice_name,
)
from tests.support.kube import REPO, KubeCluster
from tests.support.procs import stop_process

EXAMPLES = REPO / "examples" / "support-bot"
INSTALL = REPO / "scripts" / "install_kuberay.sh"
RAY_OPERATOR = REPO / ".tools" / "kuberay" / "bin" / "ray-operator"
CONTROL = ControlSettings(artifact_root="s3://corral/artifacts", job_runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
SETTINGS = KubeRaySettings(
    image="registry.example/corral-ray:test",
    service_account="corral-ray",
    s3_secret_name="corral-s3",
    s3_endpoint_url="http://minio.corral-system.svc:9000",
    head_cpus="1",
    head_memory="2Gi",
    extra_env={"CORRAL_LOG_LEVEL": "INFO"},
)
T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(check: Callable[[], T | None], what: str, timeout: float = 90.0) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def ray_operator(kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    """KubeRay's operator on the session server (admin kubeconfig), stopped by its PID afterwards."""
    if not os.access(RAY_OPERATOR, os.X_OK):
        # Built on demand, once per machine (cached under ~/.cache/corral/kuberay); never a skip.
        subprocess.run(["bash", str(INSTALL)], check=True, timeout=1800)
    tmp = tmp_path_factory.mktemp("kuberay")
    kubeconfig = kube.write_kubeconfig(tmp / "admin.kubeconfig", "admin")
    log_path = tmp / "ray-operator.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                str(RAY_OPERATOR),
                f"--metrics-addr=127.0.0.1:{_free_port()}",
                f"--health-probe-bind-address=127.0.0.1:{_free_port()}",
                "--enable-leader-election=false",
                "--log-stdout-encoder=console",
            ],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.log_path = log_path  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        stop_process(proc, timeout=20)


def _log(proc: subprocess.Popen[bytes]) -> str:
    path: Path = proc.log_path  # type: ignore[attr-defined]
    return path.read_text(errors="replace")[-4000:]


def _example(name: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]
    (doc,) = docs
    return dict(doc)


def _store(kube: KubeCluster, doc: dict[str, Any], namespace: str) -> Any:
    """Create one example object in ``namespace`` and return it parsed, as the server stored it."""
    doc = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
    kube.apply([doc])
    plural = {"FineTuneJob": "finetunejobs", "ModelDeployment": "modeldeployments"}[doc["kind"]]
    stored = kube.get_json(f"{plural}.corral.dev", doc["metadata"]["name"], "-n", namespace)
    return parse_document(stored, source=f"{doc['kind']}/{doc['metadata']['name']}")


def _ready_base(namespace: str) -> Model:
    """The example's base Model with the artifact its reconciler would record."""
    doc = _example("10-model.yaml")
    doc["metadata"]["namespace"] = namespace
    model = Model.model_validate(doc)
    return model.model_copy(
        update={"status": ModelStatus(artifact=ModelArtifact(uri="s3://corral/artifacts/models/tiny-llama"))}
    )


def _owned_cluster(kube: KubeCluster, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    clusters = kube.get_json("rayclusters.ray.io", "-n", namespace) or {"items": []}
    for cluster in clusters["items"]:
        for ref in cluster["metadata"].get("ownerReferences") or []:
            if ref["kind"] == kind and ref["name"] == name:
                return dict(cluster)
    return None


def _head_pod(kube: KubeCluster, namespace: str, cluster: str) -> dict[str, Any] | None:
    pods = kube.get_json("pods", "-n", namespace, "-l", f"ray.io/cluster={cluster},ray.io/node-type=head")
    items = (pods or {"items": []})["items"]
    return dict(items[0]) if items else None


def _assert_carries_corral_pod(container: dict[str, Any]) -> None:
    """The head container as Corral built it: image, env (S3 endpoint, secret refs, extra env), resources."""
    assert container["image"] == SETTINGS.image
    env = {e["name"]: e for e in container.get("env") or []}
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == SETTINGS.s3_endpoint_url
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "corral-s3", "key": "AWS_ACCESS_KEY_ID"}
    assert env["CORRAL_LOG_LEVEL"]["value"] == "INFO"
    res = {"cpu": SETTINGS.head_cpus, "memory": SETTINGS.head_memory}
    assert container["resources"]["requests"] == res and container["resources"]["limits"] == res


@pytest.fixture(scope="module")
def namespace(kube: KubeCluster) -> Iterator[str]:
    """A namespace with the Ray pods' ServiceAccount (the chart makes it per tenant namespace)."""
    name = f"kuberay-{os.getpid()}-{int(time.time()) % 100000}"
    kube.kubectl("create", "namespace", name)
    kube.kubectl("create", "serviceaccount", "corral-ray", "-n", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_kuberay_runs_corral_rayjob(kube: KubeCluster, ray_operator: subprocess.Popen[bytes], namespace: str) -> None:
    job = _store(kube, _example("30-finetunejob.yaml"), namespace)
    assert isinstance(job, FineTuneJob) and job.metadata.uid
    sid = submission_id(job)
    body = build_rayjob(
        Handle.for_job(job),
        SETTINGS,
        submission_id=sid,
        entrypoint=entrypoint(job_files(job, CONTROL).job_file, CONTROL),
        runtime_env=CONTROL.job_runtime_env,
    )
    kube.apply([body])
    name = rayjob_name(sid)

    def started() -> dict[str, Any] | None:
        assert ray_operator.poll() is None, f"ray-operator exited: {_log(ray_operator)}"
        rayjob = kube.get_json("rayjobs.ray.io", name, "-n", namespace)
        status = (rayjob or {}).get("status") or {}
        return rayjob if status.get("rayClusterName") and status.get("jobDeploymentStatus") else None

    rayjob = eventually(started, f"KubeRay to start RayJob {name}")
    status = rayjob["status"]
    # Accepted: KubeRay validated the spec and went on (a refused spec ends in ValidationFailed/Failed).
    assert status["jobDeploymentStatus"] in ("Initializing", "Running"), status
    assert rayjob["spec"]["entrypoint"] == body["spec"]["entrypoint"]
    assert rayjob["spec"]["jobId"] == sid

    cluster = eventually(lambda: _owned_cluster(kube, namespace, "RayJob", name), f"the RayCluster of {name}")
    assert cluster["metadata"]["name"] == status["rayClusterName"]
    spec = cluster["spec"]
    assert spec["rayVersion"] == SETTINGS.ray_version
    head = spec["headGroupSpec"]["template"]["spec"]
    assert head["serviceAccountName"] == "corral-ray"
    _assert_carries_corral_pod(head["containers"][0])
    (group,) = spec["workerGroupSpecs"]
    assert group["replicas"] == job.spec.resources.workers
    assert group["template"]["spec"]["containers"][0]["image"] == SETTINGS.image

    pod = eventually(lambda: _head_pod(kube, namespace, cluster["metadata"]["name"]), "the RayJob's head pod")
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "ray-head"]
    _assert_carries_corral_pod(container)
    assert pod["status"].get("phase") == "Pending"  # no kubelet: created, never run


def test_kuberay_runs_corral_rayservice(
    kube: KubeCluster, ray_operator: subprocess.Popen[bytes], namespace: str
) -> None:
    dep = _store(kube, _example("40-deployment.yaml"), namespace)
    assert isinstance(dep, ModelDeployment) and dep.metadata.uid
    config = {"applications": [app_config(dep, {"tiny-llama": _ready_base(namespace)})]}
    body = build_rayservice(Handle.for_deployment(dep), config, SETTINGS)
    kube.apply([body])
    name = rayservice_name(dep.metadata.name)

    cluster = eventually(lambda: _owned_cluster(kube, namespace, "RayService", name), f"the RayCluster of {name}")
    rayservice = kube.get_json("rayservices.ray.io", name, "-n", namespace)
    assert yaml.safe_load(rayservice["spec"]["serveConfigV2"]) == config
    pending = (rayservice.get("status") or {}).get("pendingServiceStatus") or {}
    assert pending.get("rayClusterName") in (None, cluster["metadata"]["name"]), rayservice.get("status")
    events = kube.get_json("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}") or {}
    warnings = [e for e in events.get("items", []) if e.get("type") == "Warning" and "Invalid" in e.get("reason", "")]
    assert warnings == [], json.dumps(warnings)[:2000]

    spec = cluster["spec"]
    head = spec["headGroupSpec"]["template"]["spec"]
    _assert_carries_corral_pod(head["containers"][0])
    assert ("serve", 8000) in [(p["name"], p["containerPort"]) for p in head["containers"][0]["ports"]]
    (group,) = spec["workerGroupSpecs"]
    assert group["replicas"] == dep.spec.replicas
    worker = group["template"]["spec"]["containers"][0]
    assert worker["resources"]["requests"]["cpu"] == dep.spec.resources.cpus_per_replica

    pod = eventually(lambda: _head_pod(kube, namespace, cluster["metadata"]["name"]), "the RayService's head pod")
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "ray-head"]
    _assert_carries_corral_pod(container)
    assert ray_operator.poll() is None, _log(ray_operator)
