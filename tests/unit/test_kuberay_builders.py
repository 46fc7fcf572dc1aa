"""KubeRay builders and status mappers: RayJob/RayService fields, placement, Kueue, secrets, names, status."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import yaml

from corral.api.v1alpha1 import (
    FineTuneJob,
    GPUPool,
    Model,
    ModelDeployment,
    ModelSpec,
    ObjectMeta,
)
from corral.api.v1alpha1.model import ModelArtifact, ModelStatus
from corral.control import ControlSettings, app_config, job_files
from corral.control._jobspec import entrypoint
from corral.drivers import Handle
from corral.drivers.kuberay import (
    CHAT_TOKENS_ENV,
    KUEUE_QUEUE_LABEL,
    MAX_NAME_LENGTH,
    NETWORK_POLICY_NAME,
    RAY_POD_LABELS,
    KubeRaySettings,
    PodPlacement,
    build_ray_network_policy,
    build_rayjob,
    build_rayservice,
    child_name,
    deployment_status_from_rayservice,
    finetunejob_status_from_rayjob,
    ray_accelerator_type,
    rayjob_name,
    rayservice_name,
)

NS = "team-a"
CONTROL = ControlSettings(artifact_root="s3://corral/artifacts")
SETTINGS = KubeRaySettings(
    image="corral/ray:1",
    gpu_image="corral/ray-gpu:1",
    service_account="corral-ray",
    s3_secret_name="corral-s3",
    s3_endpoint_url="http://minio:9000",
    ray_version="2.60.0",
)


def a100_pool() -> GPUPool:
    return GPUPool.model_validate(
        {
            "metadata": {"name": "a100"},
            "spec": {
                "acceleratorType": "nvidia-a100-80gb",
                "gpusPerNode": 8,
                "gpuMemory": "80Gi",
                "maxNodes": 4,
                "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "pricePerGpuHour": "3.67",
            },
        }
    )


def finetunejob(**resources: Any) -> FineTuneJob:
    return FineTuneJob.model_validate(
        {
            "metadata": {"name": "bot", "namespace": NS, "uid": "uid-ftj", "generation": 2},
            "spec": {
                "baseModel": {"name": "llama"},
                "datasets": [{"name": "faq"}],
                "resources": {"workers": 2, "gpusPerWorker": 1, "cpusPerWorker": "4", "memoryPerWorker": "32Gi"}
                | resources,
                "activeDeadlineSeconds": 3600,
            },
        }
    )


def deployment(**spec: Any) -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "metadata": {"name": "bot", "namespace": NS, "uid": "uid-dep", "generation": 1},
            "spec": {"model": {"name": "tiny"}, "engine": "transformers", "replicas": 2} | spec,
        }
    )


def ready_model(name: str) -> Model:
    return Model(
        metadata=ObjectMeta(name=name, namespace=NS),
        spec=ModelSpec(uri=f"s3://corral/models/{name}"),
        status=ModelStatus(artifact=ModelArtifact(uri=f"s3://corral/models/{name}")),
    )


def rayjob_for(job: FineTuneJob, pool: GPUPool | None = None) -> dict[str, Any]:
    sid = "corral-team-a-bot-2"
    ep = entrypoint(job_files(job, CONTROL).job_file, CONTROL)
    return build_rayjob(Handle.for_job(job, pool), SETTINGS, submission_id=sid, entrypoint=ep, runtime_env={"pip": []})


# -- RayJob ----------------------------------------------------------------------------


def test_rayjob_carries_contract_1_and_job_options() -> None:
    job = finetunejob()
    obj = rayjob_for(job, a100_pool())
    spec = obj["spec"]
    assert obj["apiVersion"] == "ray.io/v1" and obj["kind"] == "RayJob"
    assert obj["metadata"]["name"] == rayjob_name("corral-team-a-bot-2") == "corral-team-a-bot-2"
    assert obj["metadata"]["namespace"] == NS
    assert (
        spec["entrypoint"] == "python -m corral.training --job s3://corral/artifacts/finetunejobs/team-a/bot/job.json"
    )
    assert spec["jobId"] == "corral-team-a-bot-2"
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["submissionMode"] == "K8sJobMode"
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"pip": []}
    assert "suspend" not in spec
    assert spec["rayClusterSpec"]["rayVersion"] == "2.60.0"


def test_rayjob_owner_reference_and_labels() -> None:
    obj = rayjob_for(finetunejob())
    (ref,) = obj["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": "corral.dev/v1alpha1",
        "kind": "FineTuneJob",
        "name": "bot",
        "uid": "uid-ftj",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert obj["metadata"]["labels"]["corral.dev/kind"] == "FineTuneJob"
    assert KUEUE_QUEUE_LABEL not in obj["metadata"]["labels"]


def test_owner_without_uid_is_refused() -> None:
    job = finetunejob()
    job.metadata.uid = None
    with pytest.raises(ValueError, match="uid"):
        rayjob_for(job)


def test_starting_work_needs_a_placement() -> None:
    job = finetunejob()
    with pytest.raises(ValueError, match="placement"):
        build_rayjob(Handle.of(job), SETTINGS, submission_id="corral-team-a.bot-2", entrypoint="true")
    with pytest.raises(ValueError, match="placement"):
        build_rayservice(Handle.of(deployment()), {"applications": []}, SETTINGS)


def test_gpu_placement_becomes_selector_tolerations_limits_and_ray_resource() -> None:
    obj = rayjob_for(finetunejob(), a100_pool())
    cluster = obj["spec"]["rayClusterSpec"]
    (group,) = cluster["workerGroupSpecs"]
    assert group["groupName"] == "gpu-workers"
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 2
    pod = group["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "corral-ray"
    (container,) = pod["containers"]
    assert container["image"] == "corral/ray-gpu:1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"] == {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "1"}
    assert group["rayStartParams"]["num-gpus"] == "1"
    assert group["rayStartParams"]["resources"] == "'{\"accelerator_type:A100\":1}'"
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert "nodeSelector" not in head["template"]["spec"]
    assert head["template"]["spec"]["containers"][0]["image"] == "corral/ray:1"


def test_cpu_job_has_no_gpu_fields() -> None:
    obj = rayjob_for(finetunejob(gpusPerWorker=0, workers=1))
    (group,) = obj["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    container = group["template"]["spec"]["containers"][0]
    assert group["groupName"] == "cpu-workers"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "num-gpus" not in group["rayStartParams"]
    assert container["image"] == "corral/ray:1"


def test_s3_credentials_only_as_secret_refs() -> None:
    obj = rayjob_for(finetunejob())
    cluster = obj["spec"]["rayClusterSpec"]
    for pod in [cluster["headGroupSpec"]["template"]["spec"], cluster["workerGroupSpecs"][0]["template"]["spec"]]:
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["AWS_ACCESS_KEY_ID"] == {
            "name": "AWS_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {"name": "corral-s3", "key": "AWS_ACCESS_KEY_ID"}},
        }
        assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
        assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://minio:9000"


def test_queue_labels_for_kueue_and_creates_suspended() -> None:
    obj = rayjob_for(finetunejob(queue="team-a-queue"))
    assert obj["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "team-a-queue"
    assert obj["spec"]["suspend"] is True
    assert obj["spec"]["shutdownAfterJobFinishes"] is True  # Kueue requires it for RayJobs


def test_builders_are_deterministic() -> None:
    job = finetunejob()
    assert rayjob_for(job, a100_pool()) == rayjob_for(job, a100_pool())


def test_long_names_are_shortened_with_a_hash() -> None:
    long = "corral-" + "a" * 30 + "-" + "b" * 40 + "-1"
    name = child_name(long)
    assert len(name) <= MAX_NAME_LENGTH and name == child_name(long)
    assert name != child_name(long.replace("-1", "-2"))
    assert child_name("Corral_X") == "corral-x"


def test_ray_accelerator_names() -> None:
    assert ray_accelerator_type("nvidia-h100-80gb") == "H100"
    assert ray_accelerator_type("nvidia-l4") == "L4"
    assert ray_accelerator_type("nvidia-b200") == "B200"
    assert ray_accelerator_type("cpu") is None
    assert ray_accelerator_type(None) is None


# -- RayService ------------------------------------------------------------------------


def test_rayservice_embeds_contract_2() -> None:
    dep = deployment()
    app = app_config(dep, {"tiny": ready_model("tiny")})
    config = {"applications": [app]}
    obj = build_rayservice(Handle.for_deployment(dep), config, SETTINGS)
    assert obj["kind"] == "RayService" and obj["metadata"]["name"] == rayservice_name(dep.metadata.name) == "corral-bot"
    assert yaml.safe_load(obj["spec"]["serveConfigV2"]) == config
    assert obj["spec"]["upgradeStrategy"] == {"type": "NewCluster"}
    cluster = obj["spec"]["rayClusterConfig"]
    assert {"containerPort": 8000, "name": "serve"} in cluster["headGroupSpec"]["template"]["spec"]["containers"][0][
        "ports"
    ]
    (group,) = cluster["workerGroupSpecs"]
    assert group["replicas"] == 2
    assert group["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "1"
    assert obj["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-dep"


def test_serving_pods_mount_the_namespaces_chat_tokens_and_training_pods_do_not() -> None:
    dep = deployment()
    svc = build_rayservice(Handle.for_deployment(dep), {"applications": []}, SETTINGS)
    cluster = svc["spec"]["rayClusterConfig"]
    for pod in [cluster["headGroupSpec"]["template"]["spec"], cluster["workerGroupSpecs"][0]["template"]["spec"]]:
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        ref = {"name": "corral-chat-tokens", "key": "tokens", "optional": True}
        assert env[CHAT_TOKENS_ENV] == {"name": CHAT_TOKENS_ENV, "valueFrom": {"secretKeyRef": ref}}
    job = rayjob_for(finetunejob())["spec"]["rayClusterSpec"]
    assert CHAT_TOKENS_ENV not in str(job)
    off = SETTINGS.model_copy(update={"chat_tokens_secret": None})
    unchecked = build_rayservice(Handle.for_deployment(dep), {"applications": []}, off)
    assert CHAT_TOKENS_ENV not in str(unchecked)


def test_every_ray_cluster_asks_for_a_token() -> None:
    """Issue 17 item 6: heads listened without a token (dashboard, job submission, GCS)."""
    dep = deployment()
    svc = build_rayservice(Handle.for_deployment(dep), {"applications": []}, SETTINGS)
    job = rayjob_for(finetunejob())
    assert svc["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token"}
    assert job["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    off = SETTINGS.model_copy(update={"ray_auth": "disabled"})
    assert (
        "authOptions"
        not in build_rayservice(Handle.for_deployment(dep), {"applications": []}, off)["spec"]["rayClusterConfig"]
    )


def test_ray_pods_are_labelled_and_the_network_policy_keeps_them_to_corral() -> None:
    job = rayjob_for(finetunejob())["spec"]["rayClusterSpec"]
    for template in [job["headGroupSpec"]["template"], job["workerGroupSpecs"][0]["template"]]:
        assert template["metadata"]["labels"] == RAY_POD_LABELS
    settings = SETTINGS.model_copy(update={"control_plane_namespaces": ["corral-system", "kuberay-system"]})
    policy = build_ray_network_policy("team-a", settings)
    assert policy["metadata"] == {
        "name": NETWORK_POLICY_NAME,
        "namespace": "team-a",
        "labels": {"app.kubernetes.io/managed-by": "corral"},
    }
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": RAY_POD_LABELS} and spec["policyTypes"] == ["Ingress"]
    ray_only, dashboard, serve = spec["ingress"]
    assert ray_only == {"from": [{"podSelector": {"matchLabels": RAY_POD_LABELS}}]}  # every port, Ray pods only
    assert dashboard["ports"] == [{"protocol": "TCP", "port": 8265}]
    (here, control_plane) = dashboard["from"]
    assert here == {"podSelector": {}}  # the namespace itself: KubeRay's submitter Job
    assert control_plane["namespaceSelector"]["matchExpressions"][0]["values"] == ["corral-system", "kuberay-system"]
    assert serve == {"ports": [{"protocol": "TCP", "port": 8000}]}


def test_rayservice_autoscaling_range() -> None:
    dep = deployment(replicas=None, autoscaling={"minReplicas": 1, "maxReplicas": 4})
    obj = build_rayservice(Handle.for_deployment(dep, a100_pool()), {"applications": []}, SETTINGS)
    cluster = obj["spec"]["rayClusterConfig"]
    group = cluster["workerGroupSpecs"][0]
    assert (group["minReplicas"], group["maxReplicas"]) == (1, 4)
    assert cluster["enableInTreeAutoscaling"] is True
    assert group["template"]["spec"]["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-a100-80gb"


def test_rayservice_queue_label() -> None:
    dep = deployment()
    obj = build_rayservice(replace(Handle.for_deployment(dep), queue="serving"), {"applications": []}, SETTINGS)
    assert obj["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "serving"


# -- status mappers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "spec", "phase", "reason", "job_status"),
    [
        ({}, {}, "Pending", "Pending", "PENDING"),
        ({"jobDeploymentStatus": "Suspended"}, {"suspend": True}, "Pending", "Pending", "PENDING"),
        ({"jobDeploymentStatus": "Initializing"}, {}, "Admitted", "Admitted", "PENDING"),
        ({"jobDeploymentStatus": "Running", "jobStatus": "PENDING"}, {}, "Admitted", "Admitted", "PENDING"),
        ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, {}, "Running", "Running", "RUNNING"),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, {}, "Succeeded", "Succeeded", "SUCCEEDED"),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "FAILED"}, {}, "Failed", "AppFailed", "FAILED"),
        (
            {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": "too long"},
            {},
            "Failed",
            "DeadlineExceeded",
            "FAILED",
        ),
        ({"jobDeploymentStatus": "ValidationFailed"}, {}, "Failed", "ValidationFailed", "FAILED"),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}, {}, "Failed", "JobStopped", "STOPPED"),
    ],
)
def test_rayjob_status_mapping(
    status: dict[str, Any], spec: dict[str, Any], phase: str, reason: str, job_status: str
) -> None:
    obs = finetunejob_status_from_rayjob({"spec": spec, "status": status})
    assert (obs.phase, obs.reason) == (phase, reason)
    state = obs.job_state("sid")
    assert state.status == job_status and state.submission_id == "sid" and state.message
    # The state carries KubeRay's reason where it says more than the status: failures, waiting, retrying.
    assert state.reason == (reason if phase in ("Pending", "Failed") and job_status != "STOPPED" else "")


def test_rayjob_times_are_parsed() -> None:
    obs = finetunejob_status_from_rayjob(
        {"status": {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED",
                    "startTime": "2025-01-01T00:00:00Z", "endTime": "2025-01-01T00:10:00Z"}}
    )  # fmt: skip
    state = obs.job_state("sid")
    assert state.end_time is not None and state.start_time is not None
    assert state.end_time - state.start_time == 600


def _service(app_status: str | None, conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    config = {"applications": [{"name": "team-a-bot", "route_prefix": "/team-a/bot",
                                "deployments": [{"name": "CorralLLMServer", "num_replicas": 2},
                                                {"name": "CorralIngress", "num_replicas": 1}]}]}  # fmt: skip
    status: dict[str, Any] = {}
    if app_status is not None:
        status["activeServiceStatus"] = {
            "applicationStatuses": {
                "team-a-bot": {
                    "status": app_status,
                    "serveDeploymentStatuses": {"CorralLLMServer": {"status": "HEALTHY"}, "CorralIngress": {}},
                }
            }
        }
    if conditions is not None:
        status["conditions"] = conditions
    return {"spec": {"serveConfigV2": yaml.safe_dump(config)}, "status": status}


def test_rayservice_status_mapping() -> None:
    pending = deployment_status_from_rayservice(_service(None), "team-a-bot")
    assert pending.phase == "Pending" and pending.app.status == "NOT_STARTED"
    assert pending.app.deployed_config is not None and pending.app.deployed_config["name"] == "team-a-bot"

    ready = deployment_status_from_rayservice(
        _service("RUNNING", [{"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints"}]), "team-a-bot"
    )
    assert (ready.phase, ready.reason, ready.app.status) == ("Ready", "Ready", "RUNNING")
    assert ready.app.deployments == {"CorralLLMServer": (2, 2), "CorralIngress": (1, 0)}
    assert ready.app.route_prefix == "/team-a/bot"

    upgrading = deployment_status_from_rayservice(
        _service(
            "RUNNING", [{"type": "UpgradeInProgress", "status": "True", "reason": "BothActivePendingClustersExist"}]
        ),
        "team-a-bot",
    )
    assert (upgrading.phase, upgrading.app.status, upgrading.app.reason) == (
        "UpgradeInProgress",
        "DEPLOYING",
        "UpgradeInProgress",
    )
    assert ready.app.reason == ""

    failed = deployment_status_from_rayservice(_service("DEPLOY_FAILED"), "team-a-bot")
    assert (failed.phase, failed.reason) == ("Failed", "DeployFailed")

    deploying = deployment_status_from_rayservice(
        _service("DEPLOYING", [{"type": "Ready", "status": "False", "reason": "ZeroServeEndpoints"}]), "team-a-bot"
    )
    assert (deploying.phase, deploying.reason) == ("Deploying", "ZeroServeEndpoints")


def test_rayservice_without_the_app_reports_no_deployed_config() -> None:
    obs = deployment_status_from_rayservice({"spec": {}, "status": {}}, "team-a-bot")
    assert obs.app.deployed_config is None


def test_placement_for_job_without_pool_uses_spec_accelerator() -> None:
    job = finetunejob(acceleratorType="nvidia-l4")
    placement = PodPlacement.for_job(job)
    assert placement.accelerator_type == "nvidia-l4" and placement.node_selector == {}


def test_serving_pods_of_a_cluster_checking_kubernetes_tokens_get_the_flag_and_their_token() -> None:
    """The replica asks the API server about Kubernetes tokens with its pod's ServiceAccount token."""
    dep = deployment()
    on = SETTINGS.model_copy(update={"chat_kubernetes_auth": True})
    cluster = build_rayservice(Handle.for_deployment(dep), {"applications": []}, on)["spec"]["rayClusterConfig"]
    for pod in [cluster["headGroupSpec"]["template"]["spec"], cluster["workerGroupSpecs"][0]["template"]["spec"]]:
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["CORRAL_CHAT_KUBERNETES_AUTH"] == "true"
        assert pod["automountServiceAccountToken"] is True
    job = build_rayjob(Handle.for_job(finetunejob()), on, submission_id="s", entrypoint="e", runtime_env={})
    assert "CORRAL_CHAT_KUBERNETES_AUTH" not in str(job) and "automountServiceAccountToken" not in str(job)
    off = build_rayservice(Handle.for_deployment(dep), {"applications": []}, SETTINGS)
    assert "CORRAL_CHAT_KUBERNETES_AUTH" not in str(off) and "automountServiceAccountToken" not in str(off)
