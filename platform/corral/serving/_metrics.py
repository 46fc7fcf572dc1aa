"""``corral_serving_*`` metrics per model and adapter.

Two backends record the same series:

* ``prometheus`` (in-process engines, benchmarks, tests): collectors in
  :data:`corral.observability.REGISTRY`, exposed by whatever serves that registry's
  ``/metrics``.
* ``ray`` (inside Ray Serve replicas): :mod:`ray.util.metrics` collectors, which Ray's
  metrics agent exports on each node's metrics export port (the port KubeRay's
  PodMonitor scrapes). Ray prefixes custom metrics with its namespace, so the series
  appear there as ``ray_corral_serving_*`` with the same labels. A replica's own
  prometheus-client registry would be invisible (nothing scrapes a replica), which is
  why replicas use this backend.

Labels: ``model`` (the served base name) and ``adapter`` (adapter name, empty for the
base); errors add ``code`` (HTTP status). Two families are per model only: a replica's
start-up by ``stage`` (``imports``, ``model_load``, ``warmup``) and the time the activator
of a scale-to-zero deployment held a request until a replica took it.
"""

from __future__ import annotations

from typing import Any, Literal

from prometheus_client import CollectorRegistry

from corral import observability as obs

__all__ = ["LATENCY_BUCKETS", "METRIC_NAMES", "STARTUP_BUCKETS", "STARTUP_STAGES", "ServingMetrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Buckets of waits that can be a cold start: held requests and replica start-up stages.
STARTUP_BUCKETS = (0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: The stages of a replica's start-up that the replica itself can time.
STARTUP_STAGES = ("imports", "model_load", "warmup")
_LABELS = ("model", "adapter")
_OWN_LABELS = {
    "corral_serving_replica_startup_seconds": ("model", "stage"),
    "corral_serving_request_hold_seconds": ("model",),
    "corral_serving_errors_total": (*_LABELS, "code", "type"),
}
_OWN_BUCKETS = {
    "corral_serving_replica_startup_seconds": STARTUP_BUCKETS,
    "corral_serving_request_hold_seconds": STARTUP_BUCKETS,
}

#: name -> (kind, description)
METRIC_NAMES: dict[str, tuple[str, str]] = {
    "corral_serving_requests_total": ("counter", "Generation requests received."),
    "corral_serving_errors_total": ("counter", "Requests answered with an error, by HTTP status code and type."),
    "corral_serving_output_tokens_total": ("counter", "Tokens generated."),
    "corral_serving_prompt_tokens_total": ("counter", "Prompt tokens read."),
    "corral_serving_request_duration_seconds": ("histogram", "Seconds from request to last token (end to end)."),
    "corral_serving_time_to_first_token_seconds": ("histogram", "Seconds from request to first token."),
    "corral_serving_time_per_output_token_seconds": ("histogram", "Mean seconds per token after the first."),
    "corral_serving_ongoing_requests": ("gauge", "Requests being generated or queued now."),
    "corral_serving_adapter_loads_total": ("counter", "Adapter loads into a replica."),
    "corral_serving_adapter_evictions_total": ("counter", "Adapter evictions from a replica."),
    "corral_serving_adapter_load_seconds": ("histogram", "Seconds to fetch and load an adapter."),
    "corral_serving_replica_startup_seconds": (
        "histogram",
        "Seconds a starting replica spent per stage (imports, model_load, warmup) before it took requests.",
    ),
    "corral_serving_request_hold_seconds": (
        "histogram",
        "Seconds the activator of a scale-to-zero deployment held a request until a replica took it.",
    ),
}


_ERROR_TYPES = {400: "invalid_request", 404: "model_not_found", 429: "overloaded", 503: "unavailable"}


def error_type(status: int) -> str:
    """The bounded error type of an HTTP status: invalid_request, model_not_found, overloaded, unavailable,
    client_error or server_error.
    """
    return _ERROR_TYPES.get(status, "server_error" if status >= 500 else "client_error")


class ServingMetrics:
    """Records serving metrics for one served model.

    Args:
        model: The served base model name (the ``model`` label).
        backend: ``prometheus`` or ``ray`` (see the module docstring).
        registry: Prometheus registry for the ``prometheus`` backend (default Corral's).
    """

    def __init__(
        self,
        model: str,
        backend: Literal["prometheus", "ray"] = "prometheus",
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.model = model
        self.backend = backend
        self._ongoing: dict[str, int] = {}
        self._m: dict[str, Any] = {}
        for name, (kind, doc) in METRIC_NAMES.items():
            self._m[name] = self._make(kind, name, doc, _OWN_LABELS.get(name, _LABELS), registry)

    def _make(self, kind: str, name: str, doc: str, labels: tuple[str, ...], registry: CollectorRegistry | None) -> Any:
        buckets = _OWN_BUCKETS.get(name, LATENCY_BUCKETS)
        if self.backend == "ray":
            from ray.util import metrics as rm

            if kind == "counter":
                return rm.Counter(name, description=doc, tag_keys=labels)
            if kind == "gauge":
                return rm.Gauge(name, description=doc, tag_keys=labels)
            return rm.Histogram(name, description=doc, boundaries=list(buckets), tag_keys=labels)

        reg = registry if registry is not None else obs.REGISTRY
        if kind == "counter":
            return obs.counter(name.removesuffix("_total"), doc, labels, registry=reg)
        if kind == "gauge":
            return obs.gauge(name, doc, labels, registry=reg)
        return obs.histogram(name, doc, labels, registry=reg, buckets=buckets)

    def _tags(self, adapter: str | None, **extra: str) -> dict[str, str]:
        return {"model": self.model, "adapter": adapter or "", **extra}

    def _inc(self, name: str, tags: dict[str, str], value: float = 1.0) -> None:
        metric = self._m[name]
        if self.backend == "ray":
            metric.inc(value, tags=tags)
        else:
            metric.labels(**tags).inc(value)

    def _observe(self, name: str, tags: dict[str, str], value: float) -> None:
        metric = self._m[name]
        if self.backend == "ray":
            metric.observe(value, tags=tags)
        else:
            metric.labels(**tags).observe(value)

    def _set_ongoing(self, adapter: str | None, delta: int) -> None:
        key = adapter or ""
        self._ongoing[key] = self._ongoing.get(key, 0) + delta
        metric, tags = self._m["corral_serving_ongoing_requests"], self._tags(adapter)
        if self.backend == "ray":
            metric.set(self._ongoing[key], tags=tags)
        else:
            metric.labels(**tags).set(self._ongoing[key])

    def request_started(self, adapter: str | None) -> None:
        """A request entered the engine."""
        self._inc("corral_serving_requests_total", self._tags(adapter))
        self._set_ongoing(adapter, +1)

    def request_finished(
        self,
        adapter: str | None,
        *,
        ttft: float | None,
        tpot: float | None,
        output_tokens: int,
        prompt_tokens: int = 0,
        duration: float | None = None,
    ) -> None:
        """A request left the engine (answered, failed or cancelled)."""
        tags = self._tags(adapter)
        self._set_ongoing(adapter, -1)
        if output_tokens:
            self._inc("corral_serving_output_tokens_total", tags, output_tokens)
        if prompt_tokens:
            self._inc("corral_serving_prompt_tokens_total", tags, prompt_tokens)
        if duration is not None:
            self._observe("corral_serving_request_duration_seconds", tags, duration)
        if ttft is not None:
            self._observe("corral_serving_time_to_first_token_seconds", tags, ttft)
        if tpot is not None:
            self._observe("corral_serving_time_per_output_token_seconds", tags, tpot)

    def error(self, adapter: str | None, status: int) -> None:
        """A request was answered with HTTP ``status`` (its error type derives from the status)."""
        self._inc("corral_serving_errors_total", self._tags(adapter, code=str(status), type=error_type(status)))

    def adapter_loaded(self, adapter: str, seconds: float) -> None:
        """An adapter was loaded in ``seconds``."""
        tags = self._tags(adapter)
        self._inc("corral_serving_adapter_loads_total", tags)
        self._observe("corral_serving_adapter_load_seconds", tags, seconds)

    def adapter_evicted(self, adapter: str) -> None:
        """An adapter was evicted."""
        self._inc("corral_serving_adapter_evictions_total", self._tags(adapter))

    def replica_started(self, stages: dict[str, float]) -> None:
        """A replica finished starting: seconds per stage of :data:`STARTUP_STAGES`."""
        for stage, seconds in stages.items():
            self._observe("corral_serving_replica_startup_seconds", {"model": self.model, "stage": stage}, seconds)

    def request_held(self, seconds: float) -> None:
        """The activator held a request ``seconds`` until a replica took it."""
        self._observe("corral_serving_request_hold_seconds", {"model": self.model}, seconds)
