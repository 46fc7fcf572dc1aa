"""Catalog types and loading: base models, well-known licenses and public datasets.

The catalog is a data file (``catalog.yaml``, shipped as package data) with three
lists: ``licenses`` (well-known licenses by id), ``models`` (base models, with
their own license terms inline) and ``datasets`` (public instruction datasets,
referring to a license id). The whole file is validated when it is loaded:
unknown fields, duplicate names, ``derived_from`` targets that do not exist,
``derived_from`` cycles and datasets naming an unknown license are all errors
that name the offending entry.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from ._recipes import Recipe

__all__ = [
    "Architecture",
    "Builtin",
    "Catalog",
    "CatalogEntry",
    "CatalogError",
    "ChatTemplate",
    "CommercialUse",
    "DatasetEntry",
    "LicenseEntry",
    "LicenseInfo",
    "UnknownDatasetError",
    "UnknownLicenseError",
    "UnknownModelError",
    "load_catalog",
]

CommercialUse = Literal["allowed", "forbidden", "conditional"]
"""What a license says about commercial use; ``conditional`` always comes with conditions."""

Architecture = Literal["llama", "gpt_neox", "glm", "chatglm", "qwen2", "mistral", "gemma2", "phi3", "pangu_alpha"]
"""transformers ``model_type`` values the catalog uses."""

ChatTemplate = Literal["llama-2", "llama-3", "vicuna", "alpaca", "chatml", "chatglm", "dolly", "none"]
"""Prompt formats Corral knows (see ``corral.data``); ``none`` means no Corral template fits."""

Builtin = Literal["llama", "gpt_neox", "glm"]
"""Architectures ``corral.models.tiny.build(arch, ...)`` builds locally."""

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
HF_REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$"
URL_PATTERN = r"^https://\S+$"

EntryName = Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)]
Sentence = Annotated[str, Field(min_length=1, max_length=1024)]
Url = Annotated[str, Field(max_length=2048, pattern=URL_PATTERN)]

_DEFAULT_RESOURCE = "catalog.yaml"


class CatalogError(ValueError):
    """The catalog file is unreadable or invalid; the message names the offending entry."""


class _UnknownNameError(KeyError):
    """Base for look-ups of names the catalog does not hold.

    Attributes:
        name: The name that was asked for.
        suggestions: Close matches among the known names, best first.
    """

    what = "entry"

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.suggestions = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        self.message = f"unknown {self.what} {name!r} in the Corral catalog{hint}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class UnknownModelError(_UnknownNameError):
    """A model name that is not in the catalog (a ``KeyError`` listing close matches)."""

    what = "model"


class UnknownDatasetError(_UnknownNameError):
    """A dataset name that is not in the catalog (a ``KeyError`` listing close matches)."""

    what = "dataset"


class UnknownLicenseError(_UnknownNameError):
    """A license id that is not in the catalog (a ``KeyError`` listing close matches)."""

    what = "license"


class _Strict(BaseModel):
    """Strict, immutable base: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _LicenseTerms(_Strict):
    """Fields every license description shares, with the conditional-needs-conditions rule."""

    commercial_use: CommercialUse = Field(
        description="Whether the license allows commercial use: allowed, forbidden, or conditional "
        "(allowed under the listed conditions)."
    )
    conditions: list[Sentence] = Field(
        default_factory=list,
        max_length=32,
        description="Conditions a user must meet, one human sentence each; required when commercial_use is "
        "conditional.",
    )
    share_alike: bool = Field(
        default=False, description="True when works derived from it must be shared under the same license."
    )

    @model_validator(mode="after")
    def _conditional_has_conditions(self) -> Any:
        if self.commercial_use == "conditional" and not self.conditions:
            raise ValueError("commercial_use 'conditional' needs at least one entry in conditions")
        return self


class LicenseInfo(_LicenseTerms):
    """The license terms of one lineage link (a model or a dataset).

    Build it from a catalog entry (``CatalogEntry.license_info()``), from a
    well-known license id (``Catalog.license_info("CC-BY-NC-4.0")``), from a
    Kubernetes ``LicenseSpec`` (``LicenseInfo.from_spec``) or directly.
    """

    license: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        description="License id: an SPDX id (Apache-2.0, CC-BY-SA-3.0) or a short custom id (llama3.1)."
    )
    name: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        default=None, description="Human-readable license name used in messages; the id when unset."
    )
    url: Url | None = Field(default=None, description="Where the license text is.")
    notes: Annotated[str, Field(max_length=4096)] | None = Field(
        default=None, description="Anything a reviewer should know that the other fields do not say."
    )

    @property
    def display_name(self) -> str:
        """The human-readable name, falling back to the id."""
        return self.name or self.license

    @classmethod
    def from_spec(cls, spec: Any) -> LicenseInfo:
        """Build a ``LicenseInfo`` from a ``LicenseSpec``-like object or mapping.

        Accepts anything with ``name`` (or ``license``), ``commercial_use``,
        ``conditions``, ``share_alike`` and optionally ``url``/``notes``
        attributes or keys (snake_case or camelCase), such as
        ``corral.api.v1alpha1.LicenseSpec`` or its wire form. A missing
        ``commercial_use`` reads as ``forbidden``.

        Args:
            spec: The object to read.

        Returns:
            The equivalent ``LicenseInfo``.
        """
        if isinstance(spec, LicenseInfo):
            return spec

        def read(key: str, default: Any = None) -> Any:
            head, *rest = key.split("_")
            for candidate in (key, head + "".join(part.title() for part in rest)):
                value = spec.get(candidate) if isinstance(spec, Mapping) else getattr(spec, candidate, None)
                if value is not None:
                    return value
            return default

        license_id = read("license") or read("name")
        return cls(
            license=license_id if isinstance(license_id, str) else "",
            name=read("license_name") or None,
            commercial_use=read("commercial_use", "forbidden"),
            conditions=list(read("conditions") or []),
            share_alike=bool(read("share_alike", False)),
            url=read("url"),
            notes=read("notes"),
        )


class LicenseEntry(_LicenseTerms):
    """A well-known license, referred to by id from dataset entries and Dataset resources."""

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")] = Field(
        description="SPDX id (Apache-2.0, CC-BY-NC-4.0) or Hugging Face license id (llama3.1, gemma)."
    )
    name: Annotated[str, Field(min_length=1, max_length=256)] = Field(description="Human-readable license name.")
    url: Url = Field(description="Where the license text is.")
    notes: Annotated[str, Field(max_length=4096)] | None = Field(
        default=None, description="Obligations or caveats that do not gate use (attribution, notices)."
    )

    def license_info(self) -> LicenseInfo:
        """Return the license as a lineage ``LicenseInfo``."""
        return LicenseInfo(
            license=self.id,
            name=self.name,
            url=self.url,
            commercial_use=self.commercial_use,
            conditions=list(self.conditions),
            share_alike=self.share_alike,
            notes=self.notes,
        )


class CatalogEntry(_LicenseTerms):
    """One base model in Corral's catalog: size, architecture, license and lineage."""

    name: EntryName = Field(
        description="Catalog name: lowercase letters, digits, '-' and '.', e.g. llama-7b or llama-3.1-8b."
    )
    family: Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)] = Field(
        description="Model family, e.g. llama, alpaca, qwen2.5."
    )
    params: Annotated[int, Field(gt=0)] = Field(
        description="Parameter count (exact where published per tensor, otherwise the published rounded figure)."
    )
    architecture: Architecture = Field(description="transformers model_type of the weights, e.g. llama.")
    context_length: Annotated[int, Field(gt=0)] = Field(description="Maximum context length in tokens.")
    license: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        description="License id: SPDX id where one exists (Apache-2.0, MIT), else a short custom id (llama3.1)."
    )
    license_name: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        description="Human-readable license name, used in policy messages."
    )
    license_url: Url = Field(description="Where the license text is.")
    derived_from: EntryName | None = Field(
        default=None, description="Catalog name of the model this one was fine-tuned from; null for a root."
    )
    training_data_notes: Annotated[str, Field(max_length=4096)] | None = Field(
        default=None, description="What the model was trained on, and any terms attached to that data."
    )
    hf_repo: Annotated[str, Field(max_length=256, pattern=HF_REPO_PATTERN)] | None = Field(
        default=None, description="Hugging Face repo id of the weights, or null when not published there."
    )
    chat_template: ChatTemplate = Field(description="Prompt format to use with this model.")
    builtin: Builtin | None = Field(
        default=None,
        description="For tiny presets: the architecture corral.models.tiny.build builds locally; null otherwise.",
    )
    weights_available: bool = Field(default=True, description="False when the weights were never publicly released.")
    remote_code: bool = Field(
        default=False,
        description="The weights need the modeling code shipped with them (transformers trust_remote_code): "
        "their model_type is not one transformers implements.",
    )
    notes: Annotated[str, Field(max_length=4096)] | None = Field(
        default=None, description="Caveats, uncertain facts and conservative choices made for this entry."
    )

    @model_validator(mode="after")
    def _check_entry(self) -> CatalogEntry:
        if self.derived_from == self.name:
            raise ValueError(f"derived_from {self.derived_from!r} names the entry itself")
        if self.builtin is not None and self.hf_repo is not None:
            raise ValueError(
                f"a builtin preset is built locally and has no hf_repo (builtin={self.builtin!r}, "
                f"hf_repo={self.hf_repo!r})"
            )
        return self

    def license_info(self) -> LicenseInfo:
        """Return the entry's license terms as a lineage ``LicenseInfo``."""
        return LicenseInfo(
            license=self.license,
            name=self.license_name,
            url=self.license_url,
            commercial_use=self.commercial_use,
            conditions=list(self.conditions),
            share_alike=self.share_alike,
            notes=self.notes,
        )


class DatasetEntry(_Strict):
    """A public instruction dataset whose license the catalog knows."""

    name: EntryName = Field(description="Catalog name of the dataset, e.g. databricks-dolly-15k.")
    license: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        description="Id of an entry in the catalog's licenses list."
    )
    hf_repo: Annotated[str, Field(max_length=256, pattern=HF_REPO_PATTERN)] | None = Field(
        default=None, description="Hugging Face dataset repo id, or null."
    )
    conditions: list[Sentence] = Field(
        default_factory=list, max_length=32, description="Conditions beyond the license's own, one sentence each."
    )
    notes: Annotated[str, Field(max_length=4096)] | None = Field(
        default=None, description="Provenance and caveats, e.g. data generated from another model's outputs."
    )


class Catalog(_Strict):
    """The validated catalog: licenses, models and datasets, with name look-ups."""

    licenses: list[LicenseEntry] = Field(default_factory=list, description="Well-known licenses by id.")
    models: list[CatalogEntry] = Field(description="Base models.")
    datasets: list[DatasetEntry] = Field(default_factory=list, description="Public datasets.")
    recipes: list[Recipe] = Field(
        default_factory=list, description="Fine-tuning recipes by model family (default: any other family)."
    )

    _models: dict[str, CatalogEntry] = PrivateAttr(default_factory=dict)
    _datasets: dict[str, DatasetEntry] = PrivateAttr(default_factory=dict)
    _licenses: dict[str, LicenseEntry] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check_references(self) -> Catalog:
        _no_duplicates("license", [lic.id.lower() for lic in self.licenses])
        _no_duplicates("model", [m.name for m in self.models])
        _no_duplicates("dataset", [d.name for d in self.datasets])
        _no_duplicates("recipe", [r.family for r in self.recipes])
        names = {m.name for m in self.models}
        for model in self.models:
            if model.derived_from is not None and model.derived_from not in names:
                raise ValueError(
                    f"model {model.name!r}: derived_from {model.derived_from!r} is not a model in the catalog"
                )
        parents = {m.name: m.derived_from for m in self.models}
        for model in self.models:
            seen = [model.name]
            parent = parents[model.name]
            while parent is not None:
                if parent in seen:
                    cycle = " -> ".join([*seen, parent])
                    raise ValueError(f"model {model.name!r}: derived_from cycle {cycle}")
                seen.append(parent)
                parent = parents[parent]
        license_ids = {lic.id.lower() for lic in self.licenses}
        for dataset in self.datasets:
            if dataset.license.lower() not in license_ids:
                raise ValueError(
                    f"dataset {dataset.name!r}: license {dataset.license!r} is not in the catalog's licenses"
                )
        return self

    def model_post_init(self, context: Any, /) -> None:
        """Build the name indexes."""
        self._models = {m.name: m for m in self.models}
        self._datasets = {d.name: d for d in self.datasets}
        self._licenses = {lic.id.lower(): lic for lic in self.licenses}

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __len__(self) -> int:
        return len(self.models)

    def names(self) -> list[str]:
        """Return every model name, in file order."""
        return list(self._models)

    def entries(self) -> Iterator[CatalogEntry]:
        """Iterate over the model entries, in file order."""
        return iter(self.models)

    def get(self, name: str) -> CatalogEntry:
        """Return the model entry called ``name``.

        Args:
            name: Catalog model name.

        Returns:
            The entry.

        Raises:
            UnknownModelError: No such model; the error lists close matches.
        """
        try:
            return self._models[name]
        except KeyError:
            raise UnknownModelError(name, list(self._models)) from None

    def chain(self, name: str) -> list[CatalogEntry]:
        """Return the ``derived_from`` chain of ``name``, root first, ``name`` last.

        Args:
            name: Catalog model name.

        Returns:
            The entries from the root base model down to ``name``.

        Raises:
            UnknownModelError: No such model.
        """
        chain = [self.get(name)]
        while chain[-1].derived_from is not None:
            chain.append(self._models[chain[-1].derived_from])
        return chain[::-1]

    def recipe(self, family: str | None) -> Recipe:
        """The fine-tuning recipe of ``family``, else the ``default`` one.

        Raises:
            CatalogError: Neither the family nor ``default`` has a recipe.
        """
        by_family = {r.family: r for r in self.recipes}
        found = by_family.get(family or "default") or by_family.get("default")
        if found is None:
            raise CatalogError(f"no fine-tuning recipe for family {family!r} and no default recipe")
        return found

    def recipe_for_model(self, name: str | None) -> Recipe:
        """The recipe of catalog model ``name`` (its family's), or the default for any other model."""
        family = self._models[name].family if name in self._models else None
        return self.recipe(family)

    def dataset(self, name: str) -> DatasetEntry:
        """Return the dataset entry called ``name``.

        Raises:
            UnknownDatasetError: No such dataset; the error lists close matches.
        """
        try:
            return self._datasets[name]
        except KeyError:
            raise UnknownDatasetError(name, list(self._datasets)) from None

    def license(self, license_id: str) -> LicenseEntry:
        """Return the license entry with id ``license_id`` (case-insensitive).

        Raises:
            UnknownLicenseError: No such license; the error lists close matches.
        """
        try:
            return self._licenses[license_id.lower()]
        except KeyError:
            raise UnknownLicenseError(license_id, [lic.id for lic in self.licenses]) from None

    def license_info(self, license_id: str) -> LicenseInfo:
        """Return the well-known license ``license_id`` as a ``LicenseInfo``.

        Raises:
            UnknownLicenseError: No such license.
        """
        return self.license(license_id).license_info()

    def dataset_license(self, name: str) -> LicenseInfo:
        """Return the license terms of catalog dataset ``name``, with its extra conditions and notes.

        Raises:
            UnknownDatasetError: No such dataset.
        """
        dataset = self.dataset(name)
        info = self.license_info(dataset.license)
        conditions = [*info.conditions, *dataset.conditions]
        commercial_use = info.commercial_use
        if commercial_use == "allowed" and dataset.conditions:
            commercial_use = "conditional"
        notes = " ".join(n for n in (dataset.notes, info.notes) if n) or None
        return info.model_copy(update={"conditions": conditions, "commercial_use": commercial_use, "notes": notes})


def _no_duplicates(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate {what} {name!r}: each {what} must appear once")
        seen.add(name)


def _describe_location(raw: Any, loc: tuple[int | str, ...]) -> str:
    """Turn a pydantic error location into 'models[3] (llama-7b).commercial_use'."""
    parts: list[str] = []
    node = raw
    for i, key in enumerate(loc):
        if isinstance(key, int):
            label = f"[{key}]"
            if isinstance(node, list) and 0 <= key < len(node):
                node = node[key]
                name = node.get("name", node.get("id")) if isinstance(node, dict) else None
                if name is not None:
                    label += f" ({name})"
            else:
                node = None
            parts.append(label)
        else:
            parts.append(("." if i else "") + key)
            node = node.get(key) if isinstance(node, dict) else None
    return "".join(parts) or "catalog"


def parse_catalog(text: str, source: str = "<string>") -> Catalog:
    """Parse and validate catalog YAML.

    Args:
        text: The YAML document.
        source: Where it came from, for error messages.

    Returns:
        The validated catalog.

    Raises:
        CatalogError: The YAML is malformed or the catalog is invalid; the
            message names the file and the offending entry.
    """
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise CatalogError(f"{source}: expected a mapping with 'models' (and 'licenses', 'datasets')")
    try:
        return Catalog.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            where = _describe_location(raw, tuple(err["loc"]))
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        raise CatalogError(f"{source}: invalid catalog: " + "; ".join(problems)) from exc


@functools.cache
def _default_catalog() -> Catalog:
    text = resources.files(__package__ or "corral.catalog").joinpath(_DEFAULT_RESOURCE).read_text(encoding="utf-8")
    return parse_catalog(text, source=f"corral.catalog/{_DEFAULT_RESOURCE}")


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Load and validate a catalog.

    Args:
        path: A catalog YAML file; ``None`` loads Corral's own catalog (package
            data, read once and cached).

    Returns:
        The validated catalog.

    Raises:
        CatalogError: The file is unreadable or invalid; the message names the
            offending entry.
    """
    if path is None:
        return _default_catalog()
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise CatalogError(f"{os.fspath(path)}: cannot read the catalog: {exc}") from exc
    return parse_catalog(text, source=os.fspath(path))
