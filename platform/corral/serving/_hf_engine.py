"""The ``transformers`` engine: continuous batching on CPU (or one GPU) with PEFT multi-LoRA.

One background task on the replica's event loop drives the model; every model call
runs on a single worker thread so the event loop stays free to accept requests. Each
*step* is either

* a **prefill** of the requests that arrived since the last step (left-padded, one
  forward pass), whose key/value caches are then merged into the running batch, or
* a **decode** of every running sequence (one token each, one forward pass with the
  shared ``past_key_values``).

So requests that arrive while a batch runs join it at the next step (continuous
batching) instead of waiting for it to finish. Finished rows leave the batch at once
(``DynamicCache.batch_select_indices``), and left padding no live row needs is trimmed.
Rows use different adapters in the same forward pass (batched LoRA: two batched matmuls
per layer for all rows, :mod:`corral.serving._batched_lora`).
Tokens are detokenized and streamed as they are produced; stop strings are held back
until they can no longer match.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from corral.serving._adapters import BASE_ADAPTER, AdapterRegistry
from corral.serving._engine import Engine, EngineStats, FinishReason, GenerationChunk, GenerationRequest
from corral.serving._errors import EngineClosedError, InvalidRequestError, OverloadedError, ServingError
from corral.serving._metrics import ServingMetrics

__all__ = ["TransformersEngine"]

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Seq:
    """One request's state inside the engine."""

    request: GenerationRequest
    queue: asyncio.Queue[GenerationChunk | BaseException]
    max_tokens: int
    generator: torch.Generator | None
    started: float
    generated: list[int] = field(default_factory=list)
    emitted: int = 0
    pos: int = 0
    done: bool = False
    cancelled: bool = False
    first_token_at: float | None = None
    final: GenerationChunk | None = None

    @property
    def adapter(self) -> str | None:
        return self.request.adapter


class TransformersEngine(Engine):
    """Continuous-batching generation with Hugging Face transformers and PEFT.

    Args:
        model: A causal LM in eval mode (float32 on CPU).
        tokenizer: Its tokenizer.
        adapters: Adapter name -> artifact URI, loaded on first use.
        max_adapters: Adapters resident at once (least recently used evicted).
        max_batch_size: Sequences generated at once.
        max_context_length: Longest prompt + answer; default the model's ``max_position_embeddings``.
        max_waiting: Requests queued beyond the batch before new ones get a 429.
        metrics: Where to record ``corral_serving_*``; ``None`` records nothing.
        batched_lora: Compute mixed-adapter batches with stacked adapters (two batched matmuls
            per layer); ``False`` uses PEFT's per-adapter loop (for comparison).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        adapters: Mapping[str, str] | None = None,
        max_adapters: int = 8,
        max_batch_size: int = 16,
        max_context_length: int | None = None,
        max_waiting: int = 256,
        metrics: ServingMetrics | None = None,
        batched_lora: bool = True,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 (got {max_batch_size})")
        self.tokenizer = tokenizer
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-engine")
        self._metrics = metrics
        self.adapters = AdapterRegistry(
            model,
            adapters or {},
            max_adapters,
            self._executor,
            on_load=metrics.adapter_loaded if metrics else None,
            on_evict=metrics.adapter_evicted if metrics else None,
            batched=batched_lora,
        )
        model_ctx = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        self.max_context_length = max_context_length or model_ctx
        if not self.max_context_length:
            raise ValueError("the model config has no max_position_embeddings; pass max_context_length")
        if model_ctx and self.max_context_length > model_ctx:
            raise ValueError(f"max_context_length {self.max_context_length} exceeds the model's {model_ctx} positions")
        self.max_batch_size = max_batch_size
        self.max_waiting = max_waiting
        # Every tensor the engine makes goes where the model is (a GPU's, not torch's default device).
        self._device: torch.device = next(iter(model.parameters())).device
        self._eos = self._eos_ids(model, tokenizer)
        self._pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self._eos))
        self._waiting: collections.deque[_Seq] = collections.deque()
        self._running: list[_Seq] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._steps = 0
        self._rows = 0
        self._max_seen = 0
        self._chunks: list[tuple[_Seq, GenerationChunk]] = []  # the running step's chunks (model thread)
        #: (kind, batch size) of the last 4096 forward passes; kind is ``prefill`` or ``decode``.
        self.step_log: collections.deque[tuple[str, int]] = collections.deque(maxlen=4096)

    @staticmethod
    def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
        ids: set[int] = set()
        for source in (getattr(model, "generation_config", None), model.config):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list):
                ids.update(int(v) for v in value)
        if tokenizer.eos_token_id is not None:
            ids.add(int(tokenizer.eos_token_id))
        if not ids:
            raise ValueError("neither the model nor the tokenizer names an end-of-sequence token")
        return ids

    # ---------------------------------------------------------------- public API

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream the answer to ``request`` (see :meth:`Engine.generate`)."""
        seq = await self._admit(request)
        finished = False
        try:
            while True:
                item = await seq.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    finished = True
                    return
        finally:
            if not finished:
                seq.cancelled = True
                if seq in self._waiting:
                    self._waiting.remove(seq)
                    self._retire(seq)

    async def load_adapter(self, name: str) -> None:
        """Make adapter ``name`` resident."""
        await self.adapters.load(name)

    async def unload_adapter(self, name: str) -> None:
        """Evict adapter ``name`` (once running requests stop using it)."""
        await self.adapters.unload(name)

    def stats(self) -> EngineStats:
        """The engine's current load."""
        return EngineStats(
            running=len(self._running),
            waiting=len(self._waiting),
            steps=self._steps,
            batched_rows=self._rows,
            max_batch_seen=self._max_seen,
            adapters_loaded=self.adapters.loaded,
            adapter_loads=self.adapters.loads,
            adapter_evictions=self.adapters.evictions,
        )

    async def close(self) -> None:
        """Stop the batching loop; queued and running requests get a 503."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        gone = EngineClosedError("the engine is shutting down")
        for seq in [*self._waiting, *self._running]:
            seq.queue.put_nowait(gone)
        self._waiting.clear()
        self._running.clear()
        self._executor.shutdown(wait=False)

    # ---------------------------------------------------------------- admission

    async def _admit(self, request: GenerationRequest) -> _Seq:
        if self._closed:
            raise EngineClosedError("the engine is shutting down")
        n = len(request.prompt_ids)
        ctx = self.max_context_length
        if n == 0:
            raise InvalidRequestError("the prompt is empty", param="prompt")
        if n >= ctx:
            raise InvalidRequestError(
                f"the prompt has {n} tokens; this model's context is {ctx} tokens", param="prompt"
            )
        params = request.params
        max_tokens = params.max_tokens if params.max_tokens is not None else ctx - n
        if n + max_tokens > ctx:
            raise InvalidRequestError(
                f"max_tokens {max_tokens} plus the prompt's {n} tokens exceed the context of {ctx} tokens",
                param="max_tokens",
            )
        if len(self._waiting) >= self.max_waiting:
            raise OverloadedError(f"{len(self._waiting)} requests are already queued on this replica; retry later")
        if request.adapter is not None:
            await self.adapters.acquire(request.adapter)
        gen = None
        if params.temperature > 0:
            gen = torch.Generator(device=self._device)
            if params.seed is not None:
                gen.manual_seed(params.seed)
            else:
                gen.seed()
        seq = _Seq(
            request=request, queue=asyncio.Queue(), max_tokens=max_tokens, generator=gen, started=time.perf_counter()
        )
        if self._metrics is not None:
            self._metrics.request_started(request.adapter)
        self._waiting.append(seq)
        self._ensure_loop()
        assert self._wake is not None
        self._wake.set()
        return seq

    def _ensure_loop(self) -> None:
        if self._task is None or self._task.done():
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._task = self._loop.create_task(self._run(), name="corral-engine-loop")

    def _retire(self, seq: _Seq) -> None:
        """Release what a sequence holds once it left the engine (event-loop thread)."""
        if seq.adapter is not None:
            self.adapters.release(seq.adapter)
        if self._metrics is not None:
            n = len(seq.generated)
            ttft = tpot = None
            if seq.first_token_at is not None:
                ttft = seq.first_token_at - seq.started
                if n > 1:
                    tpot = (time.perf_counter() - seq.first_token_at) / (n - 1)
            self._metrics.request_finished(
                seq.adapter,
                ttft=ttft,
                tpot=tpot,
                output_tokens=n,
                prompt_tokens=len(seq.request.prompt_ids),
                duration=time.perf_counter() - seq.started,
            )

    # ---------------------------------------------------------------- the loop

    async def _run(self) -> None:
        assert self._wake is not None and self._loop is not None
        loop = self._loop
        while not self._closed:
            if not self._running and not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            admit: list[_Seq] = []
            while self._waiting and len(self._running) + len(admit) < self.max_batch_size:
                seq = self._waiting.popleft()
                if seq.cancelled:
                    self._retire(seq)
                else:
                    admit.append(seq)
            if not admit and not self._running:
                continue
            try:
                chunks, left = await loop.run_in_executor(self._executor, self._step, admit)
            except Exception as exc:
                logger.exception("engine step failed; failing %d sequences", len(self._running) + len(admit))
                err = ServingError(f"generation failed: {type(exc).__name__}: {exc}")
                for seq in {*self._running, *admit}:
                    seq.queue.put_nowait(err)
                    self._retire(seq)
                self._running, self._cache, self._mask = [], None, None
                continue
            for seq, chunk in chunks:
                if not seq.cancelled:
                    seq.queue.put_nowait(chunk)
            for seq in left:
                self._retire(seq)
                if seq.final is not None:
                    seq.queue.put_nowait(seq.final)

    # ---------------------------------------------------------------- model thread

    def _step(self, admit: list[_Seq]) -> tuple[list[tuple[_Seq, GenerationChunk]], list[_Seq]]:
        """Run one forward pass (prefill of ``admit`` or decode of the batch).

        Returns:
            The step's unfinished chunks, which the event loop hands out (one wake-up of the
            loop per step, not one per row), and the rows that left the batch.
        """
        self._chunks = []
        with torch.inference_mode():
            if admit:
                self._prefill(admit)
            else:
                self._decode()
        return self._chunks, self._drop_finished()

    def _forward(self, kind: str, rows: list[_Seq], **inputs: Any) -> Any:
        model = self.adapters.model
        batched = self.adapters.batched
        if batched is not None:
            with batched.rows([s.adapter for s in rows], self._device):
                out = model(use_cache=True, **inputs)
        else:
            if self.adapters.is_peft:
                inputs["adapter_names"] = [s.adapter or BASE_ADAPTER for s in rows]
            out = model(use_cache=True, **inputs)
        self._steps += 1
        self._rows += len(rows)
        self._max_seen = max(self._max_seen, len(rows))
        self.step_log.append((kind, len(rows)))
        return out

    def _prefill(self, admit: list[_Seq]) -> None:
        longest = max(len(s.request.prompt_ids) for s in admit)
        rows_ids: list[list[int]] = []
        rows_mask: list[list[int]] = []
        for s in admit:
            p = list(s.request.prompt_ids)
            rows_ids.append([self._pad] * (longest - len(p)) + p)
            rows_mask.append([0] * (longest - len(p)) + [1] * len(p))
            s.pos = len(p)
        ids = torch.tensor(rows_ids, dtype=torch.long, device=self._device)
        mask = torch.tensor(rows_mask, dtype=torch.long, device=self._device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self._forward("prefill", admit, input_ids=ids, attention_mask=mask, position_ids=position_ids)
        logits = out.logits[:, -1, :].float()
        self._merge(out.cache, mask)
        self._running.extend(admit)
        for s, token in zip(admit, self._sample_rows(logits, admit), strict=True):
            self._emit(s, token)

    def _decode(self) -> None:
        rows = self._running
        assert self._mask is not None
        ids = torch.tensor([[s.generated[-1]] for s in rows], dtype=torch.long, device=self._device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(rows), 1))], dim=1)
        position_ids = torch.tensor([[s.pos] for s in rows], dtype=torch.long, device=self._device)
        out = self._forward(
            "decode",
            rows,
            input_ids=ids,
            attention_mask=self._mask,
            position_ids=position_ids,
            cache=self._cache,
        )
        self._cache = out.cache
        logits = out.logits[:, -1, :].float()
        for s, token in zip(rows, self._sample_rows(logits, rows), strict=True):
            s.pos += 1
            self._emit(s, token)

    def _merge(self, cache: Any, mask: torch.Tensor) -> None:
        """Append a prefilled cache to the running batch's, left-padding the shorter one."""
        if self._cache is None or self._mask is None:
            self._cache, self._mask = cache, mask
            return
        old_t, new_t = self._mask.shape[1], mask.shape[1]
        width = max(old_t, new_t)
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad_left(old.keys, width), _pad_left(new.keys, width)], dim=0)
            old.values = torch.cat([_pad_left(old.values, width), _pad_left(new.values, width)], dim=0)
        self._mask = torch.cat([_pad_left(self._mask, width, dim=1), _pad_left(mask, width, dim=1)], dim=0)

    def _drop_finished(self) -> list[_Seq]:
        left = [s for s in self._running if s.done or s.cancelled]
        if not left:
            return []
        keep = [i for i, s in enumerate(self._running) if not (s.done or s.cancelled)]
        self._running = [self._running[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, None
            return left
        assert self._mask is not None
        index = torch.tensor(keep, dtype=torch.long, device=self._device)
        self._cache.batch_select_indices(index)
        self._mask = self._mask[index]
        first = int(torch.nonzero(self._mask.sum(dim=0))[0])
        if first > 0:
            for layer in self._cache.layers:
                layer.keys = layer.keys[:, :, first:, :]
                layer.values = layer.values[:, :, first:, :]
            self._mask = self._mask[:, first:]
        return left

    # ---------------------------------------------------------------- tokens

    def _sample_rows(self, logits: torch.Tensor, rows: list[_Seq]) -> list[int]:
        """The next token of every row: one batched argmax for greedy rows, sampling for the others."""
        greedy: list[int] = logits.argmax(dim=-1).tolist()
        return [
            g if s.request.params.temperature <= 0 else self._sample(logits[i], s)
            for i, (g, s) in enumerate(zip(greedy, rows, strict=True))
        ]

    def _sample(self, logits: torch.Tensor, s: _Seq) -> int:
        params = s.request.params
        if params.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            cumulative = torch.cumsum(sorted_probs, dim=-1)
            sorted_probs[cumulative - sorted_probs > params.top_p] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=s.generator))

    def _emit(self, s: _Seq, token: int) -> None:
        """Record ``token`` for ``s``, decide whether it finished, and stream the new text."""
        if s.cancelled:
            return
        if s.first_token_at is None:
            s.first_token_at = time.perf_counter()
        s.generated.append(token)
        finish: FinishReason | None = None
        body = s.generated
        if token in self._eos and not s.request.params.ignore_eos:
            finish, body = "stop", s.generated[:-1]
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        stops = s.request.params.stop
        if stops:
            hits = [i for i in (text.find(stop) for stop in stops) if i >= 0]
            if hits:
                text, finish = text[: min(hits)], "stop"
        if finish is None and (len(s.generated) >= s.max_tokens or s.pos + 1 >= self.max_context_length):
            finish = "length"
        upto = len(text) if finish is not None else len(text) - _holdback(text, stops)
        delta = text[s.emitted : upto] if upto > s.emitted else ""
        s.emitted = max(s.emitted, upto)
        if finish is not None:
            s.done = True
        chunk = GenerationChunk(
            text=delta,
            token_ids=(token,),
            finish_reason=finish,
            prompt_tokens=len(s.request.prompt_ids),
            completion_tokens=len(s.generated),
        )
        if finish is not None:
            s.final = chunk  # delivered by the loop once the row left the batch and released its adapter
            return
        self._chunks.append((s, chunk))


def _pad_left(t: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _holdback(text: str, stops: tuple[str, ...]) -> int:
    """Characters at the end of ``text`` to hold back: an incomplete character or a stop string's prefix."""
    hold = 1 if text.endswith("\ufffd") else 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    return hold
