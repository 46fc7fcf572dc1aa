"""The embedded composition root: the whole default plane in one process (what ``corral up`` runs).

* :class:`EmbeddedControlPlane` - a SQLite store, a local Ray driver, the shared
  :class:`~corral.control.Runner` and the control API, started and stopped together.

This package and ``corral_operator`` (a Kubernetes store, the KubeRay driver and kopf
around the same Runner) are the only two places that assemble Corral's parts; nothing
below them imports either (``make lint`` checks it with import-linter).
"""

from ._plane import EmbeddedControlPlane

__all__ = ["EmbeddedControlPlane"]
