"""How long a replica takes to start from zero, before anything was measured, and how long to hold a request.

Pure arithmetic on the model's size and the engine: the control plane uses it for the
``ScaledToZero`` message ("the next request starts a replica, about N s") until it has
measured a cold start of its own, and :func:`corral.serving.serve_config` uses it for the
default hold timeout and the ``Retry-After`` of a request that waited too long.

The fixed parts are what this repository measured (``bench/cold_start.py``): a Serve replica
of engine ``transformers`` needs a Ray worker process plus the torch and transformers imports
before it loads anything; vLLM adds its engine start (CUDA graphs, KV cache profiling).
"""

from __future__ import annotations

import math
from typing import Literal

__all__ = [
    "MIN_HOLD_SECONDS",
    "default_hold_seconds",
    "estimate_cold_start_seconds",
]

#: Seconds before a replica loads weights: worker process, imports (and vLLM's engine start).
_FIXED_SECONDS = {"transformers": 15.0, "vllm": 90.0}
#: Bytes per second a replica reads weights at (CPU float32 load vs. GPU safetensors).
_LOAD_BYTES_PER_SECOND = {"transformers": 100e6, "vllm": 1e9}
#: The shortest default hold: a client's first request after a quiet night is worth a minute.
MIN_HOLD_SECONDS = 60
_MAX_HOLD_SECONDS = 1800


def estimate_cold_start_seconds(size_bytes: int, engine: Literal["transformers", "vllm"]) -> int:
    """Seconds from "a replica is needed" to "it answers", before any cold start was measured.

    Args:
        size_bytes: Size of the served weights (base plus adapters) in bytes; 0 when unknown.
        engine: The engine the replica runs.

    Returns:
        Whole seconds, rounded up.
    """
    return math.ceil(_FIXED_SECONDS[engine] + max(size_bytes, 0) / _LOAD_BYTES_PER_SECOND[engine])


def default_hold_seconds(estimate_seconds: int) -> int:
    """The hold timeout when the spec sets none: three estimated cold starts, 60 s to 30 min.

    Args:
        estimate_seconds: The estimated cold start (:func:`estimate_cold_start_seconds`).

    Returns:
        Whole seconds.
    """
    return min(_MAX_HOLD_SECONDS, max(MIN_HOLD_SECONDS, 3 * estimate_seconds))
