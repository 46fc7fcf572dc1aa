"""Validate objects against a generated CRD the way the Kubernetes API server does,
offline: structural defaults, strict unknown-field checks, the OpenAPI schema
(``jsonschema``), list-map key uniqueness, and the CEL ``x-kubernetes-validations``
rules (``cel-python``).

The unit tests use it to check the CRDs Corral generates, every example and many bad objects in
milliseconds, without a server; the integration tests apply the same objects to a real
kube-apiserver (``tests/support/kube.py``), whose verdict is the one that counts.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import celpy
import jsonschema

__all__ = ["CRDValidator", "iter_rules"]

_MISSING = object()


def _strict(node: Any) -> Any:
    """Copy a schema, forbidding unknown fields wherever properties are listed (strict field validation)."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


def _apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill structural defaults into ``value`` as the API server does before validation."""
    if isinstance(value, dict) and schema.get("type") == "object":
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = _apply_defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in list(value):
                value[key] = _apply_defaults(extra, value[key])
    elif isinstance(value, list) and "items" in schema:
        return [_apply_defaults(schema["items"], item) for item in value]
    return value


def iter_rules(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(path, rule)`` for every CEL rule in a schema."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule
    for name, sub in schema.get("properties", {}).items():
        yield from iter_rules(sub, f"{path}.{name}")
    if "items" in schema:
        yield from iter_rules(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from iter_rules(schema["additionalProperties"], f"{path}{{}}")


@lru_cache(maxsize=256)
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


class CRDValidator:
    """Checks objects against one CRD's ``openAPIV3Schema`` like the API server would."""

    def __init__(self, crd: dict[str, Any]) -> None:
        version = crd["spec"]["versions"][0]
        self.kind: str = crd["spec"]["names"]["kind"]
        self.schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
        self._json = jsonschema.Draft4Validator(_strict(self.schema))

    def errors(self, obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
        """Return every error for ``obj`` (an update when ``old`` is given); empty means accepted."""
        value = _apply_defaults(self.schema, copy.deepcopy(obj))
        old_value = _apply_defaults(self.schema, copy.deepcopy(old)) if old is not None else None
        found = [
            f"{'.'.join(str(p) for p in err.absolute_path) or '(root)'}: {err.message}"
            for err in sorted(self._json.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
        ]
        if found:
            return found  # the API server stops before CEL when the schema fails
        self._walk(self.schema, value, old_value, "", found)
        return found

    def _walk(self, schema: dict[str, Any], value: Any, old: Any, path: str, found: list[str]) -> None:
        for rule in schema.get("x-kubernetes-validations", []):
            uses_old = "oldSelf" in rule["rule"]
            if uses_old and old is None:
                continue  # transition rules only run on updates
            bindings = {"self": celpy.json_to_cel(value)}
            if uses_old:
                bindings["oldSelf"] = celpy.json_to_cel(old)
            if not bool(_program(rule["rule"]).evaluate(bindings)):
                found.append(f"{path or '(root)'}: {rule.get('message', rule['rule'])}")
        if isinstance(value, dict):
            props = schema.get("properties", {})
            for name, sub in props.items():
                if name in value:
                    sub_old = old.get(name) if isinstance(old, dict) else None
                    self._walk(sub, value[name], sub_old, f"{path}.{name}" if path else name, found)
        elif isinstance(value, list) and "items" in schema:
            keys = schema.get("x-kubernetes-list-map-keys")
            if schema.get("x-kubernetes-list-type") == "map" and keys:
                seen = set()
                for item in value:
                    key = tuple(item.get(k) for k in keys)
                    if key in seen:
                        found.append(f"{path}: duplicate entry with {dict(zip(keys, key, strict=True))}")
                    seen.add(key)
            for index, item in enumerate(value):
                self._walk(schema["items"], item, None, f"{path}[{index}]", found)
