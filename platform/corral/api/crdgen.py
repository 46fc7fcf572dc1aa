"""Generate structural ``apiextensions.k8s.io/v1`` CRDs from the pydantic API types.

Pydantic's JSON schema is rewritten into the subset the Kubernetes API server
accepts (a *structural* schema): every ``$ref`` inlined, ``anyOf [X, null]``
collapsed to ``X``, a ``type`` on every node, OpenAPI v3.0 exclusive bounds, no
``additionalProperties: false``, titles dropped, and the CEL rules that the
types declare next to their pydantic validators kept as
``x-kubernetes-validations``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from .v1alpha1 import API_GROUP, API_VERSION, KINDS, Resource

__all__ = ["CRDDiff", "check_crds", "crd_filename", "crd_for", "openapi_schema", "render_crds", "write_crds"]

_DROP_KEYS = {"title", "additionalProperties", "$defs", "discriminator"}


class SchemaError(ValueError):
    """A pydantic schema construct that has no structural CRD equivalent."""


def _inline(node: Any, defs: dict[str, Any], path: str) -> Any:
    """Return ``node`` with every ``$ref`` replaced by a copy of its definition."""
    if isinstance(node, list):
        return [_inline(item, defs, f"{path}[{i}]") for i, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        target = copy.deepcopy(defs[name])
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        target.update(siblings)  # a field's own description wins over the class docstring
        return _inline(target, defs, path)
    return {key: _inline(value, defs, f"{path}.{key}") for key, value in node.items()}


def _collapse_optional(node: dict[str, Any], path: str) -> dict[str, Any]:
    """Turn ``anyOf: [X, {type: null}]`` into X, keeping the outer keywords."""
    options = node.get("anyOf")
    if options is None:
        return node
    non_null = [opt for opt in options if opt.get("type") != "null"]
    if len(non_null) != 1:
        raise SchemaError(f"{path}: a union of {len(non_null)} types cannot be a structural schema")
    merged = {k: v for k, v in node.items() if k != "anyOf"}
    inner = dict(non_null[0])
    inner.update(merged)
    if inner.get("default", ...) is None:
        del inner["default"]
    return inner


def _structural(node: Any, path: str) -> Any:
    """Rewrite an inlined JSON schema node into a structural OpenAPI v3.0 schema node."""
    if not isinstance(node, dict):
        return node
    node = _collapse_optional(dict(node), path)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, f"{path}.{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value, f"{path}[]")
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        else:
            out[key] = value
    additional = node.get("additionalProperties")
    if isinstance(additional, dict):
        out["additionalProperties"] = _structural(additional, f"{path}{{}}")
    if "type" not in out:
        if "enum" in out:
            out["type"] = "string"
        else:
            raise SchemaError(f"{path}: schema node has no type: {sorted(node)}")
    if out["type"] == "object" and "properties" in out and "required" in out:
        out["required"] = sorted(out["required"])
    if out["type"] == "integer" and "default" in out:
        out["default"] = int(out["default"])
    return _ordered(out)


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """Order a schema node's keys for reading: description, type, the rest sorted, then properties."""
    head = [k for k in ("description", "type") if k in node]
    tail = [k for k in ("properties", "items", "additionalProperties", "x-kubernetes-validations") if k in node]
    middle = sorted(k for k in node if k not in head and k not in tail)
    return {k: node[k] for k in head + middle + tail}


def _add_list_map_keys(node: Any) -> Any:
    """Mark ``conditions`` lists as maps keyed by ``type`` (the Kubernetes convention)."""
    if isinstance(node, dict):
        props = node.get("properties", {})
        for name, sub in props.items():
            item_props = sub.get("items", {}).get("properties", {})
            if name == "conditions" and sub.get("type") == "array" and "type" in item_props:
                sub["x-kubernetes-list-type"] = "map"
                sub["x-kubernetes-list-map-keys"] = ["type"]
            _add_list_map_keys(sub)
        if "items" in node:
            _add_list_map_keys(node["items"])
    return node


def openapi_schema(cls: type[Resource]) -> dict[str, Any]:
    """Return the structural ``openAPIV3Schema`` of one kind.

    Args:
        cls: A Corral resource class such as ``FineTuneJob``.

    Returns:
        The schema dict for ``spec.versions[].schema.openAPIV3Schema``.
    """
    raw = cls.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    props = raw["properties"]
    spec = _structural(_inline(props["spec"], defs, "spec"), "spec")
    status = _structural(_inline(props["status"], defs, "status"), "status")
    schema: dict[str, Any] = {
        "type": "object",
        "description": (cls.__doc__ or cls.KIND).strip(),
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object: corral.dev/v1alpha1."},
            "kind": {"type": "string", "description": f"Kind of this object: {cls.KIND}."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
    }
    _add_list_map_keys(schema)
    return schema


def crd_for(cls: type[Resource]) -> dict[str, Any]:
    """Return the CustomResourceDefinition object for one kind."""
    singular = cls.KIND.lower()
    version: dict[str, Any] = {
        "name": API_VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": openapi_schema(cls)},
        "subresources": {"status": {}},
        "additionalPrinterColumns": [dict(col) for col in cls.PRINTER_COLUMNS],
    }
    if cls.SCALE:
        version["subresources"]["scale"] = dict(cls.SCALE)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{cls.PLURAL}.{API_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "corral"},
        },
        "spec": {
            "group": API_GROUP,
            "names": {
                "kind": cls.KIND,
                "listKind": f"{cls.KIND}List",
                "plural": cls.PLURAL,
                "singular": singular,
                "shortNames": list(cls.SHORT_NAMES),
                "categories": ["corral"],
            },
            "scope": "Namespaced" if cls.NAMESPACED else "Cluster",
            "versions": [version],
        },
    }


def crd_filename(cls: type[Resource]) -> str:
    """File name of a kind's CRD, kubebuilder style: ``corral.dev_<plural>.yaml``."""
    return f"{API_GROUP}_{cls.PLURAL}.yaml"


def render_crds() -> dict[str, str]:
    """Render every kind's CRD as YAML text, keyed by file name."""
    header = "# Generated by `corral crds` from corral.api.v1alpha1. Do not edit.\n"
    return {
        crd_filename(cls): header + yaml.safe_dump(crd_for(cls), sort_keys=False, width=120) for cls in KINDS.values()
    }


def write_crds(out_dir: str | Path) -> list[Path]:
    """Write every CRD into ``out_dir`` and return the written paths."""
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_crds().items():
        path = target / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


class CRDDiff(list[str]):
    """The files that differ between the committed CRDs and the API types."""


def check_crds(out_dir: str | Path) -> CRDDiff:
    """Compare ``out_dir`` with freshly rendered CRDs.

    Returns:
        One line per file that is missing, stale or unexpected; empty when current.
    """
    target = Path(out_dir)
    expected = render_crds()
    diff = CRDDiff()
    for name, text in expected.items():
        path = target / name
        if not path.exists():
            diff.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != text:
            diff.append(f"{path}: differs from the API types")
    if target.is_dir():
        for path in sorted(target.glob(f"{API_GROUP}_*.yaml")):
            if path.name not in expected:
                diff.append(f"{path}: no such kind in the API types")
    return diff
