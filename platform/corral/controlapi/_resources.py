"""Kubernetes-shaped resource endpoints for every Corral kind.

Namespaced kinds live at ``/apis/corral.dev/v1alpha1/namespaces/{namespace}/{plural}[/{name}[/status]]``
and are listed across the caller's namespaces at ``/apis/corral.dev/v1alpha1/{plural}``;
cluster-scoped kinds (``GPUPool``) at ``/apis/corral.dev/v1alpha1/{plural}[/{name}[/status]]``.
Verbs: list (``labelSelector``; ``watch=1`` streams newline-delimited watch events from
``resourceVersion``), create (POST), get, replace (PUT), merge patch (PATCH with
``application/merge-patch+json``), delete; ``/status`` get/put/patch touch only status.
Bodies are validated by :func:`corral.api.parse_document`; errors are Kubernetes ``Status`` objects.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from corral.api import DocumentError, FieldProblem, parse_document
from corral.api._show import show as _show
from corral.api.v1alpha1 import GROUP_VERSION, KINDS, Resource
from corral.artifacts import URIPolicy, URIRefused, spec_uris
from corral.store import Store, StoreError

from ._access import Caller, authorize, authorize_status_write, get_principal, visible
from ._auth import Principal
from ._limits import InputError, decode_json
from ._resources_openapi import MERGE_PATCH, operation_openapi
from ._resources_watch import watch_response
from ._status import APIError

__all__ = ["API_PREFIX", "get_principal", "resource_router"]

log = logging.getLogger(__name__)

API_PREFIX = f"/apis/{GROUP_VERSION}"

Handler = Callable[..., Awaitable[Response]]


async def _json_body(request: Request) -> Any:
    raw = await request.body()  # BodyTooLarge (413) propagates to the app's handler
    try:
        return decode_json(raw)
    except InputError as exc:
        raise APIError(400, "BadRequest", str(exc)) from None


def _parse(cls: type[Resource], body: Any, namespace: str | None, name: str | None) -> Resource:
    """Validate a request body as ``cls``, filling and checking namespace and name against the URL."""
    if not isinstance(body, dict):
        raise APIError(400, "BadRequest", f"the request body must be a JSON object ({cls.KIND})", kind=cls.KIND)
    body = dict(body)
    body.setdefault("apiVersion", GROUP_VERSION)
    body.setdefault("kind", cls.KIND)
    if body["kind"] != cls.KIND:
        raise APIError(
            400,
            "BadRequest",
            f"kind {show(body['kind'])} does not match the URL's resource ({cls.KIND})",
            kind=cls.KIND,
        )
    meta = body.get("metadata")
    if isinstance(meta, dict):
        meta = dict(meta)
        body["metadata"] = meta
        if cls.NAMESPACED:
            sent = meta.setdefault("namespace", namespace)
            if sent != namespace:
                raise APIError(
                    400,
                    "BadRequest",
                    f"the namespace of the provided object ({show(sent)}) does not match the namespace sent on the "
                    f"request ({namespace})",
                    kind=cls.KIND,
                )
        if name is not None and meta.get("name") != name:
            raise APIError(
                400,
                "BadRequest",
                f"the name of the object ({show(meta.get('name'))}) does not match the name on the URL ({name})",
                kind=cls.KIND,
                name=name,
            )
    try:
        return parse_document(body, source="request body")
    except DocumentError as exc:
        problems = exc.problems
        shown = (exc.name or name or "?")[:253]
        message = f'{cls.KIND} "{shown}" is invalid: ' + "; ".join(str(p) for p in problems[:20])
        raise APIError(422, "Invalid", message, kind=cls.KIND, name=shown, problems=problems[:20]) from None


def show(value: Any) -> str:
    """A bad value for a message, cut before it is rendered."""
    return _show(value, 80)


def _check_uris(
    request: Request, principal: Principal, cls: type[Resource], namespace: str | None, *, spec: Any, name: str | None
) -> None:
    """Apply the URI rule to every ``uri`` of a spec (or of a merge patch's spec) a tenant sends.

    An admin (every namespace) is the administrator and may reference any URI.
    """
    policy: URIPolicy | None = getattr(request.app.state, "uri_policy", None)
    if policy is None or principal.all_namespaces or not cls.NAMESPACED or namespace is None:
        return

    for path, uri in spec_uris(spec):
        try:
            policy.check(uri, namespace, path)
        except URIRefused as exc:
            log.info("Refused %s for token %s: %s", path, principal.name, exc)
            raise APIError(
                422,
                "Invalid",
                f'{cls.KIND} "{name or "?"}" is invalid: {exc}',
                kind=cls.KIND,
                name=name,
                problems=[FieldProblem(path, str(exc).split(": ", 1)[-1], has_value=False)],
            ) from None


def _precondition(options: Any) -> str | None:
    """``preconditions.resourceVersion`` of a delete's DeleteOptions body (400 when malformed)."""
    if options is None:
        return None
    if not isinstance(options, dict):
        raise APIError(400, "BadRequest", "the DeleteOptions body must be a JSON object")
    preconditions = options.get("preconditions")
    if preconditions is None:
        return None
    if not isinstance(preconditions, dict):
        raise APIError(
            400,
            "BadRequest",
            f'preconditions: {show(preconditions)}: must be an object such as {{"resourceVersion": "42"}}',
        )
    version = preconditions.get("resourceVersion")
    if version is not None and not isinstance(version, str | int):
        raise APIError(
            400, "BadRequest", f"preconditions.resourceVersion: {show(version)}: must be a resourceVersion string"
        )
    return None if version is None else str(version)


async def _checked(check: Callable[..., Any], principal: Principal, *args: Any) -> Any:
    """Run an access rule; one that asks the API server (``principal.access``) runs in a worker thread."""
    if principal.access is None:
        return check(principal, *args)
    return await run_in_threadpool(check, principal, *args)


def _visible_items(principal: Principal, items: list[Resource]) -> list[dict[str, Any]]:
    return [item.to_dict() for item in items if visible(principal, item)]


def _ok(obj: Resource, code: int = 200) -> JSONResponse:
    return JSONResponse(obj.to_dict(), status_code=code)


class _KindRoutes:
    """The handlers of one kind; ``namespace`` comes from the URL (``None`` for cluster scope / all namespaces)."""

    def __init__(self, cls: type[Resource], watch_timeout: float) -> None:
        self.cls = cls
        self.watch_timeout = watch_timeout

    @staticmethod
    def _store(request: Request) -> Store:
        store: Store = request.app.state.store
        return store

    @staticmethod
    def _namespace(request: Request) -> str | None:
        namespace = request.path_params.get("namespace")
        return str(namespace) if namespace is not None else None

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await run_in_threadpool(fn, *args)
        except StoreError as exc:
            raise APIError.from_store(exc) from None

    async def list(self, request: Request, principal: Caller) -> Response:
        namespace = self._namespace(request)
        query = request.query_params
        verb = "watch" if query.get("watch", "").lower() in ("1", "true") else "list"
        await _checked(authorize, principal, verb, self.cls, namespace)
        selector = query.get("labelSelector") or None
        if verb == "watch":
            return await watch_response(
                request, principal, self.cls, namespace=namespace, selector=selector, watch_timeout=self.watch_timeout
            )
        listed = await self._call(self._store(request).list, self.cls, namespace, selector)
        body = listed.to_dict()
        body["items"] = await _checked(_visible_items, principal, listed.items)
        return JSONResponse(body)

    async def create(self, request: Request, principal: Caller) -> Response:
        namespace = self._namespace(request)
        await _checked(authorize, principal, "create", self.cls, namespace)
        obj = _parse(self.cls, await _json_body(request), namespace, None)
        _check_uris(request, principal, self.cls, namespace, spec=obj.to_dict().get("spec"), name=obj.metadata.name)
        return _ok(await self._call(self._store(request).create, obj), 201)

    async def get(self, request: Request, principal: Caller) -> Response:
        namespace = self._namespace(request)
        await _checked(authorize, principal, "get", self.cls, namespace)
        name = request.path_params["name"]
        return _ok(await self._call(self._store(request).get, self.cls, namespace, name))

    async def events(self, request: Request, principal: Caller) -> Response:
        namespace = self._namespace(request)
        await _checked(authorize, principal, "get", self.cls, namespace)
        name = request.path_params["name"]
        await self._call(self._store(request).get, self.cls, namespace, name)
        records = await self._call(self._store(request).list_events, self.cls, namespace, name)
        return JSONResponse({"apiVersion": "v1", "kind": "EventList", "items": [r.to_dict() for r in records]})

    async def replace(self, request: Request, principal: Caller) -> Response:
        namespace = self._namespace(request)
        await _checked(authorize, principal, "update", self.cls, namespace)
        name = request.path_params["name"]
        obj = _parse(self.cls, await _json_body(request), namespace, name)
        _check_uris(request, principal, self.cls, namespace, spec=obj.to_dict().get("spec"), name=name)
        return _ok(await self._call(self._store(request).update, obj))

    async def patch(self, request: Request, principal: Caller) -> Response:
        namespace = self._namespace(request)
        await _checked(authorize, principal, "patch", self.cls, namespace)
        body = await self._merge_patch_body(request)
        name = request.path_params["name"]
        _check_uris(request, principal, self.cls, namespace, spec=body.get("spec"), name=name)
        return _ok(await self._call(self._store(request).patch, self.cls, namespace, name, body))

    async def delete(self, request: Request, principal: Caller) -> Response:
        namespace = self._namespace(request)
        await _checked(authorize, principal, "delete", self.cls, namespace)
        precondition = _precondition(await _json_body(request))
        name = request.path_params["name"]
        return _ok(await self._call(self._store(request).delete, self.cls, namespace, name, precondition))

    async def replace_status(self, request: Request, principal: Caller) -> Response:
        namespace = self._namespace(request)
        await _checked(authorize_status_write, principal, "update", self.cls, namespace)
        obj = _parse(self.cls, await _json_body(request), namespace, request.path_params["name"])
        return _ok(await self._call(self._store(request).replace_status, obj))

    async def patch_status(self, request: Request, principal: Caller) -> Response:
        namespace = self._namespace(request)
        await _checked(authorize_status_write, principal, "patch", self.cls, namespace)
        body = await self._merge_patch_body(request)
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        status = body.get("status") or {}
        if not isinstance(status, dict):
            raise APIError(400, "BadRequest", "status in a merge patch must be an object", kind=self.cls.KIND)
        rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
        if rv is not None and not isinstance(rv, str | int):
            raise APIError(400, "BadRequest", f"metadata.resourceVersion: {show(rv)}: must be a string")
        name = request.path_params["name"]
        store = self._store(request)
        version = None if rv is None else str(rv)
        return _ok(await self._call(store.patch_status, self.cls, namespace, name, status, version))

    async def _merge_patch_body(self, request: Request) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != MERGE_PATCH:
            raise APIError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: {MERGE_PATCH}",
                kind=self.cls.KIND,
            )
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise APIError(400, "BadRequest", "a merge patch must be a JSON object", kind=self.cls.KIND)
        return body


def resource_router(watch_timeout: float = 1800.0) -> APIRouter:
    """Return the router serving every kind of ``corral.dev/v1alpha1``.

    Args:
        watch_timeout: Longest a watch stream stays open (clients reconnect with ``resourceVersion``).
    """
    router = APIRouter()
    for cls in KINDS.values():
        routes = _KindRoutes(cls, watch_timeout)
        kind = cls.KIND
        tags: list[str | Enum] = [kind]
        if cls.NAMESPACED:
            base = f"{API_PREFIX}/namespaces/{{namespace}}/{cls.PLURAL}"
            scope = "Namespaced"
            router.add_api_route(
                f"{API_PREFIX}/{cls.PLURAL}",
                routes.list,
                methods=["GET"],
                operation_id=f"list{kind}ForAllNamespaces",
                summary=f"List or watch {cls.PLURAL} in every namespace the caller may use",
                tags=tags,
                openapi_extra=operation_openapi(cls, "all", many=True),
            )
        else:
            base = f"{API_PREFIX}/{cls.PLURAL}"
            scope = ""
        item = f"{base}/{{name}}"
        table: list[tuple[str, str, Handler, str, str, dict[str, Any]]] = [
            (
                base,
                "GET",
                routes.list,
                "list",
                f"List or watch {cls.PLURAL}",
                operation_openapi(cls, "collection", many=True),
            ),
            (
                base,
                "POST",
                routes.create,
                "create",
                f"Create a {kind}",
                operation_openapi(cls, "collection", body="object", created=True),
            ),
            (item, "GET", routes.get, "read", f"Read a {kind}", operation_openapi(cls, "item")),
            (
                item,
                "PUT",
                routes.replace,
                "replace",
                f"Replace a {kind}'s spec and metadata",
                operation_openapi(cls, "item", body="object"),
            ),
            (
                item,
                "PATCH",
                routes.patch,
                "patch",
                f"Merge-patch a {kind}'s spec and metadata",
                operation_openapi(cls, "item", body="patch"),
            ),
            (item, "DELETE", routes.delete, "delete", f"Delete a {kind}", operation_openapi(cls, "item")),
            (f"{item}/status", "GET", routes.get, "read", f"Read a {kind}'s status", operation_openapi(cls, "status")),
            (
                f"{item}/events",
                "GET",
                routes.events,
                "list",
                f"List the events about a {kind}",
                operation_openapi(cls, "item"),
            ),
            (
                f"{item}/status",
                "PUT",
                routes.replace_status,
                "replace",
                f"Replace a {kind}'s status",
                operation_openapi(cls, "status", body="object"),
            ),
            (
                f"{item}/status",
                "PATCH",
                routes.patch_status,
                "patch",
                f"Merge-patch a {kind}'s status",
                operation_openapi(cls, "status", body="patch"),
            ),
        ]
        for path, method, handler, verb, summary, extra in table:
            suffix = "Status" if path.endswith("/status") else "Events" if path.endswith("/events") else ""
            router.add_api_route(
                path,
                handler,
                methods=[method],
                operation_id=f"{verb}{scope}{kind}{suffix}",
                summary=summary,
                tags=tags,
                openapi_extra=extra,
            )
    return router
