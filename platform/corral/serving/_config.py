"""``serve_config``: ModelDeployments -> one Ray Serve config (the ``serveConfigV2`` schema).

A pure function: the caller resolves each ``Model`` reference to a :class:`ResolvedModel`
(its artifact URI and chat template); nothing here touches Ray, the store or the network.
The same dict is deployed to a local Ray's Serve (``PUT /api/serve/applications/``) and
embedded as ``RayService.spec.serveConfigV2`` on Kubernetes.

Each ModelDeployment becomes one application named ``<namespace>-<name>`` (:func:`app_name`),
served under ``/<namespace>/<name>`` (:func:`route_prefix`; its OpenAI base URL is
``http://<serve>/<namespace>/<name>/v1``). An object without a namespace is in ``default``.

* engine ``transformers`` (CPU): ``import_path: corral.serving:build_app`` with
  :class:`~corral.serving.ServeAppArgs` as ``args``; one deployment, ``CorralLLMServer``,
  both the OpenAI HTTP ingress and the batching engine (multiplexed by adapter), whose
  options carry the replicas, autoscaling and resources. Clients reach a replica that
  already holds an adapter by sending :data:`MULTIPLEX_HEADER` (see :func:`routing_headers`).
  With ``autoscaling.minReplicas: 0`` a second deployment, ``CorralActivator`` (always one
  replica, no CPU reserved), is the ingress: it holds requests while the model scales up
  from zero, for ``holdTimeoutSeconds`` (default from :func:`cold_start_estimate`), then
  answers 503 with ``Retry-After``.
* engine ``vllm`` (GPUs): ``import_path: ray.serve.llm:build_openai_app`` with one
  ``LLMConfig`` in ``args.llm_configs``. Ray Serve LLM names LoRA models
  ``<base>:<adapter>`` and loads them from one remote prefix
  (``lora_config.dynamic_lora_loading_path``), so every adapter must be an ``s3://`` URI
  ``<prefix>/<adapter name>``.
* ``auto``: ``vllm`` when ``gpusPerReplica > 0``, else ``transformers``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from corral.api import Quantity, parse_quantity
from corral.api.v1alpha1.common import LocalObjectReference
from corral.api.v1alpha1.modeldeployment import ModelDeployment, ModelDeploymentSpec
from corral.artifacts import parse_uri
from corral.scheduler import ray_accelerator_type
from corral.serving._args import AdapterSource, HoldArgs, ServeAppArgs
from corral.serving._coldstart import default_hold_seconds, estimate_cold_start_seconds

__all__ = [
    "ACTIVATOR_DEPLOYMENT",
    "CORRAL_IMPORT_PATH",
    "LLM_DEPLOYMENT",
    "MULTIPLEX_HEADER",
    "VLLM_IMPORT_PATH",
    "ResolvedModel",
    "app_name",
    "cold_start_estimate",
    "hold_args",
    "resolve_engine",
    "route_prefix",
    "routing_headers",
    "serve_config",
    "served_model_names",
]

CORRAL_IMPORT_PATH = "corral.serving:build_app"
VLLM_IMPORT_PATH = "ray.serve.llm:build_openai_app"
#: The one deployment of an engine-``transformers`` application: OpenAI ingress and engine.
LLM_DEPLOYMENT = "CorralLLMServer"
#: The ingress of an engine-``transformers`` application that scales to zero: holds requests.
ACTIVATOR_DEPLOYMENT = "CorralActivator"
#: The request header Serve's proxy routes on to a replica holding that multiplexed model.
MULTIPLEX_HEADER = "serve_multiplexed_model_id"
Engine = Literal["vllm", "transformers"]


class ResolvedModel(BaseModel):
    """A Model reference resolved by the control plane."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(description="Artifact URI of the weights or adapter (file://, s3://, hf://).")
    chat_template: str | None = Field(
        default=None, description="Jinja chat template the model was trained with; unset uses the tokenizer's."
    )
    size_bytes: int = Field(default=0, ge=0, description="Size of the artifact in bytes; 0 when unknown.")
    architecture: str | None = Field(default=None, description="transformers model_type of the weights, when known.")
    trust_remote_code: bool = Field(
        default=False, description="Load with the model code shipped with the weights (an allowed trustRemoteCode)."
    )


#: transformers ``model_type`` values vLLM implements (its supported-models list: decoder-only text
#: generation). ``auto`` serves other architectures with engine ``transformers`` on one GPU.
VLLM_ARCHITECTURES = frozenset({
    "aquila", "baichuan", "bloom", "chatglm", "cohere", "deepseek_v2", "deepseek_v3", "falcon", "gemma", "gemma2",
    "gemma3", "gpt2", "gpt_bigcode", "gpt_neox", "gptj", "internlm2", "llama", "mistral", "mixtral", "mpt", "olmo",
    "opt", "phi", "phi3", "qwen", "qwen2", "qwen2_moe", "qwen3", "stablelm", "starcoder2",
})  # fmt: skip


Resolver = Callable[[LocalObjectReference], ResolvedModel]


def app_name(deployment: ModelDeployment) -> str:
    """The Serve application of a ModelDeployment: ``<namespace>-<name>``."""
    return f"{deployment.metadata.namespace or 'default'}-{deployment.metadata.name}"


def route_prefix(deployment: ModelDeployment) -> str:
    """The HTTP route of a ModelDeployment's application: ``/<namespace>/<name>``."""
    return f"/{deployment.metadata.namespace or 'default'}/{deployment.metadata.name}"


def resolve_engine(spec: ModelDeploymentSpec, architecture: str | None = None) -> Engine:
    """The engine a spec runs on.

    ``auto`` is ``vllm`` with GPUs, else ``transformers``; with one GPU per replica and a base
    architecture vLLM does not implement (``architecture`` given and not in
    :data:`VLLM_ARCHITECTURES`, e.g. PanGu-alpha), ``auto`` is ``transformers`` on that GPU.
    """
    if spec.engine == "auto":
        gpus = spec.resources.gpus_per_replica
        if gpus == 0 or (gpus == 1 and architecture is not None and architecture not in VLLM_ARCHITECTURES):
            return "transformers"
        return "vllm"
    return spec.engine


def served_model_names(deployment: ModelDeployment) -> list[str]:
    """The names clients pass as ``model``: the base first, then the adapters."""
    spec = deployment.spec
    base = spec.served_name or spec.model.name
    if resolve_engine(spec) == "vllm":
        return [base, *(f"{base}:{a.name}" for a in spec.adapters)]
    return [base, *(a.name for a in spec.adapters)]


def cold_start_estimate(spec: ModelDeploymentSpec, sizes_bytes: Sequence[int]) -> int:
    """Seconds a replica of ``spec`` is estimated to need from zero, given its weights' sizes (base, adapters)."""
    return estimate_cold_start_seconds(sum(sizes_bytes), resolve_engine(spec))


def hold_args(spec: ModelDeploymentSpec, sizes_bytes: Sequence[int]) -> HoldArgs | None:
    """How the activator holds requests for ``spec``; None unless it may scale to zero.

    Args:
        spec: The deployment's spec.
        sizes_bytes: Sizes of the weights it serves (base, adapters), for the estimated cold start.

    Returns:
        The hold timeout (``autoscaling.holdTimeoutSeconds``, else :func:`default_hold_seconds`
        of the estimate) and the ``Retry-After`` past it (the estimate), or None with
        ``minReplicas`` above zero.
    """
    if spec.autoscaling is None or spec.autoscaling.min_replicas > 0:
        return None
    estimate = cold_start_estimate(spec, sizes_bytes)
    timeout = spec.autoscaling.hold_timeout_seconds or default_hold_seconds(estimate)
    return HoldArgs(timeout_seconds=timeout, retry_after_seconds=min(estimate, 3600))


def routing_headers(spec: ModelDeploymentSpec, model: str) -> dict[str, str]:
    """HTTP headers that route a request for ``model`` to a replica already holding it.

    For an adapter of an engine-``transformers`` deployment this is
    ``{MULTIPLEX_HEADER: <adapter>}`` (Serve's proxy then prefers a replica that has it
    loaded). Empty for the base model and for engine ``vllm``, whose ingress is not
    multiplexed: there a multiplexed id no replica reports only delays routing.
    """
    if resolve_engine(spec) == "transformers" and model in {a.name for a in spec.adapters}:
        return {MULTIPLEX_HEADER: model}
    return {}


def serve_config(
    deployments: Sequence[ModelDeployment],
    resolve: Resolver,
    *,
    http_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one Ray Serve config (``serveConfigV2``) serving ``deployments``.

    Args:
        deployments: The ModelDeployments to serve; each is one application named
            :func:`app_name` at :func:`route_prefix`, so those must be unique.
        resolve: Resolves a Model reference (base or adapter) to its URI and chat template.
        http_options: Serve ``http_options`` (e.g. ``{"host": "127.0.0.1", "port": 8000}``);
            omitted when ``None`` (KubeRay sets its own).

    Returns:
        A JSON-able dict that validates as Ray's ``ServeDeploySchema``.

    Raises:
        ValueError: Two deployments share an application name, or a deployment asks for something its
            engine cannot do (more than one GPU per replica on ``transformers``; non-``s3://``
            adapters on ``vllm``).
    """
    names = [app_name(d) for d in deployments]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"application names (<namespace>-<name>) must be unique (repeated: {', '.join(dupes)})")
    apps = []
    for dep in deployments:
        engine = resolve_engine(dep.spec, resolve(dep.spec.model).architecture)
        app = _vllm_app(dep, resolve) if engine == "vllm" else _corral_app(dep, resolve)
        apps.append(app)
    config: dict[str, Any] = {"applications": apps}
    if http_options is not None:
        config["http_options"] = dict(http_options)
    return config


def _cpus(spec: ModelDeploymentSpec) -> float:
    return float(Quantity.parse(spec.resources.cpus_per_replica))


def _memory_bytes(spec: ModelDeploymentSpec) -> int | None:
    if spec.resources.memory_per_replica is None:
        return None
    return parse_quantity(spec.resources.memory_per_replica)


def _scaling(spec: ModelDeploymentSpec) -> dict[str, Any]:
    """``num_replicas`` or ``autoscaling_config`` from the spec."""
    a = spec.autoscaling
    if a is None:
        return {"num_replicas": 1 if spec.replicas is None else spec.replicas}
    return {
        "autoscaling_config": {
            "min_replicas": a.min_replicas,
            "max_replicas": a.max_replicas,
            "target_ongoing_requests": a.target_ongoing_requests,
            "upscale_delay_s": float(a.upscale_delay_seconds),
            "downscale_delay_s": float(a.downscale_delay_seconds),
        }
    }


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (_clean(v) if isinstance(v, dict) else v) for k, v in d.items() if v is not None}


def _corral_app(dep: ModelDeployment, resolve: Resolver) -> dict[str, Any]:
    spec = dep.spec
    gpus = spec.resources.gpus_per_replica
    if gpus > 1:
        raise ValueError(
            f"deployment {dep.metadata.name}: engine transformers runs a replica on one GPU at most "
            f"(gpusPerReplica={gpus}); tensor parallelism over {gpus} GPUs needs engine vllm"
        )
    base = resolve(spec.model)
    resolved = [(a.name, resolve(a.model)) for a in spec.adapters]
    adapters = [AdapterSource(name=name, uri=r.uri) for name, r in resolved]
    hold = hold_args(spec, [base.size_bytes, *(r.size_bytes for _, r in resolved)])
    cpus = _cpus(spec)
    threads = max(1, math.floor(cpus))
    queued = 4 * spec.max_concurrent_sequences
    args = ServeAppArgs(
        served_name=spec.served_name or spec.model.name,
        model_uri=base.uri,
        adapters=adapters,
        max_adapters_per_replica=spec.max_adapters_per_replica,
        max_concurrent_sequences=spec.max_concurrent_sequences,
        max_queued_requests=queued,
        max_context_length=spec.max_context_length,
        chat_template=base.chat_template,
        trust_remote_code=base.trust_remote_code,
        torch_threads=threads,
        hold=hold,
    )
    _, max_replicas = spec.replica_range
    actor_options = _clean(
        {
            "num_cpus": cpus,
            "num_gpus": gpus or None,
            "memory": _memory_bytes(spec),
            "accelerator_type": ray_accelerator_type(spec.resources.accelerator_type),
        }
    )
    max_ongoing = spec.max_concurrent_sequences + queued
    max_queued = 8 * spec.max_concurrent_sequences * max(max_replicas, 1)
    deployments: list[dict[str, Any]] = [
        {
            "name": LLM_DEPLOYMENT,
            **_clean(_scaling(spec)),
            # A replica takes a batch plus its engine's queue, so a slot that frees is
            # refilled at the next step; beyond that Serve's proxy (or the activator's
            # handle) queues, and answers 503 (the activator: 429) when that is full too.
            "max_ongoing_requests": max_ongoing,
            "max_queued_requests": max_queued,
            "ray_actor_options": actor_options,
        },
    ]
    if hold is not None:
        deployments.insert(
            0,
            {
                "name": ACTIVATOR_DEPLOYMENT,
                "num_replicas": 1,
                # Everything the model replicas hold plus everything held for them.
                "max_ongoing_requests": max_ongoing * max(max_replicas, 1) + max_queued,
                "ray_actor_options": {"num_cpus": 0.0},
            },
        )
    return {
        "name": app_name(dep),
        "route_prefix": route_prefix(dep),
        "import_path": CORRAL_IMPORT_PATH,
        "args": args.model_dump(mode="json"),
        "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}},
        "deployments": deployments,
    }


def _model_source(uri: str) -> str | dict[str, str]:
    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        return parsed.path
    if parsed.scheme == "hf":
        if parsed.path or parsed.revision:
            raise ValueError(f"{uri}: Ray Serve LLM takes a plain hf://org/name (no revision or sub-path)")
        return parsed.location
    return {"bucket_uri": str(parsed)}


def _lora_prefix(dep: ModelDeployment, resolve: Resolver) -> str | None:
    if not dep.spec.adapters:
        return None
    prefixes = set()
    for a in dep.spec.adapters:
        uri = resolve(a.model).uri
        parsed = parse_uri(uri)
        parent, _, leaf = str(parsed).rstrip("/").rpartition("/")
        if parsed.scheme != "s3" or leaf != a.name:
            raise ValueError(
                f"deployment {dep.metadata.name}: engine vllm loads adapters from one s3:// prefix as "
                f"<prefix>/<adapter name>; adapter {a.name!r} is at {uri}"
            )
        prefixes.add(parent)
    if len(prefixes) != 1:
        raise ValueError(
            f"deployment {dep.metadata.name}: engine vllm needs every adapter under one s3:// prefix "
            f"(found {', '.join(sorted(prefixes))})"
        )
    return prefixes.pop()


def _vllm_app(dep: ModelDeployment, resolve: Resolver) -> dict[str, Any]:
    spec = dep.spec
    base = resolve(spec.model)
    gpus = spec.resources.gpus_per_replica
    if gpus < 1:
        raise ValueError(
            f"deployment {dep.metadata.name}: engine vllm needs gpusPerReplica >= 1; use engine transformers on CPUs"
        )
    engine_kwargs: dict[str, Any] = {
        "tensor_parallel_size": gpus,
        "max_num_seqs": spec.max_concurrent_sequences,
        "max_model_len": spec.max_context_length,
    }
    if base.chat_template is not None:
        engine_kwargs["chat_template"] = base.chat_template
    prefix = _lora_prefix(dep, resolve)
    llm_config: dict[str, Any] = {
        "model_loading_config": {
            "model_id": spec.served_name or spec.model.name,
            "model_source": _model_source(base.uri),
        },
        "accelerator_type": ray_accelerator_type(spec.resources.accelerator_type),
        "engine_kwargs": _clean(engine_kwargs),
        "deployment_config": _clean(
            {
                **_scaling(spec),
                "max_ongoing_requests": 4 * spec.max_concurrent_sequences,
            }
        ),
    }
    if prefix is not None:
        engine_kwargs["enable_lora"] = True
        engine_kwargs["max_loras"] = spec.max_adapters_per_replica
        llm_config["lora_config"] = {
            "dynamic_lora_loading_path": prefix,
            "max_num_adapters_per_replica": spec.max_adapters_per_replica,
        }
        llm_config["engine_kwargs"] = _clean(engine_kwargs)
    return {
        "name": app_name(dep),
        "route_prefix": route_prefix(dep),
        "import_path": VLLM_IMPORT_PATH,
        "args": {"llm_configs": [_clean(llm_config)]},
    }
