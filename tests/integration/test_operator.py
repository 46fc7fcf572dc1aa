"""The kopf operator against a real kube-apiserver, driven by ``kubectl apply`` and KubeRay-like status.

Each test runs the real operator (``kopf.testing.KopfRunner``, ``--standalone`` unless a test
says otherwise, watching this module's namespace) **as the Helm chart's operator
ServiceAccount**: its kubeconfig holds a TokenRequest token of that account, so the operator
has exactly the rights the chart's ClusterRole gives it (``chart_accounts``). The server is the
session's real one (``kube``): RBAC, ``OwnerReferencesPermissionEnforcement``, CRD schemas and
CEL, the status subresource and kube-controller-manager's garbage collector are the real
thing. No KubeRay runs; the tests write what KubeRay would into the children's status through
the status subresource, as admin. Tests run in file order and share one namespace: the
support-bot example goes from ``kubectl apply`` to a finished fine-tune and a served
deployment, then through a restart, failures, refusals and deletions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import kubernetes.client
import pytest
import yaml
from kopf.testing import KopfRunner

from corral.api.v1alpha1 import FineTuneJob, Model, ModelDeployment
from corral.control import ControlSettings, app_config, job_files
from corral.drivers.kuberay import CHAT_TOKENS_ENV, rayjob_name
from corral.store.kubernetes import KubernetesStore
from corral_operator import OperatorSettings
from tests.fixtures.kube import ChartAccounts
from tests.support.kube import KubeCluster

pytestmark = pytest.mark.story  # one story in file order, also under `make test-repeat`

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "support-bot"
RESYNC = "0.5"
T = TypeVar("T")
PEERING_CRD = "clusterkopfpeerings.kopf.dev"


@pytest.fixture(scope="module")
def cluster(
    kube: KubeCluster, chart_accounts: ChartAccounts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("operator")
    ns = f"support-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", ns)
    kubeconfig = kube.write_kubeconfig(
        tmp / "operator.kubeconfig", chart_accounts.operator, ns, chart_accounts.operator_token
    )
    env = {
        "KUBECONFIG": str(kubeconfig),
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
            mp.setattr(handlers, "SETTINGS", OperatorSettings.from_env())
        with kube.api_client() as client:
            yield {
                "kube": kube,
                "accounts": chart_accounts,
                "ns": ns,
                "tmp": tmp,
                "kubeconfig": kubeconfig,
                "custom": kubernetes.client.CustomObjectsApi(client),
                "store": KubernetesStore(client),
                "control": ControlSettings(artifact_root=env["CORRAL_OPERATOR_ARTIFACT_ROOT"]),
            }
    kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@contextlib.contextmanager
def operator(cluster: dict[str, Any], *, standalone: bool = True, reraise: bool = True) -> Iterator[KopfRunner]:
    args = ["run", "-n", cluster["ns"], "-m", "corral_operator._handlers"]
    if standalone:
        args.insert(1, "--standalone")
    with KopfRunner(args, timeout=60, reraise=reraise) as runner:
        yield runner
    if reraise:
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
            return cast(T, last)
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def docs_of(cluster: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """The example's Corral documents, moved into this module's namespace."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("apiVersion") == "corral.dev/v1alpha1"]
    for doc in docs:
        if "namespace" in doc["metadata"]:
            doc["metadata"]["namespace"] = cluster["ns"]
        uri = (doc.get("spec") or {}).get("uri")
        if isinstance(uri, str) and uri.startswith("file://./"):  # kubectl does not resolve ./
            doc["spec"]["uri"] = (path.parent / uri.removeprefix("file://./")).as_uri()
    return docs


def apply(cluster: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    """``kubectl apply`` as a tenant would (admin here); the server validates schema and CEL."""
    cluster["kube"].apply(docs)


def get(cluster: dict[str, Any], group: str, plural: str, name: str) -> dict[str, Any] | None:
    version = "v1" if group == "ray.io" else "v1alpha1"
    try:
        found: Any = cluster["custom"].get_namespaced_custom_object(group, version, cluster["ns"], plural, name)
    except kubernetes.client.exceptions.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dict(found)


def listed(cluster: dict[str, Any], group: str, plural: str) -> list[dict[str, Any]]:
    version = "v1" if group == "ray.io" else "v1alpha1"
    found: Any = cluster["custom"].list_namespaced_custom_object(group, version, cluster["ns"], plural)
    return list(found["items"])


def set_ray_status(cluster: dict[str, Any], plural: str, name: str, status: dict[str, Any]) -> None:
    """Write a child's status the way KubeRay would (through the status subresource)."""
    cluster["custom"].patch_namespaced_custom_object_status(
        "ray.io", "v1", cluster["ns"], plural, name, {"status": status}, _content_type="application/merge-patch+json"
    )


def phase(cluster: dict[str, Any], plural: str, name: str) -> str | None:
    obj = get(cluster, "corral.dev", plural, name)
    return None if obj is None else (obj.get("status") or {}).get("phase")


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """ERROR records of the handlers (kopf.objects) and of Corral, not kopf's retried API requests
    (a fresh server answers 429 "storage is (re)initializing" to the first watches)."""
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith(("kopf.objects", "kopf.activities", "corral"))
    ]


def sid_of(cluster: dict[str, Any], name: str) -> str:
    return f"corral-{cluster['ns']}.{name}-1"


def test_finetunejob_runs_as_a_rayjob_and_creates_its_model(
    cluster: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The chart's account is enough (CRD scan, finalizers for blockOwnerDeletion); no create/timer race."""
    with operator(cluster):
        for name in ("00-gpupool.yaml", "10-model.yaml", "20-dataset.yaml", "30-finetunejob.yaml"):
            apply(cluster, docs_of(cluster, EXAMPLES / name))

        sid = sid_of(cluster, "support-bot-v1")
        rayjob = eventually(lambda: get(cluster, "ray.io", "rayjobs", rayjob_name(sid)), 180, "the RayJob")
        job = get(cluster, "corral.dev", "finetunejobs", "support-bot-v1")
        assert job is not None
        files = job_files(FineTuneJob.model_validate(job), cluster["control"])
        spec = rayjob["spec"]
        job_args = {files.job_file, files.job_file.removeprefix("file://")}  # a URI, or a local file's path
        assert spec["entrypoint"] in {f"python -m corral.training --job {a}" for a in job_args}
        assert spec["jobId"] == sid
        assert spec["shutdownAfterJobFinishes"] is True
        assert spec["submissionMode"] == "K8sJobMode"
        assert spec["backoffLimit"] == 0
        assert spec["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 1
        owner = rayjob["metadata"]["ownerReferences"][0]
        assert owner["uid"] == job["metadata"]["uid"] and owner["blockOwnerDeletion"] is True
        assert eventually(lambda: phase(cluster, "finetunejobs", "support-bot-v1") == "Admitted")
        assert Path(files.job_file.removeprefix("file://")).is_file()  # contract 1's JOB.json

        set_ray_status(
            cluster,
            "rayjobs",
            rayjob_name(sid),
            {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "startTime": "2026-01-01T00:00:00Z"},
        )
        eventually(lambda: phase(cluster, "finetunejobs", "support-bot-v1") == "Running", what="Running")

        # The training logs a step; kubectl's columns read well (LOSS rounded, FREE GPUs, placement words).
        events = Path(files.events.removeprefix("file://"))
        events.parent.mkdir(parents=True, exist_ok=True)
        step = {"type": "progress", "time": time.time(), "step": 3, "total_steps": 12, "epoch": 1}
        step |= {"loss": 0.3549874045632102, "lr": 1e-3, "tokens_per_second": 10.0}
        events.write_text(json.dumps(step) + "\n")
        kube: KubeCluster = cluster["kube"]

        def loss_column() -> str | None:
            out = kube.kubectl("get", "finetunejob", "support-bot-v1", "-n", cluster["ns"], "-o", "wide").stdout
            header, row = out.splitlines()[:2]
            start = header.index("LOSS")  # cells are aligned under their headers (an empty one is blank)
            return row[start : header.index("PREEMPTIONS")].strip() or None

        assert eventually(loss_column, what="the LOSS column") == "0.355"
        pools = kube.kubectl("get", "gpupools", "local-cpu").stdout.splitlines()[0].split()
        assert "FREE" in pools and "ALLOCATABLE" not in pools, pools
        placed = (get(cluster, "corral.dev", "finetunejobs", "support-bot-v1") or {})["status"]["placement"]
        assert "x 0" not in placed["message"] and "without GPUs" in placed["message"], placed

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
    assert len([o for o in listed(cluster, "ray.io", "rayjobs") if o["spec"]["jobId"] == sid]) == 1
    job = get(cluster, "corral.dev", "finetunejobs", "support-bot-v1") or {}
    progress = {k: v for k, v in job["metadata"].get("annotations", {}).items() if "/reconcile-" in k}
    assert progress == {}, progress  # no retried handler (a 409 of a create/timer race left its text here)
    assert errors(caplog) == []
    stored = [
        r
        for r in caplog.records
        if r.getMessage().startswith("Stored ") and "/support-bot-v1/job.json" in r.getMessage()
    ]
    assert len(stored) == 1, [r.getMessage() for r in stored]  # contract 1's job file is written once
    events = cluster["store"].list_events(FineTuneJob, cluster["ns"], "support-bot-v1")
    ours = [e for e in events if e.reason in ("Admitted", "Submitted", "Succeeded", "Running")]
    assert ours and {e.source for e in ours} == {"corral-operator"}, [(e.reason, e.source) for e in events]


def _contract_2(cluster: dict[str, Any], name: str) -> dict[str, Any]:
    store: KubernetesStore = cluster["store"]
    dep = store.get(ModelDeployment, cluster["ns"], name)
    models = {m.metadata.name: m for m in store.list(Model, cluster["ns"]).items}
    # The operator's endpoints read the namespace's chat tokens from the Secret the pods mount.
    return {"applications": [app_config(dep, models, chat_tokens_env=CHAT_TOKENS_ENV)]}


def test_modeldeployment_becomes_a_rayservice_updated_in_place(cluster: dict[str, Any]) -> None:
    with operator(cluster):
        apply(cluster, docs_of(cluster, EXAMPLES / "40-deployment.yaml"))

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
        changed = docs_of(cluster, EXAMPLES / "40-deployment.yaml")[0]
        changed["spec"]["maxConcurrentSequences"] = 4
        apply(cluster, [changed])

        def updated() -> bool:
            svc = get(cluster, "ray.io", "rayservices", "corral-support-bot")
            return (
                svc is not None
                and yaml.safe_load(svc["spec"]["serveConfigV2"]) == _contract_2(cluster, "support-bot")
                and "max_concurrent_sequences: 4" in svc["spec"]["serveConfigV2"]
            )

        eventually(updated, what="the updated serveConfigV2")
        same = get(cluster, "ray.io", "rayservices", "corral-support-bot")
        assert same is not None and same["metadata"]["uid"] == uid
        assert len(listed(cluster, "ray.io", "rayservices")) == 1

        app = f"{cluster['ns']}-support-bot"
        set_ray_status(
            cluster,
            "rayservices",
            "corral-support-bot",
            {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "NonZeroServeEndpoints",
                        "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
                "activeServiceStatus": {
                    "applicationStatuses": {
                        app: {
                            "status": "RUNNING",
                            "serveDeploymentStatuses": {"CorralLLMServer": {"status": "HEALTHY"}},
                        }
                    }
                },
            },
        )
        eventually(lambda: phase(cluster, "modeldeployments", "support-bot") == "Ready", what="Ready")
        status = (get(cluster, "corral.dev", "modeldeployments", "support-bot") or {})["status"]
        ns = cluster["ns"]
        assert status["endpoint"] == f"http://corral-support-bot-serve-svc.{ns}.svc:8000/{ns}/support-bot/v1"
        assert status["readyReplicas"] == 1


def test_restart_mid_reconcile_creates_nothing_twice(cluster: dict[str, Any]) -> None:
    before_jobs = {o["metadata"]["uid"] for o in listed(cluster, "ray.io", "rayjobs")}
    before_svcs = {o["metadata"]["uid"] for o in listed(cluster, "ray.io", "rayservices")}
    doc = docs_of(cluster, EXAMPLES / "30-finetunejob.yaml")[0]
    doc["metadata"]["name"] = "support-bot-v2"
    doc["spec"]["output"]["modelName"] = "support-bot-v2"
    del doc["spec"]["deployOnSuccess"]
    apply(cluster, [doc])
    sid = sid_of(cluster, "support-bot-v2")
    with operator(cluster):
        eventually(lambda: get(cluster, "ray.io", "rayjobs", rayjob_name(sid)), 60, "the second RayJob")
    # Killed here (after the RayJob, mid-follow); the status names the submission id.
    job = get(cluster, "corral.dev", "finetunejobs", "support-bot-v2")
    assert job is not None and job["status"]["submissionId"] == sid
    cluster["custom"].delete_namespaced_custom_object(
        "ray.io", "v1", cluster["ns"], "rayjobs", rayjob_name(sid)
    )  # as if never created
    eventually(lambda: get(cluster, "ray.io", "rayjobs", rayjob_name(sid)) is None, what="the RayJob gone")
    with operator(cluster):
        eventually(lambda: get(cluster, "ray.io", "rayjobs", rayjob_name(sid)), 60, "the resubmitted RayJob")
        time.sleep(6 * float(RESYNC))  # several resync passes
    jobs = [o for o in listed(cluster, "ray.io", "rayjobs") if o["spec"]["jobId"] == sid]
    assert len(jobs) == 1
    assert before_jobs <= {o["metadata"]["uid"] for o in listed(cluster, "ray.io", "rayjobs")}
    assert {o["metadata"]["uid"] for o in listed(cluster, "ray.io", "rayservices")} == before_svcs
    after = get(cluster, "corral.dev", "finetunejobs", "support-bot-v2")
    assert after is not None and after["status"]["submissionId"] == sid


def test_kuberay_failure_reason_reaches_the_finetunejob(cluster: dict[str, Any]) -> None:
    name = rayjob_name(sid_of(cluster, "support-bot-v2"))
    with operator(cluster):
        set_ray_status(cluster, "rayjobs", name, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"})
        eventually(lambda: phase(cluster, "finetunejobs", "support-bot-v2") == "Running", what="Running")
        set_ray_status(
            cluster,
            "rayjobs",
            name,
            {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": "activeDeadlineSeconds passed"},
        )

        def failed() -> dict[str, Any] | None:
            job = get(cluster, "corral.dev", "finetunejobs", "support-bot-v2")
            ok = ((job or {}).get("status") or {}).get("phase") == "Failed"
            return conditions(job).get("Failed") if ok else None

        condition = eventually(failed, what="Failed")
    assert (condition["status"], condition["reason"]) == ("True", "DeadlineExceeded")
    assert condition["message"] == "activeDeadlineSeconds passed"


def test_invalid_deployment_gets_invalid_spec_and_no_retries(cluster: dict[str, Any]) -> None:
    doc = docs_of(cluster, EXAMPLES / "40-deployment.yaml")[0]
    doc["metadata"]["name"] = "serves-an-adapter"
    doc["spec"]["model"] = {"name": "support-bot-v1"}  # an adapter cannot be the served base
    with operator(cluster):
        apply(cluster, [doc])

        def invalid() -> dict[str, Any] | None:
            ready = conditions(get(cluster, "corral.dev", "modeldeployments", "serves-an-adapter")).get("Ready")
            return ready if ready and ready["reason"] == "InvalidSpec" else None

        ready = eventually(invalid, what="InvalidSpec")
        assert ready["status"] == "False"
        time.sleep(4 * float(RESYNC))
        assert invalid() == ready  # unchanged: not retried into another state
    assert get(cluster, "ray.io", "rayservices", "corral-serves-an-adapter") is None
    events = cluster["store"].list_events(ModelDeployment, cluster["ns"], "serves-an-adapter")
    assert any(e.type == "Warning" and e.reason == "InvalidSpec" for e in events)


def test_an_object_created_with_generate_name_is_reconciled(cluster: dict[str, Any]) -> None:
    """``kubectl create`` with ``metadata.generateName``: the server's metadata is not an invalid spec."""
    doc = docs_of(cluster, EXAMPLES / "20-dataset.yaml")[0]
    doc["metadata"] = {"generateName": "gen-", "namespace": cluster["ns"]}
    out = cluster["kube"].kubectl("create", "-o", "name", "-f", "-", stdin=yaml.safe_dump(doc)).stdout
    name = out.strip().rsplit("/", 1)[-1]
    assert name.startswith("gen-")
    with operator(cluster):
        ready = eventually(
            lambda: conditions(get(cluster, "corral.dev", "datasets", name)).get("Ready"), what="a Ready condition"
        )
        assert ready["reason"] != "InvalidSpec", ready
        eventually(lambda: conditions(get(cluster, "corral.dev", "datasets", name))["Ready"]["status"] == "True")


def test_deleting_owners_completes_and_leaves_no_orphans(
    cluster: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Deletion ends (``corral.dev/cleanup`` removed), a finished job stays finished, the GC takes the children."""
    kinds = [
        ("modeldeployments", "support-bot"),
        ("finetunejobs", "support-bot-v2"),
        ("finetunejobs", "support-bot-v1"),
    ]
    assert phase(cluster, "finetunejobs", "support-bot-v1") == "Succeeded"
    seen: dict[str, set[str | None]] = {name: set() for _, name in kinds}

    def gone() -> bool:
        left = False
        for plural, name in kinds:
            obj = get(cluster, "corral.dev", plural, name)
            if obj is not None:
                seen[name].add((obj.get("status") or {}).get("phase"))
                left = True
        return not left

    with operator(cluster):
        for plural, name in kinds:
            cluster["kube"].kubectl("delete", plural, name, "-n", cluster["ns"], "--wait=false")
        eventually(gone, 120, "the deleted objects gone")
    assert "Failed" not in seen["support-bot-v1"], seen  # a Succeeded job is never demoted on delete
    assert [e for e in errors(caplog) if "still being removed" in e] == []
    assert errors(caplog) == []
    # kube-controller-manager's garbage collector removes what the owners owned.
    eventually(lambda: listed(cluster, "ray.io", "rayservices") == [], 60, "the RayService collected")
    eventually(lambda: listed(cluster, "ray.io", "rayjobs") == [], 60, "the RayJobs collected")


def _limited_operator_token(cluster: dict[str, Any]) -> str:
    """A token of an account with the chart's operator role minus ``*/finalizers`` (a role before the fix)."""
    kube: KubeCluster = cluster["kube"]
    accounts: ChartAccounts = cluster["accounts"]
    role = next(
        d for d in accounts.objects if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-operator")
    )
    rules = [r for r in role["rules"] if not any(res.endswith("/finalizers") for res in r.get("resources", []))]
    name = f"corral-operator-nofinalizers-{cluster['ns']}"
    return kube.service_account_with_rules(accounts.namespace, name, rules)


def test_a_refused_rayjob_shows_as_a_condition_and_a_warning(
    cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``OwnerReferencesPermissionEnforcement`` refuses the RayJob: the FineTuneJob says so, then recovers."""
    token = _limited_operator_token(cluster)
    limited = cluster["kube"].write_kubeconfig(cluster["tmp"] / "limited.kubeconfig", "limited", cluster["ns"], token)
    doc = docs_of(cluster, EXAMPLES / "30-finetunejob.yaml")[0]
    doc["metadata"]["name"] = "refused"
    doc["spec"]["output"]["modelName"] = "refused"
    del doc["spec"]["deployOnSuccess"]
    apply(cluster, [doc])

    def accepted(status: str) -> dict[str, Any] | None:
        cond = conditions(get(cluster, "corral.dev", "finetunejobs", "refused")).get("ChildAccepted")
        return cond if cond and cond["status"] == status else None

    with monkeypatch.context() as mp:
        mp.setenv("KUBECONFIG", str(limited))
        with operator(cluster):
            cond = eventually(lambda: accepted("False"), 90, "ChildAccepted=False")
    assert cond["reason"] == "Forbidden" and "blockOwnerDeletion" in cond["message"], cond
    assert get(cluster, "ray.io", "rayjobs", rayjob_name(sid_of(cluster, "refused"))) is None
    events = cluster["store"].list_events(FineTuneJob, cluster["ns"], "refused")
    warning = [e for e in events if e.type == "Warning" and e.reason == "Forbidden"]
    assert warning and "blockOwnerDeletion" in warning[0].message, events

    with operator(cluster):  # the chart's account may set blockOwnerDeletion
        eventually(lambda: get(cluster, "ray.io", "rayjobs", rayjob_name(sid_of(cluster, "refused"))), 90, "the RayJob")
        eventually(lambda: accepted("True"), 60, "ChildAccepted=True")
        cluster["kube"].kubectl("delete", "finetunejob", "refused", "-n", cluster["ns"], "--wait=false")
        eventually(lambda: get(cluster, "corral.dev", "finetunejobs", "refused") is None, 60, "deletion")
    # Its RayJob is removed first: a normal wait, said at INFO, not an ERROR.
    assert [e for e in errors(caplog) if "still being removed" in e] == []


def test_without_the_peering_crd_the_operator_stops_with_an_error(
    cluster: dict[str, Any], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not standalone and no ClusterKopfPeering CRD: an ERROR naming it and a non-zero exit, not silence."""
    kube: KubeCluster = cluster["kube"]
    crd = next(d for d in cluster["accounts"].objects if d["metadata"]["name"] == PEERING_CRD)
    handlers = sys.modules["corral_operator._handlers"]
    monkeypatch.setattr(handlers, "SETTINGS", handlers.SETTINGS.model_copy(update={"standalone": False}))
    kube.kubectl("delete", "crd", PEERING_CRD, "--wait=true")
    try:
        with operator(cluster, standalone=False, reraise=False) as runner:
            eventually(lambda: "ClusterKopfPeering CRD" in "\n".join(errors(caplog)), 60, "the ERROR")
        assert runner.exit_code != 0
    finally:
        kube.apply([crd])
        kube.kubectl("wait", "--for=condition=Established", f"crd/{PEERING_CRD}", "--timeout=60s")
