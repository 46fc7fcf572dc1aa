"""kopf handlers: one thin set per kind, all calling the shared ``corral.control`` reconcilers.

For each kind: ``create``/``update``/``resume`` handlers and a timer (every
``resyncSeconds``) that follows the KubeRay children; an optional ``delete`` handler lets the
reconcilers stop children and drop Corral's own finalizer. Each call re-reads the object,
builds the observed world from the Kubernetes store and the KubeRay driver, reconciles,
writes status through the status subresource and applies the actions (the operator never
writes a spec). Failures raise :class:`kopf.TemporaryError` (kopf retries with backoff); an
object that does not validate gets ``Ready=False``/``InvalidSpec`` (merged into its conditions;
a finished phase stays), a Warning event and :class:`kopf.PermanentError` (no retries).

Handlers of one object never reconcile at the same time (kopf serializes them only within one
handler kind): a per-object lock, and the timer skips an object until kopf's create handling
is done (its ``last-handled-configuration`` annotation) and while another handler holds the
lock. A KubeRay child the API server refuses (403, 422) sets ``ChildAccepted=False`` with the
server's words and a Warning event. A deleted object whose children are still going waits
with kopf's quiet retry (logged at INFO, not an error).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from kopf._core.actions.execution import HandlerChildrenRetry as _ChildrenRetry  # kopf's quiet retry
from pydantic import ValidationError

from corral.api import DocumentError, parse_document
from corral.api.v1alpha1 import API_GROUP, API_VERSION, KINDS, FineTuneJob, ModelDeployment, Resource
from corral.control import FINALIZER, ControlSettings, Result, Runner
from corral.drivers import DriverError
from corral.drivers.kuberay import ChildRefusedError, KubeRayDriver
from corral.store import Conflict, NotFound, StoreError
from corral.store.kubernetes import KubernetesStore

from ._admission import Admission, may_book
from ._settings import ANNOTATION_PREFIX, OperatorSettings, configure_kopf
from ._world import INDEX_NAMES, World, parse_body, parsed, plain, world_of

__all__ = ["OperatorContext", "invalid_status_patch", "merge_condition", "reconcile"]

logger = logging.getLogger(__name__)

SETTINGS = OperatorSettings.from_env()
_PHASED_KINDS = ("FineTuneJob", "ModelDeployment")  # kinds whose status.phase has Failed
LAST_HANDLED = f"{ANNOTATION_PREFIX}/last-handled-configuration"
"""kopf's diff-base annotation: present once the create handler of an object has finished."""
CHILD_ACCEPTED = "ChildAccepted"
"""Condition type: False (reason Forbidden, Invalid...) while the API server refuses a KubeRay child."""


@dataclass
class OperatorContext:
    """What every handler shares: the store, the driver, the control settings and the admission path."""

    store: KubernetesStore
    driver: KubeRayDriver
    control: ControlSettings
    admission: Admission = field(default_factory=Admission)
    kopf_settings: Any = None
    """kopf's settings (its executor runs the blocking part of the async handlers); None: asyncio's default."""


_TERMINAL_PHASES = ("Succeeded", "Failed", "Cancelled")
_CONFLICT_RETRIES = 3
_WORLD_COPY_TIMEOUT = 60.0
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_condition(conditions: list[Mapping[str, Any]], condition: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``conditions`` (wire form) with ``condition`` set by type: others kept, order kept.

    A status write sends the whole list (a merge patch replaces lists), so it must be built
    from the current one. ``lastTransitionTime`` stays when the status does not change.
    """
    out: list[dict[str, Any]] = []
    found = False
    for current in conditions:
        if current.get("type") != condition["type"]:
            out.append(dict(current))
            continue
        found = True
        merged = dict(condition)
        if current.get("status") == condition.get("status") and current.get("lastTransitionTime"):
            merged["lastTransitionTime"] = current["lastTransitionTime"]
        out.append(merged)
    if not found:
        out.append(dict(condition))
    return out


def _patch_status(ctx: OperatorContext, cls: type[Resource], meta: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
    """Merge-patch the status subresource, conditional on the version read (a conflict: the next pass redoes it)."""
    ns = meta.get("namespace") if cls.NAMESPACED else None
    ctx.store.patch_status(cls, ns, meta["name"], dict(patch), resource_version=meta.get("resourceVersion"))


def invalid_status_patch(kind: str, body: Mapping[str, Any], message: str) -> dict[str, Any] | None:
    """The status merge patch that marks an object InvalidSpec, or None when it already says so.

    ``Ready=False``/``InvalidSpec`` is merged into the current conditions by type (a merge patch
    replaces the whole list, so the list sent is the current one with Ready set), and a finished
    phase (Succeeded, Failed, Cancelled) is kept: a failing handler never demotes it.
    """
    meta = body.get("metadata") or {}
    generation = meta.get("generation")
    status = body.get("status") or {}
    conditions = list(status.get("conditions") or [])
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready and ready.get("reason") == "InvalidSpec" and status.get("observedGeneration") == generation:
        return None  # already said; no retries
    condition = {
        "type": "Ready",
        "status": "False",
        "reason": "InvalidSpec",
        "message": message[:32768],
        "lastTransitionTime": _now(),
        "observedGeneration": generation,
    }
    patch: dict[str, Any] = {"observedGeneration": generation, "conditions": merge_condition(conditions, condition)}
    if kind in _PHASED_KINDS and status.get("phase") not in _TERMINAL_PHASES:
        patch["phase"] = "Failed"
    return patch


def _invalid(ctx: OperatorContext, cls: type[Resource], body: Mapping[str, Any], message: str, event_on: Any) -> None:
    """Mark an object that does not validate (:func:`invalid_status_patch`), once per generation, and a Warning."""
    patch = invalid_status_patch(cls.KIND, body, message)
    if patch is None:
        return
    try:
        _patch_status(ctx, cls, body.get("metadata") or {}, patch)
    except (Conflict, NotFound):
        return  # changed or gone meanwhile: the next event says it again
    kopf.warn(event_on, reason="InvalidSpec", message=message[:1024])


def _release_invalid(ctx: OperatorContext, cls: type[Resource], body: Mapping[str, Any]) -> None:
    """Drop Corral's cleanup finalizer from a deleted object that does not validate.

    Its reconciler cannot run, and its KubeRay children carry ownerReferences, so the garbage
    collector removes them once the object is gone: nothing is left behind.
    """
    meta = body.get("metadata") or {}
    finalizers = list(meta.get("finalizers") or [])
    if FINALIZER not in finalizers:
        return
    ns = meta.get("namespace") if cls.NAMESPACED else None
    patch = {"metadata": {"finalizers": [f for f in finalizers if f != FINALIZER]}}
    try:
        ctx.store.patch(cls, ns, meta["name"], patch, resource_version=meta.get("resourceVersion"))
    except NotFound:
        return
    logger.info(
        "Released %s %s/%s (invalid, deleted): the garbage collector removes its children", cls.KIND, ns, meta["name"]
    )


def _set_condition(ctx: OperatorContext, obj: Resource, type_: str, status: str, *, reason: str, message: str) -> Any:
    """Set one condition on the stored object (others kept); returns the object read, None when gone."""
    meta = obj.metadata
    try:
        current = ctx.store.get(type(obj), meta.namespace, meta.name)
    except NotFound:
        return None
    conditions = [c.model_dump(mode="json", exclude_none=True) for c in current.status.conditions]  # type: ignore[attr-defined]
    condition = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": _now(),
        "observedGeneration": current.metadata.generation,
    }
    with contextlib.suppress(Conflict, NotFound):  # changed meanwhile: the next pass says it again
        ctx.store.patch_status(
            type(obj),
            meta.namespace,
            meta.name,
            {"conditions": merge_condition(conditions, condition)},
            resource_version=current.metadata.resource_version,
        )
    return current


def _refused(ctx: OperatorContext, obj: Resource, exc: ChildRefusedError) -> None:
    """Say on the object that the API server refused its KubeRay child: ChildAccepted=False and a Warning."""
    current = _set_condition(ctx, obj, CHILD_ACCEPTED, "False", reason=exc.reason, message=str(exc))
    if current is None:
        return
    try:
        ctx.store.record_event(current, "Warning", exc.reason, str(exc))
    except StoreError:
        logger.debug("could not record the refusal event of %s", obj.metadata.name, exc_info=True)


def _accepted(ctx: OperatorContext, obj: Resource) -> None:
    """Turn a ChildAccepted=False of an earlier refusal into True once the children are accepted."""
    said = getattr(obj, "status", None)
    if not any(c.type == CHILD_ACCEPTED and c.status == "False" for c in getattr(said, "conditions", ())):
        return  # nothing was refused (no extra read)
    _set_condition(
        ctx, obj, CHILD_ACCEPTED, "True", reason="Accepted", message="the API server accepted the KubeRay children"
    )


def _lock(body: Mapping[str, Any]) -> threading.Lock:
    meta = body.get("metadata") or {}
    key = str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


def reconcile(
    ctx: OperatorContext,
    kind: str,
    body: Mapping[str, Any],
    *,
    wait: bool = True,
    world: World | Callable[[], World] | None = None,
) -> float | None:
    """Reconcile one object with the shared reconcilers; returns the requeue delay asked for.

    Handlers of one object never run this at the same time: the create/update/resume handler
    waits for the lock, the timer (``wait=False``) skips a pass while it is held. A conflict
    on a write (someone wrote the object since it was read) re-reads and reconciles again.

    Args:
        ctx: The operator's shared context.
        kind: The object's kind.
        body: The object as kopf delivered it.
        wait: Wait for the object's lock (False: skip this pass when it is held).
        world: Every object as kopf's indexes hold them (:func:`world_of`), or a function that
            copies them now (a booking copies them under the admission lock); None: list them
            from the store (one pass's snapshot).

    Raises:
        kopf.PermanentError: The object does not validate (after marking it InvalidSpec).
        kopf.TemporaryError: The store or the driver failed; kopf retries.
    """
    cls = KINDS[kind]
    now = world() if callable(world) else world
    obj = parsed(now, kind, body) if now is not None else None
    if obj is None:
        raw = plain(body)
        try:
            obj = parse_document(raw, source=f"{kind}/{raw.get('metadata', {}).get('name')}")
        except (DocumentError, ValidationError) as exc:
            if (raw.get("metadata") or {}).get("deletionTimestamp"):
                _release_invalid(ctx, cls, raw)
                return None
            _invalid(ctx, cls, raw, str(exc), body)
            raise kopf.PermanentError(f"invalid {kind}: {exc}") from None
    lock = _lock(body)
    if not lock.acquire(blocking=wait):
        return None
    try:
        return _reconcile_locked(ctx, obj, world, now)
    finally:
        lock.release()


def _reconcile_locked(
    ctx: OperatorContext, obj: Resource, world: World | Callable[[], World] | None, copied: World | None
) -> float | None:
    admission = ctx.admission
    for attempt in range(_CONFLICT_RETRIES):
        try:
            runner = Runner(ctx.store, ctx.driver, ctx.control)
            deferred: list[tuple[Resource, Result]] = []
            # Anything that may book GPUs is decided under the one admission lock (see _admission).
            books = may_book(obj) or may_book(admission.ledger.latest(obj))
            with admission.lock if books else contextlib.nullcontext():
                now = world() if books and callable(world) else copied  # a booking copies it anew under the lock
                snap = admission.ledger.overlay(now, prune=books) if now is not None else runner.snapshot()
                result = runner.reconcile_object(obj, snap, deferred)
                stored = snap.in_namespace(obj.kind, obj.metadata.namespace).get(obj.metadata.name)
                if result is None:
                    admission.ledger.forget(obj)
                elif stored is not None:
                    admission.ledger.record(stored)
            for target, done in deferred:  # the slow side effects, after the lock
                for action in done.actions:
                    runner.apply_action(target, action)
        except Conflict as exc:
            if attempt + 1 < _CONFLICT_RETRIES:
                logger.debug("%s %s changed while reconciling; again: %s", obj.kind, obj.metadata.name, exc)
                continue
            raise kopf.TemporaryError(f"Conflict: {exc}", delay=ctx.control.follow_seconds) from exc
        except ChildRefusedError as exc:
            _refused(ctx, obj, exc)
            raise kopf.TemporaryError(f"{exc}", delay=max(ctx.control.follow_seconds, 5.0)) from exc
        except (StoreError, DriverError, OSError) as exc:
            raise kopf.TemporaryError(f"{type(exc).__name__}: {exc}", delay=ctx.control.follow_seconds) from exc
        if isinstance(obj, FineTuneJob | ModelDeployment):
            _accepted(ctx, obj)
        return result.requeue_after if result is not None else None
    return None  # pragma: no cover - the loop returns or raises


def _world_source(indexes: Mapping[str, Any]) -> Callable[[], World]:
    """A function that copies kopf's (live) indexes on the event loop when called from a worker thread."""
    loop = asyncio.get_running_loop()

    async def copy() -> World:
        return world_of(indexes)

    def source() -> World:
        return asyncio.run_coroutine_threadsafe(copy(), loop).result(timeout=_WORLD_COPY_TIMEOUT)

    return source


async def _in_thread(ctx: OperatorContext, fn: Callable[[], float | None]) -> float | None:
    """Run blocking ``fn`` in kopf's executor with this context (as kopf runs a sync handler)."""
    call = functools.partial(contextvars.copy_context().run, fn)
    executor = ctx.kopf_settings.execution.executor if ctx.kopf_settings is not None else None
    return await asyncio.get_running_loop().run_in_executor(executor, call)


def _ctx(memo: Any) -> OperatorContext:
    ctx: OperatorContext = memo.corral
    return ctx


# -- lifecycle ---------------------------------------------------------------------------


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    """Configure kopf and open the store and the driver."""
    configure_kopf(settings, SETTINGS)
    store = KubernetesStore(source="corral-operator")
    memo.corral = OperatorContext(
        store=store,
        driver=KubeRayDriver(store.api_client, SETTINGS.kuberay),
        control=SETTINGS.control(),
        kopf_settings=settings,
    )
    if not SETTINGS.standalone:
        _ensure_peering(store, SETTINGS.peering_name)
    logger.info("Corral operator started (resync every %.1fs)", SETTINGS.resync_seconds)


def _ensure_peering(store: KubernetesStore, name: str) -> None:
    """Create the ClusterKopfPeering object kopf elects a leader in (kopf only patches it).

    Raises:
        kopf.PermanentError: The ClusterKopfPeering CRD is not installed: without it kopf would
            wait for a leader forever and handle nothing, so the operator stops instead.
    """
    from kubernetes.client.exceptions import ApiException

    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    try:
        store.custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body)
    except ApiException as exc:
        if exc.status == 404:
            message = (
                "the ClusterKopfPeering CRD (clusterkopfpeerings.kopf.dev) is not installed, so no leader can be "
                "elected and nothing would be handled: install the chart's CRD (operator.peering.enabled) or run "
                "standalone (CORRAL_OPERATOR_STANDALONE=true, one replica only)"
            )
            logger.error("Cannot start: %s", message)
            raise kopf.PermanentError(message) from None
        if exc.status != 409:
            logger.warning("Cannot create ClusterKopfPeering %s (%s); leader election needs it", name, exc.reason)


@kopf.on.cleanup()
def cleanup(memo: Any, **_: Any) -> None:
    """Close the store's connections."""
    ctx = getattr(memo, "corral", None)
    if ctx is not None:
        ctx.store.close()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account, else the kubeconfig."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.probe(id="apiserver")
def apiserver(memo: Any, **_: Any) -> str:
    """Liveness: the API server answers the store."""
    _ctx(memo).store.ping()
    return "ok"


# -- per kind ------------------------------------------------------------------------------


class _StillRemoving(_ChildrenRetry):
    """A deleted object waits for its children: retried after a delay, an ordinary wait (not an error)."""


def _register(kind: str) -> None:
    plural = KINDS[kind].PLURAL

    def index(body: kopf.Body, **_: Any) -> dict[str | None, Resource] | None:
        obj = parse_body(body)
        return None if obj is None else {obj.metadata.namespace: obj}

    async def handle(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
        world = _world_source(kwargs)  # copied on the event loop (the indexes do not change while copied)
        await _in_thread(_ctx(memo), functools.partial(reconcile, _ctx(memo), kind, body, world=world))

    async def on_delete(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
        world = _world_source(kwargs)
        requeue = await _in_thread(_ctx(memo), functools.partial(reconcile, _ctx(memo), kind, body, world=world))
        if requeue is not None:
            meta = body.get("metadata") or {}
            logger.info(
                "%s %s/%s: waiting %.1fs for its children to be removed",
                kind,
                meta.get("namespace"),
                meta.get("name"),
                requeue,
            )
            raise _StillRemoving(f"{kind} children are still being removed", delay=requeue)

    async def follow(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        if LAST_HANDLED not in annotations:
            return  # the create handler has not finished: it, not the timer, does the first reconcile
        world = _world_source(kwargs)
        try:
            await _in_thread(_ctx(memo), functools.partial(reconcile, _ctx(memo), kind, body, wait=False, world=world))
        except kopf.PermanentError:
            return  # marked InvalidSpec once; the timer does not retry it

    index.__name__ = index.__qualname__ = INDEX_NAMES[kind]
    handle.__name__ = handle.__qualname__ = f"reconcile_{plural}"
    on_delete.__name__ = on_delete.__qualname__ = f"delete_{plural}"
    follow.__name__ = follow.__qualname__ = f"follow_{plural}"
    kopf.index(API_GROUP, API_VERSION, plural, id=INDEX_NAMES[kind])(index)
    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(API_GROUP, API_VERSION, plural, id=f"reconcile-{plural}")(handle)
    kopf.on.delete(API_GROUP, API_VERSION, plural, id=f"delete-{plural}", optional=True)(on_delete)
    kopf.timer(API_GROUP, API_VERSION, plural, id=f"follow-{plural}", interval=SETTINGS.resync_seconds, idle=None)(
        follow
    )


for _kind in ("Dataset", "Model", "FineTuneJob", "ModelDeployment", "GPUPool"):
    _register(_kind)
