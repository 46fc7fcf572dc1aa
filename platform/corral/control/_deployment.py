"""The ModelDeployment reconciler: resolve models, check the license, deploy the Serve config, report.

Each ModelDeployment is one Serve application named ``<namespace>-<name>`` at route
``/<namespace>/<name>`` (its OpenAI base URL is ``<serve>/<namespace>/<name>/v1``), built,
named and routed by ``corral.serving.serve_config`` (``app_name``, ``route_prefix``). A spec
change redeploys the application in place: Serve starts the new replicas and drains the old
ones, so in-flight requests finish.

A deployment with ``autoscaling.minReplicas: 0`` reports two more phases (see
:mod:`._coldstart`): ``ScaledToZero`` (no replica; the next request starts one and is held
for it) and ``ScalingUp`` (a replica is starting from zero while requests wait).

A pass is :data:`_STEPS`, run in order over one :class:`_Pass`: finalizer (and deletion),
references, license, admit (placement), config, deploy, status. Every way a deployment is
not served goes through ``_Pass.refuse``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from corral.api.v1alpha1 import GPUPool, LocalObjectReference, Model, ModelDeployment, Placement
from corral.api.v1alpha1.modeldeployment import ModelDeploymentStatus
from corral.drivers import Handle
from corral.serving import (
    ACTIVATOR_DEPLOYMENT,
    CORRAL_IMPORT_PATH,
    LLM_DEPLOYMENT,
    ResolvedModel,
    app_name,
    route_prefix,
    serve_config,
    served_model_names,
)

from ._actions import Action, DeleteServe, DeployServe, RecordEvent, Result
from ._coldstart import scale_from_zero
from ._conditions import get_condition, set_condition
from ._finalizer import ensure_finalizer, release_finalizer
from ._observed import DeploymentWorld
from ._placement import allocation_of, place_deployment
from ._preemption import preempting_message
from ._replica_events import replica_events
from ._steps import Step, run_steps

__all__ = [
    "UnresolvedModelError",
    "app_config",
    "app_name",
    "config_matches",
    "reconcile_deployment",
    "route_prefix",
]


def config_matches(desired: Any, deployed: Any) -> bool:
    """True when every option of ``desired`` is set the same in ``deployed`` (Serve adds none, drops none)."""
    if isinstance(desired, Mapping):
        return isinstance(deployed, Mapping) and all(
            k in deployed and config_matches(v, deployed[k]) for k, v in desired.items()
        )
    if isinstance(desired, list | tuple):
        return (
            isinstance(deployed, list | tuple)
            and len(desired) == len(deployed)
            and all(config_matches(a, b) for a, b in zip(desired, deployed, strict=True))
        )
    return bool(desired == deployed)


class UnresolvedModelError(KeyError):
    """A Model a deployment references is missing or has no artifact.

    A ``KeyError`` whose ``str()`` is the message itself (``KeyError`` quotes its argument,
    which turned a missing ``tiny`` into the message ``'tiny'``).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def app_config(
    deployment: ModelDeployment,
    models: Mapping[str, Model],
    chat_tokens: list[str] | None = None,
    chat_tokens_env: str | None = None,
) -> dict[str, Any]:
    """The deployment's Serve application (one entry of ``serveConfigV2.applications``).

    Args:
        deployment: The ModelDeployment.
        models: Models of its namespace by name.
        chat_tokens: SHA-256 digests of the tokens its endpoint accepts (engine ``transformers``);
            ``None`` asks for none.
        chat_tokens_env: Environment variable of the replicas holding more accepted tokens (a
            cluster's per-namespace Secret); set, the endpoint asks for a token even when
            ``chat_tokens`` is ``None``.

    Raises:
        ValueError: The engine cannot serve the spec (``corral.serving.serve_config``).
        UnresolvedModelError: A referenced Model is missing or has no artifact (a ``KeyError``
            whose message names the Model's namespace and name).
    """
    namespace = deployment.metadata.namespace or "default"

    def resolve(ref: LocalObjectReference) -> ResolvedModel:
        model = models.get(ref.name)
        if model is None:
            raise UnresolvedModelError(f"Model {namespace}/{ref.name} not found")
        if model.status.artifact is None:
            raise UnresolvedModelError(
                f"Model {namespace}/{ref.name} has no artifact yet (status.artifact is unset until it is Ready)"
            )
        return ResolvedModel(
            uri=model.status.artifact.uri,
            size_bytes=model.status.artifact.size_bytes,
            architecture=model.status.architecture,
            trust_remote_code=bool(model.status.remote_code),  # set only when the namespace allows it
        )

    config = serve_config([deployment], resolve)
    app = dict(config["applications"][0])
    if (chat_tokens is not None or chat_tokens_env) and app.get("import_path") == CORRAL_IMPORT_PATH:
        auth: dict[str, Any] = {
            "token_sha256": list(chat_tokens or []),
            # Whom a Kubernetes caller must be allowed to `get` (on a cluster that accepts Kubernetes tokens).
            "namespace": deployment.metadata.namespace or "default",
            "deployment": deployment.metadata.name,
        }
        if chat_tokens_env:
            auth["tokens_env"] = chat_tokens_env
        app["args"] = {**app["args"], "auth": auth}
    return app


def _ready(model: Model) -> bool:
    condition = get_condition(model.status.conditions, "Ready")
    return condition is not None and condition.status == "True"


def _check_models(dep: ModelDeployment, models: Mapping[str, Model]) -> tuple[str, str, str] | None:
    """``(phase, reason, message)`` when a referenced Model stops the deployment, else None."""
    spec = dep.spec
    model = models.get(spec.model.name)
    if model is None:
        return "Pending", "ModelNotFound", f"Model {spec.model.name} not found"
    if model.spec.type == "adapter":
        return (
            "Failed",
            "InvalidSpec",
            (f"Model {model.metadata.name} is an adapter: serve its base as spec.model and list it in spec.adapters"),
        )
    if not _ready(model):
        return "Pending", "ModelNotReady", f"Model {model.metadata.name} is not Ready"
    for adapter in spec.adapters:
        am = models.get(adapter.model.name)
        if am is None:
            return "Pending", "AdapterNotFound", f"adapter Model {adapter.model.name} not found"
        if am.spec.type != "adapter":
            return "Failed", "InvalidSpec", f"Model {am.metadata.name} in spec.adapters is not an adapter"
        if am.spec.base_model is None or am.spec.base_model.name != model.metadata.name:
            base = am.spec.base_model.name if am.spec.base_model else "nothing"
            return (
                "Failed",
                "AdapterBaseMismatch",
                (f"adapter {am.metadata.name} is trained on {base}, not on {model.metadata.name}"),
            )
        if not _ready(am):
            return "Pending", "AdapterNotReady", f"adapter Model {am.metadata.name} is not Ready"
    return None


def _license_refusal(dep: ModelDeployment, models: Mapping[str, Model]) -> str | None:
    if dep.spec.intended_use != "commercial":
        return None
    offenders: list[str] = []
    for ref in [dep.spec.model, *(a.model for a in dep.spec.adapters)]:
        lineage = models[ref.name].status.lineage
        if lineage is None or lineage.commercial_use != "forbidden":
            continue
        links = [
            f"{link.name} (license: {link.license})" for link in lineage.links if link.commercial_use == "forbidden"
        ]
        offenders.append(f"{ref.name} derives from {', '.join(links) or 'a link'} that forbids commercial use")
    if not offenders:
        return None
    return (
        "Commercial use refused: "
        + "; ".join(offenders)
        + ". Serve models whose licenses allow commercial use, or set intendedUse to research."
    )


def _replica_counts(dep: ModelDeployment, world: DeploymentWorld) -> tuple[int, int]:
    """``(desired, ready)`` model replicas as Serve reports them (the activator not counted)."""
    app = world.app
    desired = max(dep.spec.replica_range[0], 1)
    if app is None or not app.deployments:
        return desired, 0
    if LLM_DEPLOYMENT in app.deployments:
        return app.deployments[LLM_DEPLOYMENT]
    servers = {k: v for k, v in app.deployments.items() if "Ingress" not in k and k != ACTIVATOR_DEPLOYMENT} or dict(
        app.deployments
    )
    return sum(t for t, _ in servers.values()) or desired, sum(r for _, r in servers.values())


@dataclass
class _Pass:
    """One reconcile of one ModelDeployment: what its steps share."""

    dep: ModelDeployment
    world: DeploymentWorld
    old: ModelDeploymentStatus
    st: ModelDeploymentStatus
    actions: list[Action] = field(default_factory=list)
    app: dict[str, Any] | None = None  # the desired Serve application, once _config has built it
    deploying: bool = False  # Serve runs no application or another config than ``app``

    @property
    def deploying_seconds(self) -> float:
        return self.world.settings.deploying_seconds

    def cond(self, status: str, reason: str, message: str) -> None:
        st, gen, now = self.st, self.dep.metadata.generation, self.world.now
        st.conditions = set_condition(st.conditions, "Ready", status, reason, message, generation=gen, now=now)  # type: ignore[arg-type]

    def delete_app(self) -> None:
        """Ask the driver to delete the Serve application (the one place a DeleteServe is built)."""
        self.actions.append(DeleteServe(Handle.of(self.dep), app_name(self.dep)))

    def refuse(self, phase: str, reason: str, message: str) -> Result:
        """Not served: Pending waits, Failed needs a spec change (and stops serving what is refused)."""
        if self.world.app is not None and phase == "Failed":
            self.delete_app()  # never keep serving what the spec or the license refuses
        self.st.phase = phase  # type: ignore[assignment]
        self.cond("False", reason, message)
        self.st.ready_replicas = 0 if self.world.app is None else self.st.ready_replicas
        return self.finish()

    def finish(self, requeue: float | None = None) -> Result:
        st, old = self.st, self.old
        st.observed_generation = self.dep.metadata.generation
        self.actions.extend(replica_events(old, st))
        if st.phase != old.phase:
            ready = get_condition(st.conditions, "Ready")
            reason = ready.reason if ready else st.phase or "Pending"
            message = ready.message if ready else ""
            self.actions.append(RecordEvent("Warning" if st.phase == "Failed" else "Normal", reason, message))
        return Result(status=st, actions=self.actions, requeue_after=requeue)


def _finalizer(p: _Pass) -> Result | None:
    """Deletion: delete the Serve application, then let the object go. Otherwise: hold it."""
    meta = p.dep.metadata
    if meta.deletion_timestamp is None:
        _append(p.actions, ensure_finalizer("ModelDeployment", meta))
        return None
    if p.world.app is not None:
        p.delete_app()
        return Result(status=p.old, actions=p.actions, requeue_after=p.deploying_seconds)
    _append(p.actions, release_finalizer("ModelDeployment", meta))
    return Result(status=p.old, actions=p.actions)


def _references(p: _Pass) -> Result | None:
    """The served Model and its adapters exist, fit together and are Ready."""
    problem = _check_models(p.dep, p.world.models)
    return p.refuse(*problem) if problem is not None else None


def _license(p: _Pass) -> Result | None:
    """Commercial use only of models whose lineage allows it."""
    refusal = _license_refusal(p.dep, p.world.models)
    return p.refuse("Failed", "LicenseForbidsCommercialUse", refusal) if refusal is not None else None


def _admit(p: _Pass) -> Result | None:
    """Place the replicas on a pool, or keep the deployment Pending."""
    dep, world = p.dep, p.world
    model = world.models[dep.spec.model.name]
    # Placed already: keep its place (the queue waits behind admitted work; only preemption displaces it).
    queue = () if allocation_of(dep) is not None else world.queue
    decision = place_deployment(dep, model, world.pools, world.allocations, queue=queue)
    p.st.placement = decision.placement()
    if not decision.admitted:
        return p.refuse("Pending", decision.reason, decision.message)
    if decision.preempt:  # admitted once the victims' Ray jobs have stopped and their GPUs are free
        return p.refuse("Pending", "Preempting", preempting_message(decision))
    return None


def _config(p: _Pass) -> Result | None:
    """Build the Serve application, or refuse a spec the engine cannot serve."""
    dep, settings = p.dep, p.world.settings
    try:
        p.app = app_config(
            dep,
            p.world.models,
            settings.chat_token_digests(dep.metadata.namespace or "default"),
            settings.chat_tokens_env,
        )
    except (ValueError, KeyError) as exc:
        return p.refuse("Failed", "InvalidSpec", str(exc))
    return None


def _deploy(p: _Pass) -> Result | None:
    """Deploy the application when Serve runs none or another config; count the replicas."""
    dep, world, st = p.dep, p.world, p.st
    if p.app is None:
        return p.refuse("Failed", "InvalidSpec", "no application")
    st.served_models = served_model_names(dep)
    st.endpoint = f"{world.endpoint.rstrip('/')}{route_prefix(dep)}/v1" if world.endpoint else None
    p.deploying = world.app is None or not config_matches(p.app, world.app.deployed_config or {})
    if p.deploying:
        handle = Handle.for_deployment(dep, _placed_pool(dep, st.placement, world.pools))
        p.actions.append(DeployServe(handle, {"applications": [p.app]}))
    st.replicas, st.ready_replicas = _replica_counts(dep, world)
    return None


def _status(p: _Pass) -> Result | None:
    """The phase from Serve's state: Ready (or scaled to zero), Failed, Updating or Deploying."""
    dep, world, st = p.dep, p.world, p.st
    status = world.app.status if world.app is not None else "NOT_STARTED"
    was_ready = p.old.phase in ("Ready", "Updating")
    if not p.deploying and status == "RUNNING":
        zero = scale_from_zero(dep, world, st.replicas, st.ready_replicas)
        st.cold_start = zero.cold_start if zero is not None else None
        if zero is not None and zero.phase != "Ready":
            st.phase = zero.phase
            p.cond("True", zero.phase, zero.message)
            return p.finish(p.deploying_seconds if zero.phase == "ScalingUp" else None)
        st.phase = "Ready"
        p.cond("True", "Serving", f"serving {', '.join(st.served_models)} at {st.endpoint or route_prefix(dep)}")
        return p.finish()
    if not p.deploying and status in ("DEPLOY_FAILED", "UNHEALTHY"):
        st.phase = "Failed"
        reason = "DeployFailed" if status == "DEPLOY_FAILED" else "Unhealthy"
        p.cond("False", reason, world.app.message if world.app else status)
        return p.finish(p.deploying_seconds)
    told = world.app.reason if world.app is not None else ""  # the backend's reason (KubeRay: UpgradeInProgress)
    told_message = world.app.message if world.app is not None and told else ""
    if was_ready and st.ready_replicas > 0:
        st.phase = "Updating"
        gen = dep.metadata.generation
        default = f"rolling out generation {gen}; old replicas keep serving until new ones are ready"
        p.cond("True", told or "Updating", told_message or default)
    else:
        st.phase = "Deploying"
        p.cond("False", told or "Deploying", told_message or f"deploying Serve application {app_name(dep)}")
    return p.finish(p.deploying_seconds)


def _placed_pool(dep: ModelDeployment, placement: Placement | None, pools: Iterable[GPUPool]) -> GPUPool | None:
    """The GPUPool the scheduler just placed ``dep`` on (its spec's pool when it has no placement)."""
    name = placement.pool if placement is not None else dep.spec.resources.pool
    return next((p for p in pools if p.metadata.name == name), None) if name else None


_STEPS: tuple[Step[_Pass], ...] = (_finalizer, _references, _license, _admit, _config, _deploy, _status)
"""The steps of a pass, in order; the first to return a Result ends it."""


def reconcile_deployment(dep: ModelDeployment, world: DeploymentWorld) -> Result:
    """Reconcile one ModelDeployment by running its steps (:data:`_STEPS`) in order.

    Args:
        dep: The deployment.
        world: Its Models, pools, Serve's state of its application and Serve's base URL.

    Returns:
        The new status and the actions: finalizer, deploy or delete the application, events.
    """
    return run_steps(_STEPS, _Pass(dep=dep, world=world, old=dep.status, st=dep.status.model_copy(deep=True)))


def _append(actions: list[Action], action: Action | None) -> None:
    if action is not None:
        actions.append(action)
