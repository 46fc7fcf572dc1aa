"""Who may call a deployment's OpenAI endpoint, and how much a caller may send.

Each ``ModelDeployment``'s endpoint (``<serve>/<namespace>/<deployment>/v1``) asks for a bearer
token (``Authorization: Bearer <token>``, what the OpenAI clients send as ``api_key``) of the
deployment's namespace. The control plane puts the SHA-256 digests of the tokens that may use
that namespace (its tenants' and the admins') into the application's arguments
(:class:`~corral.serving._args.ChatAuthArgs`): the replica and the activator in front of it
compare a caller's token digest with them in constant time and never see a token itself. A
missing or unknown token is answered ``401`` with OpenAI's error body (``invalid_api_key``),
before the body is read. Bodies are read up to a cap while they stream (``413`` beyond it).

On a cluster the tokens themselves live in a Secret of the namespace (``corral-chat-tokens``,
key ``tokens``) that the RayService's pods mount as an environment variable
(``ChatAuthArgs.tokens_env``); the replica hashes them at start. The operator never reads a
Secret, and a namespace without one gets endpoints that refuse every call, saying why. Where the
chart turns Kubernetes auth on (``CORRAL_CHAT_KUBERNETES_AUTH=true`` in the pods), a token that is
none of these is asked about at the API server
(:class:`~corral.serving._chat_kube.KubernetesChatAuth`): ``401`` when the cluster does not
know it, ``403`` when RBAC does not let its user ``get`` the ModelDeployment, ``503`` when the API
server cannot be asked. :meth:`ChatAuth.authorize` runs that review off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from corral.serving._chat_kube import KUBERNETES_AUTH_ENV, KubernetesChatAuth, kubernetes_auth_enabled
from corral.serving._errors import (
    AuthUnavailableError,
    ForbiddenError,
    InvalidRequestError,
    UnauthorizedError,
)

if TYPE_CHECKING:
    from fastapi import Request

    from corral.serving._args import ChatAuthArgs

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "AuthUnavailableError",
    "BodyTooLargeError",
    "ChatAuth",
    "ForbiddenError",
    "UnauthorizedError",
    "read_capped",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 4 * 2**20
"""Largest request body a chat endpoint reads (4 MiB: far beyond any context window's text)."""


class BodyTooLargeError(InvalidRequestError):
    """The request body is larger than the endpoint reads (413)."""

    status = 413
    code = "request_too_large"


class ChatAuth:
    """Bearer tokens accepted by one deployment's endpoint: SHA-256 digests, and Kubernetes tokens.

    Args:
        token_sha256: Hex SHA-256 digests of the accepted tokens.
        source: Where more tokens came from (an environment variable), for the 401's message.
        kubernetes: Asks the API server about any other token (on a cluster); ``None``: no
            other token is accepted.
    """

    def __init__(
        self,
        token_sha256: Iterable[str],
        source: str | None = None,
        kubernetes: KubernetesChatAuth | None = None,
    ) -> None:
        self._digests = tuple(d.lower().encode() for d in token_sha256)
        self._source = source
        self.kubernetes = kubernetes

    @classmethod
    def from_args(cls, args: ChatAuthArgs, environ: Mapping[str, str] | None = None) -> ChatAuth:
        """The digests of ``args`` plus those of the tokens in ``args.tokens_env`` (read once, here).

        With ``CORRAL_CHAT_KUBERNETES_AUTH=true`` in ``environ`` (the pods' environment) and the
        deployment named in ``args``, Kubernetes tokens are accepted too.
        """
        env = os.environ if environ is None else environ
        digests = list(args.token_sha256)
        raw = env.get(args.tokens_env, "") if args.tokens_env else ""
        for token in raw.replace(",", "\n").splitlines():
            if token.strip():
                digests.append(hashlib.sha256(token.strip().encode()).hexdigest())
        kubernetes = None
        if kubernetes_auth_enabled(env.get(KUBERNETES_AUTH_ENV)):
            if args.namespace and args.deployment:
                kubernetes = KubernetesChatAuth(args.namespace, args.deployment)
            else:
                logger.warning(
                    "%s is set but the app's auth arguments name no deployment; Kubernetes tokens are not accepted",
                    KUBERNETES_AUTH_ENV,
                )
        return cls(digests, source=args.tokens_env, kubernetes=kubernetes)

    def check(self, authorization: str | None) -> None:
        """Accept an ``Authorization`` header value, or raise (blocks while asking the API server).

        Raises:
            UnauthorizedError: No bearer token, or one not accepted here (the message never
                contains the token).
            ForbiddenError: A Kubernetes user RBAC does not allow here.
            AuthUnavailableError: The API server could not be asked.
        """
        token = self._known(authorization)
        if token is not None and self.kubernetes is not None:
            self.kubernetes.review(token)

    async def authorize(self, authorization: str | None) -> None:
        """:meth:`check` for an event loop: a review at the API server runs in a thread."""
        token = self._known(authorization)
        if token is not None and self.kubernetes is not None and not self.kubernetes.cached(token):
            await asyncio.to_thread(self.kubernetes.review, token)

    def _known(self, authorization: str | None) -> str | None:
        """``None`` for an accepted digest; the token when only Kubernetes may still accept it.

        Raises:
            UnauthorizedError: No bearer token, or an unknown one and no Kubernetes to ask.
        """
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise UnauthorizedError(
                "this endpoint needs a bearer token of the deployment's namespace "
                "(Authorization: Bearer <token>; the OpenAI clients send api_key so)"
            )
        digest = hashlib.sha256(token.encode()).hexdigest().encode()
        # Compare with every digest (no early exit), in constant time each.
        accepted = False
        for known in self._digests:
            accepted |= hmac.compare_digest(digest, known)
        if accepted:
            return None
        if self.kubernetes is not None:
            return token
        if not self._digests and self._source:
            raise UnauthorizedError(
                f"no chat tokens are configured for this deployment's namespace (its Ray pods read them from "
                f"{self._source}: on a cluster, the namespace's chat-tokens Secret)"
            )
        raise UnauthorizedError("the token is not valid for this deployment's namespace")


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body, read while it streams and refused past ``limit`` bytes.

    Raises:
        BodyTooLargeError: ``Content-Length`` or the bytes received exceed ``limit``.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(f"the request body is {declared} bytes; this endpoint reads at most {limit}")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"the request body exceeds {limit} bytes, the most this endpoint reads")
        parts.append(chunk)
    return b"".join(parts)
