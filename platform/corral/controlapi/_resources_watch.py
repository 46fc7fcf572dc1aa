"""Watch streams of the resource endpoints: newline-delimited watch events that hold no thread.

A watch polls its store watch with ``poll(0)`` in the thread pool (a moment of a thread, never a
blocked one) and sleeps on the event loop between polls (50 ms after an event, backing off to
500 ms), so open watches cost no threads and do not slow other calls; each token holds at most
its quota of watches (429 beyond), and a stream gives its slot back however it ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from corral.api.v1alpha1 import Resource
from corral.store import Expired, Store, StoreError, Watch, WatchEvent

from ._access import WatchQuota, visible
from ._auth import Principal
from ._limits import InputError, check_finite
from ._status import APIError, status_body

__all__ = ["watch_response"]

log = logging.getLogger(__name__)

_IDLE_POLL = (0.05, 0.5)
"""A watch stream checks its watch every 50 ms after an event, backing off to 500 ms when idle."""


class _Once:
    """Stop a watch and give back its quota slot, once, whoever calls first (the stream or the finalizer)."""

    def __init__(self, watch: Watch | None, quota: WatchQuota, principal: Principal) -> None:
        self._watch, self._quota, self._principal = watch, quota, principal
        self._done = threading.Lock()

    def __call__(self) -> None:
        if not self._done.acquire(blocking=False):
            return
        if self._watch is not None:
            self._watch.stop()
        self._quota.close(self._principal)


async def watch_response(
    request: Request,
    principal: Principal,
    cls: type[Resource],
    *,
    namespace: str | None,
    selector: str | None,
    watch_timeout: float,
) -> Response:
    """Open a watch of ``cls`` and stream its events (newline-delimited JSON) as a response.

    Raises:
        APIError: 400 for a bad ``timeoutSeconds``, 429 over the token's watch quota, store errors.
    """
    query = request.query_params
    since = query.get("resourceVersion") or None
    timeout = watch_timeout
    if "timeoutSeconds" in query:
        try:
            timeout = min(check_finite("timeoutSeconds", query["timeoutSeconds"]), timeout)
        except InputError as exc:
            raise APIError(400, "BadRequest", str(exc)) from None
    quota: WatchQuota = request.app.state.watch_quota
    quota.open(principal)
    store: Store = request.app.state.store
    try:
        watch: Watch | None = await run_in_threadpool(
            lambda: store.watch(cls, namespace, since, label_selector=selector, timeout=timeout)
        )
        expired: Expired | None = None
    except Expired as exc:
        watch, expired = None, exc
    except StoreError as exc:
        quota.close(principal)
        raise APIError.from_store(exc) from None
    except BaseException:
        quota.close(principal)
        raise
    log.debug("Watch %s in %s from %s for %s", cls.PLURAL, namespace or "all namespaces", since, principal.name)
    release = _Once(watch, quota, principal)
    events = _events(cls, principal, watch, expired, release=release)
    weakref.finalize(events, release)  # a stream never started (the client left at once) still gives back its slot
    return StreamingResponse(events, media_type="application/json")


async def _events(
    cls: type[Resource],
    principal: Principal,
    watch: Watch | None,
    expired: Expired | None,
    *,
    release: Callable[[], None],
) -> AsyncIterator[str]:
    """Stream a watch without holding a thread: ``poll(0)`` in the pool, asyncio sleeps in between."""
    try:
        if watch is None:
            assert expired is not None
            status = status_body(410, "Expired", expired.message, kind=cls.KIND)
            yield json.dumps({"type": "ERROR", "object": status}) + "\n"
            return
        delay = _IDLE_POLL[0]
        while True:
            try:
                event: WatchEvent | None = await run_in_threadpool(watch.poll, 0.0)
            except StoreError as exc:  # Expired (410), or the store refused mid-stream (403 Forbidden, ...)
                status = status_body(exc.code, exc.reason, exc.message, kind=cls.KIND)
                yield json.dumps({"type": "ERROR", "object": status}) + "\n"
                return
            if event is None:
                if watch.done:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, _IDLE_POLL[1])
                continue
            delay = _IDLE_POLL[0]
            if principal.access is None:
                shown = visible(principal, event.object, "watch")
            else:  # asks the API server the first time a namespace is seen
                shown = await run_in_threadpool(visible, principal, event.object, "watch")
            if shown:
                yield json.dumps(event.to_dict()) + "\n"
    finally:
        release()
