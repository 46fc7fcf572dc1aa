"""The operator's pure parts: settings from the environment, kopf configuration, TokenReview/SAR auth."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from corral.controlapi._status import APIError
from corral_operator import OperatorSettings
from corral_operator._auth import KubernetesAuth
from corral_operator._settings import configure_kopf


def test_settings_from_env() -> None:
    settings = OperatorSettings.from_env(
        {
            "CORRAL_OPERATOR_NAMESPACES": "team-a, team-b",
            "CORRAL_OPERATOR_RESYNC_SECONDS": "2.5",
            "CORRAL_OPERATOR_STANDALONE": "true",
            "CORRAL_OPERATOR_KUBERAY": '{"image": "x/ray:1", "s3_secret_name": "s3"}',
            "CORRAL_OPERATOR_ARTIFACT_ROOT": "s3://b/p",
        }
    )
    assert settings.namespaces == ["team-a", "team-b"]
    assert settings.resync_seconds == 2.5 and settings.standalone
    assert settings.kuberay.image == "x/ray:1" and settings.kuberay.s3_secret_name == "s3"
    control = settings.control()
    assert control.artifact_root == "s3://b/p" and control.follow_seconds == 2.5
    assert control.uri_policy is not None  # objects applied with kubectl are held to the URI rule
    assert control.uri_policy.prefixes("team-a") == [
        "s3://b/p/files/team-a/",
        "s3://b/p/finetunejobs/team-a/",
        "s3://b/p/catalog/",
        "hf://",
    ]


def test_configure_kopf() -> None:
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(kopf_settings, OperatorSettings(peering_name="corral-x", priority=7))
    assert kopf_settings.persistence.finalizer == "corral.dev/operator"
    assert isinstance(kopf_settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(kopf_settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert kopf_settings.peering.name == "corral-x" and kopf_settings.peering.priority == 7
    assert kopf_settings.peering.mandatory and not kopf_settings.peering.standalone
    assert kopf_settings.watching.server_timeout == 300
    # The chart's "300" must reach the API server as an integer: timeoutSeconds=300.0 is a 400.
    timeout = OperatorSettings.from_env({"CORRAL_OPERATOR_WATCH_SERVER_TIMEOUT": "300"}).watch_server_timeout
    assert type(timeout) is int and f"{timeout}" == "300"


class _FakeAuthn:
    def __init__(self, users: dict[str, str]) -> None:
        self.users, self.calls = users, 0

    def create_token_review(self, body: Any) -> Any:
        self.calls += 1
        name = self.users.get(body.spec.token)
        user = SimpleNamespace(username=name, groups=["g"], uid="u", extra=None) if name else None
        return SimpleNamespace(status=SimpleNamespace(authenticated=name is not None, user=user, error=None))


class _FakeAuthz:
    """RBAC's answers from rules ``(user, verb, resource[/sub], namespace)``: ``None`` is a cluster-wide grant
    (it reaches every namespace, as a ClusterRoleBinding does); a ``*`` rule matches every verb or resource, and
    a ``*`` question only a ``*`` rule, as in RBAC."""

    def __init__(self, rules: set[tuple[str, str, str, str | None]]) -> None:
        self.rules, self.asked = rules, 0

    def create_subject_access_review(self, body: Any) -> Any:
        self.asked += 1
        attrs = body.spec.resource_attributes
        if attrs is None:  # a non-resource URL (/metrics)
            path = body.spec.non_resource_attributes
            allowed = (body.spec.user, path.verb, path.path, None) in self.rules
        else:
            assert attrs.group == "corral.dev"
            resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
            allowed = any(
                (body.spec.user, verb, res, ns) in self.rules
                for ns in {attrs.namespace, None}
                for verb in {attrs.verb, "*"}
                for res in {resource, "*"}
            )
        return SimpleNamespace(status=SimpleNamespace(allowed=allowed))


USERS = {"tok-admin": "admin", "tok-alice": "alice", "tok-carol": "carol", "tok-ctl": "controller"}
RULES = {
    ("admin", "*", "*", None),
    ("admin", "get", "/metrics", None),
    *{("alice", verb, "finetunejobs", "team-b") for verb in ("get", "list", "watch")},
    ("carol", "list", "finetunejobs", None),
    *{("controller", verb, "finetunejobs/status", None) for verb in ("update", "patch")},
}


def _auth(rules: set[tuple[str, str, str, str | None]] = RULES) -> tuple[KubernetesAuth, _FakeAuthn]:
    auth = KubernetesAuth(None, namespaces=["team-a", "team-b"])
    authn = _FakeAuthn(USERS)
    auth.authn, auth.authz = authn, _FakeAuthz(rules)
    return auth, authn


def test_token_review_and_access_reviews() -> None:
    auth, authn = _auth()
    admin = auth.authenticate("tok-admin")
    assert admin.name == "admin" and admin.namespaces is None and admin.metrics and admin.reads_metrics
    alice = auth.authenticate("tok-alice")
    assert alice.namespaces == frozenset({"team-b"}) and not alice.all_namespaces
    assert not alice.metrics and not alice.reads_metrics
    assert alice.access is not None
    assert alice.access("get", "finetunejobs", "team-b", "") and alice.access("list", "finetunejobs", "team-b", "")
    assert not alice.access("create", "finetunejobs", "team-b", "")
    assert not alice.access("get", "finetunejobs", "team-a", "")
    assert not alice.access("get", "models", "team-b", "")  # the resource is checked, not only the namespace
    auth.authenticate("tok-alice")
    assert authn.calls == 2  # the second answer for alice came from the cache


def test_a_cluster_wide_list_grants_lists_only() -> None:
    """Issue 17 item 7: ``list finetunejobs`` cluster-wide used to make a caller admin of every namespace."""
    auth, _ = _auth()
    carol = auth.authenticate("tok-carol")
    assert carol.access is not None
    assert carol.namespaces == frozenset() and not carol.all_namespaces and not carol.reads_metrics
    assert carol.access("list", "finetunejobs", None, "") and carol.access("list", "finetunejobs", "team-a", "")
    for verb in ("get", "create", "update", "patch", "delete"):
        assert not carol.access(verb, "finetunejobs", "team-a", ""), verb
    assert not carol.access("list", "models", "team-a", "")
    assert not carol.access("patch", "finetunejobs", "team-a", "status")


def test_access_answers_are_cached_per_question() -> None:
    auth, _ = _auth()
    alice = auth.authenticate("tok-alice")
    authz = auth.authz
    assert isinstance(authz, _FakeAuthz) and alice.access is not None
    before = authz.asked
    for _ in range(3):
        alice.access("get", "finetunejobs", "team-b", "")
        alice.access("delete", "finetunejobs", "team-b", "")
    assert authz.asked - before <= 1  # "get" in team-b was asked while authenticating


def _app_with_fake_cluster_auth(tmp_path: Any) -> Any:
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry

    from corral.controlapi import create_app
    from corral.store import SqliteStore

    store = SqliteStore(str(tmp_path / "state.db"))
    for ns in ("team-a", "team-b"):
        store.create(_ftjob("j", ns))
    auth, _ = _auth()
    return TestClient(create_app(store, auth, registry=CollectorRegistry()))


def _ftjob(name: str, namespace: str) -> Any:
    from corral.api.v1alpha1 import FineTuneJob

    return FineTuneJob.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"baseModel": {"name": "m"}, "datasets": [{"name": "d"}]},
        }
    )


API = "/apis/corral.dev/v1alpha1"


def test_the_app_asks_for_each_request_verb_and_resource(tmp_path: Any) -> None:
    with _app_with_fake_cluster_auth(tmp_path) as client:

        def call(method: str, path: str, token: str, *, merge: bytes | None = None, **kw: Any) -> int:
            headers = {"Authorization": f"Bearer {token}"}
            if merge is not None:
                headers["Content-Type"], kw["content"] = "application/merge-patch+json", merge
            return int(client.request(method, API + path, headers=headers, **kw).status_code)

        body = _ftjob("new", "team-b").to_dict()
        patch = {"merge": b'{"spec": {"suspend": true}}'}
        # alice: view-like rights in team-b only
        assert call("GET", "/namespaces/team-b/finetunejobs", "tok-alice") == 200
        assert call("GET", "/namespaces/team-b/finetunejobs/j", "tok-alice") == 200
        assert call("POST", "/namespaces/team-b/finetunejobs", "tok-alice", json=body) == 403
        assert call("PATCH", "/namespaces/team-b/finetunejobs/j", "tok-alice", **patch) == 403
        assert call("DELETE", "/namespaces/team-b/finetunejobs/j", "tok-alice") == 403
        assert call("GET", "/namespaces/team-a/finetunejobs/j", "tok-alice") == 403
        assert call("GET", "/namespaces/team-b/models", "tok-alice") == 403
        mine = client.get(API + "/finetunejobs", headers={"Authorization": "Bearer tok-alice"}).json()["items"]
        assert [i["metadata"]["namespace"] for i in mine] == ["team-b"]
        # carol: list finetunejobs cluster-wide, nothing else
        everyone = client.get(API + "/finetunejobs", headers={"Authorization": "Bearer tok-carol"}).json()["items"]
        assert sorted(i["metadata"]["namespace"] for i in everyone) == ["team-a", "team-b"]
        assert call("GET", "/namespaces/team-a/finetunejobs/j", "tok-carol") == 403
        assert call("DELETE", "/namespaces/team-a/finetunejobs/j", "tok-carol") == 403
        assert call("GET", "/gpupools", "tok-carol") == 403
        status = {"merge": b'{"status": {"phase": "Pending"}}'}
        assert call("PATCH", "/namespaces/team-a/finetunejobs/j/status", "tok-carol", **status) == 403
        assert client.get("/metrics", headers={"Authorization": "Bearer tok-carol"}).status_code == 403
        # the controller's status rights, and the admin
        assert call("PATCH", "/namespaces/team-a/finetunejobs/j/status", "tok-ctl", **status) == 200
        assert call("DELETE", "/namespaces/team-a/finetunejobs/j", "tok-admin") == 200
        assert call("GET", "/namespaces/team-a/finetunejobs", "nope") == 401


def test_openai_calls_stand_for_a_verb_and_resource() -> None:
    from corral.controlapi._openai_common import openai_access

    assert openai_access("GET", "/v1/fine_tuning/jobs") == ("list", "finetunejobs")
    assert openai_access("GET", "/v1/fine_tuning/jobs/ftjob-1/events") == ("get", "finetunejobs")
    assert openai_access("POST", "/v1/fine_tuning/jobs") == ("create", "finetunejobs")
    assert openai_access("POST", "/v1/fine_tuning/jobs/ftjob-1/cancel") == ("patch", "finetunejobs")
    assert openai_access("DELETE", "/v1/files/file-1") == ("delete", "datasets")
    assert openai_access("POST", "/v1/files") == ("create", "datasets")
    assert openai_access("POST", "/v1/chat/completions") == ("get", "modeldeployments")
    assert openai_access("GET", "/v1/models") == ("list", "modeldeployments")


@pytest.mark.parametrize("token", [None, "", "wrong"])
def test_rejected_tokens_are_401(token: str | None) -> None:
    auth, _ = _auth()
    with pytest.raises(APIError) as err:
        auth.authenticate(token)
    assert err.value.code == 401


def test_invalid_spec_merges_conditions_and_keeps_a_finished_phase() -> None:
    from corral_operator._handlers import invalid_status_patch

    succeeded = {
        "type": "Succeeded",
        "status": "True",
        "reason": "JobSucceeded",
        "message": "done",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    body = {
        "metadata": {"name": "j", "namespace": "n", "generation": 3},
        "status": {"phase": "Succeeded", "observedGeneration": 2, "conditions": [succeeded]},
    }
    patch = invalid_status_patch("FineTuneJob", body, "metadata.x: unknown field")
    assert patch is not None and "phase" not in patch  # Succeeded is never demoted to Failed
    assert [c["type"] for c in patch["conditions"]] == ["Succeeded", "Ready"]
    assert patch["conditions"][0] == succeeded and patch["conditions"][1]["reason"] == "InvalidSpec"
    running = {**body, "status": {"phase": "Running", "conditions": [succeeded | {"type": "Running"}]}}
    patch = invalid_status_patch("FineTuneJob", running, "bad")
    assert patch is not None and patch["phase"] == "Failed" and len(patch["conditions"]) == 2
    said = {**body, "status": {"observedGeneration": 3, "conditions": patch["conditions"]}}
    assert invalid_status_patch("FineTuneJob", said, "bad") is None  # once per generation


def test_merge_condition_keeps_the_transition_time_while_the_status_holds() -> None:
    from corral_operator._handlers import merge_condition

    old = {"type": "Ready", "status": "False", "reason": "A", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    other = {"type": "Admitted", "status": "True", "reason": "Admitted"}
    new = {"type": "Ready", "status": "False", "reason": "B", "lastTransitionTime": "2026-02-02T00:00:00Z"}
    assert merge_condition([other, old], new) == [other, {**new, "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    flipped = {**new, "status": "True"}
    assert merge_condition([old, other], flipped) == [flipped, other]
