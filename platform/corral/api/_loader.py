"""Read multi-document YAML (or JSON) into typed Corral objects, with errors that
name the document, the field path, the bad value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ._show import show
from .v1alpha1 import GROUP_VERSION, KINDS, Resource

__all__ = [
    "DocumentError",
    "FieldProblem",
    "load_documents",
    "parse_document",
    "resolve_relative_uris",
    "validate_source",
]

_YAML_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with one field of a document."""

    path: str
    message: str
    value: Any = None
    has_value: bool = True

    def __str__(self) -> str:
        where = self.path or "(document)"
        if not self.has_value:
            return f"{self.path}: {self.message}" if self.path else self.message
        return f"{where}: {_show(self.value)}: {self.message}"


@dataclass
class DocumentError(ValueError):
    """A document that is not a valid Corral object; lists every problem found in it."""

    source: str
    index: int
    kind: str | None = None
    name: str | None = None
    problems: list[FieldProblem] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    @property
    def where(self) -> str:
        """``file: document N (Kind/name)``, the part of the message that locates the document."""
        label = f"{self.source}: document {self.index + 1}"
        if self.kind or self.name:
            label += f" ({self.kind or '?'}/{self.name or '?'})"
        return label

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"{self.where}: {self.problems[0]}"
        lines = [f"{self.where}: {len(self.problems)} problems"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def _show(value: Any) -> str:
    """Render a bad value compactly for an error message (bounded: see :func:`corral.api._show.show`)."""
    return show(value, 80)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_at(cls: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """Follow ``loc`` (wire names) through the pydantic model tree to the model there."""
    current: Any = cls
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        by_alias = {(info.alias or name): info for name, info in current.model_fields.items()}
        info = by_alias.get(part)
        if info is None:
            return None
        current = _unwrap(info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """Find the BaseModel inside ``X | None`` or ``list[X]`` annotations."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _unwrap(arg)
        if found is not None:
            return found
    return None


def _allowed_fields(cls: type[BaseModel]) -> str:
    names = [info.alias or name for name, info in cls.model_fields.items()]
    return ", ".join(names)


def _problems(cls: type[Resource], exc: ValidationError) -> list[FieldProblem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        message = err["msg"]
        if kind == "extra_forbidden":
            parent = _model_at(cls, loc[:-1])
            allowed = _allowed_fields(parent) if parent else "see the CRD"
            problems.append(FieldProblem(_path(loc), f"unknown field (allowed here: {allowed})", err["input"]))
        elif kind == "missing":
            problems.append(FieldProblem(_path(loc), "required field is missing", has_value=False))
        elif kind == "value_error":
            problems.append(FieldProblem(_path(loc), message.removeprefix("Value error, "), has_value=False))
        else:
            problems.append(FieldProblem(_path(loc), message, err["input"]))
    return problems


def parse_document(doc: Any, *, source: str = "<input>", index: int = 0) -> Resource:
    """Validate one decoded document into its Corral kind.

    Args:
        doc: The decoded YAML/JSON mapping.
        source: File name (or ``<input>``) used in error messages.
        index: 0-based position of the document in its source.

    Returns:
        The typed object (``Model``, ``Dataset``, ``FineTuneJob``, ``ModelDeployment`` or ``GPUPool``).

    Raises:
        DocumentError: The document is not a valid Corral object; ``problems`` lists every error.
    """
    if not isinstance(doc, dict):
        raise DocumentError(source, index, problems=[FieldProblem("", "a document must be a mapping", doc)])
    kind = doc.get("kind")
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    api_version = doc.get("apiVersion")
    header: list[FieldProblem] = []
    if api_version != GROUP_VERSION:
        header.append(FieldProblem("apiVersion", f"not served by Corral (allowed: {GROUP_VERSION})", api_version))
    if not isinstance(kind, str) or kind not in KINDS:
        header.append(FieldProblem("kind", f"not a Corral kind (allowed: {', '.join(KINDS)})", kind))
    if header or not isinstance(kind, str):
        raise DocumentError(source, index, str(kind) if kind else None, name, header)
    cls = KINDS[kind]
    try:
        return cls.model_validate(doc)
    except ValidationError as exc:
        raise DocumentError(source, index, kind, name, _problems(cls, exc)) from None


def _read(source: str | Path, recursive: bool = False) -> list[tuple[str, str]]:
    """Return ``(label, text)`` pairs for a path (file or directory) or literal YAML text."""
    if isinstance(source, Path) or ("\n" not in source and Path(source).exists()):
        path = Path(source)
        if path.is_dir():
            found = path.rglob("*") if recursive else path.glob("*")
            files = sorted(p for p in found if p.suffix in _YAML_SUFFIXES and p.is_file())
            return [(str(p), p.read_text(encoding="utf-8")) for p in files]
        return [(str(path), path.read_text(encoding="utf-8"))]
    return [("<input>", source)]


_RELATIVE_FILE = ("file://./", "file://../")


def resolve_relative_uris(doc: Any, base_dir: Path) -> Any:
    """Rewrite ``spec.uri: file://./x`` (or ``file://../x``) into an absolute ``file:///`` URI.

    Relative file URIs in a YAML file mean "relative to this file's folder", as paths in a
    kustomization do; the control plane only ever sees absolute URIs.
    """
    spec = doc.get("spec") if isinstance(doc, dict) else None
    if isinstance(spec, dict):
        uri = spec.get("uri")
        if isinstance(uri, str) and uri.startswith(_RELATIVE_FILE):
            spec["uri"] = (base_dir / uri.removeprefix("file://")).resolve().as_uri()
    return doc


def _decode(label: str, text: str) -> list[Any]:
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        raise DocumentError(
            label, 0, problems=[FieldProblem("", f"YAML syntax error at {where}: {problem}", has_value=False)]
        ) from None


_KUBECTL_ONLY_KINDS = ("Namespace", "ServiceAccount")
"""Core ``v1`` kinds a directory meant for ``kubectl apply`` carries, which the embedded plane needs no object of."""


def _is_kubectl_only(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("apiVersion") == "v1" and doc.get("kind") in _KUBECTL_ONLY_KINDS


def validate_source(source: str | Path, *, recursive: bool = False) -> tuple[list[Resource], list[DocumentError]]:
    """Parse every document of ``source`` and collect (objects, errors) without stopping at the first error.

    A directory contributes its ``*.yaml``/``*.yml``/``*.json`` files (and those of its subdirectories
    when ``recursive``), sorted by path, as ``kubectl apply -f DIR [-R]`` does. Core ``v1``
    ``Namespace`` and ``ServiceAccount`` documents (which a directory meant for ``kubectl apply``
    carries) are skipped: the embedded plane's namespaces and Ray processes need no object.
    """
    objects: list[Resource] = []
    errors: list[DocumentError] = []
    for label, text in _read(source, recursive):
        try:
            docs = _decode(label, text)
        except DocumentError as exc:
            errors.append(exc)
            continue
        base_dir = Path(label).parent if label != "<input>" else Path.cwd()
        for index, doc in enumerate(docs):
            if _is_kubectl_only(doc):
                continue  # for kubectl; the embedded plane needs no Namespace or ServiceAccount object
            resolve_relative_uris(doc, base_dir)
            try:
                objects.append(parse_document(doc, source=label, index=index))
            except DocumentError as exc:
                errors.append(exc)
    return objects, errors


def load_documents(source: str | Path, *, recursive: bool = False) -> list[Resource]:
    """Read multi-document YAML into typed Corral objects.

    Args:
        source: A file path, a directory (its ``*.yaml``/``*.yml``/``*.json`` files, sorted), or YAML text.
        recursive: Also read the files in a directory's subdirectories.

    Returns:
        The objects in document order.

    Raises:
        DocumentError: The first invalid document; its ``problems`` list every error in that document.
    """
    objects, errors = validate_source(source, recursive=recursive)
    if errors:
        raise errors[0]
    return objects
