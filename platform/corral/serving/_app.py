"""Corral's Ray Serve application (engine ``transformers``): an OpenAI-compatible endpoint.

Two deployments:

* ``CorralIngress`` — FastAPI (``@serve.ingress``): validates OpenAI bodies, answers
  ``/v1/models``, maps the body's ``model`` to the base or an adapter, and calls the
  engine through a handle with ``multiplexed_model_id=<adapter>`` so Serve routes the
  request to a replica that already holds the adapter (the body's ``model`` alone does
  not steer Serve's router; the multiplexed id does). Streams server-sent events.
* ``CorralLLMServer`` — one :class:`~corral.serving.TransformersEngine` per replica,
  holding the base weights once and the adapters it was asked for
  (``@serve.multiplexed``, wired at init so its capacity comes from the args).

Build it with ``import_path: corral.serving:build_app`` and :class:`ServeAppArgs` as ``args``.
"""

# No ``from __future__ import annotations`` here: FastAPI must see the real ``Request``
# annotation on the ingress methods (Serve re-creates them), or it reads ``request`` as a query
# parameter and answers 422.

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from corral.serving._args import ServeAppArgs
from corral.serving._config import INGRESS_DEPLOYMENT, LLM_DEPLOYMENT
from corral.serving._engine import GenerationChunk, GenerationRequest, SamplingParams
from corral.serving._errors import EngineClosedError, InvalidRequestError, ModelNotFoundError, ServingError
from corral.serving._metrics import ServingMetrics
from corral.serving._schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    ModelList,
    Usage,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    new_id,
    parse_request,
)

__all__ = ["CorralIngress", "CorralLLMServer", "build_app"]

logger = logging.getLogger(__name__)

api = FastAPI(title="Corral OpenAI-compatible endpoint")


class _Resident:
    """What ``@serve.multiplexed`` caches per adapter; unloading it evicts the adapter."""

    def __init__(self, server: "CorralLLMServer", name: str) -> None:
        self._server: CorralLLMServer | None = server
        self.name = name

    async def __del__(self) -> None:  # called (and awaited) by Serve's multiplexer on LRU eviction
        server, self._server = self._server, None
        if server is not None:
            await server.engine.unload_adapter(self.name)


@serve.deployment(name=LLM_DEPLOYMENT, max_ongoing_requests=16, ray_actor_options={"num_cpus": 0.5})
class CorralLLMServer:
    """One replica: the base model, its resident adapters, and the batching engine."""

    def __init__(self, args: dict[str, Any]) -> None:
        import torch

        from corral.serving._hf_engine import TransformersEngine
        from corral.serving._loading import load_base
        from corral.serving._prompt import Prompter

        self.args = ServeAppArgs.model_validate(args)
        torch.set_num_threads(self.args.torch_threads)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        model, tokenizer = load_base(self.args.model_uri, self.args.chat_template)
        self.prompter = Prompter(tokenizer)
        self.engine = TransformersEngine(
            model,
            tokenizer,
            adapters={a.name: a.uri for a in self.args.adapters},
            max_adapters=self.args.max_adapters_per_replica,
            max_batch_size=self.args.max_concurrent_sequences,
            max_context_length=self.args.max_context_length,
            max_waiting=self.args.max_queued_requests,
            metrics=ServingMetrics(self.args.served_name, backend="ray"),
        )

        async def load_adapter(name: str) -> _Resident:
            await self.engine.load_adapter(name)
            return _Resident(self, name)

        self._adapter = serve.multiplexed(max_num_models_per_replica=self.args.max_adapters_per_replica)(
            load_adapter
        )
        logger.info("replica ready: %s with %d adapters", self.args.served_name, len(self.args.adapters))

    async def generate(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Stream chunks ``{text, finish_reason, prompt_tokens, completion_tokens}`` or one ``{error, status}``.

        Every chunk crossing to the ingress is a Ray message, which costs more than a token of
        a small model. So a non-streamed request (``payload["stream"]`` false) gets one chunk,
        and a streamed one gets whatever tokens are ready at once merged into one chunk.
        """
        adapter = payload.get("adapter")
        try:
            if adapter:
                await self._adapter(adapter)
            if payload["kind"] == "chat":
                ids = self.prompter.chat(payload["messages"])
            else:
                ids = self.prompter.completion(payload["prompt"])
            request = GenerationRequest(
                prompt_ids=tuple(ids),
                params=SamplingParams(**payload["params"]),
                adapter=adapter,
                request_id=payload.get("id", ""),
            )
            pending: asyncio.Queue[GenerationChunk | BaseException | None] = asyncio.Queue()
            pump = asyncio.get_running_loop().create_task(self._pump(request, pending))
            try:
                done = False
                while not done:
                    items = [await pending.get()]
                    while not pending.empty():
                        items.append(pending.get_nowait())
                    if not payload.get("stream", True):
                        while items[-1] is not None and not isinstance(items[-1], BaseException):
                            items.append(await pending.get())
                    chunks: list[GenerationChunk] = []
                    for item in items:
                        if isinstance(item, BaseException):
                            raise item
                        if item is None:
                            done = True
                        else:
                            chunks.append(item)
                    if chunks:
                        last = chunks[-1]
                        yield {
                            "text": "".join(c.text for c in chunks),
                            "finish_reason": last.finish_reason,
                            "prompt_tokens": last.prompt_tokens,
                            "completion_tokens": last.completion_tokens,
                        }
            finally:
                pump.cancel()
        except ServingError as exc:
            if exc.param == "prompt" and payload["kind"] == "chat":
                exc.param = "messages"
            yield {"error": exc.to_dict(), "status": exc.status}

    async def _pump(
        self, request: GenerationRequest, out: "asyncio.Queue[GenerationChunk | BaseException | None]"
    ) -> None:
        try:
            async for chunk in self.engine.generate(request):
                out.put_nowait(chunk)
        except Exception as exc:  # handed to the consumer, which raises it
            out.put_nowait(exc)
            return
        out.put_nowait(None)

    def stats(self) -> dict[str, Any]:
        """The engine's :class:`~corral.serving.EngineStats` as a dict."""
        from dataclasses import asdict

        return asdict(self.engine.stats())


def _error_response(exc: ServingError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status)


def _sse(obj: dict[str, Any] | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


@serve.deployment(name=INGRESS_DEPLOYMENT, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class CorralIngress:
    """The OpenAI-compatible HTTP API in front of ``CorralLLMServer``."""

    def __init__(self, llm: DeploymentHandle[Any], args: dict[str, Any]) -> None:
        self.args = ServeAppArgs.model_validate(args)
        self.llm = llm
        self.adapters = {a.name for a in self.args.adapters}
        self.metrics = ServingMetrics(self.args.served_name, backend="ray")

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        """``GET /v1/models``: the base model and its adapters."""
        base = self.args.served_name
        cards = [ModelCard(id=base)] + [ModelCard(id=a.name, parent=base) for a in self.args.adapters]
        return ModelList(data=cards).model_dump()

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        """Liveness of the ingress."""
        return {"status": "ok"}

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        """``POST /v1/chat/completions`` (streaming and not)."""
        return await self._serve(request, "chat")

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        """``POST /v1/completions`` (streaming and not)."""
        return await self._serve(request, "completion")

    async def _serve(self, request: Request, kind: str) -> Response:
        adapter: str | None = None
        try:
            try:
                body = json.loads(await request.body())
            except ValueError:
                raise InvalidRequestError("the request body is not valid JSON", param=None) from None
            req: ChatCompletionRequest | CompletionRequest
            if kind == "chat":
                req = parse_request(ChatCompletionRequest, body)
            else:
                req = parse_request(CompletionRequest, body)
            adapter = self._adapter_for(req.model)
            payload = self._payload(req, kind, adapter)
            chunks: Any = self.llm.options(stream=True, multiplexed_model_id=adapter or "").generate.remote(payload)
            first = await self._first(chunks)
            if "error" in first:
                raise ServingError.from_dict(first["error"], int(first["status"]))
        except ServingError as exc:
            self.metrics.error(adapter, exc.status)
            return _error_response(exc)
        rid, created = new_id("chatcmpl" if kind == "chat" else "cmpl"), int(time.time())
        if req.stream:
            events = self._stream(
                kind=kind, req=req, adapter=adapter, rid=rid, created=created, first=first, chunks=chunks
            )
            return StreamingResponse(events, media_type="text/event-stream")
        text, last = first["text"], first
        async for chunk in chunks:
            if "error" in chunk:
                failure = ServingError.from_dict(chunk["error"], int(chunk["status"]))
                self.metrics.error(adapter, failure.status)
                return _error_response(failure)
            text += chunk["text"]
            last = chunk
        usage = Usage.of(last["prompt_tokens"], last["completion_tokens"])
        build = chat_response if kind == "chat" else completion_response
        body = build(rid, req.model, text=text, finish=last["finish_reason"], usage=usage, created=created)
        return JSONResponse(body)

    def _adapter_for(self, model: str) -> str | None:
        if model == self.args.served_name:
            return None
        if model in self.adapters:
            return model
        names = ", ".join(self.args.served_names())
        raise ModelNotFoundError(f"the model {model!r} does not exist; this endpoint serves: {names}", param="model")

    @staticmethod
    def _payload(req: ChatCompletionRequest | CompletionRequest, kind: str, adapter: str | None) -> dict[str, Any]:
        params = {
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "seed": req.seed,
            "stop": tuple(req.stop_list()),
        }
        payload: dict[str, Any] = {"kind": kind, "adapter": adapter, "params": params, "stream": req.stream}
        if isinstance(req, ChatCompletionRequest):
            payload["messages"] = [{"role": m.role, "content": m.text()} for m in req.messages]
        else:
            payload["prompt"] = req.prompt_text()
        return payload

    @staticmethod
    async def _first(chunks: Any) -> dict[str, Any]:
        try:
            first: dict[str, Any] = await chunks.__anext__()
        except BackPressureError as exc:
            raise EngineClosedError(f"the deployment is overloaded; retry later ({exc})") from None
        except StopAsyncIteration:
            raise ServingError("the engine ended the answer without a chunk") from None
        return first

    async def _stream(
        self,
        *,
        kind: str,
        req: ChatCompletionRequest | CompletionRequest,
        adapter: str | None,
        rid: str,
        created: int,
        first: dict[str, Any],
        chunks: Any,
    ) -> AsyncIterator[str]:
        model = req.model
        if kind == "chat":
            yield _sse(chat_chunk(rid, model, created, delta={"role": "assistant", "content": ""}))

        async def rest() -> AsyncIterator[dict[str, Any]]:
            yield first
            async for c in chunks:
                yield c

        last = first
        async for chunk in rest():
            if "error" in chunk:
                self.metrics.error(adapter, int(chunk["status"]))
                yield _sse(chunk["error"])
                break
            last = chunk
            finish = chunk["finish_reason"]
            if not chunk["text"] and finish is None:
                continue
            if kind == "chat":
                if chunk["text"]:
                    yield _sse(chat_chunk(rid, model, created, delta={"content": chunk["text"]}))
                if finish is not None:
                    yield _sse(chat_chunk(rid, model, created, delta={}, finish=finish))
            else:
                yield _sse(completion_chunk(rid, model, created, text=chunk["text"], finish=finish))
        if req.include_usage() and "prompt_tokens" in last:
            usage = Usage.of(last["prompt_tokens"], last["completion_tokens"])
            if kind == "chat":
                yield _sse(chat_chunk(rid, model, created, delta=None, usage=usage))
            else:
                yield _sse(completion_chunk(rid, model, created, text=None, usage=usage))
        yield _sse("[DONE]")


def build_app(args: dict[str, Any]) -> serve.Application:
    """Serve application builder (``import_path: corral.serving:build_app``).

    Args:
        args: A :class:`ServeAppArgs` as plain JSON (the application's ``args``).

    Returns:
        The bound application: ``CorralIngress`` in front of ``CorralLLMServer``.
    """
    parsed = ServeAppArgs.model_validate(args)
    plain = parsed.model_dump(mode="json")
    server: Any = CorralLLMServer
    ingress: Any = CorralIngress
    llm = server.options(max_ongoing_requests=parsed.max_concurrent_sequences).bind(plain)
    app: serve.Application = ingress.bind(llm, plain)
    return app
