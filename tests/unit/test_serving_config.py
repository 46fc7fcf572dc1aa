"""serve_config: ModelDeployments -> a Ray Serve config that Ray's own schema accepts."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from corral.api.v1alpha1.common import LocalObjectReference
from corral.api.v1alpha1.modeldeployment import ModelDeployment
from corral.serving import (
    ACTIVATOR_DEPLOYMENT,
    LLM_DEPLOYMENT,
    MULTIPLEX_HEADER,
    ResolvedModel,
    ServeAppArgs,
    app_name,
    estimate_cold_start_seconds,
    resolve_engine,
    route_prefix,
    routing_headers,
    serve_config,
    served_model_names,
)
from corral.serving._config import CORRAL_IMPORT_PATH
from tests.support import objects

URIS = {
    "tiny": "file:///models/tiny",
    "llama-8b": "hf://meta-llama/Llama-3.1-8B-Instruct",
    "support-a": "s3://corral/adapters/support-a",
    "support-b": "s3://corral/adapters/support-b",
    "local-a": "file:///adapters/local-a",
}


def resolve(ref: LocalObjectReference) -> ResolvedModel:
    return ResolvedModel(uri=URIS[ref.name], chat_template="{{ messages }}" if ref.name == "tiny" else None)


def deployment(name: str = "bot", **spec: Any) -> ModelDeployment:
    return objects.deployment(name, ns=None, finalizers=(), **spec)  # no namespace: served as default


def ray_validate(config: dict[str, Any]) -> ServeDeploySchema:
    # Through YAML and back: the dict must survive being a RayService's serveConfigV2.
    return ServeDeploySchema.model_validate(yaml.safe_load(yaml.safe_dump(config)))


def by_name(app: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in app["deployments"] if d["name"] == name)


def test_transformers_app_validates_with_rays_schema() -> None:
    dep = deployment(
        servedName="support-bot",
        adapters=[{"name": "a", "model": {"name": "local-a"}}],
        resources={"cpusPerReplica": "500m", "memoryPerReplica": "2Gi"},
        maxAdaptersPerReplica=3,
        maxConcurrentSequences=8,
        maxContextLength=512,
    )
    config = serve_config([dep], resolve, http_options={"host": "127.0.0.1", "port": 8123})
    schema = ray_validate(config)
    app = schema.applications[0]
    assert app.name == "default-bot" and app.route_prefix == "/default/bot"
    assert app.import_path == "corral.serving:build_app"
    args = ServeAppArgs.model_validate(app.args)
    assert args.served_name == "support-bot" and args.model_uri == URIS["tiny"]
    assert [(a.name, a.uri) for a in args.adapters] == [("a", URIS["local-a"])]
    assert (args.max_adapters_per_replica, args.max_concurrent_sequences, args.max_context_length) == (3, 8, 512)
    assert args.chat_template == "{{ messages }}"
    # One deployment, ingress and engine in one: a request takes one hop from Serve's proxy.
    assert [d["name"] for d in config["applications"][0]["deployments"]] == ["CorralLLMServer"]
    server = by_name(config["applications"][0], "CorralLLMServer")
    assert server["ray_actor_options"] == {"num_cpus": 0.5, "memory": 2 * 2**30}
    # A replica takes a batch (8) plus its engine's queue (4 x 8), the queue the args give the engine.
    assert server["num_replicas"] == 1 and server["max_ongoing_requests"] == 8 + 32 == 8 + args.max_queued_requests
    assert config["applications"][0]["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "1"
    assert schema.http_options.port == 8123
    json.dumps(config)  # plain JSON


def test_autoscaling_maps_onto_serve_autoscaling_config() -> None:
    dep = deployment(
        autoscaling={
            "minReplicas": 0,
            "maxReplicas": 4,
            "targetOngoingRequests": 6,
            "upscaleDelaySeconds": 5,
            "downscaleDelaySeconds": 120,
        }
    )
    config = serve_config([dep], resolve)
    ray_validate(config)
    server = by_name(config["applications"][0], "CorralLLMServer")
    assert "num_replicas" not in server
    assert server["autoscaling_config"] == {
        "min_replicas": 0,
        "max_replicas": 4,
        "target_ongoing_requests": 6,
        "upscale_delay_s": 5.0,
        "downscale_delay_s": 120.0,
    }


def test_min_replicas_zero_puts_the_activator_in_front() -> None:
    scaling = {"minReplicas": 0, "maxReplicas": 2, "targetOngoingRequests": 2}
    config = serve_config([deployment(autoscaling=scaling, maxConcurrentSequences=4)], resolve)
    ray_validate(config)
    app = config["applications"][0]
    assert [d["name"] for d in app["deployments"]] == [ACTIVATOR_DEPLOYMENT, "CorralLLMServer"]
    activator, server = by_name(app, ACTIVATOR_DEPLOYMENT), by_name(app, "CorralLLMServer")
    # Always one activator, reserving no CPU, taking all the model replicas hold plus their queue.
    assert activator["num_replicas"] == 1 and activator["ray_actor_options"] == {"num_cpus": 0.0}
    assert activator["max_ongoing_requests"] == 2 * server["max_ongoing_requests"] + server["max_queued_requests"]
    args = ServeAppArgs.model_validate(app["args"])
    estimate = estimate_cold_start_seconds(0, "transformers")
    assert args.hold is not None and args.hold.retry_after_seconds == estimate
    assert args.hold.timeout_seconds == max(60, 3 * estimate)


def test_hold_timeout_from_the_spec_and_the_models_size() -> None:
    scaling = {"minReplicas": 0, "maxReplicas": 1, "holdTimeoutSeconds": 7}
    app = serve_config([deployment(autoscaling=scaling)], resolve)["applications"][0]
    args = ServeAppArgs.model_validate(app["args"])
    assert args.hold is not None and args.hold.timeout_seconds == 7

    def big(ref: LocalObjectReference) -> ResolvedModel:
        return ResolvedModel(uri=URIS[ref.name], size_bytes=16 * 10**9)

    app = serve_config([deployment(autoscaling={"minReplicas": 0, "maxReplicas": 1})], big)["applications"][0]
    hold = ServeAppArgs.model_validate(app["args"]).hold
    assert hold is not None and hold.retry_after_seconds == estimate_cold_start_seconds(16 * 10**9, "transformers")
    assert hold.retry_after_seconds > estimate_cold_start_seconds(0, "transformers")
    assert hold.timeout_seconds == 3 * hold.retry_after_seconds


def test_min_replicas_above_zero_keeps_one_hop() -> None:
    for spec in ({"autoscaling": {"minReplicas": 1, "maxReplicas": 3}}, {"replicas": 2}, {}):
        app = serve_config([deployment(**spec)], resolve)["applications"][0]
        assert [d["name"] for d in app["deployments"]] == ["CorralLLMServer"]
        assert ServeAppArgs.model_validate(app["args"]).hold is None


def test_fixed_replicas() -> None:
    server = by_name(serve_config([deployment(replicas=3)], resolve)["applications"][0], "CorralLLMServer")
    assert server["num_replicas"] == 3


def test_routing_headers_name_only_multiplexed_adapters() -> None:
    dep = deployment(adapters=[{"name": "a", "model": {"name": "local-a"}}])
    from ray.serve._private.constants import SERVE_MULTIPLEXED_MODEL_ID  # the header Serve's proxy routes on

    assert MULTIPLEX_HEADER == SERVE_MULTIPLEXED_MODEL_ID
    assert routing_headers(dep.spec, "a") == {"serve_multiplexed_model_id": "a"}
    assert routing_headers(dep.spec, "tiny") == {}  # the base is on every replica
    assert routing_headers(_vllm_deployment().spec, "llama:support-a") == {}  # Ray Serve LLM's ingress: not multiplexed


def test_auto_engine_picks_vllm_with_gpus() -> None:
    assert resolve_engine(deployment().spec) == "transformers"
    assert resolve_engine(deployment(resources={"gpusPerReplica": 1}).spec) == "vllm"
    assert resolve_engine(deployment(resources={"gpusPerReplica": 1}).spec, "llama") == "vllm"
    assert resolve_engine(deployment(engine="transformers").spec) == "transformers"


def test_auto_serves_what_vllm_does_not_implement_with_transformers_on_one_gpu() -> None:
    one, two = deployment(resources={"gpusPerReplica": 1}), deployment(resources={"gpusPerReplica": 2})
    assert resolve_engine(one.spec, "gpt_pangu") == "transformers"
    assert resolve_engine(two.spec, "gpt_pangu") == "vllm"  # tensor parallelism: vLLM or nothing

    def pangu(ref: LocalObjectReference) -> ResolvedModel:
        return ResolvedModel(uri=f"file:///models/{ref.name}", architecture="gpt_pangu", trust_remote_code=True)

    app = serve_config([one], pangu)["applications"][0]
    assert app["import_path"] == CORRAL_IMPORT_PATH
    args = ServeAppArgs.model_validate(app["args"])
    assert args.trust_remote_code
    assert by_name(app, LLM_DEPLOYMENT)["ray_actor_options"]["num_gpus"] == 1
    ray_validate({"applications": [app]})


def test_transformers_engine_takes_one_gpu_and_refuses_tensor_parallelism() -> None:
    app = serve_config([deployment(engine="transformers", resources={"gpusPerReplica": 1})], resolve)
    assert by_name(app["applications"][0], LLM_DEPLOYMENT)["ray_actor_options"]["num_gpus"] == 1
    assert not ServeAppArgs.model_validate(app["applications"][0]["args"]).trust_remote_code
    with pytest.raises(ValueError, match="tensor parallelism over 2 GPUs needs engine vllm"):
        serve_config([deployment(engine="transformers", resources={"gpusPerReplica": 2})], resolve)


def test_applications_are_named_and_routed_by_namespace_and_name() -> None:
    a, b = deployment(), deployment()
    a.metadata.namespace, b.metadata.namespace = "team-a", "team-b"
    schema = ray_validate(serve_config([a, b], resolve))
    assert [x.name for x in schema.applications] == ["team-a-bot", "team-b-bot"]
    assert [x.route_prefix for x in schema.applications] == ["/team-a/bot", "/team-b/bot"]
    assert [app_name(a), route_prefix(a)] == ["team-a-bot", "/team-a/bot"]


def test_duplicate_names_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        serve_config([deployment("a"), deployment("a")], resolve)


def _vllm_deployment(**extra: Any) -> ModelDeployment:
    return deployment(
        model={"name": "llama-8b"},
        servedName="llama",
        resources={"gpusPerReplica": 2, "acceleratorType": "nvidia-a100-80gb"},
        adapters=[
            {"name": "support-a", "model": {"name": "support-a"}},
            {"name": "support-b", "model": {"name": "support-b"}},
        ],
        autoscaling={"minReplicas": 1, "maxReplicas": 3, "targetOngoingRequests": 8},
        maxAdaptersPerReplica=4,
        maxConcurrentSequences=32,
        maxContextLength=4096,
        **extra,
    )


def _fields_of(path: Path, cls: str) -> set[str]:
    """Annotated field names of a pydantic class in Ray's installed source (no vLLM import needed)."""
    tree = ast.parse(path.read_text())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls)
    return {
        s.target.id
        for s in node.body
        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name) and not s.target.id.startswith("_")
    }


def test_vllm_app_has_the_shape_of_ray_serve_llm_config() -> None:
    import ray

    config = serve_config([_vllm_deployment()], resolve)
    schema = ray_validate(config)
    app = config["applications"][0]
    assert schema.applications[0].import_path == "ray.serve.llm:build_openai_app"
    (llm,) = app["args"]["llm_configs"]
    src = Path(ray.__file__).parent / "llm/_internal/serve/core/configs/llm_config.py"
    assert set(llm) <= _fields_of(src, "LLMConfig")
    assert set(llm["model_loading_config"]) <= _fields_of(src, "ModelLoadingConfig")
    assert set(llm["lora_config"]) <= _fields_of(src, "LoraConfig")
    assert llm["model_loading_config"] == {"model_id": "llama", "model_source": "meta-llama/Llama-3.1-8B-Instruct"}
    assert llm["accelerator_type"] == "A100"  # Ray's name (LLMConfig refuses "nvidia-a100-80gb")
    assert llm["lora_config"] == {
        "dynamic_lora_loading_path": "s3://corral/adapters",
        "max_num_adapters_per_replica": 4,
    }
    assert llm["engine_kwargs"] == {
        "tensor_parallel_size": 2,
        "max_num_seqs": 32,
        "max_model_len": 4096,
        "enable_lora": True,
        "max_loras": 4,
    }
    assert llm["deployment_config"]["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 8,
        "upscale_delay_s": 30.0,
        "downscale_delay_s": 600.0,
    }
    # deployment_config keys are Serve deployment options.
    assert set(llm["deployment_config"]) <= {"autoscaling_config", "num_replicas", "max_ongoing_requests"}
    assert served_model_names(_vllm_deployment()) == ["llama", "llama:support-a", "llama:support-b"]


def test_vllm_lora_needs_one_s3_prefix() -> None:
    dep = deployment(
        model={"name": "llama-8b"},
        resources={"gpusPerReplica": 1},
        adapters=[{"name": "local-a", "model": {"name": "local-a"}}],
    )
    with pytest.raises(ValueError, match="s3://"):
        serve_config([dep], resolve)


def test_vllm_local_model_source_is_a_path() -> None:
    config = serve_config([deployment(resources={"gpusPerReplica": 1})], resolve)
    (llm,) = config["applications"][0]["args"]["llm_configs"]
    assert llm["model_loading_config"]["model_source"] == "/models/tiny"
    assert "lora_config" not in llm
    assert llm["engine_kwargs"]["chat_template"] == "{{ messages }}"


def test_two_deployments_are_two_applications() -> None:
    config = serve_config([deployment("a"), deployment("c")], resolve)
    schema = ray_validate(config)
    assert [a.name for a in schema.applications] == ["default-a", "default-c"]
    assert [a.route_prefix for a in schema.applications] == ["/default/a", "/default/c"]


def test_vllm_llm_config_validates_with_ray_serve_llms_own_class() -> None:
    """Ray's LLMConfig (its pydantic model imports without vLLM) accepts what serve_config generates."""
    llm_config = pytest.importorskip("ray.llm._internal.serve.core.configs.llm_config")
    config = serve_config([_vllm_deployment()], resolve)
    (llm,) = config["applications"][0]["args"]["llm_configs"]
    parsed = llm_config.LLMConfig.model_validate(llm)
    assert parsed.accelerator_type == "A100"
    assert parsed.lora_config.max_num_adapters_per_replica == 4
    with pytest.raises(ValueError, match="Unsupported accelerator type"):  # Corral's own name is not Ray's
        llm_config.LLMConfig.model_validate({**llm, "accelerator_type": "nvidia-a100-80gb"})
