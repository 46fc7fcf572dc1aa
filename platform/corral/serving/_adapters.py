"""LoRA adapters resident next to one copy of the base weights, least recently used evicted.

The registry owns the model object: the base model until the first adapter loads, then
a :class:`peft.PeftModel` wrapping it. Every change to the model (load, delete) runs on
the engine's single model thread, between forward passes, so a running batch never sees
a half-loaded adapter. Rows of one batch each use their own adapter in the same forward pass:
through :class:`~corral.serving._batched_lora.BatchedLoRA` (the resident adapters stacked per
layer, two batched matmuls per layer), or PEFT's ``adapter_names=`` for the adapters it cannot
compute (DoRA, LoRA biases, embeddings); the shared model's active adapter is never switched.
Adapters used by running requests are pinned and never evicted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from corral.serving._batched_lora import BatchedLoRA, unsupported
from corral.serving._errors import ModelNotFoundError, OverloadedError
from corral.serving._loading import fetch_dir

__all__ = ["BASE_ADAPTER", "AdapterRegistry"]

logger = logging.getLogger(__name__)

#: The ``adapter_names`` entry PEFT uses for "no adapter" rows.
BASE_ADAPTER = "__base__"


class AdapterRegistry:
    """Loads adapters on first use, keeps at most ``max_loaded``, evicts the least recently used.

    Args:
        model: The base causal LM (eval mode).
        sources: Adapter name -> artifact URI.
        max_loaded: Most adapters resident at once.
        executor: The engine's single model thread; every model mutation runs there.
        on_load: Called with ``(name, seconds)`` after a load.
        on_evict: Called with ``name`` after an eviction.
        slot_timeout: Seconds a request for a new adapter waits for a slot while every
            resident adapter is pinned by running requests, before a 429.
        fetch: Resolves a URI to a local directory (default :func:`fetch_dir`).
        batched: Stack the adapters for batched LoRA where the model allows it (else PEFT's
            per-adapter path).
    """

    def __init__(
        self,
        model: Any,
        sources: Mapping[str, str],
        max_loaded: int,
        executor: Executor,
        *,
        slot_timeout: float = 30.0,
        on_load: Callable[[str, float], None] | None = None,
        on_evict: Callable[[str], None] | None = None,
        fetch: Callable[[str], Path] = fetch_dir,
        batched: bool = True,
    ) -> None:
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be >= 1 (got {max_loaded})")
        self.model = model
        self._sources = dict(sources)
        self._max = max_loaded
        self._executor = executor
        self._on_load = on_load
        self._on_evict = on_evict
        self._fetch = fetch
        self._batch = batched
        self._loaded: OrderedDict[str, None] = OrderedDict()
        self._pins: dict[str, int] = {}
        self._doomed: set[str] = set()
        self._lock = asyncio.Lock()
        self._freed = asyncio.Event()
        self._slot_timeout = slot_timeout
        self.loads = 0
        self.evictions = 0
        self.batched: BatchedLoRA | None = None  # None: PEFT's adapter_names= path (or no adapter yet)

    @property
    def names(self) -> list[str]:
        """Every adapter this registry can serve."""
        return list(self._sources)

    @property
    def loaded(self) -> tuple[str, ...]:
        """Resident adapters, least recently used first."""
        return tuple(self._loaded)

    @property
    def is_peft(self) -> bool:
        """Whether the model is wrapped by PEFT (an adapter was loaded at least once)."""
        return hasattr(self.model, "peft_config")

    async def acquire(self, name: str) -> None:
        """Make ``name`` resident and pin it until :meth:`release`.

        Raises:
            ModelNotFoundError: ``name`` is not one of the deployment's adapters.
            OverloadedError: Every slot is pinned by running requests.
        """
        if name not in self._sources:
            raise ModelNotFoundError(f"the model {name!r} does not exist", param="model")
        self._doomed.discard(name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._slot_timeout
        while name not in self._loaded:
            await self._wait_for_slot(deadline)
            async with self._lock:
                if name not in self._loaded and not self._full():
                    await self._load(name)
        self._loaded.move_to_end(name)
        self._pins[name] = self._pins.get(name, 0) + 1

    def release(self, name: str) -> None:
        """Unpin ``name``; a deferred unload runs once nothing uses it."""
        left = self._pins.get(name, 0) - 1
        if left > 0:
            self._pins[name] = left
            return
        self._pins.pop(name, None)
        self._freed.set()
        if name in self._doomed or len(self._loaded) > self._max:
            asyncio.get_running_loop().create_task(self.unload(name))

    async def load(self, name: str) -> None:
        """Make ``name`` resident without pinning it."""
        await self.acquire(name)
        self.release(name)

    async def unload(self, name: str) -> None:
        """Evict ``name`` now, or once the requests using it finish."""
        if name not in self._loaded:
            return
        if self._pins.get(name):
            self._doomed.add(name)
            return
        async with self._lock:
            if name in self._loaded and not self._pins.get(name):
                await self._evict(name)

    def _full(self) -> bool:
        """Every slot is taken by an adapter that running requests use."""
        return len(self._loaded) >= self._max and all(self._pins.get(n) for n in self._loaded)

    async def _wait_for_slot(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while self._full():
            self._freed.clear()
            try:
                await asyncio.wait_for(self._freed.wait(), timeout=max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise OverloadedError(
                    f"all {self._max} adapter slots of this replica stayed in use by running requests for "
                    f"{self._slot_timeout:.0f}s; retry later"
                ) from None

    async def _load(self, name: str) -> None:
        # Load first, evict after: PEFT cannot delete the only adapter of a PeftModel and then
        # load another, so the replica briefly holds one adapter more than its limit.
        start = time.perf_counter()
        path = await asyncio.to_thread(self._fetch, self._sources[name])
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load_sync, name, path)
        self._loaded[name] = None
        self.loads += 1
        seconds = time.perf_counter() - start
        logger.info("loaded adapter %s from %s in %.3fs", name, self._sources[name], seconds)
        if self._on_load is not None:
            self._on_load(name, seconds)
        while len(self._loaded) > self._max:
            victim = next((n for n in self._loaded if n != name and not self._pins.get(n)), None)
            if victim is None:  # pinned meanwhile: the next release evicts
                break
            await self._evict(victim)

    async def _evict(self, name: str) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._delete_sync, name)
        self._loaded.pop(name, None)
        self._doomed.discard(name)
        self.evictions += 1
        logger.info("evicted adapter %s", name)
        if self._on_evict is not None:
            self._on_evict(name)

    def _load_sync(self, name: str, path: Path) -> None:
        from peft import PeftModel

        if not self.is_peft:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name, is_trainable=False)
        else:
            self.model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        self.model.eval()
        self._restack()

    def _delete_sync(self, name: str) -> None:
        if list(self.model.peft_config) == [name]:
            # The last adapter: take LoRA out entirely and serve the plain base model again.
            if self.batched is not None:
                self.batched.close()
                self.batched = None
            self.model = self.model.unload()
        else:
            self.model.delete_adapter(name)
            self._restack()

    def _restack(self) -> None:
        """Stack the resident adapters for batched LoRA, or fall back to PEFT's per-adapter path."""
        reason = unsupported(self.model) if self._batch else "switched off"
        if reason is None:
            if self.batched is None:
                self.batched = BatchedLoRA()
            self.batched.rebuild(self.model)
            return
        if self.batched is not None:
            logger.warning("batched LoRA is off for this replica (%s): PEFT computes each adapter apart", reason)
            self.batched.close()
            self.batched = None
        self.model.base_model.enable_adapter_layers()
