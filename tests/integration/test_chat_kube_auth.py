"""Kubernetes tokens at a chat endpoint, asked of a real kube-apiserver as a Ray pod would ask.

The checker (:class:`corral.serving._chat_kube.KubernetesChatAuth`) runs with the token of a
ServiceAccount ``corral-ray`` of a tenant namespace, bound to ``system:auth-delegator`` by the
chart's own ClusterRoleBinding (rendered with ``ray.chatKubernetesAuth.namespaces`` naming
that namespace), exactly the rights a RayService pod gets. Callers are the session's token
users: ``alice`` with a RoleBinding to Kubernetes' ``view`` in the namespace (the chart
aggregates Corral's kinds into it), ``bob`` with nothing there, a ServiceAccount whose Role
names one ModelDeployment, and a garbage token. The namespace Secret's token still works and
never reaches the API server; the replica's HTTP layer answers each case as OpenAI's error.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from corral.serving._chat_auth import AuthUnavailableError, ChatAuth, ForbiddenError, UnauthorizedError
from corral.serving._chat_kube import KubernetesChatAuth
from corral.serving._openai import OpenAIFrontend
from tests.fixtures.kube import ChartAccounts, helm_template
from tests.support.kube import KubeCluster
from tests.support.poll import wait_until

RAY_ACCOUNT = "corral-ray"  # the chart's default Ray ServiceAccount name (release "corral")
DEPLOYMENT = "chat"
SECRET_TOKEN = "namespace-secret-token"


@dataclass
class Tenant:
    """A namespace whose Ray ServiceAccount may review tokens, and the tokens that call it."""

    namespace: str
    ray_token: str
    one_deployment_token: str


@pytest.fixture(scope="module")
def tenant(kube: KubeCluster, chart_accounts: ChartAccounts) -> Iterator[Tenant]:
    ns = f"chat-auth-{uuid.uuid4().hex[:5]}"
    kube.kubectl("create", "namespace", ns)
    kube.kubectl("create", "serviceaccount", RAY_ACCOUNT, "-n", ns)
    # The chart's binding for this namespace (renamed: the session's default render has one already).
    rendered = helm_template({"ray": {"chatKubernetesAuth": {"namespaces": [ns]}}})
    (binding,) = [
        d
        for d in rendered
        if d["kind"] == "ClusterRoleBinding" and d["metadata"]["name"] == "corral-ray-auth-delegator"
    ]
    assert binding["roleRef"]["name"] == "system:auth-delegator"
    binding["metadata"]["name"] = f"corral-ray-auth-delegator-{ns}"
    kube.apply([binding])
    kube.kubectl("create", "rolebinding", "alice-view", "--clusterrole=view", "--user=alice", "-n", ns)
    # A caller allowed one ModelDeployment only (RBAC resourceNames).
    kube.kubectl("create", "serviceaccount", "one-deployment", "-n", ns)
    kube.kubectl(
        "create", "role", "chat-one", "--verb=get", "--resource=modeldeployments.corral.dev",
        f"--resource-name={DEPLOYMENT}", "-n", ns,
    )  # fmt: skip
    kube.kubectl(
        "create", "rolebinding", "chat-one", "--role=chat-one", f"--serviceaccount={ns}:one-deployment", "-n", ns
    )

    def can(what: str, who: str) -> bool:
        out = kube.kubectl("auth", "can-i", *what.split(), "-n", ns, "--as", who, check=False)
        return out.stdout.strip() == "yes"

    # The controller manager aggregates the chart's view role into `view` shortly after it is applied.
    wait_until(
        "alice may get the ModelDeployment", lambda: can(f"get modeldeployments.corral.dev/{DEPLOYMENT}", "alice"), 60
    )
    wait_until(
        "the Ray account may create tokenreviews",
        lambda: can("create tokenreviews.authentication.k8s.io", f"system:serviceaccount:{ns}:{RAY_ACCOUNT}"),
        30,
    )
    yield Tenant(
        namespace=ns,
        ray_token=kube.service_account_token(ns, RAY_ACCOUNT),
        one_deployment_token=kube.service_account_token(ns, "one-deployment"),
    )
    kube.kubectl("delete", "clusterrolebinding", binding["metadata"]["name"], check=False)
    kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture
def checker(kube: KubeCluster, tenant: Tenant) -> Iterator[Callable[..., KubernetesChatAuth]]:
    """Checkers as the tenant's Ray ServiceAccount (or another token), for a deployment of the namespace."""
    clients: list[Any] = []

    def make(deployment: str = DEPLOYMENT, token: str | None = None) -> KubernetesChatAuth:
        cm = kube.api_client(token=token or tenant.ray_token)
        clients.append(cm)
        return KubernetesChatAuth(tenant.namespace, deployment, api_client=cm.__enter__())

    yield make
    for cm in clients:
        cm.__exit__(None, None, None)


def test_rbac_decides_who_may_chat(
    kube: KubeCluster, tenant: Tenant, checker: Callable[..., KubernetesChatAuth]
) -> None:
    auth = checker()
    auth.review(kube.tokens["alice"])  # view in the namespace
    auth.review(tenant.one_deployment_token)  # a Role naming this deployment
    with pytest.raises(ForbiddenError, match="bob may not use this deployment"):
        auth.review(kube.tokens["bob"])
    with pytest.raises(UnauthorizedError, match="neither"):
        auth.review("garbage-" + uuid.uuid4().hex)
    other = checker("other-deployment")
    other.review(kube.tokens["alice"])
    with pytest.raises(ForbiddenError, match="one-deployment"):
        other.review(tenant.one_deployment_token)  # its Role names another deployment


def test_the_namespace_secret_still_works_and_never_reaches_the_api_server(
    kube: KubeCluster, checker: Callable[..., KubernetesChatAuth]
) -> None:
    digest = hashlib.sha256(SECRET_TOKEN.encode()).hexdigest()
    unreachable = KubernetesChatAuth("x", DEPLOYMENT, api_client=_unreachable_client(kube))
    ChatAuth([digest], source="CORRAL_CHAT_TOKENS", kubernetes=unreachable).check(f"Bearer {SECRET_TOKEN}")
    auth = ChatAuth([digest], source="CORRAL_CHAT_TOKENS", kubernetes=checker())
    auth.check(f"Bearer {SECRET_TOKEN}")
    auth.check(f"Bearer {kube.tokens['alice']}")


def test_an_account_without_auth_delegator_or_no_api_server_is_a_503(
    kube: KubeCluster, tenant: Tenant, checker: Callable[..., KubernetesChatAuth]
) -> None:
    kube.kubectl("create", "serviceaccount", "no-rights", "-n", tenant.namespace, check=False)
    lacking = checker(token=kube.service_account_token(tenant.namespace, "no-rights"))
    with pytest.raises(AuthUnavailableError, match="system:auth-delegator"):
        lacking.review(kube.tokens["alice"])
    down = KubernetesChatAuth(tenant.namespace, DEPLOYMENT, api_client=_unreachable_client(kube))
    with pytest.raises(AuthUnavailableError, match="did not answer"):
        down.review(kube.tokens["alice"])


class _Prompter:
    def longest_token_chars(self) -> int:
        return 8


def test_the_replicas_http_layer_answers_200_401_403_and_503(
    kube: KubeCluster, tenant: Tenant, checker: Callable[..., KubernetesChatAuth]
) -> None:
    digest = hashlib.sha256(SECRET_TOKEN.encode()).hexdigest()
    kubernetes = checker()
    down = KubernetesChatAuth(tenant.namespace, DEPLOYMENT, api_client=_unreachable_client(kube))
    calls = {
        "secret": (kubernetes, SECRET_TOKEN),
        "alice": (kubernetes, kube.tokens["alice"]),
        "bob": (kubernetes, kube.tokens["bob"]),
        "garbage": (kubernetes, "garbage-token"),
        "down": (down, kube.tokens["alice"]),
    }

    async def call(who: str) -> httpx.Response:
        reviewer, token = calls[who]
        auth = ChatAuth([digest], source="CORRAL_CHAT_TOKENS", kubernetes=reviewer)
        frontend = OpenAIFrontend(None, _Prompter(), served_name="tiny", auth=auth)  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=frontend.app())
        async with httpx.AsyncClient(transport=transport, base_url="http://corral/v1") as client:
            return await client.get("/models", headers={"Authorization": f"Bearer {token}"})

    got = {who: asyncio.run(call(who)) for who in calls}
    assert got["secret"].status_code == 200 and got["alice"].status_code == 200
    for who, status, code in (
        ("bob", 403, "permission_denied"),
        ("garbage", 401, "invalid_api_key"),
        ("down", 503, "auth_unavailable"),
    ):
        assert got[who].status_code == status, (who, got[who].text)
        assert got[who].json()["error"]["code"] == code
        assert calls[who][1] not in got[who].text  # never the token


def _unreachable_client(kube: KubeCluster) -> Any:
    import kubernetes.client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = kube.configuration()
    config.host = f"https://127.0.0.1:{port}"
    config.retries = 0
    return kubernetes.client.ApiClient(config)
