"""The Kubernetes store, importable on its own: ``from corral.store.kubernetes import KubernetesStore``.

Kept out of ``corral.store``'s eager imports so the embedded default never loads the
``kubernetes`` client.
"""

from ._kubernetes import KubernetesStore

__all__ = ["KubernetesStore"]
