"""The ModelDeployment reconciler: Serve config, status from Serve, in-place updates, license, delete."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
import yaml

from corral.api.v1alpha1 import (
    Condition,
    ModelDeployment,
)
from corral.api.v1alpha1.model import ModelArtifact, ModelStatus
from corral.control import (
    ControlSettings,
    DeleteServe,
    DeploymentWorld,
    DeployServe,
    PatchObject,
    RecordEvent,
    Result,
    app_config,
    config_matches,
    reconcile_deployment,
)
from corral.drivers import FakeDriver, Handle, Owner
from tests.support import objects
from tests.support.objects import NS, model

NOW = datetime(2025, 1, 1, tzinfo=UTC)
SETTINGS = ControlSettings(artifact_root="file:///srv/a")


MODELS = {"tiny": model("tiny"), "bot": model("bot", adapter_of="tiny")}
deployment = partial(objects.deployment, "support", adapters=("bot",))


def world(driver: FakeDriver | None = None, **kw: Any) -> DeploymentWorld:
    app = driver.app_states.get("team-a-support") if driver else None
    base: dict[str, Any] = {"now": NOW, "models": MODELS, "app": app, "endpoint": "http://127.0.0.1:8000"}
    base.update(kw)
    return DeploymentWorld(settings=SETTINGS, **base)


def apply(driver: FakeDriver, result: Result) -> None:
    for action in result.actions:
        if isinstance(action, DeployServe):
            driver.deploy_serve(action.handle, action.config)
        elif isinstance(action, DeleteServe):
            driver.delete_serve_app(action.handle, action.app_name)


def step(dep: ModelDeployment, w: DeploymentWorld) -> tuple[ModelDeployment, Result]:
    result = reconcile_deployment(dep, w)
    return dep.model_copy(update={"status": result.status}), result


def ready_cond(dep: ModelDeployment) -> Condition:
    return next(c for c in dep.status.conditions if c.type == "Ready")


def test_missing_model_waits() -> None:
    dep, result = step(deployment(), world(models={}))
    assert dep.status.phase == "Pending"
    assert ready_cond(dep).reason == "ModelNotFound"
    assert not any(isinstance(a, DeployServe) for a in result.actions)


def test_a_model_that_cannot_be_resolved_is_named_in_the_error() -> None:
    with pytest.raises(KeyError) as missing:
        app_config(deployment(), {"tiny": MODELS["tiny"]})
    assert str(missing.value) == "Model team-a/bot not found"
    bare = MODELS["tiny"].model_copy(update={"status": ModelStatus()})
    with pytest.raises(KeyError) as unready:
        app_config(deployment(adapters=()), {"tiny": bare})
    assert str(unready.value).startswith("Model team-a/tiny has no artifact yet")


def test_adapter_of_another_base_is_refused() -> None:
    models = {**MODELS, "bot": model("bot", adapter_of="other")}
    dep, _ = step(deployment(), world(models=models))
    assert dep.status.phase == "Failed"
    assert ready_cond(dep).reason == "AdapterBaseMismatch"


def test_deploys_one_app_named_after_namespace_and_name() -> None:
    driver = FakeDriver()
    dep, result = step(deployment(), world(driver))
    deploys = [a for a in result.actions if isinstance(a, DeployServe)]
    assert len(deploys) == 1
    app = deploys[0].config["applications"][0]
    assert app["name"] == "team-a-support" and app["route_prefix"] == "/team-a/support"
    assert app["import_path"] == "corral.serving:build_app"
    assert app["args"]["adapters"] == [{"name": "bot", "uri": "file:///srv/a/bot"}]
    assert dep.status.phase == "Deploying"
    assert ready_cond(dep).status == "False"
    assert dep.status.endpoint == "http://127.0.0.1:8000/team-a/support/v1"
    assert dep.status.served_models == ["tiny", "bot"]


def test_ready_when_serve_runs_and_idempotent() -> None:
    driver = FakeDriver()
    dep, result = step(deployment(), world(driver))
    apply(driver, result)
    dep, result = step(dep, world(driver))
    assert not any(isinstance(a, DeployServe) for a in result.actions)  # same config already deployed
    assert dep.status.phase == "Deploying"
    driver.set_app("team-a-support", "RUNNING", running=1, target=1)
    dep, result = step(dep, world(driver))
    assert dep.status.phase == "Ready"
    assert ready_cond(dep).reason == "Serving"
    assert dep.status.ready_replicas == 1 and dep.status.replicas == 1
    assert [a for a in result.actions if not isinstance(a, RecordEvent)] == []
    again, result2 = step(dep, world(driver))
    assert again.status == dep.status and result2.actions == []


def test_spec_change_rolls_out_in_place() -> None:
    driver = FakeDriver(auto_ready=True)
    dep, result = step(deployment(), world(driver))
    apply(driver, result)
    dep, _ = step(dep, world(driver))
    assert dep.status.phase == "Ready"
    models = {**MODELS, "bot2": model("bot2", adapter_of="tiny")}
    changed = deployment(generation=2, adapters=("bot", "bot2")).model_copy(update={"status": dep.status})
    dep2, result = step(changed, world(driver, models=models))
    deploys = [a for a in result.actions if isinstance(a, DeployServe)]
    assert len(deploys) == 1 and deploys[0].app_names == ["team-a-support"]
    assert dep2.status.phase == "Updating"
    assert ready_cond(dep2).status == "True"  # old replicas keep serving
    apply(driver, result)
    dep3, result = step(dep2, world(driver, models=models))
    assert dep3.status.phase == "Ready" and dep3.status.served_models == ["tiny", "bot", "bot2"]


def test_deploy_failed_is_reported() -> None:
    driver = FakeDriver()
    dep, result = step(deployment(), world(driver))
    apply(driver, result)
    driver.set_app("team-a-support", "DEPLOY_FAILED", running=0, message="ImportError: no module")
    dep, _ = step(dep, world(driver))
    assert dep.status.phase == "Failed"
    assert ready_cond(dep).reason == "DeployFailed" and "ImportError" in ready_cond(dep).message


def test_commercial_use_refused_and_app_removed() -> None:
    driver = FakeDriver(auto_ready=True)
    models = {**MODELS, "tiny": model("tiny", commercial="forbidden")}
    dep, result = step(deployment(intendedUse="commercial"), world(driver, models=models))
    assert dep.status.phase == "Failed"
    assert ready_cond(dep).reason == "LicenseForbidsCommercialUse"
    assert "tiny" in ready_cond(dep).message and "research" in ready_cond(dep).message
    assert not any(isinstance(a, DeployServe) for a in result.actions)
    driver.deploy_serve(
        Handle.of(dep), {"applications": [{"name": "team-a-support", "route_prefix": "/team-a/support"}]}
    )
    _, result = step(dep, world(driver, models=models))
    assert DeleteServe(Handle.of(dep), "team-a-support") in result.actions


def test_delete_removes_app_then_finalizer() -> None:
    driver = FakeDriver(auto_ready=True)
    dep, result = step(deployment(), world(driver))
    apply(driver, result)
    deleting = dep.model_copy(update={"metadata": dep.metadata.model_copy(update={"deletion_timestamp": NOW})})
    _, result = step(deleting, world(driver))
    assert result.actions == [DeleteServe(Handle.of(dep), "team-a-support")]
    apply(driver, result)
    _, result = step(deleting, world(driver))
    assert result.actions == [PatchObject("ModelDeployment", NS, "support", {"metadata": {"finalizers": []}})]


def test_deploy_carries_the_owner_and_the_placement_just_decided() -> None:
    pool = objects.gpupool("l4", accelerator="nvidia-l4", gpu_memory="24Gi", nodeSelector={"pool": "l4"})
    spec = {"resources": {"gpusPerReplica": 1}, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}
    tiny = MODELS["tiny"]
    sized = tiny.status.model_copy(
        update={"artifact": ModelArtifact(uri="file:///srv/a/tiny", size_bytes=10), "parameters": 1377408}
    )
    models = {**MODELS, "tiny": tiny.model_copy(update={"status": sized})}
    dep, result = step(deployment(adapters=(), **spec), world(pools=(pool,), models=models))
    deploy = next(a for a in result.actions if isinstance(a, DeployServe))
    assert deploy.handle.owner == Owner("ModelDeployment", "support", NS, "uid-support")
    placement = deploy.handle.placement
    assert dep.status.placement is not None and dep.status.placement.pool == "l4"
    assert placement is not None and placement.pool == "l4" and placement.node_selector == {"pool": "l4"}
    assert (placement.replicas, placement.max_replicas, placement.gpus) == (1, 3, 1)


def test_an_upgrade_in_progress_reaches_the_ready_condition() -> None:
    from corral.drivers.kuberay import deployment_status_from_rayservice

    driver = FakeDriver(auto_ready=True)
    dep, result = step(deployment(), world(driver))
    apply(driver, result)
    dep, _ = step(dep, world(driver))
    assert dep.status.phase == "Ready"
    deployed = driver.apps["team-a-support"]
    rayservice = {
        "spec": {"serveConfigV2": yaml.safe_dump({"applications": [deployed]})},
        "status": {
            "conditions": [{"type": "UpgradeInProgress", "status": "True", "message": "new cluster"}],
            "activeServiceStatus": {
                "applicationStatuses": {
                    "team-a-support": {
                        "status": "RUNNING",
                        "serveDeploymentStatuses": {"CorralLLMServer": {"status": "HEALTHY"}},
                    }
                }
            },
        },
    }
    upgrading = deployment_status_from_rayservice(rayservice, "team-a-support").app
    assert (upgrading.status, upgrading.reason) == ("DEPLOYING", "UpgradeInProgress")
    changed = deployment(generation=2).model_copy(update={"status": dep.status})
    dep2, _ = step(changed, world(app=upgrading))
    assert dep2.status.phase == "Updating"
    assert (ready_cond(dep2).status, ready_cond(dep2).reason, ready_cond(dep2).message) == (
        "True",
        "UpgradeInProgress",
        "new cluster",
    )
    fresh, _ = step(deployment(), world(app=upgrading))  # never ready before: Deploying, with KubeRay's reason
    assert fresh.status.phase == "Deploying" and ready_cond(fresh).reason == "UpgradeInProgress"


def test_config_matches_is_a_subset_compare() -> None:
    assert config_matches({"a": 1, "b": [{"c": 2}]}, {"a": 1, "b": [{"c": 2, "d": 3}], "e": 4})
    assert not config_matches({"a": 1}, {"a": 2})
    assert not config_matches({"b": [1, 2]}, {"b": [1]})


def _zero(**extra: Any) -> ModelDeployment:
    scaling = {"minReplicas": 0, "maxReplicas": 2, "holdTimeoutSeconds": 90, **extra}
    return deployment(autoscaling=scaling)


def _at(seconds: float) -> datetime:
    from datetime import timedelta

    return NOW + timedelta(seconds=seconds)


def test_scale_to_zero_phases_and_cold_starts() -> None:
    driver = FakeDriver()
    dep, result = step(_zero(), world(driver))
    apply(driver, result)
    driver.set_app("team-a-support", "RUNNING", running=0, target=0)
    dep, result = step(dep, world(driver))
    assert dep.status.phase == "ScaledToZero"
    assert (dep.status.replicas, dep.status.ready_replicas) == (0, 0)
    cond = ready_cond(dep)
    assert cond.status == "True" and cond.reason == "ScaledToZero"  # a request is answered: it waits
    assert "no request yet" in cond.message and "90 s" in cond.message
    cs = dep.status.cold_start
    assert cs is not None and cs.count == 0 and cs.hold_timeout_seconds == 90 and cs.estimated_seconds > 0
    assert [a.reason for a in result.actions if isinstance(a, RecordEvent)] == ["ScaledToZero"]

    driver.set_app("team-a-support", "RUNNING", running=0, target=1)  # a request arrived: Serve wants a replica
    dep, result = step(dep, world(driver, now=_at(10)))
    assert dep.status.phase == "ScalingUp" and ready_cond(dep).reason == "ScalingUp"
    assert result.requeue_after == SETTINGS.deploying_seconds
    assert dep.status.cold_start is not None and dep.status.cold_start.scaling_up_since == _at(10)
    dep, _ = step(dep, world(driver, now=_at(14)))  # still starting: the start time holds
    assert dep.status.cold_start is not None and dep.status.cold_start.scaling_up_since == _at(10)

    driver.set_app("team-a-support", "RUNNING", running=1, target=1)
    dep, _ = step(dep, world(driver, now=_at(22.5)))
    assert dep.status.phase == "Ready" and ready_cond(dep).reason == "Serving"
    cs = dep.status.cold_start
    assert cs is not None and (cs.count, cs.last_seconds, cs.scaling_up_since) == (1, 13, None)
    assert cs.estimated_seconds == 13  # measured now, no longer the size estimate

    driver.set_app("team-a-support", "RUNNING", running=0, target=0)  # idle past downscaleDelaySeconds
    dep, _ = step(dep, world(driver, now=_at(100)))
    assert dep.status.phase == "ScaledToZero"
    cs = dep.status.cold_start
    assert cs is not None and cs.last_active_time == _at(100) and cs.count == 1
    assert f"last active {_at(100).isoformat()}" in ready_cond(dep).message and "about 13 s" in ready_cond(dep).message
    again, result = step(dep, world(driver, now=_at(130)))
    assert again.status == dep.status and result.actions == []  # nothing changes while it sits at zero


def test_min_replicas_above_zero_has_no_cold_start_status() -> None:
    driver = FakeDriver(auto_ready=True)
    dep, result = step(deployment(autoscaling={"minReplicas": 1, "maxReplicas": 2}), world(driver))
    apply(driver, result)
    dep, _ = step(dep, world(driver))
    assert dep.status.phase == "Ready" and dep.status.cold_start is None
