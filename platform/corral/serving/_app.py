"""Corral's Ray Serve application (engine ``transformers``): an OpenAI-compatible endpoint in one hop.

One deployment, ``CorralLLMServer``, is both the HTTP ingress and the engine holder: each
replica loads the base weights once, runs a :class:`~corral.serving.TransformersEngine`
and mounts :class:`~corral.serving._openai.OpenAIFrontend`'s FastAPI app as its ASGI
ingress (``serve.ingress()`` with ``__serve_build_asgi_app__``, the late-bound form Ray
Serve LLM's direct streaming uses). A request travels proxy -> replica and back, and the
tokens of an answer stay inside the replica until they leave as one HTTP body (or as
server-sent events, which Serve batches per proxy message).

Adapter affinity comes from Serve's model multiplexing: the replica registers every adapter
it serves through ``@serve.multiplexed`` (LRU, ``maxAdaptersPerReplica``), and Serve's
proxy routes a request carrying the header ``serve_multiplexed_model_id: <adapter>`` to a
replica that already holds that adapter. The body's ``model`` alone does not steer the proxy
(it never reads bodies); without the header a request goes to any replica, which loads the
adapter on first use and answers just the same.

Build it with ``import_path: corral.serving:build_app`` and :class:`ServeAppArgs` as ``args``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

from ray import serve

from corral.serving._args import ServeAppArgs
from corral.serving._config import LLM_DEPLOYMENT
from corral.serving._metrics import ServingMetrics

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["CorralLLMServer", "build_app"]

logger = logging.getLogger(__name__)


class _Resident:
    """What ``@serve.multiplexed`` caches per adapter; Serve's LRU eviction unloads the adapter."""

    def __init__(self, server: CorralLLMServer, name: str) -> None:
        self._server: CorralLLMServer | None = server
        self.name = name

    async def __del__(self) -> None:  # called (and awaited) by Serve's multiplexer on LRU eviction
        server, self._server = self._server, None
        if server is not None:
            await server.engine.unload_adapter(self.name)


@serve.deployment(name=LLM_DEPLOYMENT, ray_actor_options={"num_cpus": 0.5})
@serve.ingress()
class CorralLLMServer:
    """One replica: the base model, its resident adapters, the batching engine and the OpenAI API."""

    async def __init__(self, args: dict[str, Any]) -> None:  # type: ignore[misc]  # Serve awaits async constructors
        import torch

        from corral.serving._hf_engine import TransformersEngine
        from corral.serving._loading import load_base
        from corral.serving._openai import OpenAIFrontend
        from corral.serving._prompt import Prompter

        self.args = ServeAppArgs.model_validate(args)
        torch.set_num_threads(self.args.torch_threads)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        # Off the event loop: the replica keeps answering Serve's health checks while weights load.
        model, tokenizer = await asyncio.to_thread(load_base, self.args.model_uri, self.args.chat_template)
        metrics = ServingMetrics(self.args.served_name, backend="ray")
        self.engine = TransformersEngine(
            model,
            tokenizer,
            adapters={a.name: a.uri for a in self.args.adapters},
            max_adapters=self.args.max_adapters_per_replica,
            max_batch_size=self.args.max_concurrent_sequences,
            max_context_length=self.args.max_context_length,
            max_waiting=self.args.max_queued_requests,
            metrics=metrics,
        )

        async def load_adapter(name: str) -> _Resident:
            await self.engine.load_adapter(name)
            return _Resident(self, name)

        self.frontend = OpenAIFrontend(
            self.engine,
            Prompter(tokenizer),
            served_name=self.args.served_name,
            adapters=[a.name for a in self.args.adapters],
            metrics=metrics,
            prepare_adapter=serve.multiplexed(max_num_models_per_replica=self.args.max_adapters_per_replica)(
                load_adapter
            ),
        )
        logger.info("replica ready: %s with %d adapters", self.args.served_name, len(self.args.adapters))

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The replica's ASGI app (Serve calls this once, after ``__init__``)."""
        return self.frontend.app()

    async def stats(self) -> dict[str, Any]:
        """The engine's :class:`~corral.serving.EngineStats` as a dict, with the ``replica`` id (through a handle)."""
        from dataclasses import asdict

        return {"replica": serve.get_replica_context().replica_id.unique_id, **asdict(self.engine.stats())}


def build_app(args: dict[str, Any]) -> serve.Application:
    """Serve application builder (``import_path: corral.serving:build_app``).

    Args:
        args: A :class:`ServeAppArgs` as plain JSON (the application's ``args``).

    Returns:
        The bound application: one ``CorralLLMServer`` deployment, ingress and engine in one.
    """
    parsed = ServeAppArgs.model_validate(args)
    server: Any = CorralLLMServer
    app: serve.Application = server.options(
        max_ongoing_requests=parsed.max_concurrent_sequences + parsed.max_queued_requests
    ).bind(parsed.model_dump(mode="json"))
    return app
