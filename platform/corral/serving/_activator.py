"""``CorralActivator``: the always-on ingress of a deployment that scales to zero.

Serve's own proxy queues a request for a deployment at zero replicas and its autoscaler
starts one, but it waits without bound (or answers its own plain-text 503/408), and a client
cannot tell a cold start from a hung server. The activator is one small replica (no CPU
reserved, no torch) in front of ``CorralLLMServer``:

* ``POST /v1/chat/completions`` and ``/v1/completions`` go to :meth:`CorralLLMServer.respond`
  through a ``DeploymentHandle``. Serve's handle queues the call while no replica can take it
  and reports the queue to the autoscaler, which starts a replica from zero. The activator
  :func:`~corral.serving._hold.hold` s the request until a replica has it, at most the hold
  timeout; past it the request is withdrawn and answered ``503`` with ``Retry-After`` and
  OpenAI's error body (``code: cold_start_timeout``). After that the answer (JSON or server-sent
  events) streams back unchanged.
* ``GET /v1/models`` and ``/healthz`` are answered by the activator itself: listing models never
  wakes a replica.
* The ``serve_multiplexed_model_id`` header is passed on as the handle's multiplexed model id,
  so adapter affinity works as without the activator.

The hold itself (:mod:`corral.serving._hold`) knows no Ray: the control API's OpenAI base
URL, which does not route chat yet, can wrap its own forwarding call in it when it does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

from ray import serve

from corral.serving._args import ServeAppArgs
from corral.serving._chat_auth import ChatAuth, read_capped
from corral.serving._config import ACTIVATOR_DEPLOYMENT, MULTIPLEX_HEADER
from corral.serving._errors import OverloadedError, ServingError
from corral.serving._hold import HoldPolicy, error_response, hold
from corral.serving._metrics import ServingMetrics
from corral.serving._schemas import ModelCard, ModelList

if TYPE_CHECKING:
    from fastapi import Request
    from fastapi.responses import Response
    from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

__all__ = ["CorralActivator"]

logger = logging.getLogger(__name__)


class NotFoundError(ServingError):
    """No such route on the endpoint (404)."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


@serve.deployment(name=ACTIVATOR_DEPLOYMENT, ray_actor_options={"num_cpus": 0})
class CorralActivator:
    """Holds each request until a ``CorralLLMServer`` replica takes it (see the module docstring).

    A plain HTTP deployment (``__call__``), not a FastAPI ingress: Serve allows one FastAPI
    ingress per application, and that is the model server's.

    Args:
        args: The application's :class:`ServeAppArgs` as JSON; ``hold`` must be set.
        server: Handle to the ``CorralLLMServer`` deployment.
    """

    def __init__(self, args: dict[str, Any], server: DeploymentHandle[Any]) -> None:
        self.args = ServeAppArgs.model_validate(args)
        if self.args.hold is None:
            raise ValueError("CorralActivator needs args.hold (the hold timeout and Retry-After)")
        self.policy = HoldPolicy(
            timeout_seconds=float(self.args.hold.timeout_seconds),
            retry_after_seconds=self.args.hold.retry_after_seconds,
        )
        self.server = server
        self.metrics = ServingMetrics(self.args.served_name, backend="ray")
        self.auth = ChatAuth.from_args(self.args.auth) if self.args.auth is not None else None

    async def __call__(self, request: Request) -> Response:
        """Route one HTTP request by the end of its path (the route prefix comes before it)."""
        from fastapi.responses import JSONResponse

        path, method = request.url.path.rstrip("/"), request.method
        if not path.endswith("/healthz") and self.auth is not None:
            try:
                await self.auth.authorize(request.headers.get("authorization"))  # before the body is read
            except ServingError as exc:
                return error_response(exc)
        if method == "POST" and path.endswith("/v1/chat/completions"):
            return await self._forward(request, "chat")
        if method == "POST" and path.endswith("/v1/completions"):
            return await self._forward(request, "completion")
        if method == "GET" and path.endswith("/v1/models"):
            return JSONResponse(self.models())
        if method == "GET" and path.endswith("/healthz"):
            return JSONResponse({"status": "ok"})
        return error_response(NotFoundError(f"no route {method} {request.url.path}"))

    def models(self) -> dict[str, Any]:
        """``GET /v1/models``: answered here, so listing models starts no replica."""
        base = self.args.served_name
        cards = [ModelCard(id=base)] + [ModelCard(id=a.name, parent=base) for a in self.args.adapters]
        return ModelList(data=cards).model_dump()

    async def _forward(self, request: Request, kind: str) -> Response:
        from fastapi.responses import Response, StreamingResponse
        from ray.serve.exceptions import BackPressureError

        try:
            body = await read_capped(request, self.args.max_body_bytes)
        except ServingError as exc:
            return error_response(exc)
        model_id = request.headers.get(MULTIPLEX_HEADER, "")
        options: dict[str, Any] = {"stream": True}
        if model_id:
            options["multiplexed_model_id"] = model_id
        handle = self.server.options(**options)
        pieces = cast("DeploymentResponseGenerator[Any]", handle.respond.remote(kind, body))
        started = time.monotonic()
        error: ServingError | None = None
        try:
            await hold(anext(pieces), self.policy, cancel=lambda: _cancel(pieces), what=self.args.served_name)
            self.metrics.request_held(time.monotonic() - started)
            head = await anext(pieces)
        except ServingError as exc:
            error = exc
        except BackPressureError:
            _cancel(pieces)
            error = OverloadedError(f"every replica of {self.args.served_name} and its queue are full; retry later")
        if error is not None:
            self.metrics.error(None, error.status)
            return error_response(error)
        status, media_type = int(head["status"]), head.get("media_type")
        if media_type == "text/event-stream":
            return StreamingResponse(_rest(pieces), status_code=status, media_type=media_type)
        whole = b"".join([piece async for piece in _rest(pieces)])
        return Response(whole, status_code=status, media_type=media_type)


async def _rest(pieces: DeploymentResponseGenerator[Any]) -> AsyncIterator[bytes]:
    """The body pieces after the head; a client that goes away cancels the replica's work."""
    done = False
    try:
        async for piece in pieces:
            yield piece
        done = True
    finally:
        if not done:
            _cancel(pieces)


def _cancel(pieces: Any) -> None:
    """Withdraw a request from Serve (queued or running); Ray's ``cancel`` is untyped."""
    pieces.cancel()
