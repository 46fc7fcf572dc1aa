"""License lineage and the commercial-use policy.

A lineage is the chain of models a model derives from (root base model first,
then each derivative, then optionally the fine-tuned output) followed by the
datasets it was trained on. Each link carries its license terms; the lineage
combines them into the most restrictive commercial-use value
(forbidden > conditional > allowed), every condition (prefixed with the link
that imposes it) and share-alike notes.

``check_policy`` turns a lineage and an intended use into a decision a person can
act on; ``enforce_policy`` raises ``LicensePolicyError`` when it refuses.

Models outside the catalog (a ``Model`` resource pointing at a URI, an adapter
on a catalog model) are described with ``ModelSource``; datasets with
``DatasetSource``. Both take a ``LicenseInfo``, which ``LicenseInfo.from_spec``
builds from a resource's ``LicenseSpec``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from ._entries import Catalog, CommercialUse, LicenseInfo, _Strict, load_catalog

__all__ = [
    "DatasetSource",
    "IntendedUse",
    "LicensePolicyError",
    "Lineage",
    "LineageLink",
    "ModelSource",
    "PolicyDecision",
    "Relation",
    "check_policy",
    "enforce_policy",
    "lineage",
]

Relation = Literal["base", "derived", "adapter", "finetune", "training-data"]
"""How a link relates to the link before it."""

ModelRelation = Literal["base", "derived", "adapter", "finetune"]
OutputRelation = Literal["adapter", "finetune"]
IntendedUse = Literal["research", "commercial"]

LinkName = Annotated[str, Field(min_length=1, max_length=253)]

_RESTRICTIVENESS: dict[str, int] = {"allowed": 0, "conditional": 1, "forbidden": 2}
_MAX_DEPTH = 64

INHERITED_LICENSE = LicenseInfo(
    license="inherited",
    name="inherits the terms of its lineage",
    commercial_use="allowed",
    notes="A Corral fine-tune adds no terms of its own; the links it derives from decide.",
)
"""License of a fine-tuned output that declares none: it adds no terms of its own."""


class LineageLink(_Strict):
    """One model or dataset in a lineage, with its license terms."""

    kind: Literal["model", "dataset"] = Field(description="Whether the link is a model or a dataset.")
    name: LinkName = Field(description="Catalog name, Model name or Dataset name.")
    license: LicenseInfo = Field(description="License terms of this link.")
    relation: Relation = Field(
        description="base: the root model; derived: a model fine-tuned from the previous one; adapter/finetune: "
        "the fine-tuned output; training-data: a dataset."
    )
    derived_from: LinkName | None = Field(
        default=None, description="Name of the model link this one derives from; null for roots and datasets."
    )

    @model_validator(mode="after")
    def _check_kind(self) -> LineageLink:
        if (self.kind == "dataset") != (self.relation == "training-data"):
            raise ValueError(
                f"link {self.name!r}: kind {self.kind!r} does not go with relation {self.relation!r} "
                "(datasets, and only datasets, are training-data)"
            )
        if self.relation == "base" and self.derived_from is not None:
            raise ValueError(
                f"link {self.name!r}: a base link derives from nothing (derived_from={self.derived_from!r})"
            )
        return self

    def describe(self) -> str:
        """Return 'name (derived from parent, license: License name)' for messages."""
        prefix = "dataset " if self.kind == "dataset" else ""
        parent = f"derived from {self.derived_from}, " if self.derived_from else ""
        return f"{prefix}{self.name} ({parent}license: {self.license.display_name})"


class ModelSource(_Strict):
    """A model that is not (only) a catalog entry: a URI model, an adapter, a fine-tune.

    It maps onto a ``Model`` resource: ``name`` is the resource name,
    ``license`` its ``spec.license`` (``LicenseInfo.from_spec``), ``derived_from``
    its base model (a catalog name, or the base Model described the same way)
    and ``relation`` its ``spec.type`` (base, adapter, or merged -> finetune).
    """

    name: LinkName = Field(description="Name of the model.")
    license: LicenseInfo = Field(description="License terms of the model's own weights.")
    derived_from: LinkName | ModelSource | None = Field(
        default=None, description="The model it derives from: a catalog name, another ModelSource, or null."
    )
    relation: ModelRelation | None = Field(
        default=None, description="How it relates to derived_from; default base without a parent, derived with one."
    )

    @model_validator(mode="after")
    def _check_relation(self) -> ModelSource:
        if self.relation == "base" and self.derived_from is not None:
            raise ValueError(f"model {self.name!r}: relation 'base' cannot have derived_from")
        if self.relation not in (None, "base") and self.derived_from is None:
            raise ValueError(f"model {self.name!r}: relation {self.relation!r} needs derived_from")
        return self


class DatasetSource(_Strict):
    """A dataset in a lineage: its name and license terms."""

    name: LinkName = Field(description="Name of the dataset (catalog name or Dataset resource name).")
    license: LicenseInfo = Field(description="License terms of the data.")


class Lineage(_Strict):
    """A model's license lineage: its links and their combined restriction."""

    links: list[LineageLink] = Field(
        min_length=1, description="Model links from the root base model down, then dataset links."
    )
    commercial_use: CommercialUse = Field(
        description="The most restrictive commercial use of all links: forbidden > conditional > allowed."
    )
    conditions: list[str] = Field(
        default_factory=list,
        description="Every condition of every link, deduplicated, each prefixed with the link that imposes it.",
    )
    share_alike: bool = Field(default=False, description="True when any link's license is share-alike.")
    share_alike_notes: list[str] = Field(
        default_factory=list, description="One note per share-alike link, naming it and its license."
    )

    @classmethod
    def from_links(cls, links: Sequence[LineageLink]) -> Lineage:
        """Combine links into a lineage.

        Args:
            links: Model links root first, then dataset links.

        Returns:
            The lineage with the combined commercial use, conditions and share-alike notes.
        """
        commercial_use: CommercialUse = "allowed"
        conditions: list[str] = []
        seen: set[str] = set()
        notes: list[str] = []
        for link in links:
            if _RESTRICTIVENESS[link.license.commercial_use] > _RESTRICTIVENESS[commercial_use]:
                commercial_use = link.license.commercial_use
            for condition in link.license.conditions:
                if condition not in seen:
                    seen.add(condition)
                    conditions.append(f"{link.name} ({link.license.display_name}): {condition}")
            if link.license.share_alike:
                notes.append(
                    f"{link.name} is under {link.license.display_name}, a share-alike license: works derived "
                    "from it must be shared under the same license; review whether the fine-tuned weights "
                    "or their outputs are such a work."
                )
        return cls(
            links=list(links),
            commercial_use=commercial_use,
            conditions=conditions,
            share_alike=bool(notes),
            share_alike_notes=notes,
        )

    @property
    def models(self) -> list[LineageLink]:
        """The model links, root first."""
        return [link for link in self.links if link.kind == "model"]

    @property
    def datasets(self) -> list[LineageLink]:
        """The dataset links."""
        return [link for link in self.links if link.kind == "dataset"]

    @property
    def root(self) -> LineageLink:
        """The root base model link."""
        return self.models[0]

    def forbidding(self) -> list[LineageLink]:
        """Links that forbid commercial use: models nearest the output first, then datasets."""
        models = [link for link in reversed(self.models) if link.license.commercial_use == "forbidden"]
        data = [link for link in self.datasets if link.license.commercial_use == "forbidden"]
        return models + data


class PolicyDecision(_Strict):
    """Whether an intended use is allowed by a lineage, and why."""

    intended_use: IntendedUse = Field(description="The use that was checked: research or commercial.")
    allowed: bool = Field(description="Whether the use may go ahead.")
    reason: Annotated[str, Field(pattern=r"^[A-Z][A-Za-z0-9]*$")] = Field(
        description="CamelCase reason: Allowed, LicenseConditions, ResearchOnly or LicenseForbidsCommercialUse."
    )
    message: str = Field(description="A sentence a person can act on, naming the links and licenses involved.")
    conditions: list[str] = Field(
        default_factory=list, description="Conditions (and share-alike notes) the user must honour."
    )
    offending: list[str] = Field(default_factory=list, description="Names of the links that forbid commercial use.")


class LicensePolicyError(ValueError):
    """The lineage's licenses do not allow the intended use.

    Attributes:
        decision: The refusing ``PolicyDecision``.
    """

    def __init__(self, decision: PolicyDecision) -> None:
        self.decision = decision
        super().__init__(decision.message)


ModelLike = str | ModelSource | LineageLink
DatasetLike = DatasetSource | LineageLink | str | tuple[str, Any] | Mapping[str, Any]


def _catalog_links(name: str, catalog: Catalog) -> list[LineageLink]:
    links: list[LineageLink] = []
    for entry in catalog.chain(name):
        links.append(
            LineageLink(
                kind="model",
                name=entry.name,
                license=entry.license_info(),
                relation="base" if entry.derived_from is None else "derived",
                derived_from=entry.derived_from,
            )
        )
    return links


def _model_links(model: ModelLike, catalog: Catalog, depth: int = 0) -> list[LineageLink]:
    if depth > _MAX_DEPTH:
        raise ValueError(f"lineage deeper than {_MAX_DEPTH} models at {model!r}; is derived_from circular?")
    if isinstance(model, str):
        return _catalog_links(model, catalog)
    if isinstance(model, LineageLink):
        if model.kind != "model":
            raise ValueError(f"link {model.name!r} is a dataset, not a model")
        relation: ModelRelation = "derived" if model.relation == "training-data" else model.relation
        model = ModelSource(
            name=model.name,
            license=model.license,
            derived_from=model.derived_from,
            relation=relation if model.derived_from is not None else "base",
        )
    parents = _model_links(model.derived_from, catalog, depth + 1) if model.derived_from is not None else []
    own = LineageLink(
        kind="model",
        name=model.name,
        license=model.license,
        relation=model.relation or ("derived" if parents else "base"),
        derived_from=parents[-1].name if parents else None,
    )
    return [*parents, own]


def _dataset_link(dataset: DatasetLike, catalog: Catalog) -> LineageLink:
    if isinstance(dataset, LineageLink):
        if dataset.kind != "dataset":
            raise ValueError(f"link {dataset.name!r} is a model, not a dataset")
        return dataset
    if isinstance(dataset, str):
        source = DatasetSource(name=dataset, license=catalog.dataset_license(dataset))
    elif isinstance(dataset, tuple):
        name, license_ = dataset
        source = DatasetSource(name=name, license=LicenseInfo.from_spec(license_))
    elif isinstance(dataset, Mapping):
        source = DatasetSource(name=dataset["name"], license=LicenseInfo.from_spec(dataset["license"]))
    elif isinstance(dataset, DatasetSource):
        source = dataset
    else:
        raise TypeError(f"cannot read a dataset from {type(dataset).__name__}: {dataset!r}")
    return LineageLink(kind="dataset", name=source.name, license=source.license, relation="training-data")


def lineage(
    model: ModelLike,
    datasets: Iterable[DatasetLike] = (),
    output: str | ModelSource | None = None,
    *,
    output_relation: OutputRelation = "adapter",
    catalog: Catalog | None = None,
) -> Lineage:
    """Build the license lineage of a model, its training data and its fine-tuned output.

    Args:
        model: The model trained or served: a catalog name (its ``derived_from``
            chain is walked to the root), a ``ModelSource`` for a model outside
            the catalog, or a model ``LineageLink``.
        datasets: Training data: ``DatasetSource`` objects, catalog dataset
            names, ``(name, license)`` pairs (``license`` a ``LicenseInfo`` or a
            ``LicenseSpec``-like object), or mappings with ``name`` and ``license``.
        output: The fine-tuned result, appended as the last model link: a name
            (it then inherits the lineage's terms) or a ``ModelSource`` with its
            own license (its ``derived_from`` is ignored: it derives from ``model``).
        output_relation: ``adapter`` (LoRA adapter) or ``finetune`` (full or merged weights).
        catalog: The catalog to resolve names in; Corral's own by default.

    Returns:
        The lineage: model links root first, the output, then dataset links.

    Raises:
        UnknownModelError: A model name is not in the catalog.
        UnknownDatasetError: A dataset name is not in the catalog.
    """
    catalog = catalog if catalog is not None else load_catalog()
    links = _model_links(model, catalog)
    if output is not None:
        name, license_ = (output, INHERITED_LICENSE) if isinstance(output, str) else (output.name, output.license)
        links.append(
            LineageLink(
                kind="model", name=name, license=license_, relation=output_relation, derived_from=links[-1].name
            )
        )
    seen: set[str] = set()
    for dataset in datasets:
        link = _dataset_link(dataset, catalog)
        if link.name not in seen:
            seen.add(link.name)
            links.append(link)
    return Lineage.from_links(links)


def check_policy(lineage: Lineage, intended_use: IntendedUse) -> PolicyDecision:
    """Decide whether a lineage's licenses allow an intended use.

    Commercial use is refused when any link forbids it, and allowed with the
    conditions reported when a link is conditional. Research use is always
    allowed here (no catalog license forbids research), with the conditions
    reported and a note when commercial use would be refused.

    Args:
        lineage: The lineage to check.
        intended_use: ``research`` or ``commercial``.

    Returns:
        The decision, with a CamelCase reason and a message naming the links and licenses.

    Raises:
        ValueError: ``intended_use`` is neither research nor commercial.
    """
    if intended_use not in ("research", "commercial"):
        raise ValueError(f"intended_use must be 'research' or 'commercial', not {intended_use!r}")
    forbidding = lineage.forbidding()
    obligations = [*lineage.conditions, *lineage.share_alike_notes]
    refusal = "; ".join(f"{link.describe()} forbids commercial use" for link in forbidding)
    offending = [link.name for link in forbidding]
    if intended_use == "commercial" and forbidding:
        return PolicyDecision(
            intended_use=intended_use,
            allowed=False,
            reason="LicenseForbidsCommercialUse",
            message=f"Commercial use refused: {refusal}. Choose a base model and datasets whose licenses allow "
            "commercial use, or set the intended use to research.",
            conditions=obligations,
            offending=offending,
        )
    if forbidding:
        return PolicyDecision(
            intended_use=intended_use,
            allowed=True,
            reason="ResearchOnly",
            message=f"Research use allowed; the result must not be used commercially: {refusal}.",
            conditions=obligations,
            offending=offending,
        )
    if obligations:
        count = len(obligations)
        return PolicyDecision(
            intended_use=intended_use,
            allowed=True,
            reason="LicenseConditions",
            message=f"{intended_use.capitalize()} use allowed provided you meet {count} license "
            f"condition{'s' if count != 1 else ''}: " + " ".join(_sentence(o) for o in obligations),
            conditions=obligations,
        )
    return PolicyDecision(
        intended_use=intended_use,
        allowed=True,
        reason="Allowed",
        message=f"{intended_use.capitalize()} use allowed: every license in the lineage ("
        + ", ".join(f"{link.name}: {link.license.display_name}" for link in lineage.links)
        + ") allows it.",
    )


def enforce_policy(lineage: Lineage, intended_use: IntendedUse) -> PolicyDecision:
    """Check the policy and raise when it refuses.

    Args:
        lineage: The lineage to check.
        intended_use: ``research`` or ``commercial``.

    Returns:
        The (allowing) decision, whose conditions the caller should surface.

    Raises:
        LicensePolicyError: The licenses do not allow the intended use; the
            message names the offending links and their licenses.
    """
    decision = check_policy(lineage, intended_use)
    if not decision.allowed:
        raise LicensePolicyError(decision)
    return decision


def _sentence(text: str) -> str:
    return text if text.rstrip("\"')").endswith((".", "!", "?")) else text + "."
