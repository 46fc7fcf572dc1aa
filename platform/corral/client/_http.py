"""HTTP client for the control API's Kubernetes-shaped resource endpoints."""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx

from corral.api import kind_for_name, load_documents
from corral.api.v1alpha1 import GROUP_VERSION, Resource

from ._context import Context, load_context

__all__ = ["APIStatusError", "ApplyResult", "CorralClient"]

ApplyResult = Literal["created", "configured", "unchanged"]


class APIStatusError(RuntimeError):
    """The control API answered with a Kubernetes ``Status`` failure."""

    def __init__(self, code: int, reason: str, message: str, causes: list[dict[str, Any]] | None = None) -> None:
        self.code = code
        self.reason = reason
        self.causes = causes or []
        detail = "".join(f"\n  - {c.get('field', '')}: {c.get('message', '')}" for c in self.causes)
        super().__init__(f"{reason} ({code}): {message}{detail}")


class CorralClient:
    """Talks to one control API with one bearer token."""

    def __init__(self, server: str, token: str | None = None, namespace: str = "default", timeout: float = 30.0):
        """Create a client.

        Args:
            server: Base URL of the control API, e.g. ``http://127.0.0.1:8080``.
            token: Bearer token (never logged).
            namespace: Namespace used when an object or call names none.
            timeout: Seconds per request.
        """
        self.server = server.rstrip("/")
        self.namespace = namespace
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._auth_headers = dict(headers)
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    def auth_headers(self) -> dict[str, str]:
        """The ``Authorization`` header this client sends (chat endpoints accept the same token)."""
        return dict(self._auth_headers)

    def __repr__(self) -> str:
        return f"CorralClient(server={self.server!r}, namespace={self.namespace!r})"

    @classmethod
    def from_context(cls, context: Context | None = None) -> CorralClient:
        """Build a client from the context file ``corral up`` wrote (or the given context)."""
        ctx = context or load_context()
        return cls(ctx.server, ctx.token, ctx.namespace)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> CorralClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paths ---------------------------------------------------------------------------------

    def _collection(self, cls: type[Resource], namespace: str | None) -> str:
        if not cls.NAMESPACED:
            return f"/apis/{GROUP_VERSION}/{cls.PLURAL}"
        return f"/apis/{GROUP_VERSION}/namespaces/{namespace or self.namespace}/{cls.PLURAL}"

    def _check(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.is_success:
            return body if isinstance(body, dict) else {}
        details = body.get("details") or {} if isinstance(body, dict) else {}
        raise APIStatusError(
            response.status_code,
            str(body.get("reason", response.reason_phrase)) if isinstance(body, dict) else response.reason_phrase,
            str(body.get("message", response.text)) if isinstance(body, dict) else response.text,
            list(details.get("causes") or []),
        )

    # -- verbs ---------------------------------------------------------------------------------

    def get(self, kind: str | type[Resource], name: str, namespace: str | None = None) -> dict[str, Any]:
        """Return one object as its wire dict."""
        cls = kind_for_name(kind) if isinstance(kind, str) else kind
        return self._check(self._http.get(f"{self._collection(cls, namespace)}/{name}"))

    def list(
        self,
        kind: str | type[Resource],
        namespace: str | None = None,
        *,
        all_namespaces: bool = False,
        label_selector: str | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Return the objects of a kind (in one namespace, or all the caller may see)."""
        cls = kind_for_name(kind) if isinstance(kind, str) else kind
        path = f"/apis/{GROUP_VERSION}/{cls.PLURAL}" if all_namespaces else self._collection(cls, namespace)
        params = {"labelSelector": label_selector} if label_selector else {}
        items = self._check(self._http.get(path, params=params)).get("items", [])
        return list(items)

    def create(self, obj: Resource) -> dict[str, Any]:
        """Create ``obj``."""
        wire = obj.to_dict()
        wire.pop("status", None)
        return self._check(self._http.post(self._collection(type(obj), obj.metadata.namespace), json=wire))

    def apply(self, obj: Resource) -> tuple[dict[str, Any], ApplyResult]:
        """Create ``obj``, or replace its spec, labels and annotations when it exists (like ``kubectl apply``)."""
        cls = type(obj)
        namespace = obj.metadata.namespace or (self.namespace if cls.NAMESPACED else None)
        if cls.NAMESPACED and obj.metadata.namespace is None:
            obj = obj.model_copy(update={"metadata": obj.metadata.model_copy(update={"namespace": namespace})})
        try:
            current = self.get(cls, obj.metadata.name, namespace)
        except APIStatusError as exc:
            if exc.code != 404:
                raise
            return self.create(obj), "created"
        desired = obj.to_dict()
        meta = current["metadata"]
        same = (
            current.get("spec") == desired.get("spec")
            and meta.get("labels", {}) == desired["metadata"].get("labels", {})
            and meta.get("annotations", {}) == desired["metadata"].get("annotations", {})
        )
        if same:
            return current, "unchanged"
        body = {
            "apiVersion": GROUP_VERSION,
            "kind": cls.KIND,
            "metadata": {
                **meta,
                "labels": desired["metadata"].get("labels", {}),
                "annotations": desired["metadata"].get("annotations", {}),
            },
            "spec": desired["spec"],
        }
        url = f"{self._collection(cls, namespace)}/{obj.metadata.name}"
        return self._check(self._http.put(url, json=body)), "configured"

    def apply_file(self, source: str | Path) -> builtins.list[tuple[Resource, ApplyResult]]:
        """Apply every document of a file or directory, in order; stop at the first invalid document."""
        results = []
        for obj in load_documents(source):
            _, outcome = self.apply(obj)
            results.append((obj, outcome))
        return results

    def delete(self, kind: str | type[Resource], name: str, namespace: str | None = None) -> dict[str, Any]:
        """Delete one object (finalizers may keep it until the control plane lets go)."""
        cls = kind_for_name(kind) if isinstance(kind, str) else kind
        return self._check(self._http.delete(f"{self._collection(cls, namespace)}/{name}"))

    def patch(
        self, kind: str | type[Resource], name: str, patch: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch an object's spec/metadata."""
        cls = kind_for_name(kind) if isinstance(kind, str) else kind
        url = f"{self._collection(cls, namespace)}/{name}"
        headers = {"Content-Type": "application/merge-patch+json"}
        return self._check(self._http.patch(url, content=_json(patch), headers=headers))

    def events(
        self, kind: str | type[Resource], name: str, namespace: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Return the events recorded for one object, oldest first."""
        cls = kind_for_name(kind) if isinstance(kind, str) else kind
        return list(self._check(self._http.get(f"{self._collection(cls, namespace)}/{name}/events")).get("items", []))

    def watch(
        self, kind: str | type[Resource], namespace: str | None = None, resource_version: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield watch events (``{"type", "object"}``) until the server closes the stream."""
        cls = kind_for_name(kind) if isinstance(kind, str) else kind
        params = {"watch": "1", **({"resourceVersion": resource_version} if resource_version else {})}
        with self._http.stream("GET", self._collection(cls, namespace), params=params, timeout=None) as response:
            if not response.is_success:
                response.read()
                self._check(response)
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)


def _json(data: Any) -> bytes:
    return json.dumps(data).encode()
