"""Kubernetes identities at a chat endpoint on a cluster: a TokenReview, then a SubjectAccessReview.

A bearer token that is none of the namespace's chat tokens may be a Kubernetes token (a
ServiceAccount's, an OIDC user's: what ``kubectl`` sends, and what the in-cluster control
API's chat proxy forwards). :class:`KubernetesChatAuth` asks the API server who it is
(``TokenReview``, ``authentication.k8s.io/v1``) and whether that user may use this deployment
(``SubjectAccessReview``, ``authorization.k8s.io/v1``): verb ``get`` on ``modeldeployments``
(group ``corral.dev``) named after the deployment, in its namespace. That is the question the
control API's chat proxy asks for ``/v1/chat/completions`` and what kube-rbac-proxy in front of
a KServe InferenceService asks for its object, so a RoleBinding to Kubernetes' ``view`` in the
namespace (the chart aggregates Corral's kinds into it) lets a user chat there, and a Role
naming one ModelDeployment (``resourceNames``) lets it chat with that one only.

The replica's own identity (its pod's ServiceAccount token, in-cluster config; else a kubeconfig
named by ``KUBECONFIG``, how a process outside a pod is given one) asks; it needs
``create`` on ``tokenreviews`` and ``subjectaccessreviews`` (``system:auth-delegator``). Answers
are cached per token digest (60 s when allowed, 10 s when refused, a bounded number of
tokens); a failure to ask is not cached. The reviews block, so callers on an event loop run
:meth:`KubernetesChatAuth.review` in a thread. The ``kubernetes`` package is imported on the
first review only. Tokens are never logged nor put in an error; usernames are.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from corral.serving._errors import AuthUnavailableError, ForbiddenError, UnauthorizedError

__all__ = ["KUBERNETES_AUTH_ENV", "KubernetesChatAuth", "kubernetes_auth_enabled"]

logger = logging.getLogger(__name__)

KUBERNETES_AUTH_ENV = "CORRAL_CHAT_KUBERNETES_AUTH"
"""Environment variable of a replica's pod: ``true`` makes its endpoint accept Kubernetes tokens."""

GROUP, RESOURCE, VERB = "corral.dev", "modeldeployments", "get"
"""The SubjectAccessReview's resource attributes (plus the deployment's name and namespace)."""

_TIMEOUT = (3.0, 5.0)  # connect, read: an API server that does not answer is a 503 soon


def kubernetes_auth_enabled(value: str | None) -> bool:
    """Whether :data:`KUBERNETES_AUTH_ENV`'s value turns Kubernetes auth on (``true``, ``1``, ``yes``)."""
    return (value or "").strip().lower() in ("true", "1", "yes")


class KubernetesChatAuth:
    """Whether a Kubernetes bearer token may use one ModelDeployment's endpoint.

    Args:
        namespace: The deployment's namespace.
        deployment: The ModelDeployment's name.
        api_client: A ``kubernetes.client.ApiClient`` to ask with; ``None`` builds one from the
            pod's in-cluster config on the first review.
        allowed_seconds: How long an allowed token's answer is reused.
        refused_seconds: How long a refused token's answer (401 or 403) is reused.
        max_tokens: Most tokens whose answers are kept (the least recently used go first).
        clock: Monotonic seconds (tests pass their own).
        apis: ``(AuthenticationV1Api, AuthorizationV1Api)``-like objects to ask with instead of
            ``api_client``'s (tests without a server).
    """

    def __init__(
        self,
        namespace: str,
        deployment: str,
        *,
        api_client: Any = None,
        allowed_seconds: float = 60.0,
        refused_seconds: float = 10.0,
        max_tokens: int = 1024,
        clock: Callable[[], float] = time.monotonic,
        apis: tuple[Any, Any] | None = None,
    ) -> None:
        self.namespace, self.deployment = namespace, deployment
        self.allowed_seconds, self.refused_seconds = allowed_seconds, refused_seconds
        self.max_tokens = max_tokens
        self._client = api_client
        self._apis = apis
        self._clock = clock
        # token digest -> (expires, status: 0 allowed, 401 or 403 refused, message)
        self._cache: OrderedDict[str, tuple[float, int, str]] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, token: str) -> bool:
        """Whether ``token`` has a live answer: return for an allowed one, raise a refused one's error."""
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock()
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return False
            if entry[0] <= now:
                del self._cache[key]
                return False
            self._cache.move_to_end(key)
        _raise_for(entry[1], entry[2])
        return True

    def review(self, token: str) -> None:
        """Allow ``token``'s user, or raise (blocks: run it in a thread from an event loop).

        Raises:
            UnauthorizedError: The API server does not authenticate the token (401).
            ForbiddenError: The user may not ``get`` this ModelDeployment (403).
            AuthUnavailableError: The API server could not be asked (503; not cached).
        """
        if self.cached(token):
            return
        status, message = self._ask(token)
        ttl = self.allowed_seconds if status == 0 else self.refused_seconds
        key = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            self._cache[key] = (self._clock() + ttl, status, message)
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_tokens:
                self._cache.popitem(last=False)
        _raise_for(status, message)

    # ------------------------------------------------------------------ the API server

    def _ask(self, token: str) -> tuple[int, str]:
        """``(0, "")`` for an allowed user, ``(401 | 403, message)`` for a refused one."""
        import kubernetes.client

        authn, authz = self._api()
        spec = kubernetes.client.V1TokenReviewSpec(token=token)
        review = self._call(
            "review the caller's token", authn.create_token_review, kubernetes.client.V1TokenReview(spec=spec)
        )
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return 401, (
                "the token is neither one of this namespace's chat tokens nor a Kubernetes token the cluster accepts"
            )
        user = status.user
        attributes = kubernetes.client.V1ResourceAttributes(
            group=GROUP, resource=RESOURCE, verb=VERB, name=self.deployment, namespace=self.namespace
        )
        sar = kubernetes.client.V1SubjectAccessReview(
            spec=kubernetes.client.V1SubjectAccessReviewSpec(
                user=user.username,
                groups=user.groups,
                uid=user.uid,
                extra=user.extra,
                resource_attributes=attributes,
            )
        )
        answer = self._call("review the caller's access", authz.create_subject_access_review, sar)
        what = f"{VERB} {RESOURCE}.{GROUP} {self.deployment} in namespace {self.namespace}"
        if answer.status is not None and answer.status.allowed:
            logger.info("Chat caller %s allowed: %s", user.username, what)
            return 0, ""
        logger.info("Chat caller %s denied: %s", user.username, what)
        return 403, f"{user.username} may not use this deployment: RBAC does not allow {what}"

    def _api(self) -> tuple[Any, Any]:
        if self._apis is None:
            import kubernetes.client
            from kubernetes.config import config_exception, incluster_config, kube_config

            client = self._client
            if client is None:
                config = kubernetes.client.Configuration()
                try:
                    incluster_config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
                except config_exception.ConfigException as exc:
                    try:  # else a kubeconfig named by KUBECONFIG (a "pod" given its account's token that way)
                        if not os.environ.get("KUBECONFIG"):
                            raise
                        kube_config.load_kube_config(client_configuration=config)  # type: ignore[no-untyped-call]
                    except config_exception.ConfigException:
                        raise AuthUnavailableError(
                            f"cannot check Kubernetes tokens: no in-cluster config ({exc}); the Ray pods need their "
                            "ServiceAccount's token (automountServiceAccountToken)"
                        ) from None
                config.retries = 1
                client = kubernetes.client.ApiClient(config)
            self._apis = (kubernetes.client.AuthenticationV1Api(client), kubernetes.client.AuthorizationV1Api(client))
        return self._apis

    @staticmethod
    def _call(what: str, method: Callable[..., Any], body: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return method(body, _request_timeout=_TIMEOUT)
        except ApiException as exc:
            hint = (
                " (the Ray pods' ServiceAccount needs system:auth-delegator: create tokenreviews and "
                "subjectaccessreviews)"
                if exc.status in (401, 403)
                else ""
            )
            logger.warning("Cannot %s: the API server answered %s %s%s", what, exc.status, exc.reason, hint)
            raise AuthUnavailableError(f"cannot {what}: the API server answered {exc.status}{hint}") from None
        except (HTTPError, OSError) as exc:
            logger.warning("Cannot %s: %s", what, type(exc).__name__)
            raise AuthUnavailableError(f"cannot {what}: the API server did not answer ({type(exc).__name__})") from None


def _raise_for(status: int, message: str) -> None:
    if status == 401:
        raise UnauthorizedError(message)
    if status == 403:
        raise ForbiddenError(message)
