"""``python -m corral_operator``: run the operator (settings from ``CORRAL_OPERATOR_*``)."""

from __future__ import annotations

import logging
import sys

__all__ = ["main"]


def main() -> int:
    """Run kopf with Corral's handlers until SIGTERM."""
    import kopf

    from . import _handlers  # importing it registers the handlers with kopf and reads CORRAL_OPERATOR_*

    settings = _handlers.SETTINGS
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from kopf._core.engines.activities import ActivityError

    try:
        kopf.run(
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            standalone=settings.standalone,
            priority=settings.priority,
            peering_name=settings.peering_name,
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        )
    except ActivityError as exc:  # a startup handler refused to start (logged at ERROR)
        logging.getLogger("corral_operator").error("The operator stopped: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
