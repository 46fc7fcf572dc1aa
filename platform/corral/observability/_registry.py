"""Corral's one Prometheus registry and get-or-create helpers for its collectors.

Every Corral component registers its metrics here (or in a registry it is handed, as
tests do), so one ``/metrics`` endpoint exposes all of them. The helpers return the
collector already registered under a name instead of failing on the second call, which
makes building an app twice in one process (tests) safe.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TypeVar
from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

__all__ = ["REGISTRY", "counter", "gauge", "histogram"]

REGISTRY = CollectorRegistry()
"""The process-wide registry every Corral collector lives in unless told otherwise."""

_M = TypeVar("_M", bound=MetricWrapperBase)
_lock = threading.Lock()
_known: WeakKeyDictionary[CollectorRegistry, dict[str, MetricWrapperBase]] = WeakKeyDictionary()


def _get_or_create(
    cls: type[_M], name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry, **kw: object
) -> _M:
    with _lock:
        known = _known.setdefault(registry, {})
        existing = known.get(name)
        if existing is not None:
            if not isinstance(existing, cls):
                raise ValueError(f"metric {name} is already registered as a {type(existing).__name__}")
            return existing
        metric = cls(name, documentation, labelnames=tuple(labelnames), registry=registry, **kw)  # type: ignore[arg-type]
        known[name] = metric
        return metric


def counter(
    name: str, documentation: str, labelnames: Sequence[str] = (), registry: CollectorRegistry = REGISTRY
) -> Counter:
    """Return the counter ``name`` in ``registry``, creating it on first use."""
    return _get_or_create(Counter, name, documentation, labelnames, registry)


def gauge(
    name: str, documentation: str, labelnames: Sequence[str] = (), registry: CollectorRegistry = REGISTRY
) -> Gauge:
    """Return the gauge ``name`` in ``registry``, creating it on first use."""
    return _get_or_create(Gauge, name, documentation, labelnames, registry)


def histogram(
    name: str,
    documentation: str,
    labelnames: Sequence[str] = (),
    registry: CollectorRegistry = REGISTRY,
    buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
) -> Histogram:
    """Return the histogram ``name`` in ``registry``, creating it on first use."""
    return _get_or_create(Histogram, name, documentation, labelnames, registry, buckets=tuple(buckets))
