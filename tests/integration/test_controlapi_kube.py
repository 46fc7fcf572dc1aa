"""The in-cluster control API against a real kube-apiserver, run as in production, called by tenant users.

``python -m corral_operator.controlapi`` runs as a process of its own with the chart's
control-API ServiceAccount (a TokenRequest token of the account the chart renders, bound to the
chart's ClusterRole: ``chart_accounts``), reading its kubeconfig like any client outside a pod.
Callers are the session's token users: ``alice`` with a RoleBinding to Kubernetes' ``view`` in
one namespace (the chart aggregates Corral's kinds into it), ``bob`` with only ``list
finetunejobs`` cluster-wide, and ``admin`` (``system:masters``).

What this pins (issue 13 item 5, issue 17 item 7): each request is authorized for its own verb,
resource and namespace; ``list`` cluster-wide is not admin; status writes go through (the
chart's role has ``*/status``); a 403 the API server gives the control API's own account comes
back as a 403 naming what was refused, never a 500.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.kube import ChartAccounts
from tests.support.kube import REPO, KubeCluster
from tests.support.poll import wait_until
from tests.support.procs import stop_process

API = "/apis/corral.dev/v1alpha1"
MERGE = {"Content-Type": "application/merge-patch+json"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _job(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "corral.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"baseModel": {"name": "m"}, "datasets": [{"name": "d"}]},
    }


@dataclass
class Tenants:
    """Two tenant namespaces with one FineTuneJob ``j`` each."""

    a: str
    b: str


@pytest.fixture(scope="module")
def tenants(kube: KubeCluster, chart_accounts: ChartAccounts) -> Iterator[Tenants]:
    suffix = uuid.uuid4().hex[:5]
    made = Tenants(a=f"ten-a-{suffix}", b=f"ten-b-{suffix}")
    for ns in (made.a, made.b):
        kube.kubectl("create", "namespace", ns)
        kube.apply([_job("j", ns)])
    kube.kubectl("create", "rolebinding", "alice-view", "--clusterrole=view", "--user=alice", "-n", made.a)
    lister = f"list-finetunejobs-{suffix}"
    kube.kubectl("create", "clusterrole", lister, "--verb=list", "--resource=finetunejobs.corral.dev")
    kube.kubectl("create", "clusterrolebinding", lister, f"--clusterrole={lister}", "--user=bob")

    def can(verb: str, user: str, ns: str) -> bool:
        out = kube.kubectl("auth", "can-i", verb, "finetunejobs.corral.dev", "-n", ns, "--as", user, check=False)
        return out.stdout.strip() == "yes"

    # The controller manager aggregates the chart's corral view role into `view` shortly after it is applied.
    wait_until("Corral's kinds aggregated into the view role", lambda: can("get", "alice", made.a), timeout=60)
    yield made
    for ns in (made.a, made.b):
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    kube.kubectl("delete", "clusterrolebinding,clusterrole", lister, check=False)


def _serve(kube: KubeCluster, token: str, namespaces: list[str], workdir: Path, name: str) -> Iterator[str]:
    """Run ``python -m corral_operator.controlapi`` with ``token`` as its own identity; yield its base URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = kube.write_kubeconfig(workdir / f"{name}.kubeconfig", name, token=token)
    port = _free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "CORRAL_API_HOST": "127.0.0.1",
        "CORRAL_API_PORT": str(port),
        "CORRAL_API_NAMESPACES": ",".join(namespaces),
        "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), str(REPO / "operators"), str(REPO)]),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)  # never take an in-cluster config by accident
    log = (workdir / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral_operator.controlapi"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the control API exited: {(workdir / f'{name}.log').read_text()[-3000:]}")
            return httpx.get(f"{url}/readyz", timeout=5).status_code == 200

        wait_until("the control API is ready", ready, timeout=90)
        yield url
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture(scope="module")
def control_api(
    kube: KubeCluster, chart_accounts: ChartAccounts, tenants: Tenants, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The control API as the chart's ServiceAccount."""
    yield from _serve(kube, chart_accounts.api_token, [tenants.a, tenants.b], tmp_path_factory.mktemp("api"), "api")


class Caller:
    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=url, headers=headers, timeout=30)

    def code(self, method: str, path: str, **kw: Any) -> int:
        return int(self.client.request(method, path, **kw).status_code)

    def items(self, path: str) -> list[tuple[str, str]]:
        response = self.client.get(path)
        assert response.status_code == 200, response.text
        return sorted((i["metadata"]["namespace"], i["metadata"]["name"]) for i in response.json()["items"])


def test_a_viewer_reads_its_namespace_and_nothing_else(kube: KubeCluster, control_api: str, tenants: Tenants) -> None:
    alice = Caller(control_api, kube.tokens["alice"])
    a, b = tenants.a, tenants.b
    assert alice.items(f"{API}/namespaces/{a}/finetunejobs") == [(a, "j")]
    assert alice.code("GET", f"{API}/namespaces/{a}/finetunejobs/j") == 200
    assert alice.code("GET", f"{API}/namespaces/{a}/finetunejobs/j/events") == 200
    watch = {"watch": "1", "timeoutSeconds": "2"}
    with alice.client.stream("GET", f"{API}/namespaces/{a}/finetunejobs", params=watch) as stream:
        assert stream.status_code == 200
        events = [json.loads(line) for line in stream.iter_lines() if line]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "j")]
    # view does not write
    assert alice.code("POST", f"{API}/namespaces/{a}/finetunejobs", json=_job("new", a)) == 403
    assert alice.code("PATCH", f"{API}/namespaces/{a}/finetunejobs/j", headers=MERGE, json={"spec": {}}) == 403
    assert alice.code("DELETE", f"{API}/namespaces/{a}/finetunejobs/j") == 403
    status = {"status": {"phase": "Failed"}}
    assert alice.code("PATCH", f"{API}/namespaces/{a}/finetunejobs/j/status", headers=MERGE, json=status) == 403
    # ... nor reads another namespace
    assert alice.code("GET", f"{API}/namespaces/{b}/finetunejobs") == 403
    assert alice.code("GET", f"{API}/namespaces/{b}/finetunejobs/j") == 403
    assert alice.code("GET", f"{API}/namespaces/{b}/finetunejobs", params={"watch": "1"}) == 403
    # across namespaces: only what it may list
    assert [(ns, n) for ns, n in alice.items(f"{API}/finetunejobs") if ns in (a, b)] == [(a, "j")]
    # OpenAI-style calls stand for a verb too: creating a fine-tuning job is a create
    openai = {"X-Corral-Namespace": a}
    assert alice.code("POST", "/v1/fine_tuning/jobs", headers=openai, json={"model": "m", "training_file": "f"}) == 403
    assert alice.code("GET", "/v1/fine_tuning/jobs", headers={"X-Corral-Namespace": b}) == 403
    # the object was not touched by any refused call
    assert kube.get_json("finetunejobs", "j", "-n", a)["metadata"].get("deletionTimestamp") is None


def test_a_cluster_wide_lister_is_not_an_admin(kube: KubeCluster, control_api: str, tenants: Tenants) -> None:
    """Issue 17 item 7: ``list finetunejobs`` cluster-wide used to open every verb in every namespace."""
    bob = Caller(control_api, kube.tokens["bob"])
    a, b = tenants.a, tenants.b
    assert bob.items(f"{API}/namespaces/{b}/finetunejobs") == [(b, "j")]
    assert {(a, "j"), (b, "j")} <= set(bob.items(f"{API}/finetunejobs"))
    assert bob.code("GET", f"{API}/namespaces/{a}/finetunejobs/j") == 403  # list is not get
    assert bob.code("DELETE", f"{API}/namespaces/{a}/finetunejobs/j") == 403
    assert bob.code("POST", f"{API}/namespaces/{a}/finetunejobs", json=_job("new", a)) == 403
    assert bob.code("GET", f"{API}/namespaces/{a}/models") == 403
    assert bob.code("GET", f"{API}/gpupools") == 403
    status = {"status": {"phase": "Failed"}}
    assert bob.code("PATCH", f"{API}/namespaces/{a}/finetunejobs/j/status", headers=MERGE, json=status) == 403
    assert bob.code("GET", "/metrics") == 403
    body = bob.client.delete(f"{API}/namespaces/{a}/finetunejobs/j").json()
    assert body["kind"] == "Status" and body["reason"] == "Forbidden" and "delete" in body["message"]


def test_unauthenticated_callers_get_401(control_api: str, tenants: Tenants) -> None:
    for token in (None, "not-a-token"):
        caller = Caller(control_api, token)
        response = caller.client.get(f"{API}/namespaces/{tenants.a}/finetunejobs")
        assert response.status_code == 401 and response.headers.get("www-authenticate") == "Bearer"


def test_admin_writes_status_through_the_charts_role(kube: KubeCluster, control_api: str, tenants: Tenants) -> None:
    """Issue 13 item 5: the chart's control-API role had no ``*/status``; PATCH .../status as admin was a 500."""
    admin = Caller(control_api, kube.tokens["admin"])
    patched = admin.client.patch(
        f"{API}/namespaces/{tenants.b}/finetunejobs/j/status", headers=MERGE, json={"status": {"phase": "Pending"}}
    )
    assert patched.status_code == 200, patched.text
    assert kube.get_json("finetunejobs", "j", "-n", tenants.b)["status"]["phase"] == "Pending"
    assert admin.code("GET", "/metrics") == 200
    made = admin.client.post(f"{API}/namespaces/{tenants.b}/finetunejobs", json=_job("by-admin", tenants.b))
    assert made.status_code == 201, made.text
    assert admin.code("DELETE", f"{API}/namespaces/{tenants.b}/finetunejobs/by-admin") == 200


def test_a_403_to_the_api_itself_is_a_clear_403(
    kube: KubeCluster, chart_accounts: ChartAccounts, tenants: Tenants, tmp_path: Path
) -> None:
    """The control API's own account refused by the API server: the caller gets 403 naming it, not a 500.

    The account here has the chart's control-API role as it was before ``*/status`` was added.
    """
    name = f"api-no-status-{uuid.uuid4().hex[:5]}"
    role = next(
        d for d in chart_accounts.objects if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-api")
    )
    rules = [r for r in role["rules"] if not any(res.endswith("/status") for res in r.get("resources", []))]
    assert len(rules) == len(role["rules"]) - 1
    ns = chart_accounts.namespace
    token = kube.service_account_with_rules(ns, name, rules)
    try:
        for url in _serve(kube, token, [tenants.a], tmp_path, name):
            admin = Caller(url, kube.tokens["admin"])
            refused = admin.client.patch(
                f"{API}/namespaces/{tenants.a}/finetunejobs/j/status",
                headers=MERGE,
                json={"status": {"phase": "Pending"}},
            )
            assert refused.status_code == 403, refused.text
            body = refused.json()
            assert body["reason"] == "Forbidden"
            assert "finetunejobs/status" in body["message"] and name in body["message"], body["message"]
    finally:
        kube.kubectl("delete", "clusterrolebinding,clusterrole", name, check=False)
        kube.kubectl("delete", "serviceaccount", name, "-n", ns, check=False)


def test_the_charts_roles_on_the_server(kube: KubeCluster, chart_accounts: ChartAccounts, tenants: Tenants) -> None:
    """What the chart grants, asked of the server: the API writes status; view reads; edit writes, but no pools."""

    def can(verb: str, resource: str, user: str, ns: str | None = None, *extra: str) -> bool:
        scope = ["-n", ns] if ns else []
        out = kube.kubectl("auth", "can-i", verb, resource, *scope, *extra, "--as", user, check=False)
        return out.stdout.strip() == "yes"

    api = f"system:serviceaccount:{chart_accounts.namespace}:{chart_accounts.api}"
    for plural in ("datasets", "models", "finetunejobs", "modeldeployments", "gpupools"):
        assert can("patch", f"{plural}.corral.dev", api, tenants.a, "--subresource=status"), plural
    kube.kubectl("create", "rolebinding", "bob-edit", "--clusterrole=edit", "--user=bob", "-n", tenants.b)
    wait_until("edit reaches finetunejobs", lambda: can("create", "finetunejobs.corral.dev", "bob", tenants.b), 60)
    assert not can("create", "gpupools.corral.dev", "bob")
    assert not can("patch", "finetunejobs.corral.dev", "bob", tenants.b, "--subresource=status")
    assert can("list", "models.corral.dev", "alice", tenants.a)
    assert not can("create", "models.corral.dev", "alice", tenants.a)
