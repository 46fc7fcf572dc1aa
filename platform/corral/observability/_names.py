"""The metric contract: every metric Corral exports, in one table.

Each :class:`MetricSpec` names one metric family as it appears in the Prometheus text
exposition (counters with their ``_total`` suffix), its type, its HELP text, its labels,
its unit and which component records it. Dashboards, alert and recording rules and the
tests all read this table; ``tests/unit/test_metrics_contract.py`` checks that every
metric a Corral registry actually exports is listed here with the same type, HELP and
labels, and that every entry follows the naming rules:

* ``corral_<subsystem>_<name>_<unit>``: the subsystem is one of :data:`SUBSYSTEMS`; the
  name ends with the unit (``_seconds``, ``_ratio``, ``_usd``, ``_gpus``, ...) or, for a
  dimensionless count, with a plural noun and no unit (``corral_control_objects``);
  counters end with ``_total`` after the unit.
* Labels come from :data:`ALLOWED_LABELS` only: every one of them is bounded by the
  objects in the store (``namespace``, ``job``, ``deployment``, ``pool``), by an enum
  (``kind``, ``phase``, ``result``, ``method``, ``code``, ``stage``) or by the app's route table
  (``route`` is the route *template*). Never a request id, a user name or free text.

Serving metrics are recorded inside Ray Serve replicas through :mod:`ray.util.metrics`,
which Ray exports with a ``ray_`` prefix: ``corral_serving_requests_total`` appears as
``ray_corral_serving_requests_total`` on a Ray node's metrics port (and unprefixed from
an in-process engine). :func:`exported_names` gives both spellings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ALLOWED_LABELS",
    "BY_NAME",
    "CONTRACT",
    "RAY_PREFIX",
    "SUBSYSTEMS",
    "MetricSpec",
    "contract_problems",
    "exported_names",
]

MetricType = Literal["counter", "gauge", "histogram"]
Source = Literal["controlapi", "runner", "store", "serving"]

SUBSYSTEMS = ("controlapi", "control", "scheduler", "training", "serving")
"""The ``<subsystem>`` part of every metric name."""

ALLOWED_LABELS = frozenset(
    {
        "namespace",
        "kind",
        "pool",
        "model",
        "adapter",
        "phase",
        "job",
        "deployment",
        "result",
        "method",
        "route",
        "code",
        "type",
        "stage",
        "split",
        "variant",
        "metric",
    }
)
"""Every label a Corral metric may carry (each has a bounded set of values; ``type`` is an error type
from :func:`corral.serving._metrics.error_type`; ``split`` is held_out or trained, ``variant`` fine_tuned
or base, ``metric`` similarity or exact_match)."""

UNITS = frozenset({"seconds", "ratio", "usd", "usd_per_hour", "gpus", "tokens", "tokens_per_second"})
"""Units a name may end with (before ``_total``); an empty unit means a dimensionless count."""

RAY_PREFIX = "ray_"
"""Prefix Ray's metrics agent puts before custom metrics recorded with :mod:`ray.util.metrics`."""

LATENCY_BUCKETS_CONTROL = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Buckets of ``corral_control_reconcile_duration_seconds`` (a reconcile may probe an artifact store)."""


@dataclass(frozen=True)
class MetricSpec:
    """One metric family of the contract.

    Attributes:
        name: Family name as exposed (counters include ``_total``).
        type: ``counter``, ``gauge`` or ``histogram``.
        help: The HELP text, word for word.
        labels: Label names, in order.
        unit: The unit the name ends with (one of :data:`UNITS`), or ``""`` for a count.
        source: Who records it: ``controlapi`` (request middleware), ``runner`` (the
            reconcile loop), ``store`` (the store collector, computed at scrape time) or
            ``serving`` (engines and Serve replicas).
    """

    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...]
    unit: str
    source: Source

    @property
    def base_name(self) -> str:
        """The name prometheus-client registers (counters without ``_total``)."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name

    @property
    def sample_names(self) -> tuple[str, ...]:
        """Names of the samples of this family in the text exposition."""
        if self.type == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        if self.type == "counter":
            return (self.name, f"{self.base_name}_created")
        return (self.name,)


_NS_JOB = ("namespace", "job")
_DEP = ("namespace", "deployment", "model")
_SERVE = ("model", "adapter")

CONTRACT: tuple[MetricSpec, ...] = (
    # -- control API (MetricsMiddleware) ---------------------------------------------------
    MetricSpec(
        "corral_controlapi_requests_total",
        "counter",
        "Control API requests by method, route template and HTTP code.",
        ("method", "route", "code"),
        "",
        "controlapi",
    ),
    MetricSpec(
        "corral_controlapi_request_duration_seconds",
        "histogram",
        "Control API time to response headers, by method and route template.",
        ("method", "route"),
        "seconds",
        "controlapi",
    ),
    # -- reconcile loop (Runner) -----------------------------------------------------------
    MetricSpec(
        "corral_control_reconciles_total",
        "counter",
        "Reconciles by kind and result (success or error).",
        ("kind", "result"),
        "",
        "runner",
    ),
    MetricSpec(
        "corral_control_reconcile_duration_seconds",
        "histogram",
        "Seconds one reconcile (observe, reconcile, apply) of one object took, by kind.",
        ("kind",),
        "seconds",
        "runner",
    ),
    MetricSpec(
        "corral_control_queue_depth",
        "gauge",
        "Objects still to reconcile in the pass in progress (0 between passes).",
        (),
        "",
        "runner",
    ),
    MetricSpec(
        "corral_control_backoff_objects",
        "gauge",
        "Objects waiting to retry after a failed reconcile.",
        (),
        "",
        "runner",
    ),
    MetricSpec(
        "corral_control_last_pass_timestamp_seconds",
        "gauge",
        "Unix time the last reconcile pass ended.",
        (),
        "seconds",
        "runner",
    ),
    # -- objects (store collector) ---------------------------------------------------------
    MetricSpec(
        "corral_control_objects",
        "gauge",
        "Corral objects by kind, namespace and phase (Model and Dataset: Ready, NotReady or Pending from "
        "the Ready condition).",
        ("kind", "namespace", "phase"),
        "",
        "store",
    ),
    # -- GPU pools and cost (store collector) ----------------------------------------------
    MetricSpec(
        "corral_scheduler_capacity_gpus",
        "gauge",
        "GPUs in the pool at its largest size (maxNodes x gpusPerNode).",
        ("pool",),
        "gpus",
        "store",
    ),
    MetricSpec(
        "corral_scheduler_allocatable_gpus",
        "gauge",
        "GPUs of the pool that can be allocated now (GPUPool status).",
        ("pool",),
        "gpus",
        "store",
    ),
    MetricSpec(
        "corral_scheduler_allocated_gpus",
        "gauge",
        "GPUs held by admitted fine-tunes and placed deployments (from status.placement), by pool, namespace and kind.",
        ("pool", "namespace", "kind"),
        "gpus",
        "store",
    ),
    MetricSpec(
        "corral_scheduler_quota_gpus",
        "gauge",
        "Most GPUs of the pool a namespace may hold at once (GPUPool quotas).",
        ("pool", "namespace"),
        "gpus",
        "store",
    ),
    MetricSpec(
        "corral_scheduler_pending_gpus",
        "gauge",
        "GPUs asked for by Pending fine-tunes and deployments, by requested pool (empty: any), namespace and kind.",
        ("pool", "namespace", "kind"),
        "gpus",
        "store",
    ),
    MetricSpec(
        "corral_scheduler_allocated_cost_usd_per_hour",
        "gauge",
        "Hourly cost of the allocated GPUs at the pool's price, by pool and namespace.",
        ("pool", "namespace"),
        "usd_per_hour",
        "store",
    ),
    # -- fine-tuning (store collector: FineTuneJob status and the job's events file) --------
    MetricSpec(
        "corral_training_phase",
        "gauge",
        "1 for the FineTuneJob's current phase, 0 for the others.",
        ("namespace", "job", "phase"),
        "",
        "store",
    ),
    MetricSpec("corral_training_step", "gauge", "Optimizer steps done.", _NS_JOB, "", "store"),
    MetricSpec(
        "corral_training_progress_ratio", "gauge", "Optimizer steps done / planned (0 to 1).", _NS_JOB, "ratio", "store"
    ),
    MetricSpec(
        "corral_training_eta_seconds", "gauge", "Estimated seconds to the last step.", _NS_JOB, "seconds", "store"
    ),
    MetricSpec("corral_training_epoch", "gauge", "Current epoch (1-based once started).", _NS_JOB, "", "store"),
    MetricSpec(
        "corral_training_learning_rate", "gauge", "Learning rate at the last logged step.", _NS_JOB, "", "store"
    ),
    MetricSpec("corral_training_loss", "gauge", "Training loss at the last logged step.", _NS_JOB, "", "store"),
    MetricSpec("corral_training_eval_loss", "gauge", "Evaluation loss at the last evaluation.", _NS_JOB, "", "store"),
    MetricSpec(
        "corral_training_evaluation_score_ratio",
        "gauge",
        "Score after training (0 to 1) of the fine-tune (variant=fine_tuned) or its base (variant=base) on a "
        "split (held_out, trained); metric similarity or exact_match.",
        ("namespace", "job", "split", "variant", "metric"),
        "ratio",
        "store",
    ),
    MetricSpec(
        "corral_training_evaluation_loss",
        "gauge",
        "Mean token loss on the reference answers after training, by split and variant (fine_tuned, base).",
        ("namespace", "job", "split", "variant"),
        "",
        "store",
    ),
    MetricSpec(
        "corral_training_tokens_per_second",
        "gauge",
        "Trained tokens per second, all workers.",
        _NS_JOB,
        "tokens_per_second",
        "store",
    ),
    MetricSpec(
        "corral_training_checkpoints_total",
        "counter",
        "Checkpoints written (checkpoint events in the job's events file).",
        _NS_JOB,
        "",
        "store",
    ),
    MetricSpec(
        "corral_training_restarts_total",
        "counter",
        "Times the training loop restarted (started events after the first).",
        _NS_JOB,
        "",
        "store",
    ),
    MetricSpec(
        "corral_training_preemptions_total",
        "counter",
        "Times higher-priority work preempted the job (status.preemptions).",
        _NS_JOB,
        "",
        "store",
    ),
    MetricSpec(
        "corral_training_gpu_seconds_total",
        "counter",
        "GPU-seconds used so far (GPUs x wall seconds).",
        _NS_JOB,
        "seconds",
        "store",
    ),
    MetricSpec(
        "corral_training_cost_usd", "gauge", "Accrued cost in US dollars at the pool's price.", _NS_JOB, "usd", "store"
    ),
    MetricSpec(
        "corral_training_estimated_cost_usd",
        "gauge",
        "Estimated total cost in US dollars, made when the job was admitted.",
        _NS_JOB,
        "usd",
        "store",
    ),
    # -- deployments (store collector) -----------------------------------------------------
    MetricSpec(
        "corral_serving_desired_replicas",
        "gauge",
        "Replicas a ModelDeployment wants now.",
        _DEP,
        "",
        "store",
    ),
    MetricSpec(
        "corral_serving_ready_replicas",
        "gauge",
        "Replicas of a ModelDeployment serving traffic.",
        _DEP,
        "",
        "store",
    ),
    MetricSpec(
        "corral_serving_cold_starts_total",
        "counter",
        "Scale-ups of a ModelDeployment from zero replicas (status.coldStart.count).",
        _DEP,
        "",
        "store",
    ),
    MetricSpec(
        "corral_serving_last_cold_start_seconds",
        "gauge",
        "Seconds the last scale-up from zero took until a replica was ready, as the control loop saw it.",
        _DEP,
        "seconds",
        "store",
    ),
    # -- serving (engines and Serve replicas: corral.serving._metrics) ---------------------
    MetricSpec("corral_serving_requests_total", "counter", "Generation requests received.", _SERVE, "", "serving"),
    MetricSpec(
        "corral_serving_errors_total",
        "counter",
        "Requests answered with an error, by HTTP status code and type.",
        (*_SERVE, "code", "type"),
        "",
        "serving",
    ),
    MetricSpec("corral_serving_output_tokens_total", "counter", "Tokens generated.", _SERVE, "tokens", "serving"),
    MetricSpec("corral_serving_prompt_tokens_total", "counter", "Prompt tokens read.", _SERVE, "tokens", "serving"),
    MetricSpec(
        "corral_serving_request_duration_seconds",
        "histogram",
        "Seconds from request to last token (end to end).",
        _SERVE,
        "seconds",
        "serving",
    ),
    MetricSpec(
        "corral_serving_time_to_first_token_seconds",
        "histogram",
        "Seconds from request to first token.",
        _SERVE,
        "seconds",
        "serving",
    ),
    MetricSpec(
        "corral_serving_time_per_output_token_seconds",
        "histogram",
        "Mean seconds per token after the first.",
        _SERVE,
        "seconds",
        "serving",
    ),
    MetricSpec(
        "corral_serving_ongoing_requests", "gauge", "Requests being generated or queued now.", _SERVE, "", "serving"
    ),
    MetricSpec("corral_serving_adapter_loads_total", "counter", "Adapter loads into a replica.", _SERVE, "", "serving"),
    MetricSpec(
        "corral_serving_adapter_evictions_total",
        "counter",
        "Adapter evictions from a replica.",
        _SERVE,
        "",
        "serving",
    ),
    MetricSpec(
        "corral_serving_adapter_load_seconds",
        "histogram",
        "Seconds to fetch and load an adapter.",
        _SERVE,
        "seconds",
        "serving",
    ),
    MetricSpec(
        "corral_serving_replica_startup_seconds",
        "histogram",
        "Seconds a starting replica spent per stage (imports, model_load, warmup) before it took requests.",
        ("model", "stage"),
        "seconds",
        "serving",
    ),
    MetricSpec(
        "corral_serving_request_hold_seconds",
        "histogram",
        "Seconds the activator of a scale-to-zero deployment held a request until a replica took it.",
        ("model",),
        "seconds",
        "serving",
    ),
)
"""Every metric Corral exports."""

BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in CONTRACT}
"""The contract by exposed family name."""

_NAME = re.compile(r"^corral_(?P<subsystem>[a-z]+)_[a-z][a-z0-9_]*[a-z0-9]$")


def contract_problems(spec: MetricSpec) -> list[str]:
    """What is wrong with one entry under the naming rules (empty: nothing).

    Args:
        spec: The entry to check.

    Returns:
        One sentence per broken rule.
    """
    problems: list[str] = []
    match = _NAME.match(spec.name)
    if match is None or match.group("subsystem") not in SUBSYSTEMS:
        problems.append(f"{spec.name}: not corral_<subsystem>_<name> with a subsystem in {SUBSYSTEMS}")
    if not spec.help.strip() or not spec.help.endswith("."):
        problems.append(f"{spec.name}: HELP must be a sentence ending with a period")
    if spec.type == "counter" and not spec.name.endswith("_total"):
        problems.append(f"{spec.name}: a counter's name ends with _total")
    if spec.type != "counter" and spec.name.endswith("_total"):
        problems.append(f"{spec.name}: only counters end with _total")
    stem = spec.base_name
    if spec.unit:
        if spec.unit not in UNITS:
            problems.append(f"{spec.name}: unit {spec.unit!r} is not one of {sorted(UNITS)}")
        if not stem.endswith(f"_{spec.unit}"):
            problems.append(f"{spec.name}: the name must end with its unit _{spec.unit}")
    else:
        clash = [u for u in UNITS if stem.endswith(f"_{u}")]
        if clash:
            problems.append(f"{spec.name}: ends with unit _{clash[0]} but declares none")
    if spec.type == "histogram" and not spec.unit:
        problems.append(f"{spec.name}: a histogram needs a unit")
    bad = [label for label in spec.labels if label not in ALLOWED_LABELS]
    if bad:
        problems.append(f"{spec.name}: labels {bad} are not in the allowed (bounded) set")
    if len(set(spec.labels)) != len(spec.labels):
        problems.append(f"{spec.name}: repeated label")
    return problems


def exported_names(prefix_ray: bool = True) -> set[str]:
    """Every sample name the contract allows in an exposition.

    Args:
        prefix_ray: Also include the ``ray_``-prefixed names of serving metrics.

    Returns:
        Sample names (``_bucket``/``_sum``/``_count`` for histograms, ``_created`` for counters).
    """
    names: set[str] = set()
    for spec in CONTRACT:
        names.update(spec.sample_names)
        if prefix_ray and spec.source == "serving":
            names.update(f"{RAY_PREFIX}{n}" for n in spec.sample_names)
    return names
