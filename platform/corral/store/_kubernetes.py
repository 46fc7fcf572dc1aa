"""The cluster store: Corral's resources as custom resources in the Kubernetes API server.

:class:`KubernetesStore` implements the :class:`~corral.store.Store` protocol with the
official ``kubernetes`` client: objects are ``corral.dev/v1alpha1`` custom resources, status
goes through the ``/status`` subresource, events are core ``v1`` Events, and watches are API
watches. The API server does the versioning (``resourceVersion``, ``generation``), the
finalizer rules and the schema validation; objects are also validated here first, so a bad
object is refused with the same :class:`~corral.store.Invalid` as in the embedded store.

API errors map onto store errors: 403 -> Forbidden (the store's own account lacks a rule;
the message is the API server's, naming the account, verb and resource), 404 -> NotFound,
409 -> AlreadyExists (create) or Conflict, 410 -> Expired, 422/400 -> Invalid.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

from pydantic import ValidationError

from corral.api.v1alpha1 import API_GROUP, API_VERSION, GROUP_VERSION, Resource

from ._errors import AlreadyExists, Conflict, Expired, Forbidden, Invalid, NotFound, StoreError
from ._objects import creatable_body, timestamp, validate
from ._protocol import EventRecord, EventType, ResourceList, Store, Watch, WatchEvent
from ._selectors import LabelSelector

__all__ = ["KubernetesStore"]

log = logging.getLogger(__name__)

_MERGE_PATCH = "application/merge-patch+json"
_WATCH_CHUNK_SECONDS = 5
_EVENTS_NAMESPACE = "default"  # where events about cluster-scoped objects (GPUPools) go


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return datetime.now(UTC)


class KubernetesStore(Store):
    """Resources as custom resources in the API server.

    Args:
        api_client: A ``kubernetes.client.ApiClient`` (in-cluster or from a kubeconfig);
            None loads the in-cluster config, else the default kubeconfig.
        source: The component name on events it records.
    """

    def __init__(self, api_client: Any | None = None, *, source: str = "corral") -> None:
        import kubernetes.client

        if api_client is None:
            api_client = _default_client()
        self.api_client = api_client
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.source = source

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _raise(exc: Any, cls: type[Resource], name: str | None, *, creating: bool = False) -> NoReturn:
        status = getattr(exc, "status", None)
        text = f"{cls.KIND} {name or ''}: {getattr(exc, 'reason', '') or ''} {getattr(exc, 'body', '') or ''}".strip()
        if status == 403:
            raise Forbidden(
                f"the API server refused {cls.KIND} {name or ''} to this process's account: {_status_message(exc)}",
                kind=cls.KIND,
                name=name,
            ) from exc
        if status == 404:
            raise NotFound(f'{cls.PLURAL}.{API_GROUP} "{name}" not found', kind=cls.KIND, name=name) from exc
        if status == 409:
            if creating:
                raise AlreadyExists(
                    f'{cls.PLURAL}.{API_GROUP} "{name}" already exists', kind=cls.KIND, name=name
                ) from exc
            raise Conflict(text, kind=cls.KIND, name=name) from exc
        if status == 410:
            raise Expired(text, kind=cls.KIND) from exc
        if status in (400, 422):
            raise Invalid(text, kind=cls.KIND, name=name) from exc
        raise StoreError(text, kind=cls.KIND, name=name) from exc

    def _call(
        self, cls: type[Resource], name: str | None, fn: Any, *args: Any, creating: bool = False, **kwargs: Any
    ) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            self._raise(exc, cls, name, creating=creating)

    @staticmethod
    def _scope(rc: type[Resource], namespace: str | None) -> str | None:
        return namespace if rc.NAMESPACED else None

    def _custom(
        self,
        verb: str,
        cls: type[Resource],
        ns: str | None,
        *args: Any,
        name: str | None = None,
        status: bool = False,
        creating: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Call ``CustomObjectsApi.<verb>_{namespaced,cluster}_custom_object[_status]`` on ``cls``'s plural.

        ``ns`` None picks the cluster-wide call. Positional ``args`` follow the plural (name,
        body); API errors become store errors about ``name``.
        """
        fn = _custom_method(self.custom, verb, ns, status=status)
        return self._call(cls, name, fn, *_collection(cls, ns), *args, creating=creating, **kwargs)

    def _fetch(self, cls: type[Resource], namespace: str | None, name: str) -> dict[str, Any]:
        ns = self._scope(cls, namespace)
        if ns is None and cls.NAMESPACED:
            raise Invalid(f"{cls.KIND} {name}: a namespace is required", kind=cls.KIND, name=name)
        return dict(self._custom("get", cls, ns, name, name=name))

    def _send_patch(
        self, cls: type[Resource], namespace: str | None, name: str, body: Mapping[str, Any], *, status: bool
    ) -> Resource:
        ns = self._scope(cls, namespace)
        result = self._custom("patch", cls, ns, name, dict(body), name=name, status=status, _content_type=_MERGE_PATCH)
        return cls.model_validate(result)

    def _send_replace(self, cls: type[Resource], body: dict[str, Any], *, status: bool) -> Resource:
        meta = body["metadata"]
        name, ns = meta["name"], self._scope(cls, meta.get("namespace"))
        return cls.model_validate(self._custom("replace", cls, ns, name, body, name=name, status=status))

    # -- reads --------------------------------------------------------------------------

    def _get(self, cls: type[Resource], namespace: str | None, name: str) -> Resource:
        return cls.model_validate(self._fetch(cls, namespace, name))

    def _list_raw(self, cls: type[Resource], namespace: str | None, selector: LabelSelector) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"label_selector": str(selector)} if selector else {}
        return dict(self._custom("list", cls, self._scope(cls, namespace), **kwargs))

    def _list(self, cls: type[Resource], namespace: str | None, selector: LabelSelector) -> ResourceList[Any]:
        body = self._list_raw(cls, namespace, selector)
        items = []
        for item in body.get("items") or []:
            try:
                items.append(cls.model_validate(item))
            except ValidationError as exc:  # its own reconcile reports it (InvalidSpec); the rest goes on
                log.warning("Skipping invalid %s %s: %s", cls.KIND, (item.get("metadata") or {}).get("name"), exc)
        items = [i for i in items if selector.matches(i.metadata.labels)]
        items.sort(key=lambda o: (o.metadata.namespace or "", o.metadata.name))
        rv = str((body.get("metadata") or {}).get("resourceVersion") or "")
        return ResourceList(cls.KIND, items, rv)

    def ping(self) -> None:
        """Ask the API server for its version (readiness)."""
        import kubernetes.client

        kubernetes.client.VersionApi(self.api_client).get_code()

    # -- writes -------------------------------------------------------------------------

    def _create(self, cls: type[Resource], obj: Resource) -> Resource:
        body = creatable_body(cls, obj)
        body.pop("status", None)  # a new custom resource is created without one
        meta = body["metadata"]
        name, ns = meta["name"], self._scope(cls, meta.get("namespace"))
        result = self._custom("create", cls, ns, body, name=name, creating=True)
        log.info("Created %s %s", cls.KIND, f"{ns}/{name}" if ns else name)
        return cls.model_validate(result)

    def _update(self, cls: type[Resource], obj: Resource) -> Resource:
        body = obj.to_dict()
        meta = body["metadata"]
        current = self._fetch(cls, meta.get("namespace"), meta["name"])
        if meta.get("resourceVersion") is None:  # unconditional: write over the current version
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        validate(cls, {**body, "status": {}})
        body.pop("status", None)
        return self._send_replace(cls, body, status=False)

    def _patch(
        self,
        cls: type[Resource],
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        resource_version: str | None,
    ) -> Resource:
        body = {k: v for k, v in patch.items() if k != "status"}
        if resource_version is not None:
            body["metadata"] = {**(body.get("metadata") or {}), "resourceVersion": resource_version}
        return self._send_patch(cls, namespace, name, body, status=False)

    def _patch_status(
        self,
        cls: type[Resource],
        namespace: str | None,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None,
    ) -> Resource:
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return self._send_patch(cls, namespace, name, body, status=True)

    def _replace_status(self, cls: type[Resource], obj: Resource) -> Resource:
        meta = obj.metadata
        current = self._fetch(cls, meta.namespace, meta.name)
        current["status"] = obj.to_dict().get("status", {})
        if meta.resource_version is not None:
            current["metadata"]["resourceVersion"] = meta.resource_version
        return self._send_replace(cls, current, status=True)

    def _delete(self, cls: type[Resource], namespace: str | None, name: str, resource_version: str | None) -> Resource:
        import kubernetes.client

        current = self._fetch(cls, namespace, name)
        if resource_version is not None and resource_version != current["metadata"].get("resourceVersion"):
            raise Conflict(f"{cls.KIND} {name}: the object has been modified", kind=cls.KIND, name=name)
        options = kubernetes.client.V1DeleteOptions(
            preconditions=kubernetes.client.V1Preconditions(resource_version=resource_version)
            if resource_version is not None
            else None
        )
        result = self._custom("delete", cls, self._scope(cls, namespace), name, name=name, body=options)
        if isinstance(result, Mapping) and result.get("kind") == cls.KIND:
            return cls.model_validate(result)
        return cls.model_validate(current)

    # -- watch and events ---------------------------------------------------------------

    def _watch(
        self,
        cls: type[Resource],
        namespace: str | None,
        since: str | None,
        selector: LabelSelector,
        timeout: float | None,
    ) -> Watch:
        return _KubeWatch(
            self, cls, namespace=self._scope(cls, namespace), since=since, selector=selector, timeout=timeout
        )

    @staticmethod
    def _event_name(rc: type[Resource], obj: Resource, type_: str, reason: str, *, message: str, source: str) -> str:
        key = "\0".join([rc.KIND, obj.metadata.name, obj.metadata.uid or "", type_, reason, message, source])
        return f"{obj.metadata.name[:200]}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def _record_event(
        self, cls: type[Resource], obj: Resource, type: EventType, reason: str, message: str, *, source: str
    ) -> EventRecord:
        from kubernetes.client.exceptions import ApiException

        ns = self._scope(cls, obj.metadata.namespace) or _EVENTS_NAMESPACE
        name = self._event_name(cls, obj, type, reason, message=message, source=source)
        now = timestamp()
        involved: dict[str, Any] = {"apiVersion": GROUP_VERSION, "kind": cls.KIND, "name": obj.metadata.name}
        if cls.NAMESPACED and obj.metadata.namespace:
            involved["namespace"] = obj.metadata.namespace
        if obj.metadata.uid:
            involved["uid"] = obj.metadata.uid
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": involved,
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": source},
            "reportingComponent": source,
        }
        try:
            result = self._raw_event_call("POST", f"/api/v1/namespaces/{ns}/events", body)
        except ApiException as exc:
            if exc.status != 409:
                raise StoreError(f"cannot record event {reason}: {exc.reason}") from exc
            current = self._raw_event_call("GET", f"/api/v1/namespaces/{ns}/events/{name}")
            patch = {"count": int(current.get("count") or 1) + 1, "lastTimestamp": now}
            result = self._raw_event_call("PATCH", f"/api/v1/namespaces/{ns}/events/{name}", patch)
        log.log(
            logging.WARNING if type == "Warning" else logging.INFO,
            "%s %s %s: %s",
            reason,
            cls.KIND,
            obj.metadata.name,
            message,
        )
        return _event_record(result)

    def _raw_event_call(
        self, method: str, path: str, body: Any = None, query: builtins.list[tuple[str, str]] | None = None
    ) -> dict[str, Any]:
        """Events as plain JSON (the typed V1Event model insists on fields events need not have)."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = _MERGE_PATCH if method == "PATCH" else "application/json"
        result = self.api_client.call_api(
            *self.api_client.param_serialize(
                method=method,
                resource_path=path,
                query_params=query,
                body=body,
                header_params=headers,
                auth_settings=["BearerToken"],
            )
        )
        result.read()
        if result.status >= 400:
            from kubernetes.client.exceptions import ApiException

            raise ApiException(http_resp=result, body=result.data.decode() if result.data else None)
        return dict(json.loads(result.data or b"{}"))

    def _list_events(self, cls: type[Resource], namespace: str | None, name: str) -> builtins.list[EventRecord]:
        ns = self._scope(cls, namespace) or _EVENTS_NAMESPACE
        selector = f"involvedObject.kind={cls.KIND},involvedObject.name={name}"
        body = self._raw_event_call("GET", f"/api/v1/namespaces/{ns}/events", query=[("fieldSelector", selector)])
        records = [
            _event_record(item)
            for item in body.get("items") or []
            if (item.get("involvedObject") or {}).get("kind") == cls.KIND
            and (item.get("involvedObject") or {}).get("name") == name
        ]
        return sorted(records, key=lambda r: r.last_timestamp)

    def close(self) -> None:
        """Close the API client's connection pool."""
        self.api_client.close()


def _status_message(exc: Any) -> str:
    """The ``message`` of the API server's ``Status`` body (its reason when the body is not one)."""
    body = getattr(exc, "body", None)
    try:
        parsed = json.loads(body) if body else None
    except (TypeError, ValueError):
        parsed = None
    if isinstance(parsed, Mapping) and parsed.get("message"):
        return str(parsed["message"])
    return str(getattr(exc, "reason", "") or "forbidden")


def _event_record(item: Mapping[str, Any]) -> EventRecord:
    involved = item.get("involvedObject") or {}
    return EventRecord(
        kind=str(involved.get("kind", "")),
        namespace=involved.get("namespace"),
        name=str(involved.get("name", "")),
        uid=involved.get("uid"),
        type=item.get("type") or "Normal",
        reason=str(item.get("reason", "")),
        message=str(item.get("message", "")),
        count=int(item.get("count") or 1),
        first_timestamp=_parse_time(item.get("firstTimestamp")),
        last_timestamp=_parse_time(item.get("lastTimestamp")),
        source=str((item.get("source") or {}).get("component") or "corral"),
        involved_api_version=str(involved.get("apiVersion") or GROUP_VERSION),
    )


def _custom_method(custom: Any, verb: str, ns: str | None, *, status: bool = False) -> Any:
    """``custom.<verb>_namespaced_custom_object`` (``ns`` set) or ``<verb>_cluster_custom_object`` (+ ``_status``)."""
    scope = "cluster" if ns is None else "namespaced"
    return getattr(custom, f"{verb}_{scope}_custom_object{'_status' if status else ''}")


def _collection(cls: type[Resource], ns: str | None) -> tuple[str, ...]:
    """The leading arguments of every ``CustomObjectsApi`` call on ``cls``: group, version, [namespace,] plural."""
    return (API_GROUP, API_VERSION, cls.PLURAL) if ns is None else (API_GROUP, API_VERSION, ns, cls.PLURAL)


def _default_client() -> Any:
    import kubernetes.client
    from kubernetes.config import config_exception, incluster_config, kube_config

    try:
        incluster_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config_exception.ConfigException:
        # KUBECONFIG is read now, not when the kubernetes package was imported.
        kube_config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    return kubernetes.client.ApiClient()


class _KubeWatch(Watch):
    """An API watch read by a background thread into a queue; resumes across server-side timeouts."""

    def __init__(
        self,
        store: KubernetesStore,
        cls: type[Resource],
        *,
        namespace: str | None,
        since: str | None,
        selector: LabelSelector,
        timeout: float | None,
    ) -> None:
        self._store, self._cls, self._namespace, self._selector = store, cls, namespace, selector
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._stopped = threading.Event()
        self._queue: queue.Queue[WatchEvent | StoreError] = queue.Queue()
        if since in (None, "", "0"):
            listed = store._list(cls, namespace, selector)
            for item in listed.items:
                self._queue.put(WatchEvent("ADDED", item))
            since = listed.resource_version
        self._rv = str(since)
        self._thread = threading.Thread(target=self._run, name=f"corral-kube-watch-{cls.KIND}", daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        """True once stopped or past the timeout."""
        return self._stopped.is_set() or (self._deadline is not None and time.monotonic() >= self._deadline)

    def stop(self) -> None:
        """End the watch (the reader thread ends within one server-side chunk)."""
        self._stopped.set()

    def _stream_kwargs(self) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        kwargs: dict[str, Any] = {"resource_version": self._rv, "timeout_seconds": _WATCH_CHUNK_SECONDS}
        if self._selector:
            kwargs["label_selector"] = str(self._selector)
        fn = _custom_method(self._store.custom, "list", self._namespace)
        return fn, _collection(self._cls, self._namespace), kwargs

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException
        from kubernetes.watch import watch as kube_watch

        while not self.done:
            fn, args, kwargs = self._stream_kwargs()
            watch = kube_watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for raw in watch.stream(fn, *args, **kwargs):  # type: ignore[no-untyped-call]
                    if raw.get("type") == "ERROR":
                        obj = raw.get("raw_object") or raw.get("object") or {}
                        code = obj.get("code") if isinstance(obj, Mapping) else None
                        if code == 410:
                            self._queue.put(Expired(f"too old resource version: {self._rv}", kind=self._cls.KIND))
                            return
                        continue
                    obj = raw.get("raw_object") or raw.get("object")
                    if not isinstance(obj, Mapping):
                        continue
                    self._rv = str((obj.get("metadata") or {}).get("resourceVersion") or self._rv)
                    if raw.get("type") == "BOOKMARK":
                        continue
                    item = self._cls.model_validate(obj)
                    if self._selector.matches(item.metadata.labels):
                        self._queue.put(WatchEvent(raw["type"], item))
                    if self.done:
                        watch.stop()
                        break
            except ApiException as exc:
                if exc.status == 410:
                    self._queue.put(Expired(f"too old resource version: {self._rv}", kind=self._cls.KIND))
                    return
                if exc.status in (401, 403):  # retrying cannot help: say so to the reader, once
                    try:
                        self._store._raise(exc, self._cls, None)
                    except StoreError as refused:
                        self._queue.put(refused)
                    return
                log.debug("watch of %s failed; retrying", self._cls.KIND, exc_info=True)
                self._stopped.wait(1.0)
            except Exception:  # network errors: resume from the last version seen
                log.debug("watch of %s broke; resuming", self._cls.KIND, exc_info=True)
                self._stopped.wait(1.0)

    def poll(self, timeout: float) -> WatchEvent | None:
        """Return the next event, or ``None`` after ``timeout`` seconds or once done.

        Raises:
            Expired: The API server no longer has the history this watch resumes from.
        """
        end = time.monotonic() + timeout
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, min(0.2, end - time.monotonic())))
            except queue.Empty:
                if self.done or time.monotonic() >= end:
                    return None
                continue
            if isinstance(item, StoreError):
                self._stopped.set()
                raise item
            return item
