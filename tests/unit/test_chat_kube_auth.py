"""Kubernetes tokens at a chat endpoint, without a server: the reviews asked, their cache, 401/403/503.

The API server is replaced by fakes of ``AuthenticationV1Api`` / ``AuthorizationV1Api`` that
answer from a table and count the reviews; the real server's answers are pinned in
``tests/integration/test_chat_kube_auth.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError

from corral.serving._args import ChatAuthArgs
from corral.serving._chat_auth import AuthUnavailableError, ChatAuth, ForbiddenError, UnauthorizedError
from corral.serving._chat_kube import KubernetesChatAuth
from corral.serving._openai import OpenAIFrontend

USERS = {"alice-token": "alice", "bob-token": "bob"}
ALLOWED = {"alice"}


class FakeServer:
    """TokenReview and SubjectAccessReview answered from :data:`USERS` and :data:`ALLOWED`."""

    def __init__(self) -> None:
        self.token_reviews = 0
        self.access_reviews: list[Any] = []
        self.threads: set[int] = set()
        self.failure: Exception | None = None

    def create_token_review(self, body: Any, **_: Any) -> Any:
        self.threads.add(threading.get_ident())
        self.token_reviews += 1
        if self.failure is not None:
            raise self.failure
        name = USERS.get(body.spec.token)
        user = SimpleNamespace(username=name, groups=["system:authenticated"], uid=f"uid-{name}", extra=None)
        return SimpleNamespace(status=SimpleNamespace(authenticated=name is not None, user=user if name else None))

    def create_subject_access_review(self, body: Any, **_: Any) -> Any:
        self.access_reviews.append(body.spec)
        return SimpleNamespace(status=SimpleNamespace(allowed=body.spec.user in ALLOWED))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def checker(**kw: Any) -> tuple[KubernetesChatAuth, FakeServer, Clock]:
    server, clock = FakeServer(), Clock()
    auth = KubernetesChatAuth("team-a", "chat", apis=(server, server), clock=clock, **kw)
    return auth, server, clock


def test_the_review_asks_who_calls_then_whether_it_may_get_the_deployment() -> None:
    auth, server, _ = checker()
    auth.review("alice-token")
    (spec,) = server.access_reviews
    attrs = spec.resource_attributes
    assert (attrs.group, attrs.resource, attrs.verb, attrs.name, attrs.namespace) == (
        "corral.dev",
        "modeldeployments",
        "get",
        "chat",
        "team-a",
    )
    assert (spec.user, spec.groups, spec.uid) == ("alice", ["system:authenticated"], "uid-alice")

    with pytest.raises(ForbiddenError) as denied:
        auth.review("bob-token")
    assert denied.value.status == 403 and denied.value.code == "permission_denied"
    assert "bob" in denied.value.message and "modeldeployments" in denied.value.message
    assert "bob-token" not in denied.value.message

    with pytest.raises(UnauthorizedError) as unknown:
        auth.review("garbage")
    assert unknown.value.status == 401 and unknown.value.code == "invalid_api_key"
    assert "garbage" not in unknown.value.message
    assert server.token_reviews == 3 and len(server.access_reviews) == 2  # no access review for an unknown token


def test_answers_are_cached_per_token_60_s_allowed_10_s_refused() -> None:
    auth, server, clock = checker()
    auth.review("alice-token")
    for token in ("bob-token", "garbage"):
        with pytest.raises((ForbiddenError, UnauthorizedError)):
            auth.review(token)
    assert server.token_reviews == 3
    clock.now += 9
    auth.review("alice-token")
    with pytest.raises(ForbiddenError):
        auth.review("bob-token")
    with pytest.raises(UnauthorizedError):
        auth.review("garbage")
    assert server.token_reviews == 3  # all from the cache
    clock.now += 2  # 11 s: the refusals are asked again, the allowed token still cached
    auth.review("alice-token")
    with pytest.raises(ForbiddenError):
        auth.review("bob-token")
    assert server.token_reviews == 4
    clock.now += 50  # 61 s
    auth.review("alice-token")
    assert server.token_reviews == 5
    # The cache is keyed by digest: no token is kept in memory.
    assert "alice-token" not in repr(auth._cache)
    assert hashlib.sha256(b"alice-token").hexdigest() in auth._cache


def test_the_cache_is_bounded() -> None:
    auth, server, _ = checker(max_tokens=2)
    auth.review("alice-token")
    for token in ("garbage-1", "garbage-2"):
        with pytest.raises(UnauthorizedError):
            auth.review(token)
    assert len(auth._cache) == 2
    auth.review("alice-token")  # the oldest went first: asked again
    assert server.token_reviews == 4


@pytest.mark.parametrize(
    "failure",
    [
        ApiException(status=403, reason="Forbidden"),  # the pods' account lacks system:auth-delegator
        ApiException(status=500, reason="Internal Server Error"),
        MaxRetryError(None, "https://10.0.0.1:443/apis", "connection refused"),  # type: ignore[arg-type]
        ConnectionRefusedError(111, "Connection refused"),
    ],
)
def test_an_api_server_that_cannot_be_asked_is_a_503_and_not_cached(failure: Exception) -> None:
    auth, server, _ = checker()
    server.failure = failure
    for _ in range(2):
        with pytest.raises(AuthUnavailableError) as unavailable:
            auth.review("alice-token")
        assert unavailable.value.status == 503 and unavailable.value.code == "auth_unavailable"
        assert "alice-token" not in unavailable.value.message
    assert server.token_reviews == 2
    if isinstance(failure, ApiException) and failure.status == 403:
        assert "system:auth-delegator" in unavailable.value.message
    server.failure = None
    auth.review("alice-token")


def test_no_in_cluster_config_is_a_503_naming_the_token_mount(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(AuthUnavailableError, match="automountServiceAccountToken"):
        KubernetesChatAuth("team-a", "chat").review("alice-token")


def test_chat_auth_takes_its_digests_first_and_asks_kubernetes_about_the_rest() -> None:
    kube, server, _ = checker()
    auth = ChatAuth([hashlib.sha256(b"secret-token").hexdigest()], source="CORRAL_CHAT_TOKENS", kubernetes=kube)
    auth.check("Bearer secret-token")
    assert server.token_reviews == 0  # a Secret's token never reaches the API server
    auth.check("Bearer alice-token")
    with pytest.raises(ForbiddenError):
        auth.check("Bearer bob-token")
    with pytest.raises(UnauthorizedError, match="neither"):
        auth.check("Bearer garbage")
    with pytest.raises(UnauthorizedError, match="needs a bearer token"):
        auth.check(None)
    # No Secret tokens at all: Kubernetes tokens still work.
    ChatAuth([], source="CORRAL_CHAT_TOKENS", kubernetes=kube).check("Bearer alice-token")


def test_authorize_reviews_off_the_event_loop_and_answers_cached_tokens_on_it() -> None:
    kube, server, _ = checker()
    auth = ChatAuth([], kubernetes=kube)

    async def main() -> int:
        await auth.authorize("Bearer alice-token")
        await auth.authorize("Bearer alice-token")  # cached: no thread, no review
        with pytest.raises(ForbiddenError):
            await auth.authorize("Bearer bob-token")
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert server.token_reviews == 2 and loop_thread not in server.threads


def test_the_pods_flag_and_the_deployment_in_the_args_turn_kubernetes_auth_on() -> None:
    args = ChatAuthArgs(tokens_env="CORRAL_CHAT_TOKENS", namespace="team-a", deployment="chat")
    on = ChatAuth.from_args(args, {"CORRAL_CHAT_KUBERNETES_AUTH": "true"})
    assert on.kubernetes is not None
    assert (on.kubernetes.namespace, on.kubernetes.deployment) == ("team-a", "chat")
    assert ChatAuth.from_args(args, {}).kubernetes is None
    assert ChatAuth.from_args(args, {"CORRAL_CHAT_KUBERNETES_AUTH": "false"}).kubernetes is None
    unnamed = ChatAuthArgs(tokens_env="CORRAL_CHAT_TOKENS")
    assert ChatAuth.from_args(unnamed, {"CORRAL_CHAT_KUBERNETES_AUTH": "true"}).kubernetes is None


class _Prompter:
    def longest_token_chars(self) -> int:
        return 8


def frontend_client(auth: ChatAuth) -> httpx.AsyncClient:
    """The replica's HTTP layer (no engine is reached: every request here stops at the token check)."""
    frontend = OpenAIFrontend(None, _Prompter(), served_name="tiny", auth=auth)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=frontend.app()), base_url="http://corral/v1")


def test_the_endpoint_answers_401_403_503_as_openai_errors() -> None:
    kube, server, _ = checker()
    auth = ChatAuth([hashlib.sha256(b"secret-token").hexdigest()], kubernetes=kube)

    async def main() -> dict[str, httpx.Response]:
        async with frontend_client(auth) as client:
            out = {}
            for token in ("secret-token", "alice-token", "bob-token", "garbage"):
                out[token] = await client.get("/models", headers={"Authorization": f"Bearer {token}"})
            out["chat-bob"] = await client.post(
                "/chat/completions", json={"model": "tiny"}, headers={"Authorization": "Bearer bob-token"}
            )
            server.failure = MaxRetryError(None, "https://10.0.0.1:443", "refused")  # type: ignore[arg-type]
            out["down"] = await client.get("/models", headers={"Authorization": "Bearer other-token"})
            return out

    got = asyncio.run(main())
    assert got["secret-token"].status_code == 200 and got["alice-token"].status_code == 200
    assert [m["id"] for m in got["alice-token"].json()["data"]] == ["tiny"]
    for key, status, code in (
        ("bob-token", 403, "permission_denied"),
        ("chat-bob", 403, "permission_denied"),
        ("garbage", 401, "invalid_api_key"),
        ("down", 503, "auth_unavailable"),
    ):
        assert got[key].status_code == status, (key, got[key].text)
        assert got[key].json()["error"]["code"] == code
        assert not any(token in got[key].text for token in ("bob-token", "garbage", "other-token"))
