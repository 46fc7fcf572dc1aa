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
base); errors add ``code`` (HTTP status).
"""

from __future__ import annotations

from typing import Any, Literal

from prometheus_client import CollectorRegistry

__all__ = ["LATENCY_BUCKETS", "METRIC_NAMES", "ServingMetrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LABELS = ("model", "adapter")

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
            labels = (*_LABELS, "code", "type") if name == "corral_serving_errors_total" else _LABELS
            self._m[name] = self._make(kind, name, doc, labels, registry)

    def _make(self, kind: str, name: str, doc: str, labels: tuple[str, ...], registry: CollectorRegistry | None) -> Any:
        if self.backend == "ray":
            from ray.util import metrics as rm

            if kind == "counter":
                return rm.Counter(name, description=doc, tag_keys=labels)
            if kind == "gauge":
                return rm.Gauge(name, description=doc, tag_keys=labels)
            return rm.Histogram(name, description=doc, boundaries=list(LATENCY_BUCKETS), tag_keys=labels)
        from corral import observability as obs

        reg = registry if registry is not None else obs.REGISTRY
        if kind == "counter":
            return obs.counter(name.removesuffix("_total"), doc, labels, registry=reg)
        if kind == "gauge":
            return obs.gauge(name, doc, labels, registry=reg)
        return obs.histogram(name, doc, labels, registry=reg, buckets=LATENCY_BUCKETS)

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
