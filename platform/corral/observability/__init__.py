"""Observability: the one Prometheus registry every Corral component reports into."""

from ._registry import REGISTRY, counter, gauge, histogram

__all__ = ["REGISTRY", "counter", "gauge", "histogram"]
