"""Corral's Kubernetes operator (kopf): Corral's custom resources reconciled onto KubeRay.

``python -m corral_operator`` runs it. Thin kopf handlers per kind
(:mod:`corral_operator._handlers`) call the same ``corral.control`` reconcilers as the
embedded loop, with the Kubernetes store (:class:`corral.store.kubernetes.KubernetesStore`)
and the KubeRay driver (:class:`corral.drivers.kuberay.KubeRayDriver`: RayJob / RayService).
Importing this package does not import kopf.
"""

from corral.drivers.kuberay import KubeRayDriver

from ._settings import OperatorSettings

__all__ = ["KubeRayDriver", "OperatorSettings"]
