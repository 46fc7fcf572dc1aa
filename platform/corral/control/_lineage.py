"""License lineage of Model resources: Model objects -> ``corral.catalog`` sources -> status form."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from corral import catalog
from corral.api.v1alpha1 import Dataset, Model
from corral.api.v1alpha1.model import ModelLineage, ModelLineageLink
from corral.catalog import DatasetSource, LicenseInfo, Lineage, ModelSource
from corral.catalog._lineage import INHERITED_LICENSE

__all__ = [
    "DATASETS_ANNOTATION",
    "SOURCE_JOB_ANNOTATION",
    "UNKNOWN_LICENSE",
    "LineageError",
    "dataset_source",
    "job_lineage",
    "lineage_status",
    "model_lineage",
    "model_source",
    "training_datasets",
]

DATASETS_ANNOTATION = "corral.dev/training-datasets"
"""Annotation on a fine-tuned Model: comma-separated Dataset names it was trained on."""

SOURCE_JOB_ANNOTATION = "corral.dev/source-finetunejob"
"""Annotation on a fine-tuned Model: the FineTuneJob that produced it."""

UNKNOWN_LICENSE = LicenseInfo(
    license="unknown",
    name="no license declared",
    commercial_use="forbidden",
    notes="A Model given by URI without spec.license is treated as forbidding commercial use.",
)

_MAX_DEPTH = 16


class LineageError(ValueError):
    """A Model's lineage cannot be built (a missing base, a cycle, an unknown catalog name).

    Attributes:
        reason: CamelCase reason for a condition.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def model_source(model: Model, models: Mapping[str, Model], depth: int = 0) -> str | ModelSource:
    """Describe a Model for ``catalog.lineage``: a catalog name, or a ``ModelSource`` chain.

    Args:
        model: The Model.
        models: Models of its namespace by name (its bases are looked up here).
        depth: Recursion depth (cycle guard).

    Raises:
        LineageError: A base Model is missing or the chain is circular.
    """
    if depth > _MAX_DEPTH:
        raise LineageError("InvalidSpec", f"Model {model.name}: baseModel chain deeper than {_MAX_DEPTH}; circular?")
    spec = model.spec
    if spec.type == "base":
        if spec.catalog_name is not None:
            if spec.license is None:
                return spec.catalog_name
            return ModelSource(name=model.name, license=LicenseInfo.from_spec(spec.license))
        license_ = LicenseInfo.from_spec(spec.license) if spec.license is not None else UNKNOWN_LICENSE
        return ModelSource(name=model.name, license=license_)
    assert spec.base_model is not None  # the spec validator guarantees it
    base = models.get(spec.base_model.name)
    if base is None:
        raise LineageError("BaseModelNotFound", f"base Model {spec.base_model.name!r} of {model.name!r} not found")
    license_ = LicenseInfo.from_spec(spec.license) if spec.license is not None else INHERITED_LICENSE
    return ModelSource(
        name=model.name,
        license=license_,
        derived_from=model_source(base, models, depth + 1),
        relation="adapter" if spec.type == "adapter" else "finetune",
    )


def dataset_source(dataset: Dataset) -> DatasetSource:
    """A Dataset as a lineage source (its name and ``spec.license``)."""
    return DatasetSource(name=dataset.name, license=LicenseInfo.from_spec(dataset.spec.license))


def training_datasets(model: Model) -> list[str]:
    """Names of the Datasets a fine-tuned Model was trained on (from its annotation)."""
    raw = model.metadata.annotations.get(DATASETS_ANNOTATION, "")
    return [name.strip() for name in raw.split(",") if name.strip()]


def model_lineage(model: Model, models: Mapping[str, Model], datasets: Mapping[str, Dataset]) -> Lineage:
    """The license lineage of a Model: its base chain, then the datasets it was trained on.

    Raises:
        LineageError: A base is missing, a catalog name is unknown, or the chain is circular.
    """
    source = model_source(model, models)
    data = [dataset_source(datasets[name]) for name in training_datasets(model) if name in datasets]
    try:
        return catalog.lineage(source, data)
    except catalog.UnknownModelError as exc:
        raise LineageError("CatalogModelNotFound", str(exc)) from exc


def lineage_status(lineage: Lineage) -> ModelLineage:
    """The lineage in ``Model.status.lineage`` form."""
    return ModelLineage(
        links=[
            ModelLineageLink(
                kind=link.kind,
                name=link.name,
                relation=link.relation,
                license=link.license.license,
                commercial_use=link.license.commercial_use,
            )
            for link in lineage.links
        ],
        commercial_use=lineage.commercial_use,
        conditions=[*lineage.conditions, *lineage.share_alike_notes],
    )


def job_lineage(
    base: Model,
    models: Mapping[str, Model],
    datasets: Iterable[Dataset],
    output: str,
    output_relation: str,
) -> Lineage:
    """The lineage a fine-tune's output will have: base chain, the output, the datasets.

    Raises:
        LineageError: As :func:`model_lineage`.
    """
    source = model_source(base, models)
    relation: Literal["adapter", "finetune"] = "finetune" if output_relation == "finetune" else "adapter"
    try:
        return catalog.lineage(source, [dataset_source(d) for d in datasets], output=output, output_relation=relation)
    except catalog.UnknownModelError as exc:
        raise LineageError("CatalogModelNotFound", str(exc)) from exc
