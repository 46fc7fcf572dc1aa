"""The ModelDeployment reconciler: resolve models, check the license, deploy the Serve config, report.

Each ModelDeployment is one Serve application named ``<namespace>-<name>`` at route
``/<namespace>/<name>`` (its OpenAI base URL is ``<serve>/<namespace>/<name>/v1``), built by
``corral.serving.serve_config``. A spec change redeploys the application in place: Serve
starts the new replicas and drains the old ones, so in-flight requests finish.

A deployment with ``autoscaling.minReplicas: 0`` reports two more phases (see
:mod:`._coldstart`): ``ScaledToZero`` (no replica; the next request starts one and is held
for it) and ``ScalingUp`` (a replica is starting from zero while requests wait).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from corral.api.v1alpha1 import GPUPool, LocalObjectReference, Model, ModelDeployment, Placement
from corral.drivers import Handle
from corral.serving import (
    ACTIVATOR_DEPLOYMENT,
    CORRAL_IMPORT_PATH,
    LLM_DEPLOYMENT,
    ResolvedModel,
    serve_config,
    served_model_names,
)

from ._actions import Action, DeleteServe, DeployServe, PatchObject, RecordEvent, Result
from ._coldstart import scale_from_zero
from ._conditions import get_condition, set_condition
from ._observed import FINALIZER, DeploymentWorld
from ._placement import allocation_of, place_deployment
from ._preemption import preempting_message
from ._replica_events import replica_events

__all__ = ["app_config", "app_name", "config_matches", "reconcile_deployment", "route_prefix"]


def app_name(deployment: ModelDeployment) -> str:
    """The Serve application name: ``<namespace>-<name>``."""
    return f"{deployment.metadata.namespace or 'default'}-{deployment.metadata.name}"


def route_prefix(deployment: ModelDeployment) -> str:
    """The application's HTTP route: ``/<namespace>/<name>``."""
    return f"/{deployment.metadata.namespace or 'default'}/{deployment.metadata.name}"


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
        KeyError: A referenced Model is missing or has no artifact.
    """

    def resolve(ref: LocalObjectReference) -> ResolvedModel:
        model = models[ref.name]
        if model.status.artifact is None:
            raise KeyError(ref.name)
        return ResolvedModel(
            uri=model.status.artifact.uri,
            size_bytes=model.status.artifact.size_bytes,
            architecture=model.status.architecture,
            trust_remote_code=bool(model.status.remote_code),  # set only when the namespace allows it
        )

    config = serve_config([deployment], resolve)
    app = dict(config["applications"][0])
    if (chat_tokens is not None or chat_tokens_env) and app.get("import_path") == CORRAL_IMPORT_PATH:
        auth: dict[str, Any] = {"token_sha256": list(chat_tokens or [])}
        if chat_tokens_env:
            auth["tokens_env"] = chat_tokens_env
        app["args"] = {**app["args"], "auth": auth}
    app["name"] = app_name(deployment)
    app["route_prefix"] = route_prefix(deployment)
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


def reconcile_deployment(dep: ModelDeployment, world: DeploymentWorld) -> Result:
    """Reconcile one ModelDeployment.

    Args:
        dep: The deployment.
        world: Its Models, pools, Serve's state of its application and Serve's base URL.

    Returns:
        The new status and the actions: finalizer, deploy or delete the application, events.
    """
    old = dep.status
    st = old.model_copy(deep=True)
    gen, now, meta = dep.metadata.generation, world.now, dep.metadata
    actions: list[Action] = []
    name = app_name(dep)

    def cond(status: str, reason: str, message: str) -> None:
        st.conditions = set_condition(st.conditions, "Ready", status, reason, message, generation=gen, now=now)  # type: ignore[arg-type]

    def finish(requeue: float | None = None) -> Result:
        st.observed_generation = gen
        actions.extend(replica_events(old, st))
        if st.phase != old.phase:
            ready = get_condition(st.conditions, "Ready")
            reason = ready.reason if ready else st.phase or "Pending"
            message = ready.message if ready else ""
            actions.append(RecordEvent("Warning" if st.phase == "Failed" else "Normal", reason, message))
        return Result(status=st, actions=actions, requeue_after=requeue)

    if meta.deletion_timestamp is not None:
        if world.app is not None:
            actions.append(DeleteServe(Handle.of(dep), name))
            return Result(status=old, actions=actions, requeue_after=world.settings.deploying_seconds)
        if FINALIZER in meta.finalizers:
            remaining = [f for f in meta.finalizers if f != FINALIZER]
            actions.append(
                PatchObject("ModelDeployment", meta.namespace, meta.name, {"metadata": {"finalizers": remaining}})
            )
        return Result(status=old, actions=actions)
    if FINALIZER not in meta.finalizers:
        actions.append(
            PatchObject(
                "ModelDeployment",
                meta.namespace,
                meta.name,
                {"metadata": {"finalizers": [*meta.finalizers, FINALIZER]}},
            )
        )

    problem = _check_models(dep, world.models)
    refusal = _license_refusal(dep, world.models) if problem is None else None
    if problem is None and refusal is not None:
        problem = ("Failed", "LicenseForbidsCommercialUse", refusal)
    if problem is None:
        model = world.models[dep.spec.model.name]
        # Placed already: keep its place (the queue waits behind admitted work; only preemption displaces it).
        queue = () if allocation_of(dep) is not None else world.queue
        decision = place_deployment(dep, model, world.pools, world.allocations, queue=queue)
        st.placement = decision.placement()
        if not decision.admitted:
            problem = ("Pending", decision.reason, decision.message)
        elif decision.preempt:  # admitted once the victims' Ray jobs have stopped and their GPUs are free
            problem = ("Pending", "Preempting", preempting_message(decision))
    app: dict[str, Any] | None = None
    if problem is None:
        try:
            app = app_config(
                dep,
                world.models,
                world.settings.chat_token_digests(dep.metadata.namespace or "default"),
                world.settings.chat_tokens_env,
            )
        except (ValueError, KeyError) as exc:
            problem = ("Failed", "InvalidSpec", str(exc))
    if problem is not None or app is None:
        phase, reason, message = problem or ("Failed", "InvalidSpec", "no application")
        if world.app is not None and phase == "Failed":
            actions.append(DeleteServe(Handle.of(dep), name))  # never keep serving what the spec or the license refuses
        st.phase = phase  # type: ignore[assignment]
        cond("False", reason, message)
        st.ready_replicas = 0 if world.app is None else st.ready_replicas
        return finish()

    st.served_models = served_model_names(dep)
    st.endpoint = f"{world.endpoint.rstrip('/')}{route_prefix(dep)}/v1" if world.endpoint else None
    deploying = world.app is None or not config_matches(app, world.app.deployed_config or {})
    if deploying:
        handle = Handle.for_deployment(dep, _placed_pool(dep, st.placement, world.pools))
        actions.append(DeployServe(handle, {"applications": [app]}))
    st.replicas, st.ready_replicas = _replica_counts(dep, world)
    status = world.app.status if world.app is not None else "NOT_STARTED"
    was_ready = old.phase in ("Ready", "Updating")
    if not deploying and status == "RUNNING":
        zero = scale_from_zero(dep, world, st.replicas, st.ready_replicas)
        st.cold_start = zero.cold_start if zero is not None else None
        if zero is not None and zero.phase != "Ready":
            st.phase = zero.phase
            cond("True", zero.phase, zero.message)
            return finish(world.settings.deploying_seconds if zero.phase == "ScalingUp" else None)
        st.phase = "Ready"
        cond("True", "Serving", f"serving {', '.join(st.served_models)} at {st.endpoint or route_prefix(dep)}")
        return finish()
    if not deploying and status in ("DEPLOY_FAILED", "UNHEALTHY"):
        st.phase = "Failed"
        reason = "DeployFailed" if status == "DEPLOY_FAILED" else "Unhealthy"
        cond("False", reason, world.app.message if world.app else status)
        return finish(world.settings.deploying_seconds)
    told = world.app.reason if world.app is not None else ""  # the backend's reason (KubeRay: UpgradeInProgress)
    told_message = world.app.message if world.app is not None and told else ""
    if was_ready and st.ready_replicas > 0:
        st.phase = "Updating"
        default = f"rolling out generation {gen}; old replicas keep serving until new ones are ready"
        cond("True", told or "Updating", told_message or default)
    else:
        st.phase = "Deploying"
        cond("False", told or "Deploying", told_message or f"deploying Serve application {name}")
    return finish(world.settings.deploying_seconds)


def _placed_pool(dep: ModelDeployment, placement: Placement | None, pools: Iterable[GPUPool]) -> GPUPool | None:
    """The GPUPool the scheduler just placed ``dep`` on (its spec's pool when it has no placement)."""
    name = placement.pool if placement is not None else dep.spec.resources.pool
    return next((p for p in pools if p.metadata.name == name), None) if name else None
