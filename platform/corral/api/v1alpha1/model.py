"""The ``Model`` kind: a base model (from the catalog or a URI) or a fine-tuned one
(a LoRA adapter on a base, or merged weights).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from .common import (
    ArtifactURIString,
    CommercialUse,
    Condition,
    CorralModel,
    LicenseSpec,
    LocalObjectReference,
    Resource,
)

__all__ = ["Model", "ModelArtifact", "ModelLineage", "ModelLineageLink", "ModelSpec", "ModelStatus"]

CHAT_TEMPLATES = Literal["auto", "llama-2", "llama-3", "vicuna", "alpaca", "chatml", "chatglm", "dolly"]


class ModelSpec(CorralModel):
    """What a Model declares: where the weights come from and what they derive from."""

    type: Literal["base", "adapter", "merged"] = Field(
        default="base",
        description="base: pretrained weights; adapter: a LoRA adapter on baseModel; merged: fine-tuned full "
        "weights derived from baseModel.",
    )
    catalog_name: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None,
        description="Name of a base model in Corral's catalog (e.g. tiny-llama, llama-3.1-8b). Exactly one of "
        "catalogName and uri is set.",
    )
    uri: ArtifactURIString | None = Field(
        default=None,
        description="Where the weights are: file:///path, s3://bucket/key or hf://org/name. Exactly one of "
        "catalogName and uri is set.",
    )
    revision: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="Revision (branch, tag or commit) for hf:// URIs."
    )
    base_model: LocalObjectReference | None = Field(
        default=None, description="The Model this one derives from; required for adapter and merged models."
    )
    license: LicenseSpec | None = Field(
        default=None,
        description="License of weights given by uri. Catalog models take the catalog's license; a URI model "
        "without one is treated as forbidding commercial use.",
    )
    chat_template: CHAT_TEMPLATES = Field(
        default="auto",
        description="Prompt format: auto uses the tokenizer's own template, or the catalog's for catalog models.",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Run the Python code shipped with the weights (transformers trust_remote_code) when training "
        "and serving: needed for model types transformers does not implement (ChatGLM, PanGu-alpha conversions). "
        "Off by default; an administrator must also allow remote code in the namespace.",
    )
    display_name: Annotated[str, Field(max_length=256)] | None = Field(
        default=None, description="Human-friendly name shown in listings."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.catalogName) != has(self.uri)",
                    "message": "exactly one of catalogName and uri must be set",
                },
                {
                    "rule": "!has(self.type) || self.type == 'base' || has(self.baseModel)",
                    "message": "adapter and merged models need baseModel",
                },
                {
                    "rule": "!has(self.type) || self.type != 'adapter' || has(self.uri)",
                    "message": "an adapter model needs uri (catalog entries are base models)",
                },
                {
                    "rule": "!has(self.revision) || (has(self.uri) && self.uri.startsWith('hf://'))",
                    "message": "revision applies only to hf:// URIs",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _check_source(self) -> ModelSpec:
        if (self.catalog_name is None) == (self.uri is None):
            raise ValueError(
                f"exactly one of catalogName and uri must be set (catalogName={self.catalog_name!r}, uri={self.uri!r})"
            )
        if self.type != "base" and self.base_model is None:
            raise ValueError(f"type {self.type!r} needs baseModel: adapter and merged models need baseModel")
        if self.type == "adapter" and self.uri is None:
            raise ValueError("an adapter model needs uri (catalog entries are base models)")
        if self.revision is not None and not (self.uri or "").startswith("hf://"):
            raise ValueError(f"revision applies only to hf:// URIs (uri={self.uri!r})")
        return self


class ModelArtifact(CorralModel):
    """The resolved weights of a Model."""

    uri: str = Field(description="Resolved artifact URI of the weights or adapter.")
    size_bytes: int = Field(default=0, ge=0, description="Total size of the artifact's files in bytes.")
    sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 over the artifact's files (sorted manifest)."
    )


class ModelLineageLink(CorralModel):
    """One link of a license lineage chain."""

    kind: Literal["model", "dataset"] = Field(description="Whether the link is a model or a dataset.")
    name: str = Field(description="Name of the catalog entry, Model or Dataset.")
    relation: Literal["base", "derived", "adapter", "finetune", "training-data"] = Field(
        description="How the link relates to its parent."
    )
    license: str = Field(description="License name of the link.")
    commercial_use: CommercialUse = Field(description="Commercial use the link's license permits.")


class ModelLineage(CorralModel):
    """The chain of bases and data a Model derives from, with the combined restriction."""

    links: list[ModelLineageLink] = Field(default_factory=list, description="Root base first, then derivatives.")
    commercial_use: CommercialUse = Field(description="The most restrictive commercial use of all links.")
    conditions: list[str] = Field(default_factory=list, description="Every condition the links impose.")


class ModelStatus(CorralModel):
    """What Corral observed about a Model."""

    observed_generation: int | None = Field(default=None, ge=0, description="Generation last reconciled.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready and other conditions.")
    artifact: ModelArtifact | None = Field(default=None, description="The resolved weights.")
    architecture: str | None = Field(default=None, description="transformers model_type, e.g. llama.")
    parameters: int | None = Field(default=None, ge=0, description="Parameter count.")
    context_length: int | None = Field(default=None, ge=0, description="Maximum context length in tokens.")
    chat_template: str | None = Field(default=None, description="The prompt format the model expects.")
    lineage: ModelLineage | None = Field(default=None, description="License lineage of the model.")
    remote_code: bool | None = Field(
        default=None,
        description="True when loading runs code shipped with the weights (trustRemoteCode, allowed in the namespace).",
    )


class Model(Resource):
    """A base or fine-tuned model that jobs train from and deployments serve."""

    KIND: ClassVar[str] = "Model"
    PLURAL: ClassVar[str] = "models"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("cmodel", "cmo")
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = (
        {"name": "Type", "type": "string", "jsonPath": ".spec.type"},
        {"name": "Catalog", "type": "string", "jsonPath": ".spec.catalogName"},
        {"name": "Base", "type": "string", "jsonPath": ".spec.baseModel.name"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Commercial", "type": "string", "jsonPath": ".status.lineage.commercialUse"},
        {"name": "URI", "type": "string", "jsonPath": ".status.artifact.uri", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )

    kind: Literal["Model"] = Field(default="Model", description="Always Model.")
    spec: ModelSpec = Field(description="Desired state of the Model.")
    status: ModelStatus = Field(default_factory=ModelStatus, description="Observed state of the Model.")
