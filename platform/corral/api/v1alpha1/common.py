"""Types shared by every Corral kind: the strict base model, object metadata,
conditions, references and the generic resource envelope.

Field names are snake_case in Python and camelCase on the wire (YAML, JSON, the
CRD schema), as the Kubernetes API conventions ask.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from corral.api._quantity import QUANTITY_PATTERN

__all__ = [
    "API_GROUP",
    "ARTIFACT_URI_PATTERN",
    "ArtifactURIString",
    "API_VERSION",
    "GROUP_VERSION",
    "CommercialUse",
    "Condition",
    "ConditionStatus",
    "CorralModel",
    "DecimalString",
    "IntendedUse",
    "LicenseSpec",
    "LocalObjectReference",
    "ObjectMeta",
    "OwnerReference",
    "Placement",
    "QuantityString",
    "Resource",
    "Toleration",
]

API_GROUP = "corral.dev"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CAMEL_CASE_REASON = r"^[A-Z][A-Za-z0-9]*$"
QUANTITY = QUANTITY_PATTERN
DECIMAL = r"^[0-9]+(\.[0-9]+)?$"


class CorralModel(BaseModel):
    """Strict base for every spec and status object: unknown fields are errors.

    Python attributes are snake_case; the wire form (YAML/JSON/CRD) is camelCase. Numbers
    must be finite (``NaN`` and ``Infinity`` are refused).
    """

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        use_enum_values=True,
    )


def _check_decimal(value: str) -> str:
    try:
        Decimal(value)
    except InvalidOperation as exc:  # pragma: no cover - the pattern already rejects these
        raise ValueError(f"{value!r} is not a decimal number") from exc
    return value


QuantityString = Annotated[
    str,
    Field(pattern=QUANTITY, max_length=32),
]
"""A Kubernetes resource quantity such as ``500m``, ``2``, ``80Gi`` (its value: ``corral.api.Quantity.parse``)."""

DecimalString = Annotated[
    str,
    Field(pattern=DECIMAL, max_length=32),
    AfterValidator(_check_decimal),
]
"""A non-negative decimal written as a string (money, hours): ``"2.50"``."""

ARTIFACT_URI_PATTERN = r"^(file:///|s3://|hf://).+$"


def _check_artifact_uri(value: str) -> str:
    if re.match(ARTIFACT_URI_PATTERN, value) is None:
        if value.startswith("file://"):
            raise ValueError(
                f"{value!r} is not an absolute file:// URI: write file:///absolute/path, or file://./relative/path "
                "in a YAML file read by corral apply/validate (resolved against that file's folder)"
            )
        raise ValueError(
            f"{value!r} is not an artifact URI (allowed: file:///absolute/path, s3://bucket/key, hf://org/name)"
        )
    return value


ArtifactURIString = Annotated[
    str,
    Field(max_length=2048, json_schema_extra={"pattern": ARTIFACT_URI_PATTERN}),
    AfterValidator(_check_artifact_uri),
]
"""An absolute artifact URI: ``file:///...``, ``s3://bucket/key`` or ``hf://org/name``."""

IntendedUse = Literal["research", "commercial"]
CommercialUse = Literal["allowed", "forbidden", "conditional"]
ConditionStatus = Literal["True", "False", "Unknown"]

Name = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)]


def repeated(values: list[str]) -> str:
    """The values that occur more than once, sorted and comma-separated ("" when all are unique)."""
    return ", ".join(sorted({v for v in values if values.count(v) > 1}))


class OwnerReference(CorralModel):
    """Points at the object that owns this one (garbage collection, lineage)."""

    api_version: str = Field(description="API version of the owner, e.g. corral.dev/v1alpha1.")
    kind: str = Field(description="Kind of the owner, e.g. FineTuneJob.")
    name: str = Field(description="Name of the owner.")
    uid: str = Field(description="UID of the owner.")
    controller: bool | None = Field(default=None, description="True when the owner is the managing controller.")
    block_owner_deletion: bool | None = Field(
        default=None, description="True when the owner cannot be deleted before this object."
    )


class ObjectMeta(CorralModel):
    """Kubernetes ObjectMeta: every field the API server sets round-trips.

    Metadata belongs to the API server, which validates it and may add fields in later
    versions, so unknown metadata fields are ignored (never an invalid object); every field
    of the ``meta/v1`` ObjectMeta reference is declared and written back unchanged. ``name``
    is required here: an object created with only ``generateName`` has its name once the
    server made it.
    """

    model_config = ConfigDict(extra="ignore")

    name: Name = Field(description="Object name: a lowercase RFC 1123 subdomain, unique per kind and namespace.")
    generate_name: Annotated[str, Field(max_length=253)] | None = Field(
        default=None, description="Prefix the API server made the name from when none was given."
    )
    namespace: Annotated[str, Field(max_length=63, pattern=DNS1123_LABEL)] | None = Field(
        default=None, description="Namespace (tenant) of the object; unset for cluster-scoped kinds."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Labels for selection and grouping.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Free-form annotations.")
    uid: str | None = Field(default=None, description="Unique id set by the store on creation.")
    resource_version: str | None = Field(default=None, description="Opaque version for optimistic concurrency.")
    generation: int | None = Field(default=None, ge=0, description="Bumped by the store on every spec change.")
    creation_timestamp: datetime | None = Field(default=None, description="When the object was created.")
    deletion_timestamp: datetime | None = Field(default=None, description="When deletion was requested.")
    deletion_grace_period_seconds: int | None = Field(
        default=None, ge=0, description="Seconds allowed for graceful termination (the server sets 0 on delete)."
    )
    finalizers: list[str] = Field(default_factory=list, description="Finalizers that must clear before deletion.")
    owner_references: list[OwnerReference] = Field(default_factory=list, description="Objects that own this one.")
    self_link: str | None = Field(default=None, description="Deprecated read-only link (old API servers set it).")
    managed_fields: list[dict[str, Any]] | None = Field(
        default=None,
        exclude=True,
        description="Server-side apply bookkeeping (read, never written back: the server keeps it on writes "
        "that leave it out).",
    )


class LocalObjectReference(CorralModel):
    """A reference to another Corral object in the same namespace."""

    name: Name = Field(description="Name of the referenced object (same namespace).")


class Condition(CorralModel):
    """A Kubernetes-style condition keyed by ``type``."""

    type: Annotated[str, Field(min_length=1, max_length=316, pattern=CAMEL_CASE_REASON)] = Field(
        description="Condition type in CamelCase, e.g. Ready, Succeeded, Admitted."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=CAMEL_CASE_REASON)] = Field(
        description="Machine-readable CamelCase reason for the last transition."
    )
    message: str = Field(default="", max_length=32768, description="Human-readable detail a person can act on.")
    last_transition_time: datetime | None = Field(
        default=None, description="When the status last changed from one value to another."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this condition was computed from."
    )


class LicenseSpec(CorralModel):
    """The license of a model or dataset that is not in Corral's catalog."""

    name: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        description="License name or SPDX id, e.g. Apache-2.0, CC-BY-SA-3.0, llama3.1."
    )
    commercial_use: CommercialUse = Field(
        default="forbidden",
        description="Whether commercial use is allowed; 'conditional' requires conditions. Unknown licenses "
        "default to forbidden.",
    )
    conditions: list[Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=list, max_length=32, description="Conditions that apply to use, one sentence each."
    )
    share_alike: bool = Field(default=False, description="True when derived works must carry the same license.")
    url: Annotated[str, Field(max_length=2048)] | None = Field(default=None, description="Where the license text is.")

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.commercialUse != 'conditional' || "
                    "(has(self.conditions) && size(self.conditions) > 0)",
                    "message": "commercialUse 'conditional' needs at least one entry in conditions",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _conditional_has_conditions(self) -> LicenseSpec:
        if self.commercial_use == "conditional" and not self.conditions:
            raise ValueError("commercialUse 'conditional' needs at least one entry in conditions")
        return self


class Toleration(CorralModel):
    """A Kubernetes toleration copied onto the pods placed on a pool."""

    key: str | None = Field(default=None, max_length=316, description="Taint key the toleration applies to.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, max_length=63, description="Taint value for the Equal operator.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; unset matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="How long a NoExecute taint is tolerated before eviction."
    )


class Placement(CorralModel):
    """Where the scheduler put a workload."""

    pool: str | None = Field(default=None, description="GPUPool the workload was placed on.")
    accelerator_type: str | None = Field(default=None, description="Accelerator type of that pool.")
    replicas: int = Field(default=0, ge=0, description="Workers (training) or replicas (serving) placed.")
    gpus_per_replica: int = Field(default=0, ge=0, description="GPUs each worker or replica holds.")
    gpus: int = Field(default=0, ge=0, description="Total GPUs held (replicas x gpusPerReplica).")
    message: str = Field(default="", description="Why it was placed there, or why it is still waiting.")


class Resource(CorralModel):
    """The envelope every Corral kind shares: apiVersion, kind, metadata, spec, status.

    Subclasses narrow ``kind``, ``spec`` and ``status`` and set the class-level CRD facts.
    """

    KIND: ClassVar[str] = ""
    PLURAL: ClassVar[str] = ""
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()
    NAMESPACED: ClassVar[bool] = True
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = ()
    SCALE: ClassVar[dict[str, str] | None] = None

    api_version: Literal["corral.dev/v1alpha1"] = Field(
        default="corral.dev/v1alpha1", description="Always corral.dev/v1alpha1."
    )
    kind: str = Field(default="", description="The kind; each subclass narrows it to its own name.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")

    @property
    def name(self) -> str:
        """The object's ``metadata.name``."""
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        """The object's ``metadata.namespace``."""
        return self.metadata.namespace

    def to_dict(self) -> dict[str, Any]:
        """Return the wire form (camelCase keys, unset optional fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
