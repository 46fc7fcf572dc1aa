"""The REST control API (FastAPI): Kubernetes-shaped resource endpoints, bearer-token auth,
health, readiness and Prometheus metrics, and OpenAI-style fine-tuning (``/v1/files``,
``/v1/fine_tuning/jobs``, ``/v1/estimate``; uploads stored under ``create_app(artifact_root=...)``).

Example:
    >>> from corral.controlapi import TokenAuth, create_app
    >>> from corral.store import SqliteStore
    >>> app = create_app(SqliteStore(":memory:"), TokenAuth([]))
"""

from ._app import create_app
from ._auth import Authenticator, Principal, TokenAuth, TokenEntry, hash_token
from ._openai_schemas import OpenAIError
from ._resources import API_PREFIX
from ._settings import ControlAPISettings
from ._status import APIError, status_body

__all__ = [
    "API_PREFIX",
    "APIError",
    "Authenticator",
    "ControlAPISettings",
    "OpenAIError",
    "Principal",
    "TokenAuth",
    "TokenEntry",
    "create_app",
    "hash_token",
    "status_body",
]
