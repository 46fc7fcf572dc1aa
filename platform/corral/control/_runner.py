"""The embedded reconcile loop: store + driver -> observed worlds -> reconcilers -> status and actions.

Level-triggered: every pass lists every object, asks the driver what runs, reconciles each
object and applies what changed. A store watch wakes the loop early; a periodic resync (and
each result's ``requeue_after``) covers everything else. Nothing is kept between passes that
the store or the driver does not hold, so a process killed at any line resumes on restart:
the status written before side effects names the deterministic submission ids and
application names, and re-applying an action that already happened is success.

Within a pass the snapshot keeps the GPU ledger: each FineTuneJob or ModelDeployment status
the runner writes replaces the object in the snapshot, so the next object is placed against
the GPUs admitted or released a moment ago (nothing is booked twice) and sees the current
queue of waiting objects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from corral.api.v1alpha1 import Dataset, FineTuneJob, GPUPool, Model, ModelDeployment, Resource
from corral.artifacts import URIRefused
from corral.drivers import Driver, Handle
from corral.observability import RunnerMetrics
from corral.store import AlreadyExists, NotFound, Store

from . import _observe
from ._actions import (
    Action,
    CreateObject,
    DeleteServe,
    DeployServe,
    MaterializeModel,
    PatchObject,
    RecordEvent,
    Result,
    StopJob,
    SubmitJob,
    WriteFile,
)
from ._dataset import needs_check, reconcile_dataset
from ._deployment import app_name, reconcile_deployment
from ._finetunejob import reconcile_finetunejob
from ._gpupool import reconcile_gpupool
from ._jobspec import job_files, owns_submission
from ._model import artifact_uri, needs_probe, reconcile_model
from ._observed import (
    ArtifactProbe,
    ControlSettings,
    DatasetCheck,
    DatasetWorld,
    DeploymentWorld,
    FineTuneJobWorld,
    GPUPoolWorld,
    ModelWorld,
)
from ._snapshot import Snapshot

__all__ = ["ORDER", "Runner", "Snapshot"]

logger = logging.getLogger(__name__)

ORDER: tuple[type[Resource], ...] = (Dataset, Model, FineTuneJob, ModelDeployment, GPUPool)
"""Kinds in the order a pass reconciles them (what others depend on first)."""

_MAX_BACKOFF = 60.0


def _key(obj: Resource) -> str:
    return f"{obj.kind} {obj.metadata.namespace or ''}/{obj.metadata.name}".replace(" /", " ")


def _by_name(items: Iterable[Any]) -> dict[str, Any]:
    return {item.metadata.name: item for item in items}


class Runner:
    """Runs the reconcilers against a store and a driver, in a thread or one pass at a time.

    Args:
        store: Where resources live.
        driver: Where work runs.
        settings: Artifact root, job interpreter and runtime env.
        resync_seconds: Longest wait between passes.
        clock: Returns "now" (tests pin it).
        registry: Where the ``corral_control_*`` loop metrics go (default Corral's registry).
    """

    def __init__(
        self,
        store: Store,
        driver: Driver,
        settings: ControlSettings,
        *,
        resync_seconds: float = 5.0,
        clock: Callable[[], datetime] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.store = store
        self.driver = driver
        self.settings = settings
        self.resync_seconds = resync_seconds
        self.clock = clock or (lambda: datetime.now(UTC))
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watches: list[Any] = []
        self._failures: dict[str, tuple[int, float]] = {}
        self.passes = 0
        self.statuses_checked = threading.Event()
        """Set once the loop's first pass has stored every object's status (see :meth:`run_once`)."""
        self.metrics = RunnerMetrics(registry)

    # -- one pass ---------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Read every object of every kind once."""
        snap = Snapshot()
        for cls in ORDER:
            grouped: dict[str | None, dict[str, Any]] = defaultdict(dict)
            for obj in self.store.list(cls).items:
                grouped[obj.metadata.namespace][obj.metadata.name] = obj
            snap.objects[cls.KIND] = dict(grouped)
        return snap

    def run_once(self, *, on_statuses: Callable[[], None] | None = None) -> float | None:
        """Reconcile every object once.

        Args:
            on_statuses: Called once every object's new status is stored; with it, the pass
                stores all statuses first and applies the actions after the call (the first
                pass of a restarted plane: what it reports is re-checked before the slow
                actions, such as deploying to a fresh Serve, run).

        Returns:
            The shortest ``requeue_after`` asked for, or None.
        """
        self.passes += 1
        snap = self.snapshot()
        requeue: list[float] = []
        deferred: list[tuple[Resource, Result]] | None = [] if on_statuses is not None else None
        self.metrics.pass_started(sum(len(snap.all(cls.KIND)) for cls in ORDER))
        for cls in ORDER:
            for obj in snap.all(cls.KIND):
                self.metrics.dequeued()
                key = _key(obj)
                _, not_before = self._failures.get(key, (0, 0.0))
                if time.monotonic() < not_before:
                    requeue.append(not_before - time.monotonic())
                    continue
                try:
                    with self.metrics.reconcile(cls.KIND):
                        result = self.reconcile_object(obj, snap, deferred)
                except Exception as exc:  # keep the loop alive; retry with backoff (never sleep in a reconciler)
                    requeue.append(self._failed(obj, exc))
                    continue
                self._failures.pop(key, None)
                if result is not None and result.requeue_after is not None:
                    requeue.append(result.requeue_after)
        if on_statuses is not None:
            on_statuses()
        for obj, result in deferred or []:
            try:
                for action in result.actions:
                    self.apply_action(obj, action)
            except Exception as exc:
                requeue.append(self._failed(obj, exc))
        self.metrics.pass_ended(backoff=len(self._failures))
        return min(requeue) if requeue else None

    def _failed(self, obj: Resource, exc: Exception) -> float:
        """Record a failed reconcile (event, backoff); return the delay before the next try."""
        key = _key(obj)
        failures, _ = self._failures.get(key, (0, 0.0))
        delay = min(2.0**failures, _MAX_BACKOFF)
        self._failures[key] = (failures + 1, time.monotonic() + delay)
        logger.warning("Reconcile of %s failed (retry in %.0fs): %s", key, delay, exc, exc_info=True)
        self._event(obj, "Warning", "ReconcileError", f"{type(exc).__name__}: {exc}")
        return delay

    def reconcile_object(
        self, obj: Resource, snap: Snapshot | None = None, deferred: list[tuple[Resource, Result]] | None = None
    ) -> Result | None:
        """Observe, reconcile and apply for one object (re-read from the store first).

        The snapshot then holds the object with its new status, for the objects after it.
        With ``deferred``, only the status is stored; the object and its result are appended
        there for the caller to apply the actions.
        """
        snap = snap or self.snapshot()
        try:
            obj = self.store.get(obj.kind, obj.metadata.namespace, obj.metadata.name)
        except NotFound:
            return None
        result = self._reconcile(obj, snap)
        if deferred is None:
            stored = self.apply(obj, result)
        else:
            stored = self.apply(obj, Result(status=result.status, actions=[], requeue_after=result.requeue_after))
            deferred.append((obj, result))
        snap.record(stored if stored is not None else obj.model_copy(update={"status": result.status}))
        return result

    def _refused(self, uri: str, namespace: str | None) -> str | None:
        """Why the settings' URI rule refuses ``uri`` for ``namespace`` (None: allowed, or no rule)."""
        policy = self.settings.uri_policy
        if policy is None:
            return None
        try:
            policy.check(uri, namespace or "default")
        except URIRefused as exc:
            return str(exc)
        return None

    def _reconcile(self, obj: Resource, snap: Snapshot) -> Result:
        now = self.clock()
        ns = obj.metadata.namespace
        if isinstance(obj, Dataset):
            refused = self._refused(obj.spec.uri, ns)
            file_stat = None if refused else _observe.data_file_stat(obj.spec.uri)  # no stat of a refused path
            check = None
            if needs_check(obj, file_stat):
                check = (
                    DatasetCheck(ok=False, error=refused)
                    if refused
                    else _observe.check_dataset_data(obj, self.settings.artifacts_for(ns))
                )
            return reconcile_dataset(obj, DatasetWorld(now=now, check=check, file_stat=file_stat))
        if isinstance(obj, Model):
            probe = None
            if needs_probe(obj):
                uri, _, _, _ = artifact_uri(obj, self.settings)
                refused = self._refused(obj.spec.uri, ns) if obj.spec.uri else None
                if refused and uri is not None:
                    probe = ArtifactProbe(uri=uri, exists=False, error=refused)
                else:
                    credentials = self.settings.artifacts_for(ns) if obj.spec.uri else None
                    probe = _observe.probe_artifact(uri, credentials) if uri is not None else None
            world = ModelWorld(
                now=now,
                settings=self.settings,
                models=snap.in_namespace("Model", ns),
                datasets=snap.in_namespace("Dataset", ns),
                probe=probe,
            )
            return reconcile_model(obj, world)
        if isinstance(obj, FineTuneJob):
            sid = obj.status.submission_id
            if not owns_submission(obj, sid):  # a Ray job of another object is never read or stopped
                sid = None
            job = self.driver.job_status(Handle.of(obj), sid) if sid else None
            training = None
            if sid:
                training = _observe.read_training(
                    job_files(obj, self.settings).events, keep=obj.spec.checkpointing.keep
                )
            ftw = FineTuneJobWorld(
                now=now,
                settings=self.settings,
                models=snap.in_namespace("Model", ns),
                datasets=snap.in_namespace("Dataset", ns),
                deployments=snap.in_namespace("ModelDeployment", ns),
                pools=tuple(snap.all("GPUPool")),
                allocations=snap.allocations(),
                queue=snap.queue(),
                job=job,
                training=training,
                first_look=self.passes == 1,
            )
            return reconcile_finetunejob(obj, ftw)
        if isinstance(obj, ModelDeployment):
            dw = DeploymentWorld(
                now=now,
                settings=self.settings,
                models=snap.in_namespace("Model", ns),
                pools=tuple(snap.all("GPUPool")),
                allocations=snap.allocations(),
                queue=snap.queue(),
                app=self.driver.serve_status(Handle.of(obj), app_name(obj)),
                endpoint=self.driver.endpoint(Handle.of(obj)),
            )
            return reconcile_deployment(obj, dw)
        if isinstance(obj, GPUPool):
            return reconcile_gpupool(obj, GPUPoolWorld(now=now, allocations=snap.allocations()))
        raise TypeError(f"no reconciler for kind {obj.kind}")  # pragma: no cover

    # -- applying ---------------------------------------------------------------------

    def apply(self, obj: Resource, result: Result) -> Resource | None:
        """Store the status when it changed, then apply the actions in order.

        Returns:
            The object as stored (with the store's new resourceVersion when the status was
            written; ``obj`` itself when it had not changed), or None when it is gone.
        """
        old: Mapping[str, Any] = obj.status.model_dump(mode="json", exclude_none=True)  # type: ignore[attr-defined]
        new: Mapping[str, Any] = result.status.model_dump(mode="json", exclude_none=True)
        stored = obj
        if old != new:
            try:
                stored = self.store.replace_status(obj.model_copy(update={"status": result.status}))
            except NotFound:
                return None
            logger.debug("Updated status of %s %s/%s", obj.kind, obj.metadata.namespace, obj.metadata.name)
        for action in result.actions:
            self.apply_action(obj, action)
        return stored

    def apply_action(self, obj: Resource, action: Action) -> None:
        """Apply one action; "already there" and "already gone" are success."""
        if isinstance(action, WriteFile):
            _observe.write_file(action.uri, action.content)
        elif isinstance(action, SubmitJob):
            self.driver.submit_job(
                action.handle, action.submission_id, action.entrypoint, action.runtime_env, action.resources
            )
        elif isinstance(action, StopJob):
            self.driver.stop_job(action.handle, action.submission_id)
        elif isinstance(action, DeployServe):
            self.driver.deploy_serve(action.handle, action.config)
        elif isinstance(action, DeleteServe):
            self.driver.delete_serve_app(action.handle, action.app_name)
        elif isinstance(action, CreateObject):
            target = action.obj
            try:
                self.store.create(target)
                logger.info("Created %s %s/%s", target.kind, target.metadata.namespace, target.metadata.name)
            except AlreadyExists:
                logger.debug("%s %s/%s already exists", target.kind, target.metadata.namespace, target.metadata.name)
        elif isinstance(action, PatchObject):
            try:
                self.store.patch(action.kind, action.namespace, action.name, action.patch, action.resource_version)
            except NotFound:
                logger.debug("%s %s/%s is gone; patch skipped", action.kind, action.namespace, action.name)
        elif isinstance(action, RecordEvent):
            self._event(obj, action.type, action.reason, action.message)
        elif isinstance(action, MaterializeModel):
            _observe.materialize_model(action.builtin, action.uri)
        else:  # pragma: no cover
            raise TypeError(f"unknown action {action!r}")

    def _event(self, obj: Resource, type_: Any, reason: str, message: str) -> None:
        try:
            self.store.record_event(obj, type_, reason, message)
        except Exception:  # an event is never worth a failed reconcile
            logger.debug("could not record event %s on %s", reason, obj.metadata.name, exc_info=True)

    # -- the loop ---------------------------------------------------------------------

    def start(self) -> Runner:
        """Run passes in a background thread until :meth:`stop` (and wake on store changes)."""
        if self._threads:
            return self
        self._stop.clear()
        for cls in ORDER:
            thread = threading.Thread(target=self._watch, args=(cls,), name=f"corral-watch-{cls.KIND}", daemon=True)
            thread.start()
            self._threads.append(thread)
        loop = threading.Thread(target=self._loop, name="corral-runner", daemon=True)
        loop.start()
        self._threads.append(loop)
        logger.info("Started the control loop (resync every %.1fs)", self.resync_seconds)
        return self

    def wake(self) -> None:
        """Run the next pass now."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loop and the watches; waits for the current pass to end."""
        self._stop.set()
        self._wake.set()
        for watch in list(self._watches):
            watch.stop()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        self._watches.clear()
        logger.info("Stopped the control loop")

    def _watch(self, cls: type[Resource]) -> None:
        while not self._stop.is_set():
            try:
                watch = self.store.watch(cls, since_resource_version=self.store.list(cls).resource_version)
                self._watches.append(watch)
                while not self._stop.is_set():
                    if watch.poll(0.5) is not None:
                        self._wake.set()
                    elif watch.done:
                        break
            except Exception:
                logger.debug("watch of %s ended; restarting", cls.KIND, exc_info=True)
                self._stop.wait(1.0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            first = None if self.statuses_checked.is_set() else self.statuses_checked.set
            try:
                requeue = self.run_once(on_statuses=first)
            except Exception:
                logger.exception("Control loop pass failed")
                requeue = None
            finally:
                self.statuses_checked.set()
            wait = self.resync_seconds if requeue is None else max(0.05, min(requeue, self.resync_seconds))
            self._wake.wait(wait)
