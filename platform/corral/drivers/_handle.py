"""The handle every driver call carries: whose work it is and where the scheduler put it.

A driver is not bound to an owner; each call names it (SkyPilot's backend handle shape). The
reconcilers build the handle from the object they reconcile and the placement they just
decided, the actions carry it, and the runner passes it through, so a driver never reads the
store to learn an owner's namespace, uid or placement:

* :class:`Owner` - the Corral object the work belongs to (kind, namespace, name, uid): a
  KubeRay child lives in the owner's namespace and carries an owner reference to it.
* :class:`PodPlacement` - the scheduler's decision in pod terms: replicas, CPUs, memory,
  GPUs, accelerator, the pool's node selector and tolerations.
* :class:`Handle` - both, plus what a backend needs of the spec to start the work (its Kueue
  queue, its deadline). Reading or stopping work needs only the owner (:meth:`Handle.of`);
  starting it needs the placement too (:meth:`Handle.for_job`, :meth:`Handle.for_deployment`).

A backend ignores what it does not need: the local driver runs every owner on one Ray.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.api.v1alpha1 import FineTuneJob, GPUPool, ModelDeployment, Resource

__all__ = ["Handle", "Owner", "PodPlacement"]


@dataclass(frozen=True)
class Owner:
    """The Corral object a job or a Serve application belongs to.

    Attributes:
        kind: Its kind (``FineTuneJob``, ``ModelDeployment``).
        name: Its ``metadata.name``.
        namespace: Its namespace (None for a cluster-scoped kind).
        uid: Its uid, once stored (owner references need it).
        api_version: Its ``apiVersion``.
    """

    kind: str
    name: str
    namespace: str | None = None
    uid: str | None = None
    api_version: str = "corral.dev/v1alpha1"

    @classmethod
    def of(cls, obj: Resource) -> Owner:
        """The owner reference of a stored (or about to be stored) object."""
        meta = obj.metadata
        return cls(kind=obj.kind, name=meta.name, namespace=meta.namespace, uid=meta.uid, api_version=obj.api_version)


@dataclass(frozen=True)
class PodPlacement:
    """Where and how large the workers are: the scheduler's decision in pod terms.

    Attributes:
        replicas: Worker pods (training workers or serving replicas).
        cpus: CPU request per worker, as a quantity string.
        memory: Memory request per worker, or None for the backend's default.
        gpus: GPUs per worker (``nvidia.com/gpu`` limit and Ray ``num-gpus``).
        accelerator_type: Corral accelerator type (``nvidia-a100-80gb``), or None.
        node_selector: Node selector of the GPUPool.
        tolerations: Tolerations of the GPUPool, in Kubernetes wire form.
        max_replicas: Upper bound for autoscaling (serving); None: fixed at ``replicas``.
        pool: The GPUPool the scheduler placed the work on, if any.
    """

    replicas: int = 1
    cpus: str = "1"
    memory: str | None = None
    gpus: int = 0
    accelerator_type: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    max_replicas: int | None = None
    pool: str | None = None

    @staticmethod
    def _pool_fields(pool: GPUPool | None) -> dict[str, Any]:
        if pool is None:
            return {}
        tolerations = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in pool.spec.tolerations]
        accel = pool.spec.accelerator_type if pool.spec.accelerator_type != "cpu" else None
        return {
            "node_selector": dict(pool.spec.node_selector),
            "tolerations": tuple(tolerations),
            "accelerator_type": accel,
            "pool": pool.metadata.name,
        }

    @classmethod
    def for_job(cls, job: FineTuneJob, pool: GPUPool | None = None) -> PodPlacement:
        """Workers of a fine-tune: ``spec.resources`` sized, on ``pool`` when it was placed on one."""
        res = job.spec.resources
        fields = cls._pool_fields(pool)
        if res.accelerator_type and not fields.get("accelerator_type"):
            fields["accelerator_type"] = res.accelerator_type
        return cls(
            replicas=res.workers,
            cpus=res.cpus_per_worker,
            memory=res.memory_per_worker,
            gpus=res.gpus_per_worker,
            **fields,
        )

    @classmethod
    def for_deployment(cls, deployment: ModelDeployment, pool: GPUPool | None = None) -> PodPlacement:
        """Replica pods of a deployment: one Ray worker per Serve replica, autoscaling within its range."""
        res = deployment.spec.resources
        low, high = deployment.spec.replica_range
        fields = cls._pool_fields(pool)
        if res.accelerator_type and not fields.get("accelerator_type"):
            fields["accelerator_type"] = res.accelerator_type
        return cls(
            replicas=max(low, 1),
            cpus=res.cpus_per_replica,
            memory=res.memory_per_replica,
            gpus=res.gpus_per_replica,
            max_replicas=max(high, low, 1) if deployment.spec.autoscaling is not None else None,
            **fields,
        )


@dataclass(frozen=True)
class Handle:
    """What a driver call needs to know about the work beyond the call's own arguments.

    Attributes:
        owner: The Corral object the work belongs to.
        placement: Where and how large the workers are; set when work is started
            (``submit_job``, ``deploy_serve``), None when it is only read, stopped or deleted.
        queue: Kueue LocalQueue the work waits in, if any (the job is created suspended).
        deadline_seconds: Seconds the work may run before the backend stops it, if bounded.
    """

    owner: Owner
    placement: PodPlacement | None = None
    queue: str | None = None
    deadline_seconds: int | None = None

    @classmethod
    def of(cls, obj: Resource) -> Handle:
        """A handle naming ``obj`` only: enough to read, stop or delete its work."""
        return cls(Owner.of(obj))

    @classmethod
    def for_job(cls, job: FineTuneJob, pool: GPUPool | None = None) -> Handle:
        """The handle that starts a fine-tune: its workers sized by the spec, on the ``pool`` it was placed on."""
        return cls(
            Owner.of(job),
            PodPlacement.for_job(job, pool),
            queue=job.spec.resources.queue,
            deadline_seconds=job.spec.active_deadline_seconds,
        )

    @classmethod
    def for_deployment(cls, deployment: ModelDeployment, pool: GPUPool | None = None) -> Handle:
        """The handle that deploys a ModelDeployment: its replicas on the ``pool`` it was placed on."""
        return cls(Owner.of(deployment), PodPlacement.for_deployment(deployment, pool))
