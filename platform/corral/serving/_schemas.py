"""OpenAI-compatible request and response bodies (the subset Corral serves).

Requests are strict (``extra="forbid"``): an unknown or unsupported field is a 400 that
names the field. A few fields OpenAI clients send with their default values
(``presence_penalty=0``, ``logprobs=false``...) are accepted only at those defaults.

One extension beyond OpenAI, with vLLM's name and meaning: ``ignore_eos`` (keep generating
past end-of-sequence until ``max_tokens``, so benchmarks get answers of a fixed length).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from corral.serving._errors import InvalidRequestError

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "ModelCard",
    "ModelList",
    "StreamOptions",
    "Usage",
    "chat_chunk",
    "chat_response",
    "completion_chunk",
    "completion_response",
    "parse_request",
]

FinishReason = Literal["stop", "length"]
_T = TypeVar("_T", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    """One text part of a message's content list."""

    type: Literal["text"] = Field(description="Only text parts are served.")
    text: str = Field(description="The text.")


class ChatMessage(_Strict):
    """One message of a conversation."""

    role: Literal["system", "user", "assistant"] = Field(description="Who speaks.")
    content: str | list[TextPart] = Field(description="Text, or a list of text parts.")
    name: str | None = Field(default=None, description="Optional speaker name (ignored).")

    def text(self) -> str:
        """The content as one string."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(_Strict):
    """Options of a streamed answer."""

    include_usage: bool = Field(default=False, description="Send a last chunk with usage counts.")


def _zero(value: float | None, name: str) -> float | None:
    if value not in (None, 0, 0.0):
        raise ValueError(f"{name} is not supported; only 0 is accepted")
    return value


class _SamplingFields(_Strict):
    model: str = Field(min_length=1, description="Base model or adapter name.")
    max_tokens: Annotated[int, Field(ge=1)] | None = Field(default=None, description="Most tokens to generate.")
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    n: int = Field(default=1, description="Choices per request; only 1 is served.")
    stream: bool = Field(default=False, description="Stream server-sent events.")
    stream_options: StreamOptions | None = Field(default=None, description="Streaming options.")
    seed: int | None = Field(default=None, description="Seed for sampling (deterministic per request).")
    stop: str | list[str] | None = Field(default=None, description="Up to 4 stop strings.")
    user: str | None = Field(default=None, description="End-user id (ignored).")
    presence_penalty: float | None = Field(default=None, description="Only 0 is accepted.")
    frequency_penalty: float | None = Field(default=None, description="Only 0 is accepted.")
    logit_bias: dict[str, float] | None = Field(default=None, description="Only empty is accepted.")
    ignore_eos: bool = Field(
        default=False,
        description="vLLM extension: generate past end-of-sequence until max_tokens (stop strings still apply).",
    )

    @field_validator("n")
    @classmethod
    def _n_is_one(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported")
        return v

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        items = [v] if isinstance(v, str) else (v or [])
        if len(items) > 4 or any(not s for s in items):
            raise ValueError("stop takes at most 4 non-empty strings")
        return v

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _penalty(cls, v: float | None, info: Any) -> float | None:
        return _zero(v, info.field_name)

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v:
            raise ValueError("logit_bias is not supported")
        return v

    def stop_list(self) -> list[str]:
        """The stop strings as a list."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(_SamplingFields):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Newer name of max_tokens."
    )
    logprobs: bool | None = Field(default=None, description="Only false is accepted.")

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("logprobs is not supported")
        return v

    @model_validator(mode="after")
    def _one_limit(self) -> ChatCompletionRequest:
        if self.max_completion_tokens is not None:
            if self.max_tokens is not None and self.max_tokens != self.max_completion_tokens:
                raise ValueError("set max_tokens or max_completion_tokens, not both")
            self.max_tokens = self.max_completion_tokens
        return self


class CompletionRequest(_SamplingFields):
    """``POST /v1/completions`` (one prompt per request)."""

    prompt: str | list[str] = Field(description="The prompt (a list must hold exactly one string).")
    max_tokens: Annotated[int, Field(ge=1)] | None = Field(default=16, description="Most tokens to generate.")
    echo: bool = Field(default=False, description="Only false is accepted.")
    logprobs: int | None = Field(default=None, description="Only null is accepted.")
    suffix: str | None = Field(default=None, description="Only null is accepted.")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return v

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v: bool) -> bool:
        if v:
            raise ValueError("echo is not supported")
        return v

    @field_validator("logprobs", "suffix")
    @classmethod
    def _unsupported(cls, v: Any, info: Any) -> Any:
        if v is not None:
            raise ValueError(f"{info.field_name} is not supported")
        return v

    def prompt_text(self) -> str:
        """The single prompt."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


def parse_request(cls: type[_T], body: Any) -> _T:
    """Validate a JSON body, turning the first problem into a 400 that names the field.

    Raises:
        InvalidRequestError: The body is not an object or a field is wrong; ``param`` is the
            dotted field path (``messages.0.role``).
    """
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object", param=None)
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"] if not str(p).startswith(("function-", "str", "list["))]
        param = ".".join(loc) or None
        msg = first["msg"].removeprefix("Value error, ")
        where = f"{param}: " if param else ""
        raise InvalidRequestError(f"{where}{msg}", param=param) from None


class Usage(BaseModel):
    """Token counts of one answer."""

    prompt_tokens: int = Field(description="Tokens in the prompt.")
    completion_tokens: int = Field(description="Tokens generated.")
    total_tokens: int = Field(description="Sum of both.")

    @classmethod
    def of(cls, prompt: int, completion: int) -> Usage:
        """Usage from the two counts."""
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models``."""

    id: str = Field(description="Name clients pass as model.")
    object: Literal["model"] = Field(default="model", description="Always model.")
    created: int = Field(default_factory=lambda: int(time.time()), description="Unix time.")
    owned_by: str = Field(default="corral", description="Owner.")
    parent: str | None = Field(default=None, description="The base model of an adapter.")


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = Field(default="list", description="Always list.")
    data: list[ModelCard] = Field(description="The served models.")


def new_id(prefix: str) -> str:
    """A fresh response id such as ``chatcmpl-1f0c...``."""
    return f"{prefix}-{uuid.uuid4().hex}"


def chat_response(
    rid: str, model: str, *, text: str, finish: FinishReason, usage: Usage, created: int
) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` body."""
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": usage.model_dump(),
    }


def chat_chunk(
    rid: str,
    model: str,
    created: int,
    *,
    delta: dict[str, str] | None,
    finish: FinishReason | None = None,
    usage: Usage | None = None,
) -> dict[str, Any]:
    """One streamed ``chat.completion.chunk``; ``delta=None`` makes the usage-only last chunk."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage.model_dump() if usage is not None else None,
    }


def completion_response(
    rid: str, model: str, *, text: str, finish: FinishReason, usage: Usage, created: int
) -> dict[str, Any]:
    """A non-streamed ``text_completion`` body."""
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
        "usage": usage.model_dump(),
    }


def completion_chunk(
    rid: str,
    model: str,
    created: int,
    *,
    text: str | None,
    finish: FinishReason | None = None,
    usage: Usage | None = None,
) -> dict[str, Any]:
    """One streamed ``text_completion`` chunk; ``text=None`` makes the usage-only last chunk."""
    choices = [] if text is None else [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage.model_dump() if usage is not None else None,
    }
