"""``python -m corral_operator.controlapi``: the control API in a cluster.

The same FastAPI app as ``corral up`` (``corral.controlapi.create_app``), with the Kubernetes
store and TokenReview/SubjectAccessReview authentication instead of SQLite and a tokens file.
Settings come from the environment (the Helm chart sets them): ``CORRAL_API_HOST``,
``CORRAL_API_PORT``, ``CORRAL_WATCH_TIMEOUT_SECONDS``, ``CORRAL_ARTIFACT_ROOT`` and
``CORRAL_API_NAMESPACES`` (comma-separated namespaces a namespaced caller may be granted).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from corral.controlapi import create_app
from corral.store.kubernetes import KubernetesStore

from ._auth import KubernetesAuth

__all__ = ["build_app", "main"]


def build_app(environ: Mapping[str, str] | None = None, api_client: Any | None = None) -> Any:
    """The control API app over the Kubernetes store (``api_client``: in-cluster config when None)."""
    env = os.environ if environ is None else environ
    store = KubernetesStore(api_client, source="corral-api")
    namespaces = [n.strip() for n in env.get("CORRAL_API_NAMESPACES", "").split(",") if n.strip()]
    return create_app(
        store,
        KubernetesAuth(store.api_client, namespaces),
        watch_timeout=float(env.get("CORRAL_WATCH_TIMEOUT_SECONDS", "1800")),
        artifact_root=env.get("CORRAL_ARTIFACT_ROOT") or None,
    )


def main() -> int:
    """Serve the control API with uvicorn until SIGTERM."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build_app()
    uvicorn.run(
        app, host=os.environ.get("CORRAL_API_HOST", "0.0.0.0"), port=int(os.environ.get("CORRAL_API_PORT", "8000"))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
