"""Corral's scheduler: estimate what a fine-tune or deployment needs, and place it on GPUPools.

Pure Python, no I/O: every function is a function of its inputs, and decisions are
deterministic.

* Estimator: :func:`estimate_training` / :func:`estimate_job` (memory per GPU by method and
  strategy, time from FLOPs, cost from the pool's price) and :func:`estimate_serving` /
  :func:`estimate_deployment` (weights + KV cache + adapters), on a :class:`ModelProfile`
  and an :class:`Accelerator`.
* Placement: :func:`place` (one decision) and :class:`Scheduler` (passes over a queue,
  incremental :class:`ClusterState`): cheapest pool that fits, gang admission,
  per-namespace quotas, priority then FIFO, reservations, preemption of preemptible work.

Example:
    >>> from corral.scheduler import ModelProfile, estimate_training
    >>> est = estimate_training(ModelProfile.from_catalog_params(7e9), method="qlora", micro_batch_size=1,
    ...                         max_seq_len=512, gradient_checkpointing=True)
    >>> round(est.memory.total / 1e9)
    6
"""

from ._accelerators import ACCELERATORS, Accelerator, get_accelerator, ray_accelerator_type
from ._cluster import Allocation, ClusterState, PoolState
from ._estimate import (
    MemoryBreakdown,
    ServingEstimate,
    TrainingEstimate,
    estimate_deployment,
    estimate_job,
    estimate_serving,
    estimate_training,
    model_state_bytes,
    serving_gpus_needed,
)
from ._placement import Decision, PlacementRequest, Policy, Scheduler, Shape, place
from ._profiles import ModelProfile
from ._queue import PendingQueue
from ._requests import dry_run_deployment, dry_run_job, pools_from, request_for_deployment, request_for_job

__all__ = [
    "ACCELERATORS",
    "Accelerator",
    "Allocation",
    "ClusterState",
    "Decision",
    "MemoryBreakdown",
    "ModelProfile",
    "PendingQueue",
    "PlacementRequest",
    "Policy",
    "PoolState",
    "Scheduler",
    "ServingEstimate",
    "Shape",
    "TrainingEstimate",
    "dry_run_deployment",
    "dry_run_job",
    "estimate_deployment",
    "estimate_job",
    "estimate_serving",
    "estimate_training",
    "get_accelerator",
    "model_state_bytes",
    "place",
    "pools_from",
    "ray_accelerator_type",
    "request_for_deployment",
    "request_for_job",
    "serving_gpus_needed",
]
