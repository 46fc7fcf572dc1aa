"""Who may do what on the resource endpoints: the caller, namespace and status rules, watch quotas.

* A namespaced object is reached only by a caller that may use its namespace; objects of
  other namespaces are filtered out of lists and watches across namespaces.
* Cluster-scoped kinds are readable by every caller and writable by ``cluster`` callers.
* ``/status`` belongs to the controller: only a principal with ``writes_status`` (the
  controller's, or an admin's for repair) may put or patch it.
* A principal with an ``access`` check (the cluster's: a SubjectAccessReview per request)
  is asked for each request's verb, resource and namespace instead of the three rules above;
  a list or watch across namespaces shows the objects of each namespace it may list there.
* Watches are long-lived: each caller may hold at most ``max_watches`` at once (429 beyond).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from corral.api.v1alpha1 import Resource

from ._auth import Authenticator, Principal
from ._status import APIError

__all__ = ["Caller", "WatchQuota", "authorize", "authorize_status_write", "get_principal", "visible"]

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="A token from the tokens file.")


def get_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """FastAPI dependency: the authenticated caller (401 otherwise)."""
    auth: Authenticator = request.app.state.auth
    return auth.authenticate(credentials.credentials if credentials else None)


Caller = Annotated[Principal, Depends(get_principal)]


def _forbidden(principal: Principal, verb: str, cls: type[Resource], namespace: str | None, sub: str = "") -> APIError:
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    resource = f"{cls.PLURAL}/{sub}" if sub else cls.PLURAL
    message = (
        f'{resource}.corral.dev is forbidden: token "{principal.name}" cannot {verb} resource '
        f'"{resource}" in API group "corral.dev"{where}'
    )
    log.info("Forbidden: %s", message)
    return APIError(403, "Forbidden", message, kind=cls.KIND)


def authorize(principal: Principal, verb: str, cls: type[Resource], namespace: str | None) -> None:
    """Raise 403 unless ``principal`` may ``verb`` objects of ``cls`` in ``namespace``.

    With an ``access`` check this asks it (it may block on the API server: call it from a
    worker thread); a list or watch across namespaces passes here and is filtered by
    :func:`visible`.
    """
    if principal.access is not None:
        if cls.NAMESPACED and namespace is None and verb in ("list", "watch"):
            principal.access(verb, cls.PLURAL, None, "")  # a cluster-wide yes answers every namespace's question
            return
        if not principal.access(verb, cls.PLURAL, namespace if cls.NAMESPACED else None, ""):
            raise _forbidden(principal, verb, cls, namespace if cls.NAMESPACED else None)
        return
    if cls.NAMESPACED:
        if namespace is not None and not principal.can_use(namespace):
            raise _forbidden(principal, verb, cls, namespace)
    elif verb not in ("get", "list", "watch") and not principal.cluster:
        raise _forbidden(principal, verb, cls, None)


def authorize_status_write(principal: Principal, verb: str, cls: type[Resource], namespace: str | None) -> None:
    """Raise 403 unless ``principal`` may write the ``/status`` of objects of ``cls`` in ``namespace``.

    The namespace rule comes first (a tenant learns nothing about another namespace); then
    only the controller (and an admin) may write status, which the reconcilers act on.
    """
    if principal.access is not None:
        if not principal.access(verb, cls.PLURAL, namespace if cls.NAMESPACED else None, "status"):
            raise _forbidden(principal, verb, cls, namespace if cls.NAMESPACED else None, "status")
        return
    authorize(principal, verb, cls, namespace)
    if not principal.writes_status:
        raise APIError(
            403,
            "Forbidden",
            f'{cls.PLURAL}/status.corral.dev is forbidden: token "{principal.name}" cannot {verb} resource '
            f'"{cls.PLURAL}/status" in API group "corral.dev": status is written by the controller '
            "(tokens with controller: true, or an admin)",
            kind=cls.KIND,
        )


def visible(principal: Principal, obj: Resource, verb: str = "list") -> bool:
    """True when ``principal`` may see ``obj`` (in lists and watches across namespaces).

    With an ``access`` check, asks whether it may ``verb`` (list or watch) the kind in the
    object's namespace (answers are cached by the check; the first may block).
    """
    cls = type(obj)
    if not cls.NAMESPACED:
        return True
    if principal.access is not None:
        return obj.metadata.namespace is not None and principal.access(verb, cls.PLURAL, obj.metadata.namespace, "")
    return principal.can_use(obj.metadata.namespace)


class WatchQuota:
    """Counts the open watches of each caller and refuses one over ``limit`` (429).

    Args:
        limit: Most watches one principal (token name) may hold at once.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def open(self, principal: Principal) -> None:
        """Take one watch slot of ``principal``.

        Raises:
            APIError: 429 TooManyRequests when it holds ``limit`` already.
        """
        with self._lock:
            count = self._open.get(principal.name, 0)
            if count >= self.limit:
                raise APIError(
                    429,
                    "TooManyRequests",
                    f'token "{principal.name}" has {count} open watches, the most one token may hold; '
                    "close one (or wait for its timeoutSeconds) before opening another",
                    headers={"Retry-After": "5"},
                )
            self._open[principal.name] = count + 1

    def close(self, principal: Principal) -> None:
        """Give back one watch slot of ``principal``."""
        with self._lock:
            left = self._open.get(principal.name, 0) - 1
            if left > 0:
                self._open[principal.name] = left
            else:
                self._open.pop(principal.name, None)

    def held(self, principal: Principal) -> int:
        """How many watches ``principal`` holds now."""
        with self._lock:
            return self._open.get(principal.name, 0)

    @contextmanager
    def slot(self, principal: Principal) -> Iterator[None]:
        """Hold one slot for the duration of a ``with`` block."""
        self.open(principal)
        try:
            yield
        finally:
            self.close(principal)
