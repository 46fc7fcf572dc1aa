"""The Model reconciler: resolve the artifact, record its size and sha256, compute the license lineage."""

from __future__ import annotations

from corral import catalog
from corral.api.v1alpha1 import Model
from corral.api.v1alpha1.model import ModelArtifact, ModelLineage, ModelStatus

from ._actions import Action, MaterializeModel, RecordEvent, Result
from ._conditions import get_condition, set_condition
from ._lineage import LineageError, lineage_status, model_lineage
from ._observed import ControlSettings, ModelWorld

__all__ = ["artifact_uri", "needs_probe", "reconcile_model", "remote_code_refusal"]


def artifact_uri(model: Model, settings: ControlSettings) -> tuple[str | None, str | None, str, str]:
    """Where a Model's weights are: ``(uri, builtin, reason, problem)``.

    Catalog models built locally (``builtin``) live under the artifact root; catalog models
    published on the Hugging Face Hub are ``hf://<repo>``; URI models are their URI.

    Returns:
        The URI (None when there is none), the tiny architecture to build (or None) and,
        when the URI is None, a CamelCase reason and why.
    """
    spec = model.spec
    if spec.uri is not None:
        return spec.uri, None, "", ""
    assert spec.catalog_name is not None
    try:
        entry = catalog.get(spec.catalog_name)
    except catalog.UnknownModelError as exc:
        return None, None, "CatalogModelNotFound", str(exc)
    if entry.builtin is not None:
        return settings.catalog_model_uri(entry.name), entry.builtin, "", ""
    if not entry.weights_available or entry.hf_repo is None:
        return (
            None,
            None,
            "WeightsUnavailable",
            f"catalog model {entry.name} has no published weights; give the Model a uri",
        )
    return f"hf://{entry.hf_repo}", None, "", ""


def remote_code_refusal(model: Model, needed: bool, settings: ControlSettings) -> tuple[str, str] | None:
    """Why ``model`` may not load (a CamelCase reason and a message), or ``None`` when it may.

    Code shipped with weights runs inside training and serving processes with their
    credentials: it runs only when the Model asks for it (``spec.trustRemoteCode``) and an
    administrator allowed it in the Model's namespace (``remote_code_namespaces``).

    Args:
        model: The Model.
        needed: Its weights need their own code (``auto_map`` in config.json, or the catalog says so).
        settings: Control-plane settings (the namespaces allowed).
    """
    namespace = model.metadata.namespace or "default"
    what = f"Model {model.metadata.name}"
    if needed and not model.spec.trust_remote_code:
        return (
            "RemoteCodeRequired",
            f"{what}: its weights need the model code shipped with them (transformers trust_remote_code); "
            "set spec.trustRemoteCode: true to run it (an administrator must also allow remote code in "
            f"namespace {namespace})",
        )
    if model.spec.trust_remote_code and not settings.allows_remote_code(namespace):
        return (
            "RemoteCodeNotAllowed",
            f"{what}: spec.trustRemoteCode is set but remote code is not allowed in namespace {namespace}; "
            "an administrator allows it with CORRAL_REMOTE_CODE_NAMESPACES (corral up) or the chart's "
            "remoteCodeNamespaces",
        )
    return None


def _with_remote_code(lineage: ModelLineage, model: Model, base: Model | None) -> ModelLineage:
    """The lineage, with a condition when loading the model runs code shipped with its (base's) weights."""
    owner = model if model.spec.trust_remote_code else base if base is not None and base.status.remote_code else None
    if owner is None:
        return lineage
    note = f"Loading runs the model code shipped with the weights of Model {owner.metadata.name} (trustRemoteCode)."
    return lineage.model_copy(update={"conditions": [*lineage.conditions, note]})


def needs_probe(model: Model) -> bool:
    """True when the artifact must be (re-)read: a new generation, or not Ready yet."""
    ready = get_condition(model.status.conditions, "Ready")
    return model.status.observed_generation != model.metadata.generation or ready is None or ready.status != "True"


def reconcile_model(model: Model, world: ModelWorld) -> Result:
    """Reconcile one Model.

    ``Ready=True`` (reason ``ArtifactResolved``) once the weights are found, with their URI,
    size, sha256, architecture and the license lineage; ``Ready=False`` with
    ``CatalogModelNotFound``, ``BaseModelNotFound``, ``Materializing`` (a tiny preset being
    built), ``ArtifactNotFound``, ``RemoteCodeRequired`` or ``RemoteCodeNotAllowed``
    (:func:`remote_code_refusal`) otherwise.

    Args:
        model: The Model.
        world: The probe of its URI (None: the status is current) and its namespace's Models.

    Returns:
        The new status and actions (materialize a tiny preset; events on transitions).
    """
    status = model.status.model_copy(deep=True)
    generation = model.metadata.generation
    now = world.now
    actions: list[Action] = []
    before = get_condition(status.conditions, "Ready")

    def not_ready(reason: str, message: str) -> Result:
        conditions = set_condition(status.conditions, "Ready", "False", reason, message, generation=generation, now=now)
        new = status.model_copy(update={"conditions": conditions, "observed_generation": generation})
        if before is None or before.reason != reason:
            actions.append(RecordEvent("Warning" if reason != "Materializing" else "Normal", reason, message))
        return Result(status=new, actions=actions, requeue_after=2.0 if reason == "Materializing" else None)

    uri, builtin, reason, problem = artifact_uri(model, world.settings)
    if uri is None:
        return not_ready(reason, problem)
    try:
        lineage = model_lineage(model, world.models, {n: d for n, d in world.datasets.items()})
    except LineageError as exc:
        return not_ready(exc.reason, str(exc))
    probe = world.probe
    if probe is None:
        return Result(status=status)
    if not probe.exists:
        if builtin is not None:
            actions.append(MaterializeModel(builtin=builtin, uri=uri))
            return not_ready("Materializing", f"building catalog model {model.spec.catalog_name} at {uri}")
        return not_ready("ArtifactNotFound", probe.error or f"nothing stored at {uri}")
    entry = catalog.get(model.spec.catalog_name) if model.spec.catalog_name else None
    refusal = remote_code_refusal(model, probe.remote_code or bool(entry and entry.remote_code), world.settings)
    if refusal is not None:
        return not_ready(*refusal)
    base = world.models.get(model.spec.base_model.name) if model.spec.base_model else None
    architecture = probe.architecture or (entry.architecture if entry else None)
    if architecture is None and base is not None:
        architecture = base.status.architecture
    context = probe.context_length or (entry.context_length if entry else None)
    if context is None and base is not None:
        context = base.status.context_length
    parameters = entry.params if entry else probe.parameters
    if parameters is None and base is not None and model.spec.type == "adapter":
        parameters = base.status.parameters
    template: str = model.spec.chat_template
    if template == "auto" and entry is not None:
        template = entry.chat_template
    message = f"artifact {uri} ({probe.size_bytes} bytes); commercial use {lineage.commercial_use}"
    conditions = set_condition(
        status.conditions, "Ready", "True", "ArtifactResolved", message, generation=generation, now=now
    )
    new = ModelStatus(
        observed_generation=generation,
        conditions=conditions,
        artifact=ModelArtifact(uri=uri, size_bytes=probe.size_bytes, sha256=probe.sha256),
        architecture=architecture,
        parameters=parameters,
        context_length=context,
        chat_template=template,
        lineage=_with_remote_code(lineage_status(lineage), model, base),
        remote_code=model.spec.trust_remote_code or None,
    )
    if before is None or before.status != "True":
        actions.append(RecordEvent("Normal", "ArtifactResolved", message))
    return Result(status=new, actions=actions)
