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
Secret, and a namespace without one gets endpoints that refuse every call, saying why.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from corral.serving._errors import InvalidRequestError, ServingError

if TYPE_CHECKING:
    from fastapi import Request

    from corral.serving._args import ChatAuthArgs

__all__ = ["DEFAULT_MAX_BODY_BYTES", "BodyTooLargeError", "ChatAuth", "UnauthorizedError", "read_capped"]

DEFAULT_MAX_BODY_BYTES = 4 * 2**20
"""Largest request body a chat endpoint reads (4 MiB: far beyond any context window's text)."""


class UnauthorizedError(ServingError):
    """No token, or not one of the deployment's namespace (401)."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class BodyTooLargeError(InvalidRequestError):
    """The request body is larger than the endpoint reads (413)."""

    status = 413
    code = "request_too_large"


class ChatAuth:
    """Bearer tokens accepted by one deployment's endpoint, held as SHA-256 digests.

    Args:
        token_sha256: Hex SHA-256 digests of the accepted tokens.
    """

    def __init__(self, token_sha256: Iterable[str], source: str | None = None) -> None:
        self._digests = tuple(d.lower().encode() for d in token_sha256)
        self._source = source  # where more tokens came from (an environment variable), for the 401's message

    @classmethod
    def from_args(cls, args: ChatAuthArgs, environ: Mapping[str, str] | None = None) -> ChatAuth:
        """The digests of ``args`` plus those of the tokens in ``args.tokens_env`` (read once, here)."""
        env = os.environ if environ is None else environ
        digests = list(args.token_sha256)
        raw = env.get(args.tokens_env, "") if args.tokens_env else ""
        for token in raw.replace(",", "\n").splitlines():
            if token.strip():
                digests.append(hashlib.sha256(token.strip().encode()).hexdigest())
        return cls(digests, source=args.tokens_env)

    def check(self, authorization: str | None) -> None:
        """Accept an ``Authorization`` header value, or raise.

        Raises:
            UnauthorizedError: No bearer token, or one not accepted here (the message never
                contains the token).
        """
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthorizedError(
                "this endpoint needs a bearer token of the deployment's namespace "
                "(Authorization: Bearer <token>; the OpenAI clients send api_key so)"
            )
        digest = hashlib.sha256(token.strip().encode()).hexdigest().encode()
        # Compare with every digest (no early exit), in constant time each.
        accepted = False
        for known in self._digests:
            accepted |= hmac.compare_digest(digest, known)
        if not accepted:
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
