"""The store collector: control-plane, scheduler, training and deployment metrics read from the store.

Objects by phase, GPU allocation, cost, fine-tuning progress and replica counts are facts
the store already holds (the reconcilers write them into ``status``), so they are computed
at scrape time instead of being kept in counters next to the store: what ``/metrics``
says is what ``corral get`` says, with no bookkeeping to drift. Two training counters
(checkpoints written, restarts) are not in ``status`` (it keeps only the newest
checkpoints); they are counted from the job's events file when the collector knows where
job folders live (``events_uri``), and left out otherwise.

Every family here is in :data:`corral.observability._names.CONTRACT` with source
``store``; labels are bounded by the objects in the store.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Any, get_args
from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from corral.api.v1alpha1 import Dataset, FineTuneJob, GPUPool, Model, ModelDeployment, Resource
from corral.api.v1alpha1.finetunejob import GPU_HOLDING_PHASES, Phase
from corral.artifacts import ArtifactNotFound, job_files_under, open_store
from corral.store import Store

from ._names import BY_NAME, CONTRACT, LATENCY_BUCKETS_CONTROL
from ._registry import REGISTRY, counter, gauge, histogram

__all__ = ["EventsURI", "RunnerMetrics", "StoreCollector", "events_uri_under", "register_store_collector"]

logger = logging.getLogger(__name__)

EventsURI = Callable[[FineTuneJob], "str | None"]
"""Returns the URI of a FineTuneJob's events file (None: unknown)."""

JOB_PHASES: tuple[str, ...] = get_args(Phase)
KINDS: tuple[type[Resource], ...] = (Dataset, Model, FineTuneJob, ModelDeployment, GPUPool)


def events_uri_under(artifact_root: str) -> EventsURI:
    """Events file locations of jobs whose folders live under ``artifact_root`` (the control settings' root).

    Args:
        artifact_root: The control plane's artifact root URI.

    Returns:
        A function from a FineTuneJob to its ``events.jsonl`` URI.
    """

    def events_uri(job: FineTuneJob) -> str | None:
        return job_files_under(artifact_root, job.metadata.namespace or "default", job.metadata.name).events

    return events_uri


def _phase(obj: Resource) -> str:
    phase = getattr(obj.status, "phase", None)  # type: ignore[attr-defined]
    if isinstance(phase, str):
        return phase
    if isinstance(obj, (FineTuneJob, ModelDeployment)):
        return "Pending"
    ready = next((c for c in obj.status.conditions if c.type == "Ready"), None)  # type: ignore[attr-defined]
    if ready is None or ready.status == "Unknown":
        return "Pending"
    return "Ready" if ready.status == "True" else "NotReady"


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(Decimal(value))
    except (InvalidOperation, ValueError):
        return None


def _holds_gpus(obj: FineTuneJob | ModelDeployment) -> tuple[str, int] | None:
    """(pool, GPUs) the object holds, by the same rule as ``corral.control.allocation_of``."""
    placement = obj.status.placement
    if placement is None or placement.pool is None or placement.gpus == 0:
        return None
    if isinstance(obj, FineTuneJob) and obj.status.phase not in GPU_HOLDING_PHASES:
        return None
    return placement.pool, placement.replicas * placement.gpus_per_replica


def _pending_gpus(obj: FineTuneJob | ModelDeployment) -> tuple[str, int] | None:
    if obj.status.phase not in (None, "Pending", "Preempted") or _holds_gpus(obj) is not None:
        return None
    if isinstance(obj, FineTuneJob):
        res = obj.spec.resources
        return res.pool or "", res.workers * res.gpus_per_worker
    replicas = obj.spec.replica_range[0]
    return obj.spec.resources.pool or "", replicas * obj.spec.resources.gpus_per_replica


def _family(name: str) -> GaugeMetricFamily | CounterMetricFamily:
    spec = BY_NAME[name]
    if spec.type == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)


class StoreCollector(Collector):
    """Computes the ``store``-sourced metrics of the contract from the store on each scrape.

    Args:
        store: Where resources live.
        events_uri: Where a FineTuneJob's events file is (see :func:`events_uri_under`);
            None leaves ``corral_training_checkpoints_total`` and
            ``corral_training_restarts_total`` out.
    """

    def __init__(self, store: Store, events_uri: EventsURI | None = None) -> None:
        self.store = store
        self.events_uri = events_uri
        self._lock = threading.Lock()
        self._event_counts: dict[tuple[str, str], tuple[int, int]] = {}

    def describe(self) -> Iterable[Metric]:
        """The families this collector yields (empty), so a registry can check names."""
        return [_family(spec.name) for spec in CONTRACT if spec.source == "store"]

    def collect(self) -> Iterable[Metric]:
        """Read every object once and yield the families (nothing when the store does not answer)."""
        try:
            objects = {cls.KIND: list(self.store.list(cls).items) for cls in KINDS}
        except Exception:
            logger.warning("metrics: the store did not answer; store metrics left out of this scrape", exc_info=True)
            return []
        with self._lock:
            return list(self._families(objects))

    def _families(self, objects: dict[str, list[Any]]) -> Iterator[Metric]:
        fam = {spec.name: _family(spec.name) for spec in CONTRACT if spec.source == "store"}

        by_phase: dict[tuple[str, str, str], int] = defaultdict(int)
        for kind, items in objects.items():
            for obj in items:
                by_phase[(kind, obj.metadata.namespace or "", _phase(obj))] += 1
        for labels, count in sorted(by_phase.items()):
            fam["corral_control_objects"].add_metric(list(labels), count)

        pools: list[GPUPool] = objects["GPUPool"]
        price = {p.metadata.name: _float(p.spec.price_per_gpu_hour) or 0.0 for p in pools}
        for pool in pools:
            name = pool.metadata.name
            fam["corral_scheduler_capacity_gpus"].add_metric([name], pool.spec.capacity_gpus)
            fam["corral_scheduler_allocatable_gpus"].add_metric([name], pool.status.allocatable_gpus)
            for quota in pool.spec.quotas:
                fam["corral_scheduler_quota_gpus"].add_metric([name, quota.namespace], quota.max_gpus)

        allocated: dict[tuple[str, str, str], int] = defaultdict(int)
        pending: dict[tuple[str, str, str], int] = defaultdict(int)
        workloads: list[FineTuneJob | ModelDeployment] = [*objects["FineTuneJob"], *objects["ModelDeployment"]]
        for obj in workloads:
            ns = obj.metadata.namespace or "default"
            held = _holds_gpus(obj)
            if held is not None:
                allocated[(held[0], ns, obj.kind)] += held[1]
            asked = _pending_gpus(obj)
            if asked is not None and asked[1] > 0:
                pending[(asked[0], ns, obj.kind)] += asked[1]
        cost_rate: dict[tuple[str, str], float] = defaultdict(float)
        for (pool_name, ns, kind), gpus in sorted(allocated.items()):
            fam["corral_scheduler_allocated_gpus"].add_metric([pool_name, ns, kind], gpus)
            cost_rate[(pool_name, ns)] += gpus * price.get(pool_name, 0.0)
        for (pool_name, ns), rate in sorted(cost_rate.items()):
            fam["corral_scheduler_allocated_cost_usd_per_hour"].add_metric([pool_name, ns], rate)
        for (pool_name, ns, kind), gpus in sorted(pending.items()):
            fam["corral_scheduler_pending_gpus"].add_metric([pool_name, ns, kind], gpus)

        live: set[tuple[str, str]] = set()
        for job in objects["FineTuneJob"]:
            self._job(fam, job, live)
        self._event_counts = {k: v for k, v in self._event_counts.items() if k in live}

        for dep in objects["ModelDeployment"]:
            served = dep.spec.served_name or dep.spec.model.name
            dep_labels = [dep.metadata.namespace or "default", dep.metadata.name, served]
            fam["corral_serving_desired_replicas"].add_metric(dep_labels, dep.status.replicas)
            fam["corral_serving_ready_replicas"].add_metric(dep_labels, dep.status.ready_replicas)
            cold = dep.status.cold_start
            if cold is not None:
                fam["corral_serving_cold_starts_total"].add_metric(dep_labels, cold.count)
                if cold.last_seconds is not None:
                    fam["corral_serving_last_cold_start_seconds"].add_metric(dep_labels, cold.last_seconds)

        yield from fam.values()

    def _job(
        self, fam: dict[str, GaugeMetricFamily | CounterMetricFamily], job: FineTuneJob, live: set[tuple[str, str]]
    ) -> None:
        ns, name = job.metadata.namespace or "default", job.metadata.name
        labels = [ns, name]
        st = job.status
        current = st.phase or "Pending"
        for phase in JOB_PHASES:
            fam["corral_training_phase"].add_metric([*labels, phase], 1.0 if phase == current else 0.0)
        if st.progress is not None:
            fam["corral_training_step"].add_metric(labels, st.progress.step)
            fam["corral_training_epoch"].add_metric(labels, st.progress.epoch)
            if st.progress.total_steps:
                ratio = min(1.0, st.progress.step / st.progress.total_steps)
                fam["corral_training_progress_ratio"].add_metric(labels, ratio)
            if st.progress.eta_seconds is not None:
                fam["corral_training_eta_seconds"].add_metric(labels, st.progress.eta_seconds)
        if st.metrics is not None:
            if st.metrics.loss is not None:
                fam["corral_training_loss"].add_metric(labels, st.metrics.loss)
            if st.metrics.eval_loss is not None:
                fam["corral_training_eval_loss"].add_metric(labels, st.metrics.eval_loss)
            if st.metrics.tokens_per_second is not None:
                fam["corral_training_tokens_per_second"].add_metric(labels, st.metrics.tokens_per_second)
            if st.metrics.learning_rate is not None:
                fam["corral_training_learning_rate"].add_metric(labels, st.metrics.learning_rate)
        if st.evaluation is not None:
            for split in st.evaluation.splits:
                where = "held_out" if split.name == "heldOut" else "trained"
                for model, scores in (("fine_tuned", split.fine_tuned), ("base", split.base)):
                    score = fam["corral_training_evaluation_score_ratio"]
                    score.add_metric([*labels, where, model, "similarity"], scores.similarity_percent / 100)
                    score.add_metric([*labels, where, model, "exact_match"], scores.exact_match_percent / 100)
                    if scores.loss is not None:
                        fam["corral_training_evaluation_loss"].add_metric([*labels, where, model], scores.loss)
        fam["corral_training_preemptions_total"].add_metric(labels, st.preemptions)
        if st.cost is not None:
            fam["corral_training_gpu_seconds_total"].add_metric(labels, st.cost.gpu_seconds)
            usd = _float(st.cost.usd)
            if usd is not None:
                fam["corral_training_cost_usd"].add_metric(labels, usd)
            estimated = _float(st.cost.estimated_usd)
            if estimated is not None:
                fam["corral_training_estimated_cost_usd"].add_metric(labels, estimated)
        counts = self._counts(job)
        if counts is not None:
            live.add((job.metadata.uid or "", job.metadata.resource_version or ""))
            fam["corral_training_checkpoints_total"].add_metric(labels, counts[0])
            fam["corral_training_restarts_total"].add_metric(labels, counts[1])

    def _counts(self, job: FineTuneJob) -> tuple[int, int] | None:
        """(checkpoints written, restarts) from the events file, cached per object version."""
        if self.events_uri is None or not job.status.submission_id:
            return None
        key = (job.metadata.uid or "", job.metadata.resource_version or "")
        cached = self._event_counts.get(key)
        if cached is not None:
            return cached
        uri = self.events_uri(job)
        if uri is None:
            return None
        try:
            counts = _count_events(uri)
        except Exception:
            logger.debug("metrics: cannot read training events %s", uri, exc_info=True)
            return None
        if len(self._event_counts) >= MAX_CACHED_EVENT_COUNTS:  # bounded whatever the number of jobs
            self._event_counts.pop(next(iter(self._event_counts)))
        self._event_counts[key] = counts
        return counts


def _count_events(uri: str) -> tuple[int, int]:
    """Count checkpoint and restart events in an events file (JSON lines with a ``type``)."""
    try:
        data = open_store(uri).get_bytes(uri)
    except ArtifactNotFound:
        return 0, 0
    checkpoints = started = 0
    for raw in data.decode("utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line:
            continue
        try:
            kind = json.loads(line).get("type")
        except (ValueError, AttributeError):
            continue  # a line being written
        if kind == "checkpoint":
            checkpoints += 1
        elif kind == "started":
            started += 1
    return checkpoints, max(0, started - 1)


MAX_CACHED_EVENT_COUNTS = 4096
"""Most FineTuneJob versions whose event counts the collector remembers between scrapes."""

_registered: WeakKeyDictionary[CollectorRegistry, StoreCollector] = WeakKeyDictionary()
_registered_lock = threading.Lock()


def register_store_collector(
    store: Store, registry: CollectorRegistry, events_uri: EventsURI | None = None
) -> StoreCollector:
    """Register a :class:`StoreCollector` on ``registry``, or point the one already there at ``store``.

    One registry holds one store collector: building a second app on the same registry
    (tests) rebinds it to the newest store instead of failing on duplicate names.

    Args:
        store: Where resources live.
        registry: The registry ``/metrics`` exposes.
        events_uri: Where FineTuneJob events files are (see :func:`events_uri_under`).

    Returns:
        The registered collector.
    """
    with _registered_lock:
        collector = _registered.get(registry)
        if collector is None:
            collector = StoreCollector(store, events_uri)
            registry.register(collector)
            _registered[registry] = collector
        else:
            with collector._lock:
                collector.store, collector.events_uri = store, events_uri
                collector._event_counts.clear()
        return collector


class RunnerMetrics:
    """The reconcile loop's own metrics (``corral_control_*`` with source ``runner``).

    Args:
        registry: Where they go (default :data:`corral.observability.REGISTRY`).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = REGISTRY if registry is None else registry

        def spec(name: str) -> tuple[str, str, tuple[str, ...]]:
            s = BY_NAME[name]
            return s.base_name, s.help, s.labels

        self.reconciles = counter(*spec("corral_control_reconciles_total"), registry=reg)
        self.duration = histogram(
            *spec("corral_control_reconcile_duration_seconds"), registry=reg, buckets=LATENCY_BUCKETS_CONTROL
        )
        self.queue_depth = gauge(*spec("corral_control_queue_depth"), registry=reg)
        self.backoff = gauge(*spec("corral_control_backoff_objects"), registry=reg)
        self.last_pass = gauge(*spec("corral_control_last_pass_timestamp_seconds"), registry=reg)

    def pass_started(self, objects: int) -> None:
        """A pass read ``objects`` objects and starts reconciling them."""
        self.queue_depth.set(objects)

    def dequeued(self) -> None:
        """The pass took the next object (reconciled or skipped while backing off)."""
        self.queue_depth.dec()

    def pass_ended(self, backoff: int) -> None:
        """The pass ended; ``backoff`` objects wait to retry after an error."""
        self.queue_depth.set(0)
        self.backoff.set(backoff)
        self.last_pass.set(time.time())

    @contextmanager
    def reconcile(self, kind: str) -> Iterator[None]:
        """Time one reconcile of an object of ``kind`` and count it as success or error (re-raises)."""
        start = time.perf_counter()
        result = "error"
        try:
            yield
            result = "success"
        finally:
            self.duration.labels(kind).observe(time.perf_counter() - start)
            self.reconciles.labels(kind, result).inc()
