"""The ``Engine`` protocol every serving engine implements, and its value types.

An engine turns prompt token ids into a stream of :class:`GenerationChunk` s. It owns
batching, sampling, stop handling and the adapters loaded next to its base weights; the
OpenAI layer above it only templates prompts and formats answers.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Engine", "EngineStats", "GenerationChunk", "GenerationRequest", "SamplingParams"]

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens for one request.

    Attributes:
        max_tokens: Most tokens to generate; ``None`` runs to the context limit.
        temperature: 0 is greedy; otherwise logits are divided by it.
        top_p: Nucleus sampling mass (1.0 keeps every token).
        seed: Per-request generator seed; ``None`` draws a fresh one.
        stop: Stop strings; the answer ends before the first one and does not include it.
        ignore_eos: Keep generating past end-of-sequence tokens until ``max_tokens`` or the
            context ends (vLLM's ``ignore_eos``; for benchmarks that need a fixed answer
            length). Stop strings still apply.
    """

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to complete.

    Attributes:
        prompt_ids: Prompt token ids (already templated).
        params: Sampling parameters.
        adapter: LoRA adapter name, or ``None`` for the base model.
        request_id: Caller's id, for logs.
    """

    prompt_ids: tuple[int, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    adapter: str | None = None
    request_id: str = ""


@dataclass(frozen=True)
class GenerationChunk:
    """A piece of an answer; the last chunk of a request has ``finish_reason`` set.

    Attributes:
        text: Text added by this chunk (may be empty while a possible stop string is held back).
        token_ids: Token ids this chunk accounts for.
        finish_reason: ``stop`` (end of turn or stop string), ``length`` (max_tokens or
            context), or ``None`` while generating.
        prompt_tokens: Tokens in the prompt.
        completion_tokens: Tokens generated so far (including this chunk's).
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason | None
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of an engine's load.

    Attributes:
        running: Sequences in the running batch.
        waiting: Requests queued for the next step.
        steps: Model forward passes run so far.
        batched_rows: Sum over steps of the batch size (``batched_rows / steps`` is the mean batch).
        max_batch_seen: Largest batch run.
        adapters_loaded: Names of the adapters resident now.
        adapter_loads: Adapter loads so far.
        adapter_evictions: Adapter evictions so far.
    """

    running: int
    waiting: int
    steps: int
    batched_rows: int
    max_batch_seen: int
    adapters_loaded: tuple[str, ...]
    adapter_loads: int
    adapter_evictions: int


class Engine(abc.ABC):
    """What the serving layer needs from an engine."""

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream the answer to ``request`` as tokens are produced.

        Raises:
            corral.serving.ServingError: Bad request (400), unknown adapter (404), queue
                full (429) or engine closed (503), before the first chunk.
        """

    @abc.abstractmethod
    async def load_adapter(self, name: str) -> None:
        """Make adapter ``name`` resident (evicting the least recently used one if full)."""

    @abc.abstractmethod
    async def unload_adapter(self, name: str) -> None:
        """Drop adapter ``name`` (deferred while running requests use it)."""

    @abc.abstractmethod
    def stats(self) -> EngineStats:
        """The engine's current load."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the engine; waiting and running requests end with a 503."""
