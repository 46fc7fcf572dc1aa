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

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from corral.api import DocumentError, parse_document
from corral.api.v1alpha1 import GROUP_VERSION, KINDS, Resource
from corral.store import Expired, Store, StoreError, Watch, WatchEvent

from ._auth import Authenticator, Principal
from ._status import APIError, status_body

__all__ = ["API_PREFIX", "get_principal", "resource_router"]

log = logging.getLogger(__name__)

API_PREFIX = f"/apis/{GROUP_VERSION}"
MERGE_PATCH = "application/merge-patch+json"
_bearer = HTTPBearer(auto_error=False, description="A token from the tokens file.")

Handler = Callable[..., Awaitable[Response]]


def get_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """FastAPI dependency: the authenticated caller (401 otherwise)."""
    auth: Authenticator = request.app.state.auth
    return auth.authenticate(credentials.credentials if credentials else None)


Caller = Annotated[Principal, Depends(get_principal)]


def _forbidden(principal: Principal, verb: str, cls: type[Resource], namespace: str | None) -> APIError:
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    message = (
        f'{cls.PLURAL}.corral.dev is forbidden: token "{principal.name}" cannot {verb} resource '
        f'"{cls.PLURAL}" in API group "corral.dev"{where}'
    )
    log.info("Forbidden: %s", message)
    return APIError(403, "Forbidden", message, kind=cls.KIND)


def _authorize(principal: Principal, verb: str, cls: type[Resource], namespace: str | None) -> None:
    if cls.NAMESPACED:
        if namespace is not None and not principal.can_use(namespace):
            raise _forbidden(principal, verb, cls, namespace)
    elif verb not in ("get", "list", "watch") and not principal.cluster:
        raise _forbidden(principal, verb, cls, None)


def _visible(principal: Principal, obj: Resource) -> bool:
    return not type(obj).NAMESPACED or principal.can_use(obj.metadata.namespace)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise APIError(400, "BadRequest", f"the request body is not valid JSON: {exc}") from None


def _parse(cls: type[Resource], body: Any, namespace: str | None, name: str | None) -> Resource:
    """Validate a request body as ``cls``, filling and checking namespace and name against the URL."""
    if not isinstance(body, dict):
        raise APIError(400, "BadRequest", f"the request body must be a JSON object ({cls.KIND})", kind=cls.KIND)
    body = dict(body)
    body.setdefault("apiVersion", GROUP_VERSION)
    body.setdefault("kind", cls.KIND)
    if body["kind"] != cls.KIND:
        raise APIError(
            400, "BadRequest", f"kind {body['kind']!r} does not match the URL's resource ({cls.KIND})", kind=cls.KIND
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
                    f"the namespace of the provided object ({sent}) does not match the namespace sent on the "
                    f"request ({namespace})",
                    kind=cls.KIND,
                )
        if name is not None and meta.get("name") != name:
            raise APIError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})",
                kind=cls.KIND,
                name=name,
            )
    try:
        return parse_document(body, source="request body")
    except DocumentError as exc:
        problems = exc.problems
        message = f'{cls.KIND} "{exc.name or name or "?"}" is invalid: ' + "; ".join(str(p) for p in problems)
        raise APIError(422, "Invalid", message, kind=cls.KIND, name=exc.name or name, problems=problems) from None


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
        _authorize(principal, verb, self.cls, namespace)
        selector = query.get("labelSelector") or None
        if verb == "watch":
            return await self._watch(request, principal, namespace, selector)
        listed = await self._call(self._store(request).list, self.cls, namespace, selector)
        body = listed.to_dict()
        visible = [item for item in listed.items if _visible(principal, item)]
        body["items"] = [item.to_dict() for item in visible]
        return JSONResponse(body)

    async def _watch(
        self, request: Request, principal: Principal, namespace: str | None, selector: str | None
    ) -> Response:
        query = request.query_params
        since = query.get("resourceVersion") or None
        timeout = self.watch_timeout
        if "timeoutSeconds" in query:
            try:
                timeout = min(float(query["timeoutSeconds"]), timeout)
            except ValueError:
                raise APIError(400, "BadRequest", "timeoutSeconds must be a number") from None
        store = self._store(request)
        try:
            watch: Watch | None = await run_in_threadpool(
                lambda: store.watch(self.cls, namespace, since, label_selector=selector, timeout=timeout)
            )
            expired: Expired | None = None
        except Expired as exc:
            watch, expired = None, exc
        except StoreError as exc:
            raise APIError.from_store(exc) from None
        log.debug(
            "Watch %s in %s from %s for %s", self.cls.PLURAL, namespace or "all namespaces", since, principal.name
        )
        return StreamingResponse(self._events(principal, watch, expired), media_type="application/json")

    async def _events(self, principal: Principal, watch: Watch | None, expired: Expired | None) -> AsyncIterator[str]:
        if watch is None:
            assert expired is not None
            status = status_body(410, "Expired", expired.message, kind=self.cls.KIND)
            yield json.dumps({"type": "ERROR", "object": status}) + "\n"
            return
        try:
            while True:
                try:
                    event: WatchEvent | None = await run_in_threadpool(watch.poll, 1.0)
                except Expired as exc:
                    status = status_body(410, "Expired", exc.message, kind=self.cls.KIND)
                    yield json.dumps({"type": "ERROR", "object": status}) + "\n"
                    return
                if event is None:
                    if watch.done:
                        return
                    continue
                if _visible(principal, event.object):
                    yield json.dumps(event.to_dict()) + "\n"
        finally:
            watch.stop()

    async def create(self, request: Request, principal: Caller) -> Response:
        namespace = self._namespace(request)
        _authorize(principal, "create", self.cls, namespace)
        obj = _parse(self.cls, await _json_body(request), namespace, None)
        return _ok(await self._call(self._store(request).create, obj), 201)

    async def get(self, request: Request, principal: Caller) -> Response:
        namespace = self._namespace(request)
        _authorize(principal, "get", self.cls, namespace)
        name = request.path_params["name"]
        return _ok(await self._call(self._store(request).get, self.cls, namespace, name))

    async def events(self, request: Request, principal: Caller) -> Response:
        namespace = self._namespace(request)
        _authorize(principal, "get", self.cls, namespace)
        name = request.path_params["name"]
        await self._call(self._store(request).get, self.cls, namespace, name)
        records = await self._call(self._store(request).list_events, self.cls, namespace, name)
        return JSONResponse({"apiVersion": "v1", "kind": "EventList", "items": [r.to_dict() for r in records]})

    async def replace(self, request: Request, principal: Caller) -> Response:
        namespace = self._namespace(request)
        _authorize(principal, "update", self.cls, namespace)
        obj = _parse(self.cls, await _json_body(request), namespace, request.path_params["name"])
        return _ok(await self._call(self._store(request).update, obj))

    async def patch(self, request: Request, principal: Caller) -> Response:
        namespace = self._namespace(request)
        _authorize(principal, "patch", self.cls, namespace)
        body = await self._merge_patch_body(request)
        name = request.path_params["name"]
        return _ok(await self._call(self._store(request).patch, self.cls, namespace, name, body))

    async def delete(self, request: Request, principal: Caller) -> Response:
        namespace = self._namespace(request)
        _authorize(principal, "delete", self.cls, namespace)
        options = await _json_body(request)
        precondition = None
        if isinstance(options, dict):
            precondition = (options.get("preconditions") or {}).get("resourceVersion")
        name = request.path_params["name"]
        return _ok(await self._call(self._store(request).delete, self.cls, namespace, name, precondition))

    async def replace_status(self, request: Request, principal: Caller) -> Response:
        namespace = self._namespace(request)
        _authorize(principal, "update", self.cls, namespace)
        obj = _parse(self.cls, await _json_body(request), namespace, request.path_params["name"])
        return _ok(await self._call(self._store(request).replace_status, obj))

    async def patch_status(self, request: Request, principal: Caller) -> Response:
        namespace = self._namespace(request)
        _authorize(principal, "patch", self.cls, namespace)
        body = await self._merge_patch_body(request)
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        status = body.get("status") or {}
        if not isinstance(status, dict):
            raise APIError(400, "BadRequest", "status in a merge patch must be an object", kind=self.cls.KIND)
        rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
        name = request.path_params["name"]
        store = self._store(request)
        return _ok(await self._call(store.patch_status, self.cls, namespace, name, status, rv))

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


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _param(name: str, where: str, description: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": {"type": "string"},
        "description": description,
    }


_LIST_PARAMS = [
    _param("labelSelector", "query", "Kubernetes label selector, e.g. app=bot,tier!=dev."),
    _param("watch", "query", "1 or true: stream newline-delimited watch events instead of a list."),
    _param("resourceVersion", "query", "With watch: stream the changes after this version."),
    _param("timeoutSeconds", "query", "With watch: end the stream after this many seconds."),
]


def _openapi(cls: type[Resource], op: str, *, body: str | None = None, many: bool = False) -> dict[str, Any]:
    params = []
    if cls.NAMESPACED and op != "all":
        params.append(_param("namespace", "path", "Namespace of the objects."))
    if op in ("item", "status"):
        params.append(_param("name", "path", f"Name of the {cls.KIND}."))
    if many:
        params += _LIST_PARAMS
    extra: dict[str, Any] = {"parameters": params}
    item_schema = _ref(cls.KIND)
    ok_schema: dict[str, Any] = (
        {"type": "object", "properties": {"items": {"type": "array", "items": item_schema}}} if many else item_schema
    )
    extra["responses"] = {
        "200": {
            "description": f"{cls.KIND}List" if many else cls.KIND,
            "content": {"application/json": {"schema": ok_schema}},
        },
        "default": {"description": "A Kubernetes Status", "content": {"application/json": {"schema": _ref("Status")}}},
    }
    if body == "object":
        extra["requestBody"] = {"required": True, "content": {"application/json": {"schema": item_schema}}}
    elif body == "patch":
        extra["requestBody"] = {
            "required": True,
            "content": {MERGE_PATCH: {"schema": {"type": "object", "description": "RFC 7386 JSON merge patch."}}},
        }
    return extra


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
                openapi_extra=_openapi(cls, "all", many=True),
            )
        else:
            base = f"{API_PREFIX}/{cls.PLURAL}"
            scope = ""
        item = f"{base}/{{name}}"
        table: list[tuple[str, str, Handler, str, str, dict[str, Any]]] = [
            (base, "GET", routes.list, "list", f"List or watch {cls.PLURAL}", _openapi(cls, "collection", many=True)),
            (base, "POST", routes.create, "create", f"Create a {kind}", _openapi(cls, "collection", body="object")),
            (item, "GET", routes.get, "read", f"Read a {kind}", _openapi(cls, "item")),
            (
                item,
                "PUT",
                routes.replace,
                "replace",
                f"Replace a {kind}'s spec and metadata",
                _openapi(cls, "item", body="object"),
            ),
            (
                item,
                "PATCH",
                routes.patch,
                "patch",
                f"Merge-patch a {kind}'s spec and metadata",
                _openapi(cls, "item", body="patch"),
            ),
            (item, "DELETE", routes.delete, "delete", f"Delete a {kind}", _openapi(cls, "item")),
            (f"{item}/status", "GET", routes.get, "read", f"Read a {kind}'s status", _openapi(cls, "status")),
            (f"{item}/events", "GET", routes.events, "list", f"List the events about a {kind}", _openapi(cls, "item")),
            (
                f"{item}/status",
                "PUT",
                routes.replace_status,
                "replace",
                f"Replace a {kind}'s status",
                _openapi(cls, "status", body="object"),
            ),
            (
                f"{item}/status",
                "PATCH",
                routes.patch_status,
                "patch",
                f"Merge-patch a {kind}'s status",
                _openapi(cls, "status", body="patch"),
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
