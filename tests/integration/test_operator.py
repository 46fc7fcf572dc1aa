"""The kopf operator against the kmock-based API emulator, driven by ``kubectl apply`` and KubeRay-like status.

Each test runs the real operator (``kopf.testing.KopfRunner``, ``-A --standalone``, the
operator's handlers plus an explicit test login) against one emulator holding Corral's
generated CRDs and KubeRay's ``RayJob``/``RayService`` kinds. Every Corral fixture passes the
CRD's schema and CEL rules first (the emulator checks neither). Tests run in file order and
share the emulator: the support-bot example goes from ``kubectl apply`` to a finished
fine-tune and a served deployment, then through a restart and deletions.

Why kmock and not a real kube-apiserver: the suite has no real API server yet. Building one
(``k8s.io/kubernetes`` from Go modules, ~10 minutes of both cores, cached per machine) plus etcd is
issue #13, not done. An emulator accepted what a real server refused (float ``timeoutSeconds``,
unknown ``metadata`` fields, missing RBAC), so passing here says nothing about a cluster; these
tests move to the real server when #13 lands.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import kopf
import kubernetes.client
import pytest
import yaml
from kopf.testing import KopfRunner

from corral.api.v1alpha1 import FineTuneJob, Model, ModelDeployment
from corral.control import ControlSettings, app_config, job_files
from corral.drivers.kuberay import rayjob_name
from corral.store.kubernetes import KubernetesStore
from corral_operator import OperatorSettings
from tests.support.crd_validator import CRDValidator
from tests.support.kube_emulator import ApiResource, RunningEmulator

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "support-bot"
NS = "support"
RESYNC = "0.5"
T = TypeVar("T")

CRDS = {
    crd["spec"]["names"]["kind"]: crd
    for crd in (yaml.safe_load(p.read_text()) for p in sorted((REPO / "charts/corral/crds").glob("*.yaml")))
}
_URL: list[str] = []


@kopf.on.login(id="test-emulator")
def emulator_login(**_: Any) -> kopf.ConnectionInfo:
    """The explicit login the tests use: the emulator, with a fake bearer token."""
    return kopf.ConnectionInfo(server=_URL[-1], token="test-token", scheme="Bearer")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("operator")
    emulator = RunningEmulator(crds=CRDS.values())
    emulator.emulator.register(ApiResource("ray.io", "v1", "rayjobs", "RayJob", status=True))
    emulator.emulator.register(ApiResource("ray.io", "v1", "rayservices", "RayService", status=True))
    with emulator:
        _URL.append(emulator.url)
        kubeconfig = emulator.write_kubeconfig(tmp / "kubeconfig")
        env = {
            "KUBECONFIG": str(kubeconfig),
            "KUBECACHEDIR": str(tmp / "kube-cache"),
            "CORRAL_OPERATOR_ARTIFACT_ROOT": (tmp / "artifacts").as_uri(),
            "CORRAL_OPERATOR_RESYNC_SECONDS": RESYNC,
            "CORRAL_OPERATOR_STANDALONE": "true",
            # the example data lies outside the artifact root: an administrator allows it
            "CORRAL_OPERATOR_ALLOWED_URI_PREFIXES": json.dumps({"*": ["hf://", f"{EXAMPLES.as_uri()}/"]}),
        }
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            handlers = sys.modules.get("corral_operator._handlers")
            if handlers is not None:  # imported earlier in this session: give it this cluster's settings
                handlers.SETTINGS = OperatorSettings.from_env()
            with emulator.api_client() as client:
                yield {
                    "emulator": emulator,
                    "tmp": tmp,
                    "env": dict(os.environ),
                    "custom": kubernetes.client.CustomObjectsApi(client),
                    "store": KubernetesStore(client),
                    "control": ControlSettings(artifact_root=env["CORRAL_OPERATOR_ARTIFACT_ROOT"]),
                }


@contextlib.contextmanager
def operator() -> Iterator[KopfRunner]:
    args = ["run", "-A", "--standalone", "-m", "corral_operator._handlers"]
    with KopfRunner(args, timeout=60) as runner:
        yield runner
    assert runner.exit_code == 0, runner.output


def eventually(check: Callable[[], T | None], timeout: float = 90.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:
            last = exc
        if last is not None and last is not False and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def kubectl(cluster: dict[str, Any], *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", *args], env=cluster["env"], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def apply(cluster: dict[str, Any], path: Path | None = None, docs: list[dict[str, Any]] | None = None) -> None:
    """``kubectl apply --validate=false`` after checking every document against its CRD."""
    from_file = docs is None
    if docs is None:
        assert path is not None
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        errors = CRDValidator(CRDS[doc["kind"]]).errors(doc)
        assert errors == [], errors
    if from_file:
        kubectl(cluster, "apply", "--validate=false", "-f", str(path))
    else:
        kubectl(cluster, "apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump_all(docs))


def get(cluster: dict[str, Any], group: str, plural: str, name: str, namespace: str = NS) -> dict[str, Any] | None:
    version = "v1" if group == "ray.io" else "v1alpha1"
    try:
        found: Any = cluster["custom"].get_namespaced_custom_object(group, version, namespace, plural, name)
    except kubernetes.client.exceptions.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dict(found)


def ray_objects(cluster: dict[str, Any], plural: str) -> list[dict[str, Any]]:
    return cluster["emulator"].objects("ray.io", "v1", plural)


def set_ray_status(cluster: dict[str, Any], plural: str, name: str, status: dict[str, Any]) -> None:
    """Write a child's status the way KubeRay would (through the status subresource)."""
    cluster["custom"].patch_namespaced_custom_object_status(
        "ray.io", "v1", NS, plural, name, {"status": status}, _content_type="application/merge-patch+json"
    )


def phase(cluster: dict[str, Any], plural: str, name: str) -> str | None:
    obj = get(cluster, "corral.dev", plural, name)
    return None if obj is None else (obj.get("status") or {}).get("phase")


def _dataset_docs(tmp: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / "20-dataset.yaml").read_text()) if d]
    for doc in docs:  # kubectl does not resolve ./
        doc["spec"]["uri"] = (EXAMPLES / doc["spec"]["uri"].removeprefix("file://./")).as_uri()
    return docs


def test_finetunejob_runs_as_a_rayjob_and_creates_its_model(cluster: dict[str, Any]) -> None:
    with cluster["emulator"].api_client() as client:  # kubectl would send a core kind as protobuf
        kubernetes.client.CoreV1Api(client).create_namespace(kubernetes.client.V1Namespace(metadata={"name": NS}))
    with operator():
        for name in ("00-gpupool.yaml", "10-model.yaml"):
            apply(cluster, EXAMPLES / name)
        apply(cluster, docs=_dataset_docs(cluster["tmp"]))
        apply(cluster, EXAMPLES / "30-finetunejob.yaml")

        sid = "corral-support.support-bot-v1-1"  # the RayJob is named rayjob_name(sid): corral-support-support-bot-v1-1
        rayjob = eventually(lambda: get(cluster, "ray.io", "rayjobs", rayjob_name(sid)), 180, "the RayJob")
        job = get(cluster, "corral.dev", "finetunejobs", "support-bot-v1")
        assert job is not None
        files = job_files(FineTuneJob.model_validate(job), cluster["control"])
        spec = rayjob["spec"]
        assert spec["entrypoint"] == f"python -m corral.training --job {files.job_file.removeprefix('file://')}"
        assert spec["jobId"] == sid
        assert spec["shutdownAfterJobFinishes"] is True
        assert spec["submissionMode"] == "K8sJobMode"
        assert spec["backoffLimit"] == 0
        assert spec["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 1
        assert rayjob["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
        assert eventually(lambda: phase(cluster, "finetunejobs", "support-bot-v1") == "Admitted")
        assert Path(files.job_file.removeprefix("file://")).is_file()  # contract 1's JOB.json

        set_ray_status(
            cluster,
            "rayjobs",
            rayjob_name(sid),
            {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "startTime": "2026-01-01T00:00:00Z"},
        )
        eventually(lambda: phase(cluster, "finetunejobs", "support-bot-v1") == "Running", what="Running")

        # The training wrote its adapter; KubeRay reports the job complete.
        output = Path(files.output.removeprefix("file://"))
        output.mkdir(parents=True, exist_ok=True)
        (output / "adapter_config.json").write_text('{"base_model_name_or_path": "tiny-llama", "r": 16}')
        set_ray_status(
            cluster,
            "rayjobs",
            rayjob_name(sid),
            {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "endTime": "2026-01-01T00:10:00Z"},
        )
        eventually(lambda: phase(cluster, "finetunejobs", "support-bot-v1") == "Succeeded", what="Succeeded")
        model = eventually(lambda: get(cluster, "corral.dev", "models", "support-bot-v1"), what="the output Model")
        assert model["spec"]["type"] == "adapter" and model["spec"]["baseModel"] == {"name": "tiny-llama"}
    assert len([o for o in ray_objects(cluster, "rayjobs") if o["spec"]["jobId"] == sid]) == 1


def _contract_2(cluster: dict[str, Any], name: str) -> dict[str, Any]:
    store: KubernetesStore = cluster["store"]
    dep = store.get(ModelDeployment, NS, name)
    models = {m.metadata.name: m for m in store.list(Model, NS).items}
    return {"applications": [app_config(dep, models)]}


def test_modeldeployment_becomes_a_rayservice_updated_in_place(cluster: dict[str, Any]) -> None:
    with operator():
        apply(cluster, EXAMPLES / "40-deployment.yaml")

        def serving_config() -> dict[str, Any] | None:
            svc = get(cluster, "ray.io", "rayservices", "corral-support-bot")
            if svc is None:
                return None
            expected = _contract_2(cluster, "support-bot")
            got = yaml.safe_load(svc["spec"]["serveConfigV2"])
            return svc if got == expected and expected["applications"][0]["args"]["adapters"] else None

        svc = eventually(serving_config, 120, "a RayService serving contract 2 with the adapter")
        dep = get(cluster, "corral.dev", "modeldeployments", "support-bot")
        assert dep is not None and svc["metadata"]["ownerReferences"][0]["uid"] == dep["metadata"]["uid"]
        uid = svc["metadata"]["uid"]

        # A spec change updates the same RayService in place.
        changed = yaml.safe_load((EXAMPLES / "40-deployment.yaml").read_text())
        changed["spec"]["maxConcurrentSequences"] = 4
        apply(cluster, docs=[changed])

        def updated() -> bool:
            svc = get(cluster, "ray.io", "rayservices", "corral-support-bot")
            return (
                svc is not None
                and yaml.safe_load(svc["spec"]["serveConfigV2"]) == _contract_2(cluster, "support-bot")
                and "max_concurrent_sequences: 4" in svc["spec"]["serveConfigV2"]
            )

        eventually(updated, what="the updated serveConfigV2")
        svc = get(cluster, "ray.io", "rayservices", "corral-support-bot")
        assert svc is not None and svc["metadata"]["uid"] == uid
        assert len(ray_objects(cluster, "rayservices")) == 1

        app = "support-support-bot"
        set_ray_status(
            cluster,
            "rayservices",
            "corral-support-bot",
            {
                "conditions": [{"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints"}],
                "activeServiceStatus": {
                    "applicationStatuses": {
                        app: {
                            "status": "RUNNING",
                            "serveDeploymentStatuses": {
                                "CorralLLMServer": {"status": "HEALTHY"},
                            },
                        }
                    }
                },
            },
        )
        eventually(lambda: phase(cluster, "modeldeployments", "support-bot") == "Ready", what="Ready")
        status = (get(cluster, "corral.dev", "modeldeployments", "support-bot") or {})["status"]
        assert status["endpoint"] == "http://corral-support-bot-serve-svc.support.svc:8000/support/support-bot/v1"
        assert status["readyReplicas"] == 1


def test_restart_mid_reconcile_creates_nothing_twice(cluster: dict[str, Any]) -> None:
    before_jobs = {o["metadata"]["uid"] for o in ray_objects(cluster, "rayjobs")}
    before_svcs = {o["metadata"]["uid"] for o in ray_objects(cluster, "rayservices")}
    # A second fine-tune, stored as if the operator had written its status (submission id first)
    # and was killed before it created the RayJob.
    doc = yaml.safe_load((EXAMPLES / "30-finetunejob.yaml").read_text())
    doc["metadata"]["name"] = "support-bot-v2"
    doc["spec"]["output"]["modelName"] = "support-bot-v2"
    del doc["spec"]["deployOnSuccess"]
    apply(cluster, docs=[doc])
    with operator():
        sid = "corral-support.support-bot-v2-1"
        eventually(lambda: get(cluster, "ray.io", "rayjobs", rayjob_name(sid)), 60, "the second RayJob")
    # Killed here (after the RayJob, mid-follow); the status names the submission id.
    job = get(cluster, "corral.dev", "finetunejobs", "support-bot-v2")
    assert job is not None and job["status"]["submissionId"] == sid
    cluster["custom"].delete_namespaced_custom_object(
        "ray.io", "v1", NS, "rayjobs", rayjob_name(sid)
    )  # as if never created
    with operator():
        eventually(lambda: get(cluster, "ray.io", "rayjobs", rayjob_name(sid)), 60, "the resubmitted RayJob")
        time.sleep(6 * float(RESYNC))  # several resync passes
    jobs = [o for o in ray_objects(cluster, "rayjobs") if o["spec"]["jobId"] == sid]
    assert len(jobs) == 1
    assert before_jobs <= {o["metadata"]["uid"] for o in ray_objects(cluster, "rayjobs")}
    assert {o["metadata"]["uid"] for o in ray_objects(cluster, "rayservices")} == before_svcs
    after = get(cluster, "corral.dev", "finetunejobs", "support-bot-v2")
    assert after is not None and after["status"]["submissionId"] == sid


def test_kuberay_failure_reason_reaches_the_finetunejob(cluster: dict[str, Any]) -> None:
    sid = rayjob_name("corral-support.support-bot-v2-1")
    with operator():
        set_ray_status(cluster, "rayjobs", sid, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"})
        eventually(lambda: phase(cluster, "finetunejobs", "support-bot-v2") == "Running", what="Running")
        set_ray_status(
            cluster,
            "rayjobs",
            sid,
            {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": "activeDeadlineSeconds passed"},
        )

        def failed() -> dict[str, Any] | None:
            job = get(cluster, "corral.dev", "finetunejobs", "support-bot-v2") or {}
            conds = {c["type"]: c for c in (job.get("status") or {}).get("conditions", [])}
            return conds.get("Failed") if (job.get("status") or {}).get("phase") == "Failed" else None

        condition = eventually(failed, what="Failed")
    assert (condition["status"], condition["reason"]) == ("True", "DeadlineExceeded")
    assert condition["message"] == "activeDeadlineSeconds passed"


def test_invalid_deployment_gets_invalid_spec_and_no_retries(cluster: dict[str, Any]) -> None:
    doc = yaml.safe_load((EXAMPLES / "40-deployment.yaml").read_text())
    doc["metadata"]["name"] = "serves-an-adapter"
    doc["spec"]["model"] = {"name": "support-bot-v1"}  # an adapter cannot be the served base
    with operator():
        apply(cluster, docs=[doc])

        def invalid() -> dict[str, Any] | None:
            dep = get(cluster, "corral.dev", "modeldeployments", "serves-an-adapter") or {}
            conds = {c["type"]: c for c in (dep.get("status") or {}).get("conditions", [])}
            ready = conds.get("Ready")
            return ready if ready and ready["reason"] == "InvalidSpec" else None

        ready = eventually(invalid, what="InvalidSpec")
        assert ready["status"] == "False"
        time.sleep(4 * float(RESYNC))
        assert invalid() == ready  # unchanged: not retried into another state
    assert get(cluster, "ray.io", "rayservices", "corral-serves-an-adapter") is None
    events = cluster["store"].list_events(ModelDeployment, NS, "serves-an-adapter")
    assert any(e.type == "Warning" and e.reason == "InvalidSpec" for e in events)


def test_deleting_owners_leaves_no_orphans(cluster: dict[str, Any]) -> None:
    with operator():
        kubectl(cluster, "delete", "modeldeployment", "support-bot", "-n", NS, "--wait=false")
        kubectl(cluster, "delete", "finetunejob", "support-bot-v2", "-n", NS, "--wait=false")
        eventually(lambda: get(cluster, "corral.dev", "modeldeployments", "support-bot") is None, what="deletion")
        eventually(lambda: get(cluster, "corral.dev", "finetunejobs", "support-bot-v2") is None, what="deletion")
    owners = {
        o["metadata"]["uid"]
        for plural in ("finetunejobs", "modeldeployments")
        for o in cluster["emulator"].objects("corral.dev", "v1alpha1", plural)
    }
    for plural in ("rayjobs", "rayservices"):
        for child in ray_objects(cluster, plural):
            assert {r["uid"] for r in child["metadata"]["ownerReferences"]} <= owners, child["metadata"]["name"]
    assert get(cluster, "ray.io", "rayservices", "corral-support-bot") is None
