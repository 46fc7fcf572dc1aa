"""Serving: ModelDeployments as Ray Serve applications behind an OpenAI-compatible endpoint.

* :func:`serve_config` — ModelDeployments -> one Ray Serve config (``serveConfigV2``);
  engine ``vllm`` points at Ray Serve LLM, engine ``transformers`` at :func:`build_app`.
* :func:`build_app` — Corral's Serve application (``import_path: corral.serving:build_app``):
  one deployment that is both the OpenAI ingress and the engine holder.
* :func:`routing_headers` — the ``serve_multiplexed_model_id`` header that routes an adapter's
  requests to a replica already holding it.
* :class:`TransformersEngine` — continuous batching with transformers + PEFT multi-LoRA,
  usable in-process.

Ray Serve and torch are imported only when :func:`build_app` / :class:`TransformersEngine`
are first used, so building configs stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral.serving._args import AdapterSource, ServeAppArgs
from corral.serving._config import (
    MULTIPLEX_HEADER,
    ResolvedModel,
    resolve_engine,
    routing_headers,
    serve_config,
    served_model_names,
)
from corral.serving._engine import Engine, EngineStats, GenerationChunk, GenerationRequest, SamplingParams
from corral.serving._errors import (
    EngineClosedError,
    InvalidRequestError,
    ModelNotFoundError,
    OverloadedError,
    ServingError,
)

if TYPE_CHECKING:
    from corral.serving._app import build_app
    from corral.serving._hf_engine import TransformersEngine

__all__ = [
    "AdapterSource",
    "Engine",
    "EngineClosedError",
    "EngineStats",
    "GenerationChunk",
    "GenerationRequest",
    "MULTIPLEX_HEADER",
    "InvalidRequestError",
    "ModelNotFoundError",
    "OverloadedError",
    "ResolvedModel",
    "SamplingParams",
    "ServeAppArgs",
    "ServingError",
    "TransformersEngine",
    "build_app",
    "resolve_engine",
    "routing_headers",
    "serve_config",
    "served_model_names",
]


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from corral.serving._app import build_app

        return build_app
    if name == "TransformersEngine":
        from corral.serving._hf_engine import TransformersEngine

        return TransformersEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
