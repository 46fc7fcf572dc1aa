"""Control-API callers on a cluster: TokenReview authenticates, SubjectAccessReview authorizes.

:class:`KubernetesAuth` fits ``corral.controlapi``'s ``Authenticator`` protocol. A bearer token
is checked with a ``TokenReview``; the resulting user may use every namespace when a
``SubjectAccessReview`` allows it to ``list`` Corral's resources cluster-wide, else the
configured namespaces in which it may ``get`` them; it may write cluster-scoped kinds
(GPUPools) when it may ``create`` ``gpupools.corral.dev``; it may write ``/status`` (the
controller's right) when it may ``update`` ``finetunejobs/status`` cluster-wide, and read
``/metrics`` when it may ``get`` the non-resource URL ``/metrics`` (Prometheus' role). Answers are cached per token
(by its SHA-256) for a short time; tokens are never logged.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from corral.controlapi._auth import Principal
from corral.controlapi._status import APIError

__all__ = ["KubernetesAuth"]

logger = logging.getLogger(__name__)

_GROUP = "corral.dev"


class KubernetesAuth:
    """TokenReview + SubjectAccessReview authentication for the control API.

    Args:
        api_client: A ``kubernetes.client.ApiClient`` (the control API's own identity, which
            needs ``create`` on tokenreviews and subjectaccessreviews).
        namespaces: Namespaces a caller without cluster-wide access may be granted.
        cache_seconds: How long one token's answer is reused.
        audiences: Audiences the token must be for (empty: the API server's default).
    """

    def __init__(
        self,
        api_client: Any,
        namespaces: Iterable[str] = (),
        *,
        cache_seconds: float = 60.0,
        audiences: Iterable[str] = (),
    ) -> None:
        import kubernetes.client

        self.authn = kubernetes.client.AuthenticationV1Api(api_client)
        self.authz = kubernetes.client.AuthorizationV1Api(api_client)
        self.namespaces = tuple(namespaces)
        self.cache_seconds = cache_seconds
        self.audiences = list(audiences)
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def authenticate(self, token: str | None) -> Principal:
        """Return the caller of ``token``.

        Raises:
            APIError: 401 for a missing or rejected token; 503 when the API server cannot be asked.
        """
        if not token:
            raise _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        principal = self._review(token)
        with self._lock:
            self._cache[key] = (now + self.cache_seconds, principal)
        return principal

    def _review(self, token: str) -> Principal:
        import kubernetes.client
        from kubernetes.client.exceptions import ApiException

        spec = kubernetes.client.V1TokenReviewSpec(token=token, audiences=self.audiences or None)
        try:
            review = self.authn.create_token_review(kubernetes.client.V1TokenReview(spec=spec))
        except ApiException as exc:
            raise APIError(503, "ServiceUnavailable", f"cannot review the token: {exc.reason}") from exc
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            raise _unauthorized(
                (status.error if status is not None and status.error else None) or "invalid bearer token"
            )
        user = status.user
        if self._allowed(user, "list", "finetunejobs", None):
            namespaces: frozenset[str] | None = None
        else:
            namespaces = frozenset(ns for ns in self.namespaces if self._allowed(user, "get", "finetunejobs", ns))
        cluster = self._allowed(user, "create", "gpupools", None)
        controller = self._allowed(user, "update", "finetunejobs", None, subresource="status")
        metrics = self._allowed(user, "get", None, None, path="/metrics")
        logger.info(
            "Authenticated %s (namespaces: %s)", user.username, "all" if namespaces is None else sorted(namespaces)
        )
        return Principal(str(user.username), namespaces, cluster, controller=controller, metrics=metrics)

    def _allowed(
        self,
        user: Any,
        verb: str,
        resource: str | None,
        namespace: str | None,
        *,
        subresource: str | None = None,
        path: str | None = None,
    ) -> bool:
        import kubernetes.client
        from kubernetes.client.exceptions import ApiException

        who = {"user": user.username, "groups": user.groups, "uid": user.uid, "extra": user.extra}
        if path is not None:
            spec = kubernetes.client.V1SubjectAccessReviewSpec(
                **who, non_resource_attributes=kubernetes.client.V1NonResourceAttributes(path=path, verb=verb)
            )
        else:
            attributes = kubernetes.client.V1ResourceAttributes(
                group=_GROUP, resource=resource, verb=verb, namespace=namespace, subresource=subresource
            )
            spec = kubernetes.client.V1SubjectAccessReviewSpec(**who, resource_attributes=attributes)
        try:
            review = self.authz.create_subject_access_review(kubernetes.client.V1SubjectAccessReview(spec=spec))
        except ApiException as exc:
            raise APIError(503, "ServiceUnavailable", f"cannot review access: {exc.reason}") from exc
        return bool(review.status is not None and review.status.allowed)


def _unauthorized(message: str) -> APIError:
    return APIError(401, "Unauthorized", f"Unauthorized: {message}", headers={"WWW-Authenticate": "Bearer"})
