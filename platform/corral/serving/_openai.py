"""The OpenAI-compatible HTTP API over one :class:`~corral.serving.Engine`, in the engine's process.

:class:`OpenAIFrontend` parses OpenAI bodies, maps the body's ``model`` to the base or an
adapter, applies the chat template, drives the engine and formats the answer: one JSON body,
or server-sent events ending in ``data: [DONE]``. Nothing here knows Ray: Corral's Serve
replica (:mod:`corral.serving._app`) mounts :meth:`OpenAIFrontend.app` as its ingress, so a
request crosses one process boundary (Serve's proxy to the replica that holds the engine) and
tokens travel from the engine to the HTTP response inside one process; tests and benchmarks
mount the same app in-process.
"""

# No ``from __future__ import annotations``: FastAPI reads the route methods' annotations at
# runtime and must see the real ``Request`` class, not a string.

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from corral.serving._chat_auth import DEFAULT_MAX_BODY_BYTES, ChatAuth, read_capped
from corral.serving._engine import Engine, GenerationChunk, GenerationRequest, SamplingParams
from corral.serving._errors import InvalidRequestError, ModelNotFoundError, ServingError
from corral.serving._metrics import ServingMetrics
from corral.serving._prompt import Prompter
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

__all__ = ["OpenAIFrontend"]

logger = logging.getLogger(__name__)

Kind = Literal["chat", "completion"]
OpenAIRequest = ChatCompletionRequest | CompletionRequest


@dataclass(frozen=True)
class _Answer:
    """What formatting one answer needs besides its chunks."""

    kind: Kind
    req: OpenAIRequest
    adapter: str | None
    id: str
    created: int


@asynccontextmanager
async def _closing(chunks: AsyncIterator[GenerationChunk]) -> AsyncIterator[AsyncIterator[GenerationChunk]]:
    """Close the engine's stream on the way out, so an abandoned answer leaves the batch at once."""
    try:
        yield chunks
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def _sse(obj: dict[str, Any] | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


class OpenAIFrontend:
    """``/v1/chat/completions``, ``/v1/completions``, ``/v1/models`` and ``/healthz`` over one engine.

    Args:
        engine: The engine that generates (it batches concurrent requests itself).
        prompter: Templates and tokenizes prompts with the model's own chat template.
        served_name: The name clients pass as ``model`` for the base model.
        adapters: The adapter names clients may pass as ``model``.
        metrics: Where errors are counted (the engine records the rest); ``None`` records nothing.
        prepare_adapter: Awaited with the adapter name before a request for it reaches the engine
            (Serve's ``@serve.multiplexed`` loader, so the replica reports which adapters it holds).
        auth: The bearer tokens the HTTP routes accept; ``None`` leaves them open (tests).
        max_body_bytes: Largest request body the HTTP routes read.
        max_context_length: Longest prompt in tokens; a prompt with more characters than that many
            of the tokenizer's longest tokens is refused before it is tokenized.
    """

    def __init__(
        self,
        engine: Engine,
        prompter: Prompter,
        *,
        served_name: str,
        adapters: Sequence[str] = (),
        metrics: ServingMetrics | None = None,
        prepare_adapter: Callable[[str], Awaitable[object]] | None = None,
        auth: ChatAuth | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_context_length: int | None = None,
    ) -> None:
        self.engine = engine
        self.prompter = prompter
        self.auth = auth
        self.max_body_bytes = max_body_bytes
        self._max_prompt_chars = (max_context_length or 0) * max(prompter.longest_token_chars(), 1)
        self.served_name = served_name
        self.adapters = tuple(adapters)
        self.metrics = metrics
        self._prepare_adapter = prepare_adapter

    def app(self) -> FastAPI:
        """A FastAPI app serving this frontend's routes."""
        api = FastAPI(title="Corral OpenAI-compatible endpoint")
        api.add_api_route("/v1/models", self.models, methods=["GET"])
        api.add_api_route("/healthz", self.healthz, methods=["GET"])
        api.add_api_route("/v1/chat/completions", self.chat_completions, methods=["POST"])
        api.add_api_route("/v1/completions", self.completions, methods=["POST"])
        return api

    # ---------------------------------------------------------------- routes

    async def models(self, request: Request) -> Response:
        """``GET /v1/models``: the base model and its adapters."""
        try:
            await self._authorize(request)
        except ServingError as exc:
            return self._error(exc, None)
        return JSONResponse(self.model_list())

    def model_list(self) -> dict[str, Any]:
        """The ``/v1/models`` body."""
        cards = [ModelCard(id=self.served_name)] + [ModelCard(id=a, parent=self.served_name) for a in self.adapters]
        return ModelList(data=cards).model_dump()

    async def healthz(self) -> dict[str, str]:
        """Liveness."""
        return {"status": "ok"}

    async def chat_completions(self, request: Request) -> Response:
        """``POST /v1/chat/completions`` (streamed and not)."""
        return await self._route(request, "chat")

    async def completions(self, request: Request) -> Response:
        """``POST /v1/completions`` (streamed and not)."""
        return await self._route(request, "completion")

    async def _authorize(self, request: Request) -> None:
        if self.auth is not None:
            await self.auth.authorize(request.headers.get("authorization"))

    async def _route(self, request: Request, kind: Kind) -> Response:
        try:
            await self._authorize(request)  # before the body is read
            raw = await read_capped(request, self.max_body_bytes)
        except ServingError as exc:
            return self._error(exc, None)
        return await self.respond(kind, raw)

    # ---------------------------------------------------------------- one request

    async def respond(self, kind: Kind, raw: bytes) -> Response:
        """Answer one OpenAI request body of ``kind`` (what the routes do, callable without HTTP).

        Args:
            kind: ``chat`` (``/v1/chat/completions``) or ``completion`` (``/v1/completions``).
            raw: The request body.

        Returns:
            A JSON response, a server-sent-events :class:`StreamingResponse`, or OpenAI's error.
        """
        adapter: str | None = None
        try:
            try:
                body = json.loads(raw)
            except ValueError:
                raise InvalidRequestError("the request body is not valid JSON", param=None) from None
            req: OpenAIRequest
            if kind == "chat":
                req = parse_request(ChatCompletionRequest, body)
            else:
                req = parse_request(CompletionRequest, body)
            adapter = self._adapter_for(req.model)
            self._check_prompt_size(req)
            if adapter is not None and self._prepare_adapter is not None:
                await self._prepare_adapter(adapter)
            # Tokenizing a long prompt takes a while: off the event loop, which keeps serving others.
            generation = await asyncio.to_thread(self._generation_request, req, adapter)
            chunks = self.engine.generate(generation)
            first = await self._first(chunks)
        except ServingError as exc:
            if exc.param == "prompt" and kind == "chat":
                exc.param = "messages"
            return self._error(exc, adapter)
        answer = _Answer(kind, req, adapter, new_id("chatcmpl" if kind == "chat" else "cmpl"), int(time.time()))
        if req.stream:
            return StreamingResponse(self._events(answer, first, chunks), media_type="text/event-stream")
        return await self._whole(answer, first, chunks)

    def _check_prompt_size(self, req: OpenAIRequest) -> None:
        """Refuse, before tokenizing, a prompt that cannot fit: more characters than the context's tokens can hold."""
        if not self._max_prompt_chars:
            return
        if isinstance(req, ChatCompletionRequest):
            chars = sum(len(m.text()) for m in req.messages)
        else:
            chars = len(req.prompt_text())
        if chars > self._max_prompt_chars:
            raise InvalidRequestError(
                f"the prompt has {chars} characters; the model's context of {self._max_prompt_chars} characters at "
                "most cannot hold it",
                param="prompt",
            )

    def _adapter_for(self, model: str) -> str | None:
        if model == self.served_name:
            return None
        if model in self.adapters:
            return model
        names = ", ".join([self.served_name, *self.adapters])
        raise ModelNotFoundError(f"the model {model!r} does not exist; this endpoint serves: {names}", param="model")

    def _generation_request(self, req: OpenAIRequest, adapter: str | None) -> GenerationRequest:
        if isinstance(req, ChatCompletionRequest):
            ids = self.prompter.chat([{"role": m.role, "content": m.text()} for m in req.messages])
        else:
            ids = self.prompter.completion(req.prompt_text())
        params = SamplingParams(
            max_tokens=req.max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed,
            stop=tuple(req.stop_list()),
            ignore_eos=req.ignore_eos,
        )
        return GenerationRequest(prompt_ids=tuple(ids), params=params, adapter=adapter)

    @staticmethod
    async def _first(chunks: AsyncIterator[GenerationChunk]) -> GenerationChunk:
        """The first chunk: the engine raises bad requests, unknown adapters and overload before it."""
        try:
            return await anext(chunks)
        except StopAsyncIteration:
            raise ServingError("the engine ended the answer without a chunk") from None

    def _error(self, exc: ServingError, adapter: str | None) -> JSONResponse:
        if self.metrics is not None:
            self.metrics.error(adapter, exc.status)
        return JSONResponse(exc.to_dict(), status_code=exc.status)

    async def _whole(self, answer: _Answer, first: GenerationChunk, chunks: AsyncIterator[GenerationChunk]) -> Response:
        adapter = answer.adapter
        pieces, last = [first.text], first
        try:
            async with _closing(chunks):
                async for chunk in chunks:
                    pieces.append(chunk.text)
                    last = chunk
        except ServingError as exc:
            return self._error(exc, adapter)
        if last.finish_reason is None:
            return self._error(ServingError("the engine ended the answer before it finished"), adapter)
        usage = Usage.of(last.prompt_tokens, last.completion_tokens)
        build = chat_response if answer.kind == "chat" else completion_response
        text, finish = "".join(pieces), last.finish_reason
        return JSONResponse(
            build(answer.id, answer.req.model, text=text, finish=finish, usage=usage, created=answer.created)
        )

    async def _events(
        self, answer: _Answer, first: GenerationChunk, chunks: AsyncIterator[GenerationChunk]
    ) -> AsyncIterator[str]:
        kind, rid, model, created = answer.kind, answer.id, answer.req.model, answer.created
        if kind == "chat":
            yield _sse(chat_chunk(rid, model, created, delta={"role": "assistant", "content": ""}))
        chunk: GenerationChunk | None = first
        async with _closing(chunks):
            while chunk is not None:
                text, finish = chunk.text, chunk.finish_reason
                if kind == "chat":
                    if text:
                        yield _sse(chat_chunk(rid, model, created, delta={"content": text}))
                    if finish is not None:
                        yield _sse(chat_chunk(rid, model, created, delta={}, finish=finish))
                elif text or finish is not None:
                    yield _sse(completion_chunk(rid, model, created, text=text, finish=finish))
                if finish is not None:
                    break
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    chunk = None
                except ServingError as exc:
                    if self.metrics is not None:
                        self.metrics.error(answer.adapter, exc.status)
                    yield _sse(exc.to_dict())
                    yield _sse("[DONE]")
                    return
        if answer.req.include_usage() and chunk is not None:
            usage = Usage.of(chunk.prompt_tokens, chunk.completion_tokens)
            if kind == "chat":
                yield _sse(chat_chunk(rid, model, created, delta=None, usage=usage))
            else:
                yield _sse(completion_chunk(rid, model, created, text=None, usage=usage))
        yield _sse("[DONE]")
