"""Prometheus gauges ``corral_training_*``, fed from the job's events.

The workers write events (:mod:`corral.training._events`); the entrypoint process follows
the events file and sets these gauges, and serves them on ``--metrics-port`` when asked.
There is no ``corral.observability`` registry yet, so the gauges live in their own
:class:`~prometheus_client.CollectorRegistry` (pass another one to share).
"""

from __future__ import annotations

import logging
import threading
from decimal import Decimal

from prometheus_client import CollectorRegistry, Gauge

from corral.training._events import (
    CheckpointEvent,
    CompletedEvent,
    FailedEvent,
    ProgressEvent,
    StartedEvent,
    read_events,
)

__all__ = ["EventFollower", "TrainingMetrics"]

logger = logging.getLogger(__name__)
_LABELS = ("namespace", "job")


class TrainingMetrics:
    """The gauges of one job (labelled ``namespace``, ``job``)."""

    def __init__(self, namespace: str, job: str, registry: CollectorRegistry | None = None) -> None:
        """Create (and register) the gauges.

        Args:
            namespace: Job namespace label.
            job: Job name label.
            registry: Registry to use; a new one by default.
        """
        self.registry = registry or CollectorRegistry()
        self._labels = {"namespace": namespace, "job": job}

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"corral_training_{name}", doc, _LABELS, registry=self.registry)

        self.step = gauge("step", "Optimizer steps done.")
        self.total_steps = gauge("total_steps", "Optimizer steps planned.")
        self.epoch = gauge("epoch", "Current epoch (1-based).")
        self.loss = gauge("loss", "Training loss of the last step.")
        self.eval_loss = gauge("eval_loss", "Loss of the last evaluation.")
        self.learning_rate = gauge("learning_rate", "Learning rate of the last step.")
        self.tokens_per_second = gauge("tokens_per_second", "Trained tokens per second, all workers.")
        self.eta_seconds = gauge("eta_seconds", "Estimated seconds to completion.")
        self.gpu_seconds = gauge("gpu_seconds", "GPU-seconds used.")
        self.cost_usd = gauge("cost_usd", "Cost so far in US dollars.")
        self.checkpoint_step = gauge("checkpoint_step", "Step of the newest checkpoint.")
        self.completed = gauge("completed", "1 once the job completed, -1 when it failed, 0 while running.")

    def observe(self, event: StartedEvent | ProgressEvent | CheckpointEvent | CompletedEvent | FailedEvent) -> None:
        """Update the gauges from one event."""
        lab = self._labels
        if isinstance(event, ProgressEvent):
            self.step.labels(**lab).set(event.step)
            self.total_steps.labels(**lab).set(event.total_steps)
            self.epoch.labels(**lab).set(event.epoch)
            self.loss.labels(**lab).set(event.loss)
            if event.eval_loss is not None:
                self.eval_loss.labels(**lab).set(event.eval_loss)
            self.learning_rate.labels(**lab).set(event.lr)
            self.tokens_per_second.labels(**lab).set(event.tokens_per_second)
            if event.eta_seconds is not None:
                self.eta_seconds.labels(**lab).set(event.eta_seconds)
            self.gpu_seconds.labels(**lab).set(event.gpu_seconds)
            self.cost_usd.labels(**lab).set(float(Decimal(event.cost_usd)))
        elif isinstance(event, CheckpointEvent):
            self.checkpoint_step.labels(**lab).set(event.step)
        elif isinstance(event, CompletedEvent):
            self.completed.labels(**lab).set(1)
        elif isinstance(event, FailedEvent):
            self.completed.labels(**lab).set(-1)
        elif isinstance(event, StartedEvent):
            self.completed.labels(**lab).set(0)
            self.total_steps.labels(**lab).set(event.total_steps)


class EventFollower(threading.Thread):
    """Polls an events file and feeds new events to :class:`TrainingMetrics`."""

    def __init__(self, uri: str, metrics: TrainingMetrics, interval_s: float = 2.0) -> None:
        """Create the (daemon) thread; call ``start()``.

        Args:
            uri: Events file URI.
            metrics: Gauges to update.
            interval_s: Poll interval.
        """
        super().__init__(name="corral-events-follower", daemon=True)
        self.uri, self.metrics, self.interval_s = uri, metrics, interval_s
        self._seen = 0
        self._stop_event = threading.Event()

    def poll(self) -> int:
        """Read the file once and observe the events not seen yet; return how many."""
        events = read_events(self.uri)
        new = events[self._seen :]
        for ev in new:
            self.metrics.observe(ev)
        self._seen = len(events)
        return len(new)

    def run(self) -> None:
        """Poll until :meth:`stop`."""
        while not self._stop_event.wait(self.interval_s):
            try:
                self.poll()
            except Exception:  # keep following: the next poll may succeed
                logger.warning("could not read training events from %s", self.uri, exc_info=True)

    def stop(self) -> None:
        """Stop after a final poll."""
        self._stop_event.set()
        self.poll()
