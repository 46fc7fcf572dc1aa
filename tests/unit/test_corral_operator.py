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
    def __init__(self, rules: set[tuple[str, str, str, str | None]]) -> None:
        self.rules = rules

    def create_subject_access_review(self, body: Any) -> Any:
        attrs = body.spec.resource_attributes
        if attrs is None:  # a non-resource URL (/metrics)
            path = body.spec.non_resource_attributes
            allowed = (body.spec.user, path.verb, path.path, None) in self.rules
        else:
            resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
            allowed = (body.spec.user, attrs.verb, resource, attrs.namespace) in self.rules
        return SimpleNamespace(status=SimpleNamespace(allowed=allowed))


def _auth(rules: set[tuple[str, str, str, str | None]]) -> tuple[KubernetesAuth, _FakeAuthn]:
    auth = KubernetesAuth(None, namespaces=["team-a", "team-b"])
    authn = _FakeAuthn({"tok-admin": "admin", "tok-alice": "alice"})
    auth.authn, auth.authz = authn, _FakeAuthz(rules)
    return auth, authn


def test_token_review_and_access_reviews() -> None:
    auth, authn = _auth(
        {
            ("admin", "list", "finetunejobs", None),
            ("admin", "create", "gpupools", None),
            ("admin", "update", "finetunejobs/status", None),
            ("admin", "get", "/metrics", None),
            ("alice", "get", "finetunejobs", "team-b"),
        }
    )
    admin = auth.authenticate("tok-admin")
    assert admin.name == "admin" and admin.namespaces is None and admin.cluster
    assert admin.controller and admin.metrics
    alice = auth.authenticate("tok-alice")
    assert alice.namespaces == frozenset({"team-b"}) and not alice.cluster
    assert not alice.controller and not alice.metrics and not alice.writes_status and not alice.reads_metrics
    auth.authenticate("tok-alice")
    assert authn.calls == 2  # the second answer for alice came from the cache


@pytest.mark.parametrize("token", [None, "", "wrong"])
def test_rejected_tokens_are_401(token: str | None) -> None:
    auth, _ = _auth(set())
    with pytest.raises(APIError) as err:
        auth.authenticate(token)
    assert err.value.code == 401


def _job_status(phase: str, *conditions: tuple[str, str, str]) -> Any:
    from corral.api.v1alpha1 import Condition, FineTuneJobStatus

    return FineTuneJobStatus(
        phase=phase, conditions=[Condition(type=t, status=s, reason=r, message="m") for t, s, r in conditions]
    )


def test_refine_status_puts_kuberay_reasons_on_conditions() -> None:
    from corral.api.v1alpha1 import FineTuneJob, ModelDeployment
    from corral.api.v1alpha1.modeldeployment import ModelDeploymentStatus
    from corral.drivers.kuberay import deployment_status_from_rayservice, finetunejob_status_from_rayjob
    from corral_operator._status import refine_status

    job = FineTuneJob.model_validate(
        {"metadata": {"name": "j", "namespace": "n"}, "spec": {"baseModel": {"name": "b"}, "datasets": [{"name": "d"}]}}
    )
    failed = finetunejob_status_from_rayjob(
        {"status": {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": "ran too long"}}
    )
    status = _job_status("Failed", ("Failed", "True", "JobFailed"), ("Running", "False", "JobFailed"))
    refined = refine_status(job, status, rayjob=failed)
    assert [(c.type, c.reason) for c in refined.conditions] == [
        ("Failed", "DeadlineExceeded"),
        ("Running", "JobFailed"),
    ]
    assert refined.conditions[0].message == "ran too long" and status.conditions[0].reason == "JobFailed"
    trained = _job_status("Failed", ("Failed", "True", "OutOfMemory"))
    assert refine_status(job, trained, rayjob=failed).conditions[0].reason == "OutOfMemory"  # training knows better

    queued = finetunejob_status_from_rayjob({"spec": {"suspend": True}, "status": {"jobDeploymentStatus": "Suspended"}})
    waiting = refine_status(job, _job_status("Admitted", ("Running", "False", "JobPending")), rayjob=queued)
    assert waiting.conditions[0].reason == "Pending" and "Kueue" in waiting.conditions[0].message

    dep = ModelDeployment.model_validate(
        {"metadata": {"name": "d", "namespace": "n"}, "spec": {"model": {"name": "m"}}}
    )
    upgrading = deployment_status_from_rayservice(
        {"status": {"conditions": [{"type": "UpgradeInProgress", "status": "True", "message": "new cluster"}]}}, "n-d"
    )
    from corral.api.v1alpha1 import Condition

    dstatus = ModelDeploymentStatus(
        phase="Updating", conditions=[Condition(type="Ready", status="True", reason="Updating", message="x")]
    )
    ready = refine_status(dep, dstatus, rayservice=upgrading).conditions[0]
    assert (ready.reason, ready.message) == ("UpgradeInProgress", "new cluster")


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
