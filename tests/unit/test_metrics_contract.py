"""Every registered metric follows ``corral.observability.CONTRACT``; the store collector's values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.samples import Sample

from corral.api.v1alpha1 import FineTuneJob, ModelDeployment
from corral.control import ControlSettings, Runner
from corral.control._placement import allocation_of
from corral.controlapi import TokenAuth, create_app
from corral.drivers import FakeDriver
from corral.observability import (
    BY_NAME,
    CONTRACT,
    StoreCollector,
    contract_problems,
    events_uri_under,
    register_store_collector,
)
from corral.serving._metrics import METRIC_NAMES
from corral.store import SqliteStore
from tests.support.metrics_world import NS, populate, serving_registry


@pytest.fixture
def world(tmp_path: Path) -> tuple[SqliteStore, str]:
    store = SqliteStore(tmp_path / "state.db")
    root = (tmp_path / "artifacts").as_uri()
    populate(store, root)
    return store, root


def _registries(store: SqliteStore, root: str) -> dict[str, CollectorRegistry]:
    api = CollectorRegistry()
    app = create_app(store, TokenAuth([]), registry=api, artifact_root=root)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
    runner_reg = CollectorRegistry()  # an empty store: reconciling must not change the world the API reports
    empty = SqliteStore(Path(root.removeprefix("file://")).parent / "empty.db")
    Runner(empty, FakeDriver(auto_ready=True), ControlSettings(artifact_root=root), registry=runner_reg).run_once()
    return {"controlapi": api, "runner": runner_reg, "serving": serving_registry()}


def _samples(registry: CollectorRegistry) -> dict[str, tuple[str, str, set[str]]]:
    """Family name as exposed -> (type, help, label names)."""
    out: dict[str, tuple[str, str, set[str]]] = {}
    for family in registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels: set[str] = set()
        sample: Sample
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
        out[name] = (family.type, family.documentation, labels)
    return out


@pytest.mark.parametrize("spec", CONTRACT, ids=lambda s: s.name)
def test_every_entry_follows_the_naming_rules(spec: Any) -> None:
    assert contract_problems(spec) == []


def test_the_rules_catch_bad_names() -> None:
    from corral.observability import MetricSpec

    assert contract_problems(MetricSpec("corral_serving_latency", "histogram", "Latency.", (), "", "serving"))
    assert contract_problems(MetricSpec("corral_control_things", "counter", "Things.", (), "", "runner"))
    assert contract_problems(MetricSpec("corral_control_x_total", "counter", "X.", ("request_id",), "", "runner"))
    assert contract_problems(MetricSpec("corral_misc_x_seconds", "gauge", "X.", (), "seconds", "store"))
    assert contract_problems(MetricSpec("corral_control_wait_seconds", "gauge", "no period", (), "seconds", "store"))


def test_every_registered_metric_is_in_the_contract(world: tuple[SqliteStore, str]) -> None:
    seen: set[str] = set()
    for source, registry in _registries(*world).items():
        for name, (type_, help_, labels) in _samples(registry).items():
            spec = BY_NAME.get(name)
            assert spec is not None, f"{source} exports {name}, which is not in the contract"
            assert type_ == spec.type, f"{name}: exported as {type_}, contract says {spec.type}"
            assert help_ == spec.help, f"{name}: HELP differs from the contract"
            assert labels <= set(spec.labels), f"{name}: labels {labels - set(spec.labels)} not in the contract"
            seen.add(name)
    missing = {spec.name for spec in CONTRACT} - seen
    assert not missing, f"in the contract but exported by nothing in this world: {sorted(missing)}"


def test_serving_table_agrees_with_the_contract() -> None:
    for name, (kind, doc) in METRIC_NAMES.items():
        spec = BY_NAME[name]
        assert (spec.type, spec.help, spec.source) == (kind, doc, "serving")
    assert {s.name for s in CONTRACT if s.source == "serving"} == set(METRIC_NAMES)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_store_collector_values(world: tuple[SqliteStore, str]) -> None:
    store, root = world
    reg = CollectorRegistry()
    register_store_collector(store, reg, events_uri_under(root))
    assert _value(reg, "corral_control_objects", kind="FineTuneJob", namespace=NS, phase="Running") == 1
    assert _value(reg, "corral_control_objects", kind="Dataset", namespace=NS, phase="NotReady") == 1
    assert _value(reg, "corral_control_objects", kind="Model", namespace=NS, phase="Ready") == 1
    assert _value(reg, "corral_scheduler_allocated_gpus", pool="a100", namespace=NS, kind="FineTuneJob") == 2
    assert _value(reg, "corral_scheduler_allocated_gpus", pool="a100", namespace=NS, kind="ModelDeployment") == 1
    assert _value(reg, "corral_scheduler_pending_gpus", pool="a100", namespace=NS, kind="FineTuneJob") == 4
    assert _value(reg, "corral_scheduler_allocated_cost_usd_per_hour", pool="a100", namespace=NS) == 7.5
    assert _value(reg, "corral_scheduler_capacity_gpus", pool="a100") == 16
    assert _value(reg, "corral_training_progress_ratio", namespace=NS, job="bot") == 0.4
    assert _value(reg, "corral_training_phase", namespace=NS, job="bot", phase="Running") == 1
    assert _value(reg, "corral_training_phase", namespace=NS, job="bot", phase="Failed") == 0
    assert _value(reg, "corral_training_checkpoints_total", namespace=NS, job="bot") == 2
    assert _value(reg, "corral_training_restarts_total", namespace=NS, job="bot") == 1
    assert _value(reg, "corral_training_cost_usd", namespace=NS, job="bot") == 0.5
    assert _value(reg, "corral_training_epoch", namespace=NS, job="bot") == 1
    assert _value(reg, "corral_training_learning_rate", namespace=NS, job="bot") == 0.0002
    assert _value(reg, "corral_training_preemptions_total", namespace=NS, job="bot") == 1
    labels = {"namespace": NS, "deployment": "support", "model": "support-bot"}
    assert _value(reg, "corral_serving_ready_replicas", **labels) == 1
    assert _value(reg, "corral_serving_desired_replicas", **labels) == 2
    assert _value(reg, "corral_serving_cold_starts_total", **labels) == 3
    assert _value(reg, "corral_serving_last_cold_start_seconds", **labels) == 12


def test_allocation_rule_matches_the_scheduler(world: tuple[SqliteStore, str]) -> None:
    store, _ = world
    reg = CollectorRegistry()
    register_store_collector(store, reg)
    total = sum(
        a.gpus
        for a in (allocation_of(o) for o in [*store.list(FineTuneJob).items, *store.list(ModelDeployment).items])
        if a is not None
    )
    exported = sum(s.value for f in reg.collect() if f.name == "corral_scheduler_allocated_gpus" for s in f.samples)
    assert exported == total == 3


def test_without_events_location_the_event_counters_are_left_out(world: tuple[SqliteStore, str]) -> None:
    store, _ = world
    reg = CollectorRegistry()
    reg.register(StoreCollector(store))
    assert _value(reg, "corral_training_checkpoints_total", namespace=NS, job="bot") is None
    assert _value(reg, "corral_training_step", namespace=NS, job="bot") == 40


def test_registering_twice_rebinds_to_the_newest_store(world: tuple[SqliteStore, str], tmp_path: Path) -> None:
    store, _ = world
    reg = CollectorRegistry()
    first = register_store_collector(SqliteStore(tmp_path / "empty.db"), reg)
    assert _value(reg, "corral_scheduler_capacity_gpus", pool="a100") is None
    assert register_store_collector(store, reg) is first
    assert _value(reg, "corral_scheduler_capacity_gpus", pool="a100") == 16


def test_a_store_that_does_not_answer_leaves_store_metrics_out(world: tuple[SqliteStore, str]) -> None:
    store, _ = world
    reg = CollectorRegistry()
    register_store_collector(store, reg)
    store.close()
    assert [f for f in reg.collect() if f.samples] == []


def test_runner_counts_reconciles_by_kind_and_result(world: tuple[SqliteStore, str]) -> None:
    store, root = world
    reg = CollectorRegistry()
    runner = Runner(store, FakeDriver(auto_ready=True), ControlSettings(artifact_root=root), registry=reg)
    original = runner._reconcile

    def flaky(obj: Any, snap: Any) -> Any:
        if obj.kind == "GPUPool":
            raise RuntimeError("boom")
        return original(obj, snap)

    runner._reconcile = flaky  # type: ignore[method-assign]
    runner.run_once()
    assert _value(reg, "corral_control_reconciles_total", kind="GPUPool", result="error") == 1
    assert (_value(reg, "corral_control_reconciles_total", kind="FineTuneJob", result="success") or 0) >= 1
    assert (_value(reg, "corral_control_reconcile_duration_seconds_count", kind="Model") or 0) >= 1
    assert _value(reg, "corral_control_queue_depth") == 0
    assert _value(reg, "corral_control_backoff_objects") == 1
    assert (_value(reg, "corral_control_last_pass_timestamp_seconds") or 0) > 0
