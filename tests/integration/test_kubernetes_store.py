"""The Kubernetes store against a real kube-apiserver: the Store protocol over custom resources.

The session's server (``tests/fixtures/kube.py``) holds Corral's generated CRDs, so every write
here also passes the CRD's structural schema and CEL rules, and the server sets the metadata a
cluster sets (managedFields, generation, deletionGracePeriodSeconds, ...), which the store must
read back. Each module run works in a namespace of its own; GPUPool names carry a suffix of
their own (cluster-scoped, shared by the session).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import kubernetes.client
import pytest

from corral.api.v1alpha1 import FineTuneJob, GPUPool, Model
from corral.store import AlreadyExists, Conflict, Forbidden, Invalid, NotFound, WatchEvent
from corral.store.kubernetes import KubernetesStore
from tests.support.kube import KubeCluster
from tests.support.objects import applied, base_model, finetunejob, gpupool

NS = f"store-{uuid.uuid4().hex[:6]}"
POOL_SUFFIX = uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def namespace(kube: KubeCluster) -> Iterator[str]:
    kube.kubectl("create", "namespace", NS)
    yield NS
    kube.kubectl("delete", "namespace", NS, "--wait=false", check=False)


@pytest.fixture
def store(kube: KubeCluster, namespace: str) -> Iterator[KubernetesStore]:
    client = kubernetes.client.ApiClient(kube.configuration("admin"))
    with KubernetesStore(client) as opened:
        yield opened


def model(name: str, labels: dict[str, str] | None = None) -> Model:
    return applied(base_model(name, ns=NS, labels=labels or {}))


def job(name: str) -> FineTuneJob:
    return applied(finetunejob(name, ns=NS, finalizers=(), baseModel={"name": "m"}, datasets=[{"name": "d"}]))


def pool_name(base: str) -> str:
    """GPUPools are cluster-scoped: a name of this run's own."""
    return f"{base}-{POOL_SUFFIX}"


def pool(name: str) -> GPUPool:
    return applied(gpupool(name, accelerator="cpu", gpus_per_node=0, gpu_memory=None, price="0"))


def test_create_get_list_and_already_exists(store: KubernetesStore) -> None:
    created = store.create(model("crud", {"team": "a"}))
    assert created.metadata.uid and created.metadata.generation == 1 and created.metadata.resource_version
    assert store.get(Model, NS, "crud").spec.catalog_name == "tiny-llama"
    with pytest.raises(AlreadyExists):
        store.create(model("crud"))
    listed = store.list(Model, NS, {"team": "a"})
    assert [m.metadata.name for m in listed.items] == ["crud"] and listed.resource_version
    with pytest.raises(NotFound):
        store.get(Model, NS, "missing")


def test_cluster_scoped_kind(store: KubernetesStore) -> None:
    name = pool_name("cpu-pool")
    store.create(pool(name))
    assert store.get(GPUPool, None, name).metadata.namespace is None
    assert name in [p.metadata.name for p in store.list(GPUPool).items]


def test_cluster_scoped_kind_through_every_call(store: KubernetesStore) -> None:
    """A GPUPool takes the cluster-wide API calls (no namespace in the path) for every verb."""
    name = pool_name("every-verb")
    created = store.create(pool(name))
    rv = created.metadata.resource_version
    created.spec.max_nodes = 2
    updated = store.update(created)
    assert updated.spec.max_nodes == 2 and updated.metadata.generation == 2
    patched = store.patch(GPUPool, None, name, {"metadata": {"labels": {"tier": "cpu"}}})
    assert patched.metadata.labels == {"tier": "cpu"} and patched.metadata.generation == 2
    assert store.patch_status(GPUPool, None, name, {"nodes": 1}).status.nodes == 1
    fresh = store.get(GPUPool, None, name)
    fresh.status.allocatable_gpus, fresh.status.nodes = 3, 0
    replaced = store.replace_status(fresh)
    assert replaced.status.allocatable_gpus == 3 and replaced.status.nodes == 0
    store.delete(GPUPool, None, name)
    with pytest.raises(NotFound):
        store.get(GPUPool, None, name)
    seen: list[str] = []
    with store.watch(GPUPool, since_resource_version=rv, timeout=20) as watch:
        while "DELETED" not in seen and (event := watch.poll(5)) is not None:
            if event.object.metadata.name == name:
                seen.append(event.type)
    assert seen == [*["MODIFIED"] * 4, "DELETED"]


def test_invalid_objects_are_refused_before_sending(store: KubernetesStore) -> None:
    bad = model("bad")
    bad.metadata.namespace = None
    with pytest.raises(Invalid):
        store.create(bad)


def test_update_patch_generation_and_conflicts(store: KubernetesStore) -> None:
    created = store.create(job("gen"))
    patched = store.patch(FineTuneJob, NS, "gen", {"metadata": {"labels": {"x": "y"}}})
    assert patched.metadata.generation == 1 and patched.metadata.labels == {"x": "y"}
    changed = store.patch(FineTuneJob, NS, "gen", {"spec": {"suspend": True}}, patched.metadata.resource_version)
    assert changed.spec.suspend and changed.metadata.generation == 2
    with pytest.raises(Conflict):
        store.patch(FineTuneJob, NS, "gen", {"spec": {"suspend": False}}, created.metadata.resource_version)
    fresh = store.get(FineTuneJob, NS, "gen")
    fresh.spec.suspend = False
    updated = store.update(fresh)
    assert not updated.spec.suspend and updated.metadata.generation == 3
    with pytest.raises(Conflict):
        store.update(fresh)  # stale resourceVersion


def test_status_writes_touch_only_status(store: KubernetesStore) -> None:
    store.create(job("st"))
    after = store.patch_status(FineTuneJob, NS, "st", {"phase": "Pending"})
    assert after.status.phase == "Pending" and after.metadata.generation == 1
    obj = store.get(FineTuneJob, NS, "st")
    obj.status.phase = "Admitted"
    obj.spec.suspend = True  # ignored by a status write
    replaced = store.replace_status(obj)
    assert replaced.status.phase == "Admitted" and not replaced.spec.suspend
    spec_write = store.patch(FineTuneJob, NS, "st", {"status": {"phase": "Failed"}, "metadata": {"labels": {"a": "b"}}})
    assert spec_write.status.phase == "Admitted"


def test_delete_with_finalizers(store: KubernetesStore) -> None:
    store.create(job("fin"))
    store.patch(FineTuneJob, NS, "fin", {"metadata": {"finalizers": ["corral.dev/cleanup"]}})
    deleting = store.delete(FineTuneJob, NS, "fin")
    assert deleting.metadata.deletion_timestamp is not None
    assert store.get(FineTuneJob, NS, "fin").metadata.deletion_timestamp is not None
    store.patch(FineTuneJob, NS, "fin", {"metadata": {"finalizers": []}})
    with pytest.raises(NotFound):
        store.get(FineTuneJob, NS, "fin")
    with pytest.raises(NotFound):
        store.delete(FineTuneJob, NS, "fin")


def test_watch_replays_then_streams_and_resumes(store: KubernetesStore) -> None:
    store.create(model("w-existing"))
    with store.watch(Model, NS, timeout=20) as watch:
        first = watch.poll(5)
        seen_names = set()
        while first is not None and first.type == "ADDED" and first.object.metadata.name != "w-existing":
            seen_names.add(first.object.metadata.name)
            first = watch.poll(5)
        assert first is not None and first.object.metadata.name == "w-existing"
        rv = store.list(Model, NS).resource_version
        store.create(model("w-new"))
        event = watch.poll(5)
        while event is not None and event.object.metadata.name != "w-new":
            event = watch.poll(5)
        assert event == WatchEvent("ADDED", event.object) and event.object.metadata.name == "w-new"
    store.delete(Model, NS, "w-new")
    with store.watch(Model, NS, since_resource_version=rv, timeout=20) as resumed:
        events = [resumed.poll(5), resumed.poll(5)]
    assert [(e.type, e.object.metadata.name) for e in events if e] == [("ADDED", "w-new"), ("DELETED", "w-new")]


def test_watch_stop_from_another_thread(store: KubernetesStore) -> None:
    watch = store.watch(Model, NS, since_resource_version=store.list(Model, NS).resource_version)
    threading.Timer(0.2, watch.stop).start()
    assert watch.poll(5) is None and watch.done


def test_events_fold_repeats(store: KubernetesStore) -> None:
    obj = store.create(model("ev"))
    store.record_event(obj, "Normal", "Created", "made it")
    again = store.record_event(obj, "Normal", "Created", "made it")
    store.record_event(obj, "Warning", "InvalidSpec", "bad")
    assert again.count == 2
    events = store.list_events(Model, NS, "ev")
    assert sorted((e.reason, e.count) for e in events) == [("Created", 2), ("InvalidSpec", 1)]
    assert all(e.uid == obj.metadata.uid for e in events)


def test_a_refused_call_is_forbidden_naming_the_account(kube: KubeCluster, namespace: str) -> None:
    """A 403 from the API server is ``Forbidden`` (403) with the server's words, not a 500 ``StoreError``."""
    kube.kubectl("create", "serviceaccount", "nobody", "-n", namespace)  # bound to nothing
    token = kube.service_account_token(namespace, "nobody")
    with KubernetesStore(kubernetes.client.ApiClient(kube.configuration(token=token))) as refused_store:
        with pytest.raises(Forbidden) as refused:
            refused_store.get(FineTuneJob, NS, "anything")
        assert refused.value.code == 403 and refused.value.reason == "Forbidden"
        assert f'User "system:serviceaccount:{NS}:nobody" cannot get resource "finetunejobs"' in refused.value.message
        watch = refused_store.watch(FineTuneJob, NS, since_resource_version="1", timeout=30)
        with pytest.raises(Forbidden):  # was retried silently until the timeout: a watch that never said why
            watch.poll(10)
        assert watch.done


def test_ping(store: KubernetesStore) -> None:
    store.ping()


def test_in_cluster_control_api_serves_from_the_kubernetes_store(kube: KubeCluster, namespace: str) -> None:
    from fastapi.testclient import TestClient

    from corral_operator.controlapi import build_app

    client = kubernetes.client.ApiClient(kube.configuration("admin"))
    with TestClient(build_app({"CORRAL_API_NAMESPACES": NS}, client)) as api:
        assert api.get("/healthz").status_code == 200
        assert api.get("/readyz").status_code == 200  # the store pings the API server
        assert api.get(f"/apis/corral.dev/v1alpha1/namespaces/{NS}/models").status_code == 401  # no token
