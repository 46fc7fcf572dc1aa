"""Observability: the one Prometheus registry every Corral component reports into.

* :data:`REGISTRY` and the get-or-create helpers :func:`counter`, :func:`gauge`,
  :func:`histogram`.
* :data:`CONTRACT` (:mod:`~corral.observability._names`): every metric name, type, HELP
  text and label set in one table; dashboards, rules and tests read it.
* :class:`StoreCollector` / :func:`register_store_collector`: objects by phase, GPU
  allocation, cost, fine-tuning progress and replicas, computed from the store at scrape
  time; :class:`RunnerMetrics`: the reconcile loop's counters and durations.
"""

from ._collectors import (
    EventsURI,
    RunnerMetrics,
    StoreCollector,
    events_uri_under,
    register_store_collector,
)
from ._names import BY_NAME, CONTRACT, MetricSpec, contract_problems, exported_names
from ._registry import REGISTRY, counter, gauge, histogram

__all__ = [
    "BY_NAME",
    "CONTRACT",
    "REGISTRY",
    "EventsURI",
    "MetricSpec",
    "RunnerMetrics",
    "StoreCollector",
    "contract_problems",
    "counter",
    "events_uri_under",
    "exported_names",
    "gauge",
    "histogram",
    "register_store_collector",
]
