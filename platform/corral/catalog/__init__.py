"""Corral's base-model catalog and license lineage.

The catalog (``catalog.yaml``, package data) lists base models with their size,
architecture, context length, license, commercial use and ``derived_from``
parent, plus well-known licenses and public instruction datasets. On top of it,
``lineage`` builds the license chain of a model, its training data and its
fine-tuned output, and ``check_policy``/``enforce_policy`` decide whether an
intended use (research or commercial) is allowed.

Example:
    >>> from corral import catalog
    >>> chain = catalog.lineage("alpaca-7b", output="support-bot")
    >>> catalog.check_policy(chain, "commercial").reason
    'LicenseForbidsCommercialUse'
"""

from __future__ import annotations

from collections.abc import Iterator

from ._entries import (
    Catalog,
    CatalogEntry,
    CatalogError,
    DatasetEntry,
    LicenseEntry,
    LicenseInfo,
    UnknownDatasetError,
    UnknownLicenseError,
    UnknownModelError,
    load_catalog,
)
from ._lineage import (
    DatasetSource,
    LicensePolicyError,
    Lineage,
    LineageLink,
    ModelSource,
    PolicyDecision,
    check_policy,
    enforce_policy,
    lineage,
)
from ._recipes import Choice, Recipe, choose_hyperparameters

__all__ = [
    "Catalog",
    "CatalogEntry",
    "CatalogError",
    "Choice",
    "DatasetEntry",
    "DatasetSource",
    "LicenseEntry",
    "LicenseInfo",
    "LicensePolicyError",
    "Lineage",
    "LineageLink",
    "ModelSource",
    "PolicyDecision",
    "Recipe",
    "UnknownDatasetError",
    "UnknownLicenseError",
    "UnknownModelError",
    "check_policy",
    "choose_hyperparameters",
    "enforce_policy",
    "entries",
    "get",
    "get_dataset",
    "license_info",
    "lineage",
    "load_catalog",
]


def get(name: str) -> CatalogEntry:
    """Return the model called ``name`` from Corral's catalog.

    Raises:
        UnknownModelError: No such model (a ``KeyError`` listing close matches).
    """
    return load_catalog().get(name)


def entries() -> Iterator[CatalogEntry]:
    """Iterate over every model in Corral's catalog, in file order."""
    return load_catalog().entries()


def get_dataset(name: str) -> DatasetEntry:
    """Return the public dataset called ``name`` from Corral's catalog.

    Raises:
        UnknownDatasetError: No such dataset (a ``KeyError`` listing close matches).
    """
    return load_catalog().dataset(name)


def license_info(license_id: str) -> LicenseInfo:
    """Return the terms of a well-known license by id (case-insensitive), e.g. ``CC-BY-NC-4.0``.

    Raises:
        UnknownLicenseError: The catalog does not know the license (a ``KeyError``).
    """
    return load_catalog().license_info(license_id)
