"""The KubeRay driver: the :class:`~corral.drivers.Driver` protocol over ``RayJob`` and ``RayService`` objects.

A driver instance is bound to one owner (the FineTuneJob or ModelDeployment being
reconciled), because a KubeRay child needs its owner's uid, namespace and placement;
:meth:`KubeRayDriver.bind` makes a bound one per reconcile. Children are built by the
pure builders in :mod:`corral.drivers.kuberay`; names are deterministic, a 409 on create
and a 404 on delete are success, so applying the same action twice changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from corral.api.v1alpha1 import FineTuneJob, GPUPool, ModelDeployment, Resource
from corral.control import app_name
from corral.store import NotFound, Store

from .._protocol import DriverError, JobState, ServeAppState
from ._builders import (
    KubeRaySettings,
    PodPlacement,
    build_ray_network_policy,
    build_rayjob,
    build_rayservice,
    rayjob_name,
    rayservice_name,
)
from ._status import (
    RayJobObservation,
    RayServiceObservation,
    deployment_status_from_rayservice,
    finetunejob_status_from_rayjob,
)

__all__ = ["RAY_GROUP", "RAY_VERSION", "ChildRefusedError", "KubeRayDriver"]

logger = logging.getLogger(__name__)

RAY_GROUP, RAY_VERSION = "ray.io", "v1"
_MERGE_PATCH = "application/merge-patch+json"


class ChildRefusedError(DriverError):
    """The API server refused to create or change a KubeRay child (403 Forbidden, 422 Invalid...).

    Attributes:
        status: The HTTP status of the refusal.
        reason: The API server's reason, CamelCase (``Forbidden``, ``Invalid``...).
    """

    def __init__(self, message: str, status: int | None, reason: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = "".join(w[:1].upper() + w[1:] for w in (reason or "Refused").split() if w.isalnum()) or "Refused"


def _refusal_text(exc: Any) -> str:
    """The API server's own message of a refusal (its Status body), else the HTTP reason."""
    import json

    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or exc.body or exc.reason)


class KubeRayDriver:
    """Creates, reads and deletes the KubeRay children of one Corral object.

    Args:
        api_client: A ``kubernetes.client.ApiClient``.
        settings: Images, service account, S3 secret, submission options.
        store: Where the owner is re-read from (its placement is decided in the same pass).
        owner: The FineTuneJob or ModelDeployment the children belong to (None: unbound).
        pools: GPUPools by name (placement -> node selector and tolerations).
    """

    def __init__(
        self,
        api_client: Any,
        settings: KubeRaySettings,
        store: Store,
        owner: Resource | None = None,
        pools: Mapping[str, GPUPool] | None = None,
    ) -> None:
        import kubernetes.client

        self.api_client = api_client
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.settings = settings
        self.store = store
        self.owner = owner
        self.pools = dict(pools or {})
        self.observed_rayjob: RayJobObservation | None = None
        self.observed_rayservice: RayServiceObservation | None = None

    def bind(self, owner: Resource, pools: Mapping[str, GPUPool]) -> KubeRayDriver:
        """A driver for one owner's children."""
        return KubeRayDriver(self.api_client, self.settings, self.store, owner, pools)

    # -- helpers ------------------------------------------------------------------------

    @property
    def _namespace(self) -> str:
        if self.owner is None or not self.owner.metadata.namespace:
            raise DriverError("the KubeRay driver is not bound to a namespaced owner")
        return self.owner.metadata.namespace

    def _fresh_owner(self) -> Resource:
        assert self.owner is not None
        try:
            return self.store.get(self.owner.kind, self.owner.metadata.namespace, self.owner.metadata.name)
        except NotFound:
            return self.owner

    def _pool(self, name: str | None) -> GPUPool | None:
        return self.pools.get(name) if name else None

    def _get(self, plural: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            found: Any = self.custom.get_namespaced_custom_object(RAY_GROUP, RAY_VERSION, self._namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise DriverError(f"cannot read {plural}/{name}: {exc.reason}") from exc
        return dict(found)

    def _ensure_network_policy(self) -> None:
        """Create the namespace's ``corral-ray`` NetworkPolicy before its first Ray cluster (409 is success)."""
        if not self.settings.network_policy:
            return
        import kubernetes.client
        from kubernetes.client.exceptions import ApiException

        body: Any = build_ray_network_policy(self._namespace, self.settings)
        try:
            kubernetes.client.NetworkingV1Api(self.api_client).create_namespaced_network_policy(self._namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return
            raise DriverError(
                f"cannot create NetworkPolicy {self._namespace}/{body['metadata']['name']} (Ray pods would be open "
                f"to every pod of the cluster): {exc.reason} {exc.body}"
            ) from exc
        logger.info("Created NetworkPolicy %s/%s", self._namespace, body["metadata"]["name"])

    def _create(self, plural: str, body: dict[str, Any]) -> bool:
        """Create a child (after the namespace's NetworkPolicy); False when it already existed (409 is success)."""
        from kubernetes.client.exceptions import ApiException

        self._ensure_network_policy()
        try:
            self.custom.create_namespaced_custom_object(RAY_GROUP, RAY_VERSION, self._namespace, plural, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            text = f"cannot create {plural}/{body['metadata']['name']}: {exc.status} {exc.reason}: {_refusal_text(exc)}"
            if exc.status in (400, 403, 422):
                raise ChildRefusedError(text, exc.status, exc.reason) from exc
            raise DriverError(text) from exc
        logger.info("Created %s %s/%s", body["kind"], self._namespace, body["metadata"]["name"])
        return True

    def _delete(self, plural: str, name: str) -> bool:
        """Delete a child; False when it was already gone (404 is success)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(RAY_GROUP, RAY_VERSION, self._namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise DriverError(f"cannot delete {plural}/{name}: {exc.reason}") from exc
        logger.info("Deleted %s %s/%s", plural, self._namespace, name)
        return True

    # -- jobs ---------------------------------------------------------------------------

    def submit_job(
        self,
        submission_id: str,
        entrypoint: str,
        runtime_env: Mapping[str, Any] | None = None,
        resources: Mapping[str, Any] | None = None,
    ) -> None:
        """Create the owner's RayJob (an existing one is success)."""
        job = self._fresh_owner()
        if not isinstance(job, FineTuneJob):
            raise DriverError(f"RayJobs belong to FineTuneJobs, not to {type(job).__name__}")
        placement = job.status.placement
        pool = self._pool(placement.pool if placement else job.spec.resources.pool)
        body = build_rayjob(
            job,
            PodPlacement.for_job(job, pool),
            self.settings,
            submission_id=submission_id,
            entrypoint=entrypoint,
            runtime_env=runtime_env,
        )
        self._create("rayjobs", body)

    def job_status(self, submission_id: str) -> JobState | None:
        """The RayJob's state, or None when there is no RayJob for the id."""
        rayjob = self._get("rayjobs", rayjob_name(submission_id))
        if rayjob is None:
            return None
        self.observed_rayjob = finetunejob_status_from_rayjob(rayjob)
        return self.observed_rayjob.job_state(submission_id)

    def stop_job(self, submission_id: str) -> bool:
        """Delete the RayJob (KubeRay tears its cluster down); False when none was running."""
        rayjob = self._get("rayjobs", rayjob_name(submission_id))
        if rayjob is None:
            return False
        active = finetunejob_status_from_rayjob(rayjob).phase in ("Pending", "Admitted", "Running")
        self._delete("rayjobs", rayjob_name(submission_id))
        return active

    def job_logs(self, submission_id: str) -> str:
        """Not served by KubeRay's objects: read the submitter pod's logs with kubectl."""
        return ""

    # -- serving ------------------------------------------------------------------------

    def _deployment(self) -> ModelDeployment:
        dep = self._fresh_owner()
        if not isinstance(dep, ModelDeployment):
            raise DriverError("RayServices belong to ModelDeployments")
        return dep

    def deploy_serve(self, config: Mapping[str, Any]) -> None:
        """Create the owner's RayService, or update its spec in place (KubeRay rolls it)."""
        from kubernetes.client.exceptions import ApiException

        dep = self._deployment()
        placement = dep.status.placement
        pool = self._pool(placement.pool if placement else dep.spec.resources.pool)
        body = build_rayservice(dep, config, PodPlacement.for_deployment(dep, pool), self.settings)
        if self._create("rayservices", body):
            return
        name = body["metadata"]["name"]
        patch = {"metadata": {"labels": body["metadata"]["labels"]}, "spec": body["spec"]}
        try:
            self.custom.patch_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, self._namespace, "rayservices", name, patch, _content_type=_MERGE_PATCH
            )
        except ApiException as exc:
            if exc.status in (400, 403, 422):
                raise ChildRefusedError(
                    f"cannot update rayservices/{name}: {exc.status} {exc.reason}: {_refusal_text(exc)}",
                    exc.status,
                    exc.reason,
                ) from exc
            raise DriverError(f"cannot update rayservices/{name}: {exc.reason}") from exc
        logger.info("Updated RayService %s/%s", self._namespace, name)

    def serve_status(self) -> dict[str, ServeAppState]:
        """The owner's application, from its RayService (empty when there is none)."""
        if not isinstance(self.owner, ModelDeployment):
            return {}
        rayservice = self._get("rayservices", rayservice_name(self.owner))
        if rayservice is None:
            return {}
        name = app_name(self.owner)
        self.observed_rayservice = deployment_status_from_rayservice(rayservice, name)
        return {name: self.observed_rayservice.app}

    def delete_serve_app(self, name: str) -> None:
        """Delete the owner's RayService (absent is success)."""
        if isinstance(self.owner, ModelDeployment) and name == app_name(self.owner):
            self._delete("rayservices", rayservice_name(self.owner))

    def endpoint(self) -> str | None:
        """The in-cluster URL of the owner's Serve service (KubeRay names it ``<rayservice>-serve-svc``)."""
        if not isinstance(self.owner, ModelDeployment):
            return None
        return f"http://{rayservice_name(self.owner)}-serve-svc.{self._namespace}.svc:8000"
