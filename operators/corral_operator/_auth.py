"""Control-API callers on a cluster: TokenReview authenticates, SubjectAccessReview authorizes each request.

:class:`KubernetesAuth` fits ``corral.controlapi``'s ``Authenticator`` protocol. A bearer token
is checked with a ``TokenReview``; the principal it returns carries an access check that asks a
``SubjectAccessReview`` for the verb, ``corral.dev`` resource, subresource and namespace of each
request (``get`` a FineTuneJob in ``team-a``; ``patch`` ``finetunejobs/status``; ``list``
cluster-wide), so a caller may do through the control API exactly what its RBAC lets it do with
kubectl: ``view`` in one namespace reads there and nothing else, and a cluster-wide
``list finetunejobs`` lists FineTuneJobs everywhere and grants nothing more.

The principal is an administrator (every namespace: any URI in specs, ``/metrics``) only when
RBAC allows it every verb on every ``corral.dev`` resource cluster-wide (``*`` on ``*``, e.g.
``cluster-admin``). ``/metrics`` is also read by whoever may ``get`` the non-resource URL
``/metrics`` (Prometheus' role). Answers are cached per token (by its SHA-256) and per
(verb, resource, namespace, subresource) for ``cache_seconds``; tokens are never logged.
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
        access = _AccessCheck(self, user)
        admin = access("*", "*", None, "")
        namespaces: frozenset[str] | None = None
        if not admin:  # where an OpenAI-style call without a namespace header may default to
            namespaces = frozenset(ns for ns in self.namespaces if access("get", "finetunejobs", ns, ""))
        metrics = self._allowed(user, "get", None, None, path="/metrics")
        logger.info("Authenticated %s (%s)", user.username, "corral admin" if admin else "per-request access")
        return Principal(str(user.username), namespaces, admin, controller=admin, metrics=metrics, access=access)

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


class _AccessCheck:
    """One caller's :data:`~corral.controlapi._auth.AccessCheck`: a SubjectAccessReview per new question.

    A cluster-wide ``yes`` answers the same question in every namespace (RBAC's
    ClusterRoleBindings reach all namespaces). At most ``_MAX_ANSWERS`` answers are kept; the
    principal holding this check is itself dropped after the token cache's lifetime.
    """

    _MAX_ANSWERS = 512

    def __init__(self, auth: KubernetesAuth, user: Any) -> None:
        self._auth, self._user = auth, user
        self._answers: dict[tuple[str, str, str | None, str], bool] = {}
        self._lock = threading.Lock()

    def __call__(self, verb: str, resource: str, namespace: str | None, subresource: str) -> bool:
        key = (verb, resource, namespace, subresource)
        with self._lock:
            known = self._answers.get(key)
            if known is None and namespace is not None and self._answers.get((verb, resource, None, subresource)):
                known = True
        if known is not None:
            return known
        allowed = self._auth._allowed(self._user, verb, resource, namespace, subresource=subresource or None)
        with self._lock:
            if len(self._answers) >= self._MAX_ANSWERS:
                self._answers.clear()
            self._answers[key] = allowed
        if not allowed:
            logger.info(
                "Denied %s: %s %s%s in %s",
                self._user.username,
                verb,
                resource,
                f"/{subresource}" if subresource else "",
                namespace or "the cluster scope",
            )
        return allowed


def _unauthorized(message: str) -> APIError:
    return APIError(401, "Unauthorized", f"Unauthorized: {message}", headers={"WWW-Authenticate": "Bearer"})
