"""The ``corral`` command line.

Commands available today: ``validate`` (check resource YAML offline), ``crds``
(generate or check the CRDs), ``catalog`` (list the base-model catalog) and
``lineage`` (show a model's license lineage and the commercial-use verdict).
"""

from __future__ import annotations

import typer

from . import _api, _catalog, _chat, _dataset, _demo, _estimate, _logs, _resources, _up

__all__ = ["app", "main"]

app = typer.Typer(
    name="corral",
    help="Corral: fine-tune open models on your data with Ray Train and serve them with Ray Serve.",
    no_args_is_help=True,
    add_completion=False,
)
_api.register(app)
_estimate.register(app)
_catalog.register(app)
_dataset.register(app)
_resources.register(app)
_up.register(app)
_logs.register(app)
_chat.register(app)
_demo.register(app)


def main() -> None:
    """Entry point of the ``corral`` console script."""
    app()
