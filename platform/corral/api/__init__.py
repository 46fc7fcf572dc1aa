"""Corral's API: the ``corral.dev/v1alpha1`` types, document loading and CRD generation."""

from ._loader import DocumentError, FieldProblem, load_documents, parse_document, validate_source

__all__ = ["DocumentError", "FieldProblem", "load_documents", "parse_document", "validate_source"]
