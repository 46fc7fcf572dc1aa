"""The operator's admission ledger and its world from kopf's indexes, without a server."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from corral.api.v1alpha1 import FineTuneJob, Resource
from corral.control._plan import _Last
from corral_operator._admission import GONE_GRACE_SECONDS, LEDGER_TTL_SECONDS, Ledger, may_book
from corral_operator._world import World, parsed, world_of


def _job(name: str, rv: str, *, uid: str = "", placed: bool = False, phase: str | None = None) -> FineTuneJob:
    status: dict[str, Any] = {}
    if phase:
        status["phase"] = phase
    if placed:
        status["placement"] = {"pool": "p", "replicas": 1, "gpusPerReplica": 1, "gpus": 1}
    return FineTuneJob.model_validate(
        {
            "apiVersion": "corral.dev/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": name, "namespace": "ns", "uid": uid or f"uid-{name}", "resourceVersion": rv},
            "spec": {"baseModel": {"name": "m"}, "datasets": [{"name": "d"}], "resources": {"pool": "p"}},
            "status": status,
        }
    )


def _world(*objs: Resource) -> World:
    world: World = {"FineTuneJob": {}}
    for obj in objs:
        world["FineTuneJob"].setdefault(obj.metadata.namespace, {})[obj.metadata.name] = obj
    return world


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_written_status_the_index_has_not_delivered_is_laid_over_the_world() -> None:
    ledger = Ledger()
    ledger.record(_job("a", "12", placed=True, phase="Admitted"))
    world = _world(_job("a", "10"))
    snap = ledger.overlay(world)
    assert snap.in_namespace("FineTuneJob", "ns")["a"].metadata.resource_version == "12"
    assert len(snap.allocations()) == 1
    assert world["FineTuneJob"]["ns"]["a"].metadata.resource_version == "10"  # the caller's copy is unchanged


def test_the_ledger_forgets_once_the_index_caught_up_or_the_object_was_replaced() -> None:
    ledger = Ledger()
    ledger.record(_job("a", "12", placed=True, phase="Admitted"))
    ledger.record(_job("b", "13", placed=True, phase="Admitted"))
    snap = ledger.overlay(_world(_job("a", "15"), _job("b", "20", uid="another-b")))
    assert snap.in_namespace("FineTuneJob", "ns")["a"].metadata.resource_version == "15"
    assert snap.in_namespace("FineTuneJob", "ns")["b"].metadata.uid == "another-b"
    assert len(ledger) == 0


def test_an_object_missing_from_the_world_counts_for_a_grace_period_only() -> None:
    clock = _Clock()
    ledger = Ledger(clock=clock)
    ledger.record(_job("late", "7", placed=True, phase="Admitted"))
    assert "late" in ledger.overlay(_world()).in_namespace("FineTuneJob", "ns")  # world copied before it existed
    clock.now = GONE_GRACE_SECONDS + 1
    assert "late" not in ledger.overlay(_world()).in_namespace("FineTuneJob", "ns")
    assert len(ledger) == 0


def test_versions_that_cannot_be_compared_expire() -> None:
    clock = _Clock()
    ledger = Ledger(clock=clock)
    ledger.record(_job("a", "v2", placed=True, phase="Admitted"))

    def seen() -> str | None:
        return ledger.overlay(_world(_job("a", "v1"))).in_namespace("FineTuneJob", "ns")["a"].metadata.resource_version

    assert seen() == "v2"
    clock.now = LEDGER_TTL_SECONDS + 1
    assert seen() == "v1"


def test_latest_prefers_the_newer_of_the_body_and_the_ledger() -> None:
    ledger = Ledger()
    ledger.record(_job("a", "12", placed=True, phase="Admitted"))
    assert ledger.latest(_job("a", "10")).metadata.resource_version == "12"
    assert ledger.latest(_job("a", "14")).metadata.resource_version == "14"
    assert ledger.latest(_job("z", "1")).metadata.name == "z"


def test_who_may_book() -> None:
    assert may_book(_job("new", "1"))
    assert may_book(_job("waiting", "1", phase="Pending"))
    assert not may_book(_job("holding", "1", placed=True, phase="Admitted"))
    assert not may_book(_job("done", "1", phase="Succeeded"))
    deleted = _job("gone", "1")
    deleted.metadata.deletion_timestamp = datetime.now(UTC)
    assert not may_book(deleted)


def test_world_of_copies_kopf_indexes_and_parsed_finds_the_very_version() -> None:
    a = _job("a", "5")
    indexes = {"corral_finetunejobs": {"ns": [a]}, "corral_gpupools": {}}
    world = world_of(indexes)
    assert world["FineTuneJob"] == {"ns": {"a": a}} and world["Model"] == {}
    body = {"metadata": {"name": "a", "namespace": "ns", "uid": "uid-a", "resourceVersion": "5"}}
    assert parsed(world, "FineTuneJob", body) is a
    assert parsed(world, "FineTuneJob", {**body, "metadata": {**body["metadata"], "resourceVersion": "6"}}) is None


def test_plan_memos_are_per_thread() -> None:
    memo: _Last[str] = _Last()
    key = (object(),)
    memo.put(key, "mine")
    seen: list[str | None] = []
    thread = threading.Thread(target=lambda: seen.append(memo.get(key)))
    thread.start()
    thread.join()
    assert seen == [None] and memo.get(key) == "mine"


def test_queued_requests_are_computed_once_per_object_version(monkeypatch: Any) -> None:
    from corral.control import _snapshot

    calls: list[str] = []

    def counting(obj: Any, models: Any, datasets: Any) -> None:
        calls.append(obj.metadata.name)

    monkeypatch.setattr(_snapshot, "waiting_request", counting)
    ledger = Ledger()
    a, b = _job("a", "1"), _job("b", "1")
    ledger.overlay(_world(a, b)).queue()
    ledger.overlay(_world(a, b)).queue()
    assert sorted(calls) == ["a", "b"]
    ledger.overlay(_world(a, _job("b", "2"))).queue()
    assert sorted(calls) == ["a", "b", "b"]


def test_only_a_booking_lets_go_of_an_entry_so_an_older_world_still_sees_the_booking() -> None:
    """A world copied before another, newer one let go of an entry would miss the booking (over-commit)."""
    ledger = Ledger()
    ledger.record(_job("a", "12", placed=True, phase="Admitted"))
    newer = ledger.overlay(_world(_job("a", "15", placed=True, phase="Admitted")), prune=False)
    assert newer.in_namespace("FineTuneJob", "ns")["a"].metadata.resource_version == "15"
    assert len(ledger) == 1  # kept: another caller may hold a world from before version 12
    older = ledger.overlay(_world(_job("a", "10")), prune=False)
    assert len(older.allocations()) == 1
    ledger.overlay(_world(_job("a", "15", placed=True, phase="Admitted")))  # a booking (world copied under the lock)
    assert len(ledger) == 0
