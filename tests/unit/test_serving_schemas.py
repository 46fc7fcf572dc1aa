"""OpenAI request validation: 400s that name the field; response shapes."""

from __future__ import annotations

from typing import Any

import pytest

from corral.serving import InvalidRequestError, ServingError
from corral.serving._errors import ModelNotFoundError, OverloadedError
from corral.serving._schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    Usage,
    chat_chunk,
    chat_response,
    parse_request,
)

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def param_of(cls: Any, body: Any) -> str | None:
    with pytest.raises(InvalidRequestError) as info:
        parse_request(cls, body)
    assert info.value.status == 400
    return info.value.param


def test_valid_chat_defaults() -> None:
    req = parse_request(ChatCompletionRequest, CHAT)
    assert (req.temperature, req.top_p, req.n, req.stream, req.max_tokens) == (1.0, 1.0, 1, False, None)
    assert req.messages[0].text() == "hi" and req.stop_list() == []


def test_content_parts_and_max_completion_tokens() -> None:
    body = {
        **CHAT,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "max_completion_tokens": 7,
        "stop": "x",
        "stream_options": {"include_usage": True},
    }
    req = parse_request(ChatCompletionRequest, body)
    assert req.messages[0].text() == "ab" and req.max_tokens == 7 and req.stop_list() == ["x"]
    assert req.include_usage()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": CHAT["messages"]}, "model"),
        ({**CHAT, "messages": []}, "messages"),
        ({**CHAT, "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({**CHAT, "temperature": 3}, "temperature"),
        ({**CHAT, "top_p": 0}, "top_p"),
        ({**CHAT, "max_tokens": 0}, "max_tokens"),
        ({**CHAT, "n": 2}, "n"),
        ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({**CHAT, "logprobs": True}, "logprobs"),
        ({**CHAT, "presence_penalty": 0.5}, "presence_penalty"),
        ({**CHAT, "bogus": 1}, "bogus"),
        ({**CHAT, "ignore_eos": "maybe"}, "ignore_eos"),
    ],
)
def test_bad_chat_fields_are_named(body: dict[str, Any], param: str) -> None:
    assert param_of(ChatCompletionRequest, body) == param


def test_body_must_be_an_object() -> None:
    assert param_of(ChatCompletionRequest, [1, 2]) is None


def test_ignore_eos_extension() -> None:
    """vLLM's ``ignore_eos`` is accepted on both routes and off unless asked for."""
    assert parse_request(ChatCompletionRequest, CHAT).ignore_eos is False
    assert parse_request(ChatCompletionRequest, {**CHAT, "ignore_eos": True}).ignore_eos is True
    assert parse_request(CompletionRequest, {"model": "m", "prompt": "a", "ignore_eos": True}).ignore_eos is True


def test_completion_request() -> None:
    req = parse_request(CompletionRequest, {"model": "m", "prompt": ["once"]})
    assert req.prompt_text() == "once" and req.max_tokens == 16
    assert param_of(CompletionRequest, {"model": "m", "prompt": ["a", "b"]}) == "prompt"
    assert param_of(CompletionRequest, {"model": "m", "prompt": "a", "echo": True}) == "echo"


def test_error_shapes_and_statuses() -> None:
    err = ModelNotFoundError("no such model", param="model")
    assert err.to_dict() == {
        "error": {
            "message": "no such model",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    assert (err.status, OverloadedError("x").status, InvalidRequestError("x").status) == (404, 429, 400)
    back = ServingError.from_dict(OverloadedError("busy").to_dict(), 429)
    assert isinstance(back, OverloadedError) and back.message == "busy"


def test_response_shapes() -> None:
    body = chat_response("id1", "m", text="hello", finish="stop", usage=Usage.of(3, 2), created=1)
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hello"}
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    last = chat_chunk("id1", "m", 1, delta=None, usage=Usage.of(1, 1))
    assert last["choices"] == [] and last["object"] == "chat.completion.chunk"
