"""Poll with a deadline: the one wait helper of the tests (never a fixed sleep, never the first error).

A server that is still starting refuses connections; a probe that raises one of
:data:`TRANSIENT` is retried like one that returned nothing, until the deadline. Any other
exception is a real failure and goes through at once. At the deadline the assertion names
what was awaited and the last transient error, if any.
"""

from __future__ import annotations

import time
import urllib.error
from collections.abc import Callable
from typing import TypeVar

import httpx

__all__ = ["TRANSIENT", "wait_until"]

T = TypeVar("T")

# Connection refused/reset, timeouts, a server that closed the connection: "not up yet".
TRANSIENT: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    urllib.error.URLError,
    httpx.TransportError,
)


def wait_until(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.5) -> T:
    """Call ``probe`` until it returns something truthy, retrying transient connection errors.

    Args:
        what: What is awaited, for the failure message.
        probe: Returns a truthy value when done (that value is returned), else a falsy one.
        timeout: Seconds until the deadline.
        every: Seconds between calls.

    Raises:
        AssertionError: The deadline passed.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
        except TRANSIENT as exc:
            last_error, value = exc, None
        if value:
            return value
        if time.monotonic() >= deadline:
            cause = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
            raise AssertionError(f"{what} not reached within {timeout:.0f} s{cause}")
        time.sleep(every)
