"""KubeRayDriver without an API server: every call names its owner through the handle, nothing is re-read.

The custom objects API is replaced by a dict keyed like the API server's paths; the real server
is in tests/integration/test_operator.py and tests/e2e/test_cluster_loop.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from corral.api.v1alpha1 import FineTuneJob, GPUPool, ModelDeployment
from corral.drivers import DriverError, Handle
from corral.drivers.kuberay import ChildRefusedError, KubeRayDriver, KubeRaySettings

NS = "team-a"


class FakeCustomObjects:
    """The four calls the driver makes, on a dict; ``refuse`` answers creates with that HTTP status."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.refuse: int | None = None

    def create_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, body: Any) -> Any:
        if self.refuse is not None:
            raise ApiException(status=self.refuse, reason="Forbidden")
        key = (ns, plural, body["metadata"]["name"])
        if key in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        self.objects[key] = json.loads(json.dumps(body))
        return body

    def get_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str) -> Any:
        if (ns, plural, name) not in self.objects:
            raise ApiException(status=404, reason="NotFound")
        return self.objects[(ns, plural, name)]

    def patch_namespaced_custom_object(self, *args: Any, **_: Any) -> Any:
        _, _, ns, plural, name, patch = args
        self.objects[(ns, plural, name)].update(spec=patch["spec"])
        return self.objects[(ns, plural, name)]

    def delete_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str) -> Any:
        if self.objects.pop((ns, plural, name), None) is None:
            raise ApiException(status=404, reason="NotFound")
        return {}


@pytest.fixture
def driver() -> tuple[KubeRayDriver, FakeCustomObjects]:
    d = KubeRayDriver(api_client=None, settings=KubeRaySettings(network_policy=False))
    fake = FakeCustomObjects()
    d.custom = fake
    return d, fake


def job() -> FineTuneJob:
    return FineTuneJob.model_validate(
        {
            "metadata": {"name": "bot", "namespace": NS, "uid": "uid-bot", "generation": 1},
            "spec": {"baseModel": {"name": "tiny"}, "datasets": [{"name": "faq"}], "resources": {"gpusPerWorker": 1}},
        }
    )


def pool() -> GPUPool:
    return GPUPool.model_validate(
        {
            "metadata": {"name": "l4"},
            "spec": {
                "acceleratorType": "nvidia-l4",
                "gpusPerNode": 4,
                "gpuMemory": "24Gi",
                "maxNodes": 1,
                "nodeSelector": {"pool": "l4"},
            },
        }
    )


def test_a_job_is_created_in_its_owners_namespace_where_the_handle_places_it(
    driver: tuple[KubeRayDriver, FakeCustomObjects],
) -> None:
    d, fake = driver
    handle = Handle.for_job(job(), pool())
    d.submit_job(handle, "corral-team-a.bot-1", "python -m corral.training --job x")
    d.submit_job(handle, "corral-team-a.bot-1", "python -m corral.training --job x")  # 409: success, one RayJob
    ((ns, plural, _),) = fake.objects
    body = next(iter(fake.objects.values()))
    assert (ns, plural) == (NS, "rayjobs")
    assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-bot"
    worker = body["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["nodeSelector"] == {"pool": "l4"}

    body["status"] = {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": "ran too long"}
    state = d.job_status(Handle.of(job()), "corral-team-a.bot-1")
    assert state is not None and (state.status, state.reason, state.message) == (
        "FAILED",
        "DeadlineExceeded",
        "ran too long",
    )
    assert d.stop_job(Handle.of(job()), "corral-team-a.bot-1") is False  # finished: deleted, not "stopped"
    assert fake.objects == {} and d.job_status(Handle.of(job()), "corral-team-a.bot-1") is None


def test_starting_work_without_a_placement_or_with_a_refusal_is_a_driver_error(
    driver: tuple[KubeRayDriver, FakeCustomObjects],
) -> None:
    d, fake = driver
    with pytest.raises(DriverError, match="placement"):
        d.submit_job(Handle.of(job()), "corral-team-a.bot-1", "true")
    fake.refuse = 403
    with pytest.raises(ChildRefusedError) as refused:
        d.submit_job(Handle.for_job(job()), "corral-team-a.bot-1", "true")
    assert refused.value.reason == "Forbidden"


def test_a_deployment_is_served_read_and_deleted_through_its_handle(
    driver: tuple[KubeRayDriver, FakeCustomObjects],
) -> None:
    d, fake = driver
    dep = ModelDeployment.model_validate(
        {"metadata": {"name": "chat", "namespace": NS, "uid": "uid-chat"}, "spec": {"model": {"name": "tiny"}}}
    )
    config = {"applications": [{"name": "team-a-chat", "route_prefix": "/team-a/chat"}]}
    d.deploy_serve(Handle.for_deployment(dep), config)
    d.deploy_serve(Handle.for_deployment(dep), config)  # exists: updated in place
    assert list(fake.objects) == [(NS, "rayservices", "corral-chat")]
    app = d.serve_status(Handle.of(dep), "team-a-chat")
    assert app is not None and app.status == "NOT_STARTED" and app.deployed_config == config["applications"][0]
    assert d.endpoint(Handle.of(dep)) == "http://corral-chat-serve-svc.team-a.svc:8000"
    assert d.endpoint() is None  # every deployment has a Ray cluster of its own
    d.delete_serve_app(Handle.of(dep), "team-a-chat")
    d.delete_serve_app(Handle.of(dep), "team-a-chat")  # absent: success
    assert fake.objects == {} and d.serve_status(Handle.of(dep), "team-a-chat") is None
