"""The KubeRay driver: the :class:`~corral.drivers.Driver` protocol over ``RayJob`` and ``RayService`` objects.

One driver serves every owner: each call's :class:`~corral.drivers.Handle` names the
FineTuneJob or ModelDeployment (its children live in its namespace and carry an owner
reference to its uid) and, to start work, the placement the scheduler decided (node
selector, tolerations, GPUs). Children are built by the pure builders in
:mod:`._builders` and read back by the mappers in :mod:`._status`, whose reasons
(``DeadlineExceeded``, ``Pending`` in Kueue, ``UpgradeInProgress``...) travel on the
returned states. Names are deterministic, a 409 on create and a 404 on delete are success,
so applying the same action twice changes nothing. Before a namespace's first Ray cluster
the driver creates its ``corral-ray`` NetworkPolicy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from .._handle import Handle
from .._protocol import DriverError, JobState, ServeAppState
from ._builders import (
    KubeRaySettings,
    build_ray_network_policy,
    build_rayjob,
    build_rayservice,
    rayjob_name,
    rayservice_name,
)
from ._status import deployment_status_from_rayservice, finetunejob_status_from_rayjob

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
    """Creates, reads and deletes the KubeRay children of any Corral object, named by each call's handle.

    Args:
        api_client: A ``kubernetes.client.ApiClient``.
        settings: Images, service account, S3 secret, submission options.
    """

    def __init__(self, api_client: Any, settings: KubeRaySettings) -> None:
        import kubernetes.client

        self.api_client = api_client
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.settings = settings

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _namespace(handle: Handle) -> str:
        if not handle.owner.namespace:
            raise DriverError(f"{handle.owner.kind} {handle.owner.name}: KubeRay children need a namespaced owner")
        return handle.owner.namespace

    def _get(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            found: Any = self.custom.get_namespaced_custom_object(RAY_GROUP, RAY_VERSION, namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise DriverError(f"cannot read {plural}/{name}: {exc.reason}") from exc
        return dict(found)

    def _ensure_network_policy(self, namespace: str) -> None:
        """Create the namespace's ``corral-ray`` NetworkPolicy before its first Ray cluster (409 is success)."""
        if not self.settings.network_policy:
            return
        import kubernetes.client
        from kubernetes.client.exceptions import ApiException

        body: Any = build_ray_network_policy(namespace, self.settings)
        try:
            kubernetes.client.NetworkingV1Api(self.api_client).create_namespaced_network_policy(namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return
            raise DriverError(
                f"cannot create NetworkPolicy {namespace}/{body['metadata']['name']} (Ray pods would be open "
                f"to every pod of the cluster): {exc.reason} {exc.body}"
            ) from exc
        logger.info("Created NetworkPolicy %s/%s", namespace, body["metadata"]["name"])

    def _build(self, build: Callable[..., dict[str, Any]], handle: Handle, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """A child from its builder; a handle the builder cannot use (no placement, no uid) is a DriverError."""
        try:
            return build(handle, *args, **kwargs)
        except ValueError as exc:
            raise DriverError(str(exc)) from exc

    def _create(self, namespace: str, plural: str, body: dict[str, Any]) -> bool:
        """Create a child (after the namespace's NetworkPolicy); False when it already existed (409 is success)."""
        from kubernetes.client.exceptions import ApiException

        self._ensure_network_policy(namespace)
        try:
            self.custom.create_namespaced_custom_object(RAY_GROUP, RAY_VERSION, namespace, plural, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            text = f"cannot create {plural}/{body['metadata']['name']}: {exc.status} {exc.reason}: {_refusal_text(exc)}"
            if exc.status in (400, 403, 422):
                raise ChildRefusedError(text, exc.status, exc.reason) from exc
            raise DriverError(text) from exc
        logger.info("Created %s %s/%s", body["kind"], namespace, body["metadata"]["name"])
        return True

    def _delete(self, namespace: str, plural: str, name: str) -> bool:
        """Delete a child; False when it was already gone (404 is success)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(RAY_GROUP, RAY_VERSION, namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise DriverError(f"cannot delete {plural}/{name}: {exc.reason}") from exc
        logger.info("Deleted %s %s/%s", plural, namespace, name)
        return True

    # -- jobs ---------------------------------------------------------------------------

    def submit_job(
        self,
        handle: Handle,
        submission_id: str,
        entrypoint: str,
        runtime_env: Mapping[str, Any] | None = None,
        resources: Mapping[str, Any] | None = None,
    ) -> None:
        """Create the owner's RayJob, its workers where the handle's placement says (an existing one is success).

        Raises:
            ChildRefusedError: The API server refused the RayJob (403, 422...).
            DriverError: The handle has no placement or no uid, or the API server failed.
        """
        if handle.owner.kind != "FineTuneJob":
            raise DriverError(f"RayJobs belong to FineTuneJobs, not to {handle.owner.kind}")
        body = self._build(
            build_rayjob,
            handle,
            self.settings,
            submission_id=submission_id,
            entrypoint=entrypoint,
            runtime_env=runtime_env,
        )
        self._create(self._namespace(handle), "rayjobs", body)

    def job_status(self, handle: Handle, submission_id: str) -> JobState | None:
        """The RayJob's state with KubeRay's reason, or None when there is no RayJob for the id."""
        rayjob = self._get(self._namespace(handle), "rayjobs", rayjob_name(submission_id))
        if rayjob is None:
            return None
        return finetunejob_status_from_rayjob(rayjob).job_state(submission_id)

    def stop_job(self, handle: Handle, submission_id: str) -> bool:
        """Delete the RayJob (KubeRay tears its cluster down); False when none was running."""
        namespace = self._namespace(handle)
        rayjob = self._get(namespace, "rayjobs", rayjob_name(submission_id))
        if rayjob is None:
            return False
        active = finetunejob_status_from_rayjob(rayjob).phase in ("Pending", "Admitted", "Running")
        self._delete(namespace, "rayjobs", rayjob_name(submission_id))
        return active

    def job_logs(self, handle: Handle, submission_id: str) -> str:
        """Not served by KubeRay's objects: read the submitter pod's logs with kubectl."""
        return ""

    # -- serving ------------------------------------------------------------------------

    def deploy_serve(self, handle: Handle, config: Mapping[str, Any]) -> None:
        """Create the owner's RayService, or update its spec in place (KubeRay rolls it).

        Raises:
            ChildRefusedError: The API server refused the RayService or the update (403, 422...).
            DriverError: The handle has no placement or no uid, or the API server failed.
        """
        from kubernetes.client.exceptions import ApiException

        if handle.owner.kind != "ModelDeployment":
            raise DriverError(f"RayServices belong to ModelDeployments, not to {handle.owner.kind}")
        namespace = self._namespace(handle)
        body = self._build(build_rayservice, handle, config, self.settings)
        if self._create(namespace, "rayservices", body):
            return
        name = body["metadata"]["name"]
        patch = {"metadata": {"labels": body["metadata"]["labels"]}, "spec": body["spec"]}
        try:
            self.custom.patch_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, namespace, "rayservices", name, patch, _content_type=_MERGE_PATCH
            )
        except ApiException as exc:
            if exc.status in (400, 403, 422):
                raise ChildRefusedError(
                    f"cannot update rayservices/{name}: {exc.status} {exc.reason}: {_refusal_text(exc)}",
                    exc.status,
                    exc.reason,
                ) from exc
            raise DriverError(f"cannot update rayservices/{name}: {exc.reason}") from exc
        logger.info("Updated RayService %s/%s", namespace, name)

    def serve_status(self, handle: Handle, name: str) -> ServeAppState | None:
        """The owner's application ``name``, from its RayService with KubeRay's reason (None when there is none)."""
        if handle.owner.kind != "ModelDeployment":
            return None
        rayservice = self._get(self._namespace(handle), "rayservices", rayservice_name(handle.owner.name))
        if rayservice is None:
            return None
        return deployment_status_from_rayservice(rayservice, name).app

    def delete_serve_app(self, handle: Handle, name: str) -> None:
        """Delete the owner's RayService, which holds its one application (absent is success)."""
        if handle.owner.kind == "ModelDeployment":
            self._delete(self._namespace(handle), "rayservices", rayservice_name(handle.owner.name))

    def endpoint(self, handle: Handle | None = None) -> str | None:
        """The in-cluster URL of the owner's Serve service (KubeRay names it ``<rayservice>-serve-svc``).

        Every ModelDeployment has a Ray cluster of its own: without an owner there is no endpoint.
        """
        if handle is None or handle.owner.kind != "ModelDeployment":
            return None
        return f"http://{rayservice_name(handle.owner.name)}-serve-svc.{self._namespace(handle)}.svc:8000"
