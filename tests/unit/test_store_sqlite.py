"""The embedded SQLite store: versions, generations, conflicts, finalizers, selectors, watch, events, durability."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.api.v1alpha1 import FineTuneJob, GPUPool, Model, Resource
from corral.store import (
    AlreadyExists,
    Conflict,
    Expired,
    Invalid,
    NotFound,
    SelectorError,
    SqliteStore,
    WatchEvent,
)
from tests.support.objects import applied, base_model, finetunejob, gpupool


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "corral.db") as opened:
        yield opened


def model(name: str = "m", namespace: str | None = "team-a", labels: dict[str, str] | None = None) -> Model:
    return applied(base_model(name, ns=namespace, labels=labels or {}))


def job(name: str = "bot", namespace: str = "team-a") -> FineTuneJob:
    return applied(finetunejob(name, ns=namespace, finalizers=()))


def pool(name: str = "cpu") -> GPUPool:
    return applied(gpupool(name, accelerator="cpu", gpus_per_node=0, gpu_memory=None, price="0"))


def rv(obj: Resource) -> int:
    assert obj.metadata.resource_version is not None
    return int(obj.metadata.resource_version)


def next_event(watch: Any, deadline: float = 10.0) -> WatchEvent:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        event = watch.poll(0.5)
        if event is not None:
            return event  # type: ignore[no-any-return]
    raise AssertionError("no watch event before the deadline")


# -- create / get / list ---------------------------------------------------------------------


def test_create_sets_server_fields(store: SqliteStore) -> None:
    created = store.create(model())
    meta = created.metadata
    assert meta.uid and meta.creation_timestamp is not None
    assert meta.generation == 1
    assert meta.resource_version == "1"
    assert store.get("Model", "team-a", "m") == created
    assert store.get(Model, "team-a", "m") == created


def test_create_ignores_client_server_fields_and_status(store: SqliteStore) -> None:
    obj = model()
    obj.metadata.uid = "mine"
    obj.metadata.generation = 7
    obj.metadata.resource_version = "99"
    obj.status.architecture = "llama"
    created = store.create(obj)
    assert created.metadata.uid != "mine"
    assert created.metadata.generation == 1
    assert created.status.architecture is None


def test_create_twice_is_already_exists(store: SqliteStore) -> None:
    store.create(model())
    with pytest.raises(AlreadyExists, match=r'models\.corral\.dev "m" already exists'):
        store.create(model())
    store.create(model(namespace="team-b"))  # same name, other namespace


def test_namespaced_kind_needs_a_namespace(store: SqliteStore) -> None:
    with pytest.raises(Invalid) as info:
        store.create(model(namespace=None))
    assert info.value.problems[0].path == "metadata.namespace"


def test_cluster_scoped_kind_has_no_namespace(store: SqliteStore) -> None:
    created = store.create(pool())
    assert created.metadata.namespace is None
    assert store.get("GPUPool", None, "cpu").metadata.uid == created.metadata.uid
    assert [p.name for p in store.list("GPUPool").items] == ["cpu"]


def test_get_missing_is_not_found(store: SqliteStore) -> None:
    with pytest.raises(NotFound) as info:
        store.get("Model", "team-a", "nope")
    assert info.value.code == 404 and info.value.reason == "NotFound"


def test_unknown_kind_is_invalid(store: SqliteStore) -> None:
    with pytest.raises(Invalid, match="not a Corral kind"):
        store.list("Pod")


def test_list_by_namespace_and_label_selector(store: SqliteStore) -> None:
    store.create(model("a1", "team-a", {"app": "bot", "tier": "prod"}))
    store.create(model("a2", "team-a", {"app": "bot", "tier": "dev"}))
    store.create(model("b1", "team-b", {"app": "web"}))
    assert [m.name for m in store.list("Model").items] == ["a1", "a2", "b1"]
    assert [m.name for m in store.list("Model", "team-a").items] == ["a1", "a2"]
    assert [m.name for m in store.list("Model", label_selector="app=bot,tier!=dev").items] == ["a1"]
    assert [m.name for m in store.list("Model", label_selector={"app": "web"}).items] == ["b1"]
    assert [m.name for m in store.list("Model", label_selector="tier").items] == ["a1", "a2"]
    listed = store.list("Model", "team-b")
    assert listed.resource_version == "3"
    wire = listed.to_dict()
    assert wire["kind"] == "ModelList" and wire["metadata"] == {"resourceVersion": "3"}
    with pytest.raises(SelectorError):
        store.list("Model", label_selector="app in ()")


# -- update, generation, resourceVersion -------------------------------------------------------


def test_generation_bumps_on_spec_change_only(store: SqliteStore) -> None:
    created = store.create(model())
    labelled = created.model_copy(deep=True)
    labelled.metadata.labels = {"x": "y"}
    after_labels = store.update(labelled)
    assert after_labels.metadata.generation == 1
    assert rv(after_labels) > rv(created)

    changed = after_labels.model_copy(deep=True)
    changed.spec.display_name = "Bot"
    after_spec = store.update(changed)
    assert after_spec.metadata.generation == 2
    assert rv(after_spec) > rv(after_labels)

    status = store.patch_status(Model, "team-a", "m", {"architecture": "llama", "observedGeneration": 2})
    assert status.metadata.generation == 2
    assert rv(status) > rv(after_spec)
    assert status.spec == after_spec.spec


def test_noop_update_writes_nothing(store: SqliteStore) -> None:
    created = store.create(model())
    again = store.update(created)
    assert again.metadata.resource_version == created.metadata.resource_version
    assert store.resource_version() == created.metadata.resource_version


def test_spec_writes_never_change_status(store: SqliteStore) -> None:
    store.create(model())
    with_status = store.patch_status(Model, "team-a", "m", {"architecture": "llama"})
    incoming = with_status.model_copy(deep=True)
    incoming.status.architecture = "gpt2"
    incoming.spec.display_name = "x"
    updated = store.update(incoming)
    assert updated.status.architecture == "llama"
    assert updated.spec.display_name == "x"


def test_status_writes_never_change_spec_or_metadata(store: SqliteStore) -> None:
    created = store.create(model())
    incoming = created.model_copy(deep=True)
    incoming.spec.display_name = "sneaky"
    incoming.metadata.labels = {"sneaky": "yes"}
    incoming.status.parameters = 42
    replaced = store.replace_status(incoming)
    assert replaced.status.parameters == 42
    assert replaced.spec.display_name is None
    assert replaced.metadata.labels == {}
    assert replaced.metadata.generation == 1


def test_patch_status_is_a_merge_patch(store: SqliteStore) -> None:
    store.create(model())
    store.patch_status(Model, "team-a", "m", {"architecture": "llama", "parameters": 5})
    patched = store.patch_status(Model, "team-a", "m", {"parameters": None, "contextLength": 128})
    assert (patched.status.architecture, patched.status.parameters, patched.status.context_length) == (
        "llama",
        None,
        128,
    )


def test_stale_resource_version_is_conflict(store: SqliteStore) -> None:
    created = store.create(model())
    first = created.model_copy(deep=True)
    first.spec.display_name = "one"
    store.update(first)
    second = created.model_copy(deep=True)
    second.spec.display_name = "two"
    with pytest.raises(Conflict, match="the object has been modified"):
        store.update(second)
    with pytest.raises(Conflict):
        store.patch_status(
            "Model", "team-a", "m", {"parameters": 1}, resource_version=created.metadata.resource_version
        )
    with pytest.raises(Conflict):
        store.delete("Model", "team-a", "m", resource_version=created.metadata.resource_version)
    second.metadata.resource_version = None  # unconditional
    assert store.update(second).spec.display_name == "two"


def test_invalid_update_lists_field_paths(store: SqliteStore) -> None:
    store.create(model())
    with pytest.raises(Invalid) as info:
        store.patch(Model, "team-a", "m", {"spec": {"uri": "file:///w"}})
    assert "exactly one of catalogName and uri" in str(info.value)
    with pytest.raises(Invalid) as info:
        store.patch_status(Model, "team-a", "m", {"parameters": -1})
    assert [p.path for p in info.value.problems] == ["status.parameters"]


def test_merge_patch_spec_and_metadata(store: SqliteStore) -> None:
    store.create(model(labels={"a": "1", "b": "2"}))
    patched = store.patch(
        Model, "team-a", "m", {"metadata": {"labels": {"a": None, "c": "3"}}, "spec": {"displayName": "Bot"}}
    )
    assert patched.metadata.labels == {"b": "2", "c": "3"}
    assert patched.spec.display_name == "Bot"
    assert patched.metadata.generation == 2
    with pytest.raises(Invalid, match=r"metadata\.name cannot be changed"):
        store.patch(Model, "team-a", "m", {"metadata": {"name": "other"}})
    with pytest.raises(Conflict):
        store.patch(Model, "team-a", "m", {"metadata": {"resourceVersion": "1"}, "spec": {"displayName": "x"}})


def test_update_of_missing_object_is_not_found(store: SqliteStore) -> None:
    with pytest.raises(NotFound):
        store.update(model())
    with pytest.raises(NotFound):
        store.patch_status(Model, "team-a", "m", {})


# -- delete and finalizers -------------------------------------------------------------------


def test_delete_without_finalizers_removes(store: SqliteStore) -> None:
    store.create(model())
    gone = store.delete("Model", "team-a", "m")
    assert gone.name == "m"
    with pytest.raises(NotFound):
        store.get("Model", "team-a", "m")
    with pytest.raises(NotFound):
        store.delete("Model", "team-a", "m")


def test_finalizers_hold_deletion_until_removed(store: SqliteStore) -> None:
    obj = model()
    obj.metadata.finalizers = ["corral.dev/artifacts", "corral.dev/placement"]
    created = store.create(obj)
    deleting = store.delete("Model", "team-a", "m")
    assert deleting.metadata.deletion_timestamp is not None
    assert rv(deleting) > rv(created)
    assert store.delete("Model", "team-a", "m") == deleting  # idempotent while deleting

    with pytest.raises(Invalid, match="no new finalizers"):
        store.patch(Model, "team-a", "m", {"metadata": {"finalizers": ["corral.dev/artifacts", "x/new"]}})

    still = store.patch(Model, "team-a", "m", {"metadata": {"finalizers": ["corral.dev/placement"]}})
    assert store.get("Model", "team-a", "m").metadata.finalizers == ["corral.dev/placement"]
    assert still.metadata.deletion_timestamp == deleting.metadata.deletion_timestamp

    status = store.patch_status(Model, "team-a", "m", {"architecture": "llama"})  # status still writable
    last = status.model_copy(deep=True)
    last.metadata.finalizers = []
    removed = store.update(last)
    assert removed.metadata.finalizers == []
    with pytest.raises(NotFound):
        store.get("Model", "team-a", "m")


# -- watch -----------------------------------------------------------------------------------


def test_watch_without_version_replays_then_streams(store: SqliteStore) -> None:
    store.create(model("a"))
    store.create(model("other", "team-b"))
    with store.watch("Model", "team-a", timeout=30) as watch:
        first = next_event(watch)
        assert (first.type, first.object.name) == ("ADDED", "a")
        store.create(model("b"))
        store.create(model("c", "team-b"))  # other namespace: not seen
        store.patch_status(Model, "team-a", "b", {"parameters": 1})
        store.delete("Model", "team-a", "a")
        seen = [(e.type, e.object.name) for e in (next_event(watch), next_event(watch), next_event(watch))]
        assert seen == [("ADDED", "b"), ("MODIFIED", "b"), ("DELETED", "a")]
        assert watch.poll(0.05) is None


def test_watch_resumes_from_a_list_version(store: SqliteStore) -> None:
    store.create(model("a"))
    listed = store.list("Model")
    store.create(model("b"))
    store.patch(Model, "team-a", "a", {"spec": {"displayName": "A"}})
    watch = store.watch("Model", since_resource_version=listed.resource_version, timeout=30)
    events = [next_event(watch), next_event(watch)]
    assert [(e.type, e.object.name) for e in events] == [("ADDED", "b"), ("MODIFIED", "a")]
    assert events[1].object.metadata.generation == 2
    resumed = store.watch("Model", since_resource_version=events[0].object.metadata.resource_version, timeout=30)
    assert next_event(resumed).object.metadata.resource_version == events[1].object.metadata.resource_version
    watch.stop()
    resumed.stop()


def test_watch_label_selector_and_deleted_carries_last_state(store: SqliteStore) -> None:
    watch = store.watch("Model", since_resource_version=store.resource_version(), label_selector="app=bot", timeout=30)
    store.create(model("x", labels={"app": "web"}))
    store.create(model("y", labels={"app": "bot"}))
    deleted = store.delete("Model", "team-a", "y")
    added, gone = next_event(watch), next_event(watch)
    assert (added.type, added.object.name) == ("ADDED", "y")
    assert gone.type == "DELETED"
    assert gone.object.metadata.resource_version == deleted.metadata.resource_version
    watch.stop()


def test_watch_too_old_is_expired(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "small.db", history=10) as small:
        for i in range(70):
            small.create(model(f"m{i}"))
        with pytest.raises(Expired) as info:
            small.watch("Model", since_resource_version="3")
        assert info.value.code == 410
        watch = small.watch("Model", since_resource_version="65", timeout=5)
        assert next_event(watch).object.name == "m65"
        watch.stop()


def test_watch_stop_and_timeout_end_iteration(store: SqliteStore) -> None:
    watch = store.watch("Model", since_resource_version="0", timeout=0.2)
    assert list(watch) == []
    blocked = store.watch("Model", since_resource_version=store.resource_version())
    result: list[WatchEvent] = []
    thread = threading.Thread(target=lambda: result.extend(blocked))
    thread.start()
    blocked.stop()
    thread.join(timeout=10)
    assert not thread.is_alive() and result == []


def test_watch_sees_writes_from_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    with SqliteStore(path, poll_interval=0.05) as reader, SqliteStore(path) as writer:
        watch = reader.watch("Model", since_resource_version=reader.resource_version(), timeout=30)
        writer.create(model("from-writer"))
        assert next_event(watch).object.name == "from-writer"
        watch.stop()


# -- concurrency and durability ---------------------------------------------------------------


def test_concurrent_writers_get_unique_versions(store: SqliteStore) -> None:
    def work(offset: int) -> None:
        for i in range(10):
            store.create(model(f"t{offset}-{i}"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    items = store.list("Model").items
    versions = {item.metadata.resource_version for item in items}
    assert len(items) == len(versions) == 40
    assert store.resource_version() == "40"


def test_a_second_store_on_the_same_file_sees_everything(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    first = SqliteStore(path)
    created = first.create(model())
    first.patch_status(Model, "team-a", "m", {"architecture": "llama"})
    first.create(job())
    first.record_event(created, "Warning", "LicenseForbidden", "commercial use forbidden")
    second = SqliteStore(path)  # first is left open, as after a crash of its process
    got = second.get(Model, "team-a", "m")
    assert got.metadata.uid == created.metadata.uid and got.status.architecture == "llama"
    assert [j.name for j in second.list("FineTuneJob").items] == ["bot"]
    assert second.resource_version() == first.resource_version() == "3"
    assert second.list_events("Model", "team-a", "m")[0].reason == "LicenseForbidden"
    bumped = second.create(model("n"))
    assert rv(bumped) == 4
    first.close()
    second.close()


def test_failed_write_leaves_nothing_behind(store: SqliteStore) -> None:
    store.create(model())
    before = store.resource_version()
    with pytest.raises(Invalid):
        store.patch_status(Model, "team-a", "m", {"parameters": -1})
    assert store.resource_version() == before


# -- events ----------------------------------------------------------------------------------


def test_events_fold_repeats(store: SqliteStore) -> None:
    created = store.create(job())
    store.record_event(created, "Normal", "Admitted", "placed on pool cpu")
    store.record_event(created, "Normal", "Admitted", "placed on pool cpu")
    store.record_event(created, "Warning", "BackOff", "driver unreachable")
    events = store.list_events("FineTuneJob", "team-a", "bot")
    assert [(e.reason, e.count) for e in events] == [("Admitted", 2), ("BackOff", 1)]
    wire = events[0].to_dict()
    assert wire["kind"] == "Event"
    assert wire["involvedObject"] == {
        "apiVersion": "corral.dev/v1alpha1",
        "kind": "FineTuneJob",
        "name": "bot",
        "namespace": "team-a",
        "uid": created.metadata.uid,
    }
    with pytest.raises(Invalid):
        store.record_event(created, "Error", "Boom", "x")  # type: ignore[arg-type]
    with pytest.raises(Invalid):
        store.record_event(created, "Normal", "not camel", "x")


# -- bounded: object size, watch-log bytes, file modes ------------------------------------------


def test_objects_over_one_and_a_half_mib_are_refused_and_nothing_is_written(store: SqliteStore) -> None:
    from corral.store import MAX_OBJECT_BYTES, TooLarge

    big = model("big")
    big.metadata.annotations["x"] = "y" * MAX_OBJECT_BYTES
    with pytest.raises(TooLarge) as err:
        store.create(big)
    assert err.value.code == 413 and "at most" in err.value.message
    with pytest.raises(NotFound):
        store.get(Model, "team-a", "big")
    small = store.create(model("grows"))
    with pytest.raises(TooLarge):
        store.patch(Model, "team-a", "grows", {"metadata": {"annotations": {"x": "y" * MAX_OBJECT_BYTES}}})
    assert store.get(Model, "team-a", "grows").metadata.resource_version == small.metadata.resource_version


def test_the_watch_log_is_compacted_by_bytes_too(tmp_path: Path) -> None:
    """Full copies of big objects must not pile up in the log: beyond the byte budget, old changes go."""
    with SqliteStore(tmp_path / "c.db") as store:
        store._db.history_bytes = 200_000
        first = store.create(model("m"))
        for i in range(70):  # past a compaction point (every 64 writes)
            store.patch(Model, "team-a", "m", {"metadata": {"annotations": {"blob": f"{i}" + "z" * 20_000}}})
        with store._db.read() as conn:
            kept = conn.execute("SELECT sum(length(body)), count(*) FROM changes").fetchone()
        assert kept[0] <= 200_000 + 8 * 21_000 and kept[1] < 20  # the budget, plus the writes since rv 64
        with pytest.raises(Expired):
            store.watch(Model, "team-a", first.metadata.resource_version)


def test_the_database_is_private(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "state" / "c.db") as store:
        store.create(model())
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    for path in (tmp_path / "state").iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
