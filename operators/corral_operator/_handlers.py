"""kopf handlers: one thin set per kind, all calling the shared ``corral.control`` reconcilers.

For each kind: ``create``/``update``/``resume`` handlers and a timer (every
``resyncSeconds``) that follows the KubeRay children; an optional ``delete`` handler lets the
reconcilers stop children and drop Corral's own finalizer. Each call re-reads the object,
builds the observed world from the Kubernetes store and the KubeRay driver, reconciles,
writes status through the status subresource and applies the actions (the operator never
writes a spec). Failures raise :class:`kopf.TemporaryError` (kopf retries with backoff); an
object that does not validate gets ``Ready=False``/``InvalidSpec``, a Warning event and
:class:`kopf.PermanentError` (no retries).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from corral.api import DocumentError, parse_document
from corral.api.v1alpha1 import API_GROUP, API_VERSION, KINDS, FineTuneJob, GPUPool, ModelDeployment, Resource
from corral.control import ControlSettings, Result, Runner
from corral.drivers import DriverError
from corral.store import StoreError
from corral.store.kubernetes import KubernetesStore

from ._driver import KubeRayDriver
from ._settings import OperatorSettings, configure_kopf
from ._status import refine_status

__all__ = ["OperatorContext", "reconcile"]

logger = logging.getLogger(__name__)

SETTINGS = OperatorSettings.from_env()
_PHASED_KINDS = ("FineTuneJob", "ModelDeployment")  # kinds whose status.phase has Failed


@dataclass
class OperatorContext:
    """What every handler shares: the store, the driver and the control settings."""

    store: KubernetesStore
    driver: KubeRayDriver
    control: ControlSettings


class _OperatorRunner(Runner):
    """The shared runner, with KubeRay's reasons put back on the status before it is stored."""

    def refine(self, obj: Resource, result: Result) -> Result:
        driver = self.driver
        if isinstance(driver, KubeRayDriver):
            result.status = refine_status(obj, result.status, driver.observed_rayjob, driver.observed_rayservice)
        return result


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _invalid(ctx: OperatorContext, cls: type[Resource], body: Mapping[str, Any], message: str, event_on: Any) -> None:
    """Mark an object that does not validate: Ready=False/InvalidSpec, once per generation, and a Warning."""
    meta = body.get("metadata") or {}
    generation = meta.get("generation")
    status = body.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready and ready.get("reason") == "InvalidSpec" and status.get("observedGeneration") == generation:
        return  # already said; no retries
    condition = {
        "type": "Ready",
        "status": "False",
        "reason": "InvalidSpec",
        "message": message[:32768],
        "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "observedGeneration": generation,
    }
    patch: dict[str, Any] = {"observedGeneration": generation, "conditions": [condition]}
    if cls.KIND in _PHASED_KINDS:
        patch["phase"] = "Failed"
    ns, name = meta.get("namespace"), meta["name"]
    if ns and cls.NAMESPACED:
        ctx.store.custom.patch_namespaced_custom_object_status(
            API_GROUP,
            API_VERSION,
            ns,
            cls.PLURAL,
            name,
            {"status": patch},
            _content_type="application/merge-patch+json",
        )
    else:
        ctx.store.custom.patch_cluster_custom_object_status(
            API_GROUP, API_VERSION, cls.PLURAL, name, {"status": patch}, _content_type="application/merge-patch+json"
        )
    kopf.warn(event_on, reason="InvalidSpec", message=message[:1024])


def reconcile(ctx: OperatorContext, kind: str, body: Mapping[str, Any]) -> float | None:
    """Reconcile one object with the shared reconcilers; returns the requeue delay asked for.

    Raises:
        kopf.PermanentError: The object does not validate (after marking it InvalidSpec).
        kopf.TemporaryError: The store or the driver failed; kopf retries.
    """
    cls = KINDS[kind]
    raw = _plain(body)
    try:
        obj = parse_document(raw, source=f"{kind}/{raw.get('metadata', {}).get('name')}")
    except (DocumentError, ValidationError) as exc:
        _invalid(ctx, cls, raw, str(exc), body)
        raise kopf.PermanentError(f"invalid {kind}: {exc}") from None
    try:
        runner = _OperatorRunner(ctx.store, ctx.driver, ctx.control)
        snap = runner.snapshot()
        if isinstance(obj, FineTuneJob | ModelDeployment):
            pools: dict[str, GPUPool] = {p.metadata.name: p for p in snap.all("GPUPool")}
            runner.driver = ctx.driver.bind(obj, pools)
        result = runner.reconcile_object(obj, snap)
    except (StoreError, DriverError, OSError) as exc:
        raise kopf.TemporaryError(f"{type(exc).__name__}: {exc}", delay=ctx.control.follow_seconds) from exc
    return result.requeue_after if result is not None else None


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
        store=store, driver=KubeRayDriver(store.api_client, SETTINGS.kuberay, store), control=SETTINGS.control()
    )
    if not SETTINGS.standalone:
        _ensure_peering(store, SETTINGS.peering_name)
    logger.info("Corral operator started (resync every %.1fs)", SETTINGS.resync_seconds)


def _ensure_peering(store: KubernetesStore, name: str) -> None:
    """Create the ClusterKopfPeering object kopf elects a leader in (kopf only patches it)."""
    from kubernetes.client.exceptions import ApiException

    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    try:
        store.custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body)
    except ApiException as exc:
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


def _register(kind: str) -> None:
    plural = KINDS[kind].PLURAL

    def handle(body: kopf.Body, memo: Any, **_: Any) -> None:
        reconcile(_ctx(memo), kind, body)

    def on_delete(body: kopf.Body, memo: Any, **_: Any) -> None:
        requeue = reconcile(_ctx(memo), kind, body)
        if requeue is not None:
            raise kopf.TemporaryError(f"{kind} children are still being removed", delay=requeue)

    def follow(body: kopf.Body, memo: Any, **_: Any) -> None:
        try:
            reconcile(_ctx(memo), kind, body)
        except kopf.PermanentError:
            return  # marked InvalidSpec once; the timer does not retry it

    handle.__name__ = handle.__qualname__ = f"reconcile_{plural}"
    on_delete.__name__ = on_delete.__qualname__ = f"delete_{plural}"
    follow.__name__ = follow.__qualname__ = f"follow_{plural}"
    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(API_GROUP, API_VERSION, plural, id=f"reconcile-{plural}")(handle)
    kopf.on.delete(API_GROUP, API_VERSION, plural, id=f"delete-{plural}", optional=True)(on_delete)
    kopf.timer(API_GROUP, API_VERSION, plural, id=f"follow-{plural}", interval=SETTINGS.resync_seconds, idle=None)(
        follow
    )


for _kind in ("Dataset", "Model", "FineTuneJob", "ModelDeployment", "GPUPool"):
    _register(_kind)
