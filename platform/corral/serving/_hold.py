"""Hold a request until a replica takes it, bounded by a timeout: the scale-from-zero wait, transport-free.

A request for a deployment at zero replicas (or whose replicas are all busy while it scales
up) must wait for a replica instead of failing. :func:`hold` awaits whatever means "a replica
took this request" for the caller's transport - the first item of a Serve
``DeploymentResponseGenerator`` in :class:`~corral.serving._activator.CorralActivator`, or
the response headers of a forwarded HTTP call - for at most :attr:`HoldPolicy.timeout_seconds`,
cancels the request when the time is up and raises :class:`~corral.serving.ColdStartTimeoutError`.
:func:`error_response` turns that (or any :class:`~corral.serving.ServingError`) into
OpenAI's JSON error with ``Retry-After`` when the error carries one.

Nothing here knows Ray: the Serve activator uses it today, and the control API's OpenAI base
URL can wrap its forwarding call in the same :func:`hold` when it routes chat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi.responses import JSONResponse

from corral.serving._errors import ColdStartTimeoutError, ServingError

__all__ = ["HoldPolicy", "error_response", "hold"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class HoldPolicy:
    """How long a request may wait for a replica, and what a client is told when it waited too long.

    Attributes:
        timeout_seconds: Longest wait for a replica to take the request.
        retry_after_seconds: The ``Retry-After`` of the 503 past the timeout (the estimated cold start).
    """

    timeout_seconds: float
    retry_after_seconds: int

    def __post_init__(self) -> None:
        if self.timeout_seconds <= 0 or self.retry_after_seconds < 0:
            raise ValueError(
                f"timeout_seconds must be > 0 and retry_after_seconds >= 0 (timeout_seconds={self.timeout_seconds}, "
                f"retry_after_seconds={self.retry_after_seconds})"
            )


async def hold(taken: Awaitable[T], policy: HoldPolicy, *, cancel: Callable[[], object], what: str) -> T:
    """Wait until ``taken`` resolves (a replica took the request), at most ``policy.timeout_seconds``.

    Args:
        taken: Resolves when a replica has taken the request.
        policy: The timeout and the ``Retry-After`` past it.
        cancel: Called once when the time is up, to withdraw the request (it must not start later).
        what: The deployment or model, for the error message.

    Returns:
        What ``taken`` resolved to.

    Raises:
        ColdStartTimeoutError: No replica took the request in time.
    """
    try:
        return await asyncio.wait_for(taken, policy.timeout_seconds)
    except TimeoutError:
        cancel()
        logger.info("no replica of %s took a request within %.0f s", what, policy.timeout_seconds)
        raise ColdStartTimeoutError(
            f"no replica of {what} could take the request within {policy.timeout_seconds:g} s "
            f"(it is starting from zero or every replica is busy); retry in {policy.retry_after_seconds} s",
            retry_after=policy.retry_after_seconds,
        ) from None


def error_response(exc: ServingError) -> JSONResponse:
    """OpenAI's JSON error for ``exc``, with ``Retry-After`` when it is a :class:`ColdStartTimeoutError`."""
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, ColdStartTimeoutError) else None
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)
