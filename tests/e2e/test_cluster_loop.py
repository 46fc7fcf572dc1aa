"""The support-bot loop on the cluster path: kubectl -> operator -> RayJob -> adapter on S3 -> RayService -> chat.

Everything a cluster user touches is real: a kube-apiserver + etcd + kube-controller-manager
(``tests/support/kube.py``), ``kubectl apply -f examples/cluster/support-bot/`` unchanged, the
Helm chart's rendered ServiceAccounts, ClusterRoles and operator environment (``python -m
corral_operator`` as a process, logged in with its ServiceAccount's token), S3 on a moto server
(the data uploaded as a user would; job file, checkpoints, events and the adapter written there
by the job), and the official ``openai`` client at the end. Only KubeRay is played by
``tests/support/kuberay_harness.py`` (no kubelet can run pods here): it runs each RayJob's
entrypoint on a local Ray with the environment the builder put on the pods and deploys each
RayService's ``serveConfigV2`` to that Ray's Serve, writing the status fields KubeRay writes.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.fixtures.kube import helm_template
from tests.fixtures.ray_cluster import free_port
from tests.fixtures.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoS3
from tests.support.kube import KubeCluster, corral_crd_files, kuberay_crd_files
from tests.support.kuberay_harness import KubeRayHarness
from tests.support.poll import wait_until
from tests.support.procs import stop_process

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "cluster" / "support-bot"
DATA = REPO / "examples" / "support-bot" / "data"
NS = "support"
RELEASE_NS = "corral-system"
BUCKET = "corral"
SECRET = "corral-s3"
CHAT_TOKEN = "support-chat-key-0001"
DEADLINE_TRAIN = 600.0
DEADLINE_SERVE = 300.0


def _secret(namespace: str) -> dict[str, Any]:
    data = {"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": namespace},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def _operator_env(deployment: dict[str, Any], secret: dict[str, Any]) -> dict[str, str]:
    """The operator container's environment as the chart renders it, secretKeyRefs resolved."""
    env: dict[str, str] = {}
    for var in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, moto_s3: MotoS3) -> Iterator[dict[str, Any]]:
    """A cluster of its own with the chart's accounts, the operator running as the chart runs it."""
    tmp = tmp_path_factory.mktemp("cluster-loop")
    kube = KubeCluster(tmp / "kube")
    s3 = moto_s3.client()
    if BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=BUCKET)
    values = {
        "artifacts": {
            "root": f"s3://{BUCKET}/artifacts",
            "s3": {"endpointUrl": moto_s3.endpoint_url, "region": REGION, "existingSecret": SECRET},
        },
        "operator": {"resyncSeconds": 1, "healthPort": free_port()},
        "ray": {"python": sys.executable, "chatKubernetesAuth": {"namespaces": [NS]}},
    }
    rendered = helm_template(values, namespace=RELEASE_NS)
    with kube:
        kube.install_crds([*corral_crd_files(), *kuberay_crd_files()])
        kube.kubectl("create", "namespace", RELEASE_NS)
        kube.apply([_secret(RELEASE_NS)])
        accounts = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
        kube.apply([d for d in rendered if d["kind"] in accounts | {"CustomResourceDefinition"}])
        operator_deployment = next(
            d for d in rendered if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")
        )
        account = operator_deployment["spec"]["template"]["spec"]["serviceAccountName"]
        token = kube.service_account_token(RELEASE_NS, account)
        kubeconfig = kube.write_kubeconfig(
            tmp / "operator.kubeconfig", f"system:serviceaccount:{RELEASE_NS}:{account}", token=token
        )
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp),
            "OMP_NUM_THREADS": "1",
            "KUBECONFIG": str(kubeconfig),
            # the operator runs this checkout's code, not whatever the environment has installed
            "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), str(REPO / "operators"), str(REPO)]),
            **_operator_env(operator_deployment, _secret(RELEASE_NS)),
            "TMPDIR": str(tmp),
        }
        log_path = tmp / "operator.log"
        with log_path.open("wb") as log:
            operator = subprocess.Popen(
                [sys.executable, "-m", "corral_operator"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp,
                start_new_session=True,
            )
        try:
            with kube.api_client() as admin, KubeRayHarness(admin, NS) as harness:
                yield {"kube": kube, "harness": harness, "operator": operator, "log": log_path, "s3": s3}
        finally:
            stop_process(operator, timeout=20)


def _diagnose(cluster: dict[str, Any]) -> str:
    kube: KubeCluster = cluster["kube"]
    objects = kube.kubectl(
        "get", "finetunejobs,modeldeployments,rayjobs,rayservices", "-n", NS, "-o", "yaml", check=False
    )
    log = cluster["log"].read_text(errors="replace")[-6000:]
    return f"objects:\n{objects.stdout[-6000:]}\nharness errors: {cluster['harness'].errors[-5:]}\noperator log:\n{log}"


def _waiter(cluster: dict[str, Any]) -> Callable[[str, Callable[[], Any], float], Any]:
    def wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
        def guarded() -> Any:
            if cluster["operator"].poll() is not None:
                raise AssertionError(f"the operator exited with {cluster['operator'].returncode}\n{_diagnose(cluster)}")
            return check()

        try:
            return wait_until(what, guarded, timeout, 2.0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_diagnose(cluster)}") from None

    return wait


def _status(kube: KubeCluster, kind: str, name: str) -> dict[str, Any]:
    obj = kube.get_json(kind, name, "-n", NS) or {}
    return dict(obj.get("status") or {})


def test_kubectl_apply_to_a_chat_answer_on_the_cluster_path(cluster: dict[str, Any]) -> None:
    kube: KubeCluster = cluster["kube"]
    wait = _waiter(cluster)
    started = time.monotonic()
    # What a user does (examples/cluster/support-bot/README.md): data to S3, namespace, Secret, apply.
    for name in ("support-faq.alpaca.jsonl", "support-faq.heldout.jsonl"):
        cluster["s3"].upload_file(str(DATA / name), BUCKET, f"artifacts/files/{NS}/{name}")
    kube.kubectl("apply", "-f", str(EXAMPLE / "00-namespace.yaml"))
    kube.apply([_secret(NS)])
    kube.kubectl(
        "create", "secret", "generic", "corral-chat-tokens", "-n", NS, f"--from-literal=tokens={CHAT_TOKEN}\nother-key"
    )
    kube.kubectl("apply", "-f", str(EXAMPLE))

    def job_done() -> dict[str, Any] | None:
        status = _status(kube, "finetunejob", "support-bot-v1")
        if status.get("phase") in ("Failed", "Cancelled"):
            raise AssertionError(f"FineTuneJob failed: {yaml.safe_dump(status)[:3000]}\n{_diagnose(cluster)}")
        return status if status.get("phase") == "Succeeded" else None

    job = wait("FineTuneJob support-bot-v1 Succeeded", job_done, DEADLINE_TRAIN)
    trained = time.monotonic() - started
    rayjob = kube.get_json("rayjobs", "-n", NS)["items"][0]
    # Ray's token auth survives the real server's schema (KubeRay's CRD knows authOptions), and the
    # operator (with the chart's role) put the namespace's NetworkPolicy in front of its Ray pods.
    assert rayjob["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    policy = kube.get_json("networkpolicy", "corral-ray", "-n", NS)
    assert policy is not None and policy["spec"]["podSelector"] == {"matchLabels": {"corral.dev/ray": "true"}}
    allowed = policy["spec"]["ingress"][1]["from"][1]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert RELEASE_NS in allowed
    assert rayjob["spec"]["entrypoint"].endswith(
        f"--job s3://{BUCKET}/artifacts/finetunejobs/{NS}/support-bot-v1/job.json"
    ) or (f"s3://{BUCKET}/artifacts/" in rayjob["spec"]["entrypoint"]), rayjob["spec"]["entrypoint"]
    # The adapter is on S3, where the job wrote it with the pods' credentials.
    keys = [
        o["Key"]
        for o in cluster["s3"]
        .list_objects_v2(Bucket=BUCKET, Prefix=f"artifacts/finetunejobs/{NS}/")
        .get("Contents", [])
    ]
    assert any(k.endswith("adapter_config.json") for k in keys), keys
    assert job.get("evaluation") or {}, job  # scored on the held-out set inside the job

    def serving() -> dict[str, Any] | None:
        status = _status(kube, "modeldeployment", "support-bot")
        ok = status.get("phase") == "Ready" and "support-bot-v1" in (status.get("servedModels") or [])
        return status if ok else None

    dep = wait("ModelDeployment support-bot serving support-bot-v1", serving, DEADLINE_SERVE)
    served = time.monotonic() - started
    endpoint = cluster["harness"].serve_url(dep["endpoint"])

    facts = yaml.safe_load((DATA / "facts.yaml").read_text(encoding="utf-8"))
    system, by_id = facts["business"]["system"], {f["id"]: f for f in facts["facts"]}
    question, expected = by_id["hours_weekday"]["train"][2], by_id["hours_weekday"]["answer"]
    messages: Any = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    # The endpoint asks for one of the namespace's chat tokens (its Secret, mounted by the pods).
    stranger = openai.OpenAI(base_url=endpoint, api_key="not-a-support-token", max_retries=0, timeout=60.0)
    with pytest.raises(openai.AuthenticationError):  # 401: neither a Secret token nor one the API server knows
        stranger.chat.completions.create(model="support-bot-v1", messages=messages, max_tokens=4)
    client = openai.OpenAI(base_url=endpoint, api_key=CHAT_TOKEN, max_retries=2, timeout=120.0)
    reply = client.chat.completions.create(model="support-bot-v1", messages=messages, max_tokens=48, temperature=0.0)
    assert (reply.choices[0].message.content or "").strip() == expected
    # Kubernetes identities: the replica asks the API server (TokenReview, then get on the ModelDeployment)
    # as the namespace's Ray ServiceAccount, which the chart bound to system:auth-delegator.
    kube.kubectl("create", "rolebinding", "alice-views", "--clusterrole=view", "--user=alice", "-n", NS)
    alice = openai.OpenAI(base_url=endpoint, api_key=kube.tokens["alice"], max_retries=2, timeout=120.0)
    reply = alice.chat.completions.create(model="support-bot-v1", messages=messages, max_tokens=48, temperature=0.0)
    assert (reply.choices[0].message.content or "").strip() == expected
    bob = openai.OpenAI(base_url=endpoint, api_key=kube.tokens["bob"], max_retries=0, timeout=60.0)
    with pytest.raises(openai.PermissionDeniedError):  # 403: a known user RBAC does not let use it
        bob.chat.completions.create(model="support-bot-v1", messages=messages, max_tokens=4)
    answered = time.monotonic() - started
    print(f"\ncluster loop: trained in {trained:.0f} s, serving after {served:.0f} s, answered after {answered:.0f} s")
    assert cluster["harness"].errors == []
    # The operator did all of it (the tiny base included) without loading torch or Ray.
    maps = Path(f"/proc/{cluster['operator'].pid}/maps").read_text()
    assert "libtorch" not in maps and "_raylet" not in maps


def test_the_cluster_examples_apply_with_kubectl(cluster: dict[str, Any]) -> None:
    """``kubectl apply -f examples/cluster/`` (the README says it works with kubectl) is accepted whole."""
    kube: KubeCluster = cluster["kube"]
    out = kube.kubectl("apply", "-f", str(REPO / "examples" / "cluster")).stdout
    assert "namespace/team-a" in out and "finetunejob.corral.dev/llama-support-v3 created" in out, out
    assert "gpupool.corral.dev/a100-ondemand created" in out, out
    # The embedded demo's directory is for `corral apply`: kubectl refuses its relative file:// URIs.
    refused = kube.kubectl("apply", "--dry-run=server", "-f", str(REPO / "examples" / "support-bot"), check=False)
    assert refused.returncode != 0 and "spec.uri" in refused.stderr
