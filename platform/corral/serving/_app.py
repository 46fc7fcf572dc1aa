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

A deployment that scales to zero gets a second, always-on deployment in front:
:class:`~corral.serving._activator.CorralActivator` takes the HTTP requests and calls
:meth:`CorralLLMServer.respond` through a handle, holding each request while no replica can
take it (see :mod:`corral.serving._activator`). That costs one more hop per request, so only
``minReplicas: 0`` deployments have it.

Build it with ``import_path: corral.serving:build_app`` and :class:`ServeAppArgs` as ``args``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ray import serve

from corral.serving._activator import CorralActivator
from corral.serving._args import ServeAppArgs
from corral.serving._chat_auth import ChatAuth
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
        started = time.time()
        import torch

        # Imported in the replica, not where the app is built (no torch there), and timed as
        # its ``imports`` start-up stage.
        from corral.serving._hf_engine import TransformersEngine
        from corral.serving._loading import load_base
        from corral.serving._openai import OpenAIFrontend
        from corral.serving._prompt import Prompter

        imported = time.time()
        self.args = ServeAppArgs.model_validate(args)
        torch.set_num_threads(self.args.torch_threads)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        # Off the event loop: the replica keeps answering Serve's health checks while weights load.
        model, tokenizer = await asyncio.to_thread(
            load_base,
            self.args.model_uri,
            self.args.chat_template,
            trust_remote_code=self.args.trust_remote_code,
            device="cuda" if torch.cuda.is_available() else "cpu",  # Ray shows a replica only its own GPU
        )
        loaded = time.time()
        await asyncio.to_thread(_warm_up, model, tokenizer)
        warmed = time.time()
        metrics = ServingMetrics(self.args.served_name, backend="ray")
        #: Wall-clock times (Unix seconds) of this replica's start-up, for benchmarks and logs.
        self.startup = {"init_started": started, "imported": imported, "loaded": loaded, "warmed": warmed}
        stages = {"imports": imported - started, "model_load": loaded - imported, "warmup": warmed - loaded}
        metrics.replica_started(stages)
        self.engine = TransformersEngine(
            model,
            tokenizer,
            adapters={a.name: a.uri for a in self.args.adapters},
            max_adapters=self.args.max_adapters_per_replica,
            max_batch_size=self.args.max_concurrent_sequences,
            max_context_length=self.args.max_context_length,
            # Serve lets max_concurrent_sequences + max_queued_requests in; all of them may be waiting
            # at once (a burst on a replica that just started, before its first step admits a batch),
            # so the engine's own 429 must not fire before Serve's limit does.
            max_waiting=self.args.max_queued_requests + self.args.max_concurrent_sequences,
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
            auth=ChatAuth.from_args(self.args.auth) if self.args.auth is not None else None,
            max_body_bytes=self.args.max_body_bytes,
            max_context_length=self.engine.max_context_length,
        )
        if self.args.auth is None:
            logger.warning("%s: no auth in the app's arguments; the endpoint answers anyone", self.args.served_name)
        logger.info(
            "replica ready: %s with %d adapters (imports %.1f s, model load %.1f s, warm-up %.1f s)",
            self.args.served_name,
            len(self.args.adapters),
            *stages.values(),
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The replica's ASGI app (Serve calls this once, after ``__init__``)."""
        return self.frontend.app()

    async def respond(self, kind: str, body: bytes) -> AsyncIterator[Any]:
        """One OpenAI request through a handle (the activator's path), streamed back in pieces.

        Yields ``None`` first, the moment this replica has the request (the activator's hold
        ends there), then ``{"status", "media_type"}``, then the body as ``bytes`` pieces: one
        for a JSON answer, one per server-sent event for a stream.
        """
        from starlette.responses import StreamingResponse

        yield None
        response = await self.frontend.respond("chat" if kind == "chat" else "completion", body)
        yield {"status": response.status_code, "media_type": response.media_type}
        if isinstance(response, StreamingResponse):
            async for piece in response.body_iterator:
                yield piece if isinstance(piece, bytes) else str(piece).encode()
        else:
            yield bytes(response.body)

    async def stats(self) -> dict[str, Any]:
        """The engine's :class:`~corral.serving.EngineStats` as a dict, with the ``replica`` id and its
        ``startup`` times (through a handle).
        """
        from dataclasses import asdict

        return {
            "replica": serve.get_replica_context().replica_id.unique_id,
            "startup": dict(self.startup),
            **asdict(self.engine.stats()),
        }


def _warm_up(model: Any, tokenizer: Any) -> None:
    """One forward pass on a short prompt, so the first request does not pay for lazy initialisation."""
    import torch

    ids = tokenizer("Hello", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        model(input_ids=ids)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Serve application builder (``import_path: corral.serving:build_app``).

    Args:
        args: A :class:`ServeAppArgs` as plain JSON (the application's ``args``).

    Returns:
        The bound application: one ``CorralLLMServer`` deployment, ingress and engine in one; with
        ``args.hold`` set (a deployment that scales to zero), a ``CorralActivator`` ingress in front
        that holds requests until a replica takes them.
    """
    parsed = ServeAppArgs.model_validate(args)
    server: Any = CorralLLMServer
    bound = server.options(max_ongoing_requests=parsed.max_concurrent_sequences + parsed.max_queued_requests).bind(
        parsed.model_dump(mode="json")
    )
    if parsed.hold is None:
        app: serve.Application = bound
        return app

    activator: Any = CorralActivator
    held: serve.Application = activator.bind(parsed.model_dump(mode="json"), bound)
    return held
