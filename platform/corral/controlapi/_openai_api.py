"""Mount Corral's OpenAI-style API on the control API.

``/v1/files``, ``/v1/fine_tuning/jobs``, ``/v1/estimate``, and the chat routes that make the
control API one OpenAI base URL (``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from ._openai_chat import install_chat_proxy
from ._openai_common import install_openai_errors
from ._openai_estimate import estimate_router
from ._openai_files import FileStore, files_router
from ._openai_ft import fine_tuning_router

__all__ = ["install_openai_api"]

log = logging.getLogger(__name__)


def install_openai_api(app: FastAPI, artifact_root: str | None) -> None:
    """Add the OpenAI-style routes and their error bodies to ``app``.

    Args:
        app: The control API (its ``state.store`` and ``state.auth`` are set).
        artifact_root: URI under which uploads are stored (``<root>/files``); ``None``
            leaves the files and jobs endpoints answering 503.
    """
    app.state.files = FileStore.under(artifact_root) if artifact_root else None
    install_openai_errors(app)
    app.include_router(files_router())
    app.include_router(fine_tuning_router())
    app.include_router(estimate_router())
    install_chat_proxy(app)
    log.debug("OpenAI-style API mounted (files under %s)", app.state.files.root if app.state.files else None)
