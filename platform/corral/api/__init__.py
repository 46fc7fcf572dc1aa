"""Corral's API: the ``corral.dev/v1alpha1`` types, document loading and CRD generation."""

from ._loader import (
    DocumentError,
    FieldProblem,
    load_documents,
    parse_document,
    resolve_relative_uris,
    validate_source,
)
from ._names import kind_for_name
from ._quantity import Quantity, parse_quantity

__all__ = [
    "DocumentError",
    "FieldProblem",
    "Quantity",
    "kind_for_name",
    "load_documents",
    "parse_document",
    "parse_quantity",
    "resolve_relative_uris",
    "validate_source",
]
