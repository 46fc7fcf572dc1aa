"""Serving: ModelDeployments as Ray Serve applications behind an OpenAI-compatible endpoint.

* :func:`serve_config` — ModelDeployments -> one Ray Serve config (``serveConfigV2``);
  engine ``vllm`` points at Ray Serve LLM, engine ``transformers`` at :func:`build_app`.
* :func:`build_app` — Corral's Serve application (``import_path: corral.serving:build_app``):
  one deployment that is both the OpenAI ingress and the engine holder.
* :func:`routing_headers` — the ``serve_multiplexed_model_id`` header that routes an adapter's
  requests to a replica already holding it.
* :func:`hold` / :class:`HoldPolicy` — hold a request until a replica takes it, 503 with
  ``Retry-After`` past the timeout (the scale-from-zero wait; the Serve activator uses it,
  and so can any other entry point); :func:`estimate_cold_start_seconds` sizes it.
* :class:`TransformersEngine` — continuous batching with transformers + PEFT multi-LoRA,
  usable in-process.

Ray Serve and torch are imported only when :func:`build_app` / :class:`TransformersEngine`
are first used, so building configs stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral.serving._args import AdapterSource, HoldArgs, ServeAppArgs
from corral.serving._coldstart import default_hold_seconds, estimate_cold_start_seconds
from corral.serving._config import (
    ACTIVATOR_DEPLOYMENT,
    CORRAL_IMPORT_PATH,
    LLM_DEPLOYMENT,
    MULTIPLEX_HEADER,
    ResolvedModel,
    app_name,
    cold_start_estimate,
    hold_args,
    resolve_engine,
    route_prefix,
    routing_headers,
    serve_config,
    served_model_names,
)
from corral.serving._engine import Engine, EngineStats, GenerationChunk, GenerationRequest, SamplingParams
from corral.serving._errors import (
    ColdStartTimeoutError,
    EngineClosedError,
    InvalidRequestError,
    ModelNotFoundError,
    OverloadedError,
    ServingError,
)

if TYPE_CHECKING:
    from corral.serving._app import build_app
    from corral.serving._hf_engine import TransformersEngine
    from corral.serving._hold import HoldPolicy, error_response, hold

__all__ = [
    "ACTIVATOR_DEPLOYMENT",
    "CORRAL_IMPORT_PATH",
    "LLM_DEPLOYMENT",
    "AdapterSource",
    "ColdStartTimeoutError",
    "Engine",
    "EngineClosedError",
    "EngineStats",
    "GenerationChunk",
    "GenerationRequest",
    "HoldArgs",
    "HoldPolicy",
    "MULTIPLEX_HEADER",
    "InvalidRequestError",
    "ModelNotFoundError",
    "OverloadedError",
    "ResolvedModel",
    "SamplingParams",
    "ServeAppArgs",
    "ServingError",
    "TransformersEngine",
    "app_name",
    "build_app",
    "cold_start_estimate",
    "default_hold_seconds",
    "error_response",
    "estimate_cold_start_seconds",
    "hold",
    "hold_args",
    "resolve_engine",
    "route_prefix",
    "routing_headers",
    "serve_config",
    "served_model_names",
]


def __getattr__(name: str) -> Any:
    # PEP 562: the Serve app, the hold helpers and the engine load Ray Serve, FastAPI and torch on
    # first use, so that building a Serve config (the control plane, the operator) loads none of them.
    if name == "build_app":
        from corral.serving._app import build_app

        return build_app
    if name in ("HoldPolicy", "error_response", "hold"):
        from corral.serving import _hold

        return getattr(_hold, name)
    if name == "TransformersEngine":
        from corral.serving._hf_engine import TransformersEngine

        return TransformersEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
