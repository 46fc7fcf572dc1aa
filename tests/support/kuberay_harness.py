"""A stand-in for the KubeRay operator in the closed-loop cluster test (no kubelet runs pods here).

KubeRay, given a ``RayJob``, creates a RayCluster, submits ``spec.entrypoint`` as Ray job
``spec.jobId`` (through the dashboard's Jobs API) and reports progress in the RayJob's status; given
a ``RayService``, it PUTs ``spec.serveConfigV2`` to the cluster's Serve REST API
(``/api/serve/applications/``) and reports the applications' health. This harness does the same
against one local Ray head (a :class:`corral.drivers.LocalRayDriver` private head: the same Jobs
and Serve REST APIs) instead of a RayCluster per object, and writes the status fields KubeRay
writes, named as in KubeRay's Go types (``ray-operator/apis/ray/v1``):

* ``RayJobStatus`` (rayjob_types.go): ``jobId``, ``rayClusterName``, ``dashboardURL``,
  ``jobStatus`` (``PENDING``/``RUNNING``/``SUCCEEDED``/``FAILED``/``STOPPED``, Ray's own),
  ``jobDeploymentStatus`` (``Initializing``/``Running``/``Complete``/``Failed``), ``reason``
  (``AppFailed``), ``message``, ``startTime``, ``endTime``, ``succeeded``, ``failed``,
  ``observedGeneration``.
* ``RayServiceStatuses`` (rayservice_types.go): ``conditions`` (``Ready`` with reasons
  ``NonZeroServeEndpoints`` / ``WaitForServeDeploymentReady``), ``serviceStatus``
  (``Running``), ``activeServiceStatus.applicationStatuses[<app>]`` (``status``, ``message``,
  ``serveDeploymentStatuses[<deployment>].status`` ``HEALTHY``/``UPDATING``/``UNHEALTHY``),
  ``activeServiceStatus.rayClusterName``, ``numServeEndpoints``, ``observedGeneration``.

The pods' environment is what the builder put on the head container (plain values and
``secretKeyRef`` read from the namespace's Secret, as the kubelet would): it reaches the job as
``runtime_env.env_vars`` and each Serve application likewise. Nothing else of the test process's
environment reaches them: the head is started with the S3 and AWS variables removed.

Nothing under ``platform/`` or ``operators/`` knows this exists.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import kubernetes.client
import yaml

from corral.drivers import Handle, LocalRayDriver, Owner

logger = logging.getLogger(__name__)

RAY_GROUP, RAY_VERSION = "ray.io", "v1"
#: Variables of the test process that must not leak into "pods".
_HOST_ONLY_PREFIXES = ("AWS_", "CORRAL_S3_", "CORRAL_OPERATOR_", "KUBECONFIG")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _handle(obj: Mapping[str, Any]) -> Handle:
    """The local driver's handle for a KubeRay object: here it owns its Ray cluster (the driver needs none of it)."""
    meta = obj["metadata"]
    return Handle(Owner(str(obj.get("kind")), meta["name"], meta.get("namespace"), meta.get("uid")))


@contextlib.contextmanager
def _without_host_credentials() -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith(_HOST_ONLY_PREFIXES)}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


class KubeRayHarness:
    """Watch one namespace's RayJobs and RayServices and play KubeRay's part on a local Ray.

    Args:
        api: A ``kubernetes.client.ApiClient`` with rights over ray.io objects and Secrets.
        namespace: The namespace to serve.
        num_cpus: CPUs the local Ray head offers.
        poll_seconds: How often objects are listed (KubeRay is event-driven; polling is enough here).
    """

    def __init__(self, api: Any, namespace: str, *, num_cpus: int = 2, poll_seconds: float = 0.5) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.core = kubernetes.client.CoreV1Api(api)
        self.namespace = namespace
        self.poll_seconds = poll_seconds
        self.num_cpus = num_cpus
        self.ray: LocalRayDriver | None = None
        self.errors: list[str] = []
        self.submitted: dict[str, str] = {}  # RayJob name -> Ray submission id
        self.deployed: dict[str, str] = {}  # RayService name -> serveConfigV2 deployed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._files: list[str] = []  # the "pods'" kubeconfigs, removed on stop

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> KubeRayHarness:
        """Start the local Ray head (without the host's credentials) and the watch loop."""
        with _without_host_credentials():
            self.ray = LocalRayDriver(num_cpus=self.num_cpus, env={"OMP_NUM_THREADS": "1"}).start()
        self._thread = threading.Thread(target=self._loop, name="kuberay-harness", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the loop and the Ray head it started."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.ray is not None:
            self.ray.down()
        for path in self._files:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def __enter__(self) -> KubeRayHarness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_url(self, endpoint: str) -> str:
        """Map a RayService endpoint (``http://<svc>.<ns>.svc:8000/<route>``) onto the local Serve proxy.

        What ``kubectl port-forward svc/<name>-serve-svc 8000`` gives a user on a real cluster.
        """
        assert self.ray is not None
        base = self.ray.endpoint()
        assert base is not None
        rest = endpoint.split("://", 1)[-1]
        path = rest[rest.find("/") :] if "/" in rest else ""
        return f"{base}{path}"

    # -- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # keep playing; the test reads self.errors
                logger.exception("harness tick failed")
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.poll_seconds)

    def tick(self) -> None:
        """One pass over the namespace's RayJobs and RayServices."""
        jobs = self._list("rayjobs")
        for job in jobs:
            self._rayjob(job)
        names = set()
        for svc in self._list("rayservices"):
            names.add(svc["metadata"]["name"])
            self._rayservice(svc)
        for gone in set(self.deployed) - names:  # KubeRay deletes the cluster, and its apps, with the service
            assert self.ray is not None
            owner = Handle(Owner("RayService", gone, self.namespace))
            for app in (yaml.safe_load(self.deployed.pop(gone)) or {}).get("applications") or []:
                self.ray.delete_serve_app(owner, app["name"])

    def _list(self, plural: str) -> list[dict[str, Any]]:
        found = self.custom.list_namespaced_custom_object(RAY_GROUP, RAY_VERSION, self.namespace, plural)
        return list(found.get("items") or [])

    def _patch_status(self, plural: str, name: str, status: Mapping[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            RAY_GROUP,
            RAY_VERSION,
            self.namespace,
            plural,
            name,
            {"status": dict(status)},
            _content_type="application/merge-patch+json",
        )

    def pod_env(self, head_template: Mapping[str, Any]) -> dict[str, str]:
        """The environment of the head pod's first container, ``secretKeyRef`` resolved as the kubelet does.

        A pod that mounts its ServiceAccount's token (``automountServiceAccountToken``) gets one
        from the TokenRequest API, as the kubelet would, handed over as a kubeconfig (``KUBECONFIG``)
        since these "pods" are processes without the in-cluster files.
        """
        pod_spec = head_template.get("spec") or {}
        container = pod_spec.get("containers", [{}])[0]
        env: dict[str, str] = {}
        if pod_spec.get("automountServiceAccountToken"):
            env["KUBECONFIG"] = self._account_kubeconfig(pod_spec.get("serviceAccountName") or "default")
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = str(var["value"])
                continue
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                try:
                    secret = self.core.read_namespaced_secret(ref["name"], self.namespace)
                except kubernetes.client.ApiException as exc:
                    if exc.status == 404 and ref.get("optional"):
                        continue  # the kubelet leaves an optional variable unset
                    raise
                data = secret.data or {}
                if ref["key"] not in data and ref.get("optional"):
                    continue
                env[var["name"]] = base64.b64decode(data[ref["key"]]).decode()
        return env

    def _account_kubeconfig(self, account: str) -> str:
        """A kubeconfig file holding a fresh token of ``account`` (this namespace), for one "pod"."""
        request = kubernetes.client.AuthenticationV1TokenRequest(
            spec=kubernetes.client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        )
        token = self.core.create_namespaced_service_account_token(account, self.namespace, request).status.token
        conf = self.core.api_client.configuration
        cluster: dict[str, Any] = {"server": conf.host}
        if conf.ssl_ca_cert:
            cluster["certificate-authority"] = conf.ssl_ca_cert
        else:
            cluster["insecure-skip-tls-verify"] = True
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "pod", "cluster": cluster}],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": "pod", "context": {"cluster": "pod", "user": account, "namespace": self.namespace}}],
            "current-context": "pod",
        }
        fd, path = tempfile.mkstemp(prefix=f"pod-{account}-", suffix=".kubeconfig")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            yaml.safe_dump(config, out)
        self._files.append(path)
        return path

    # -- RayJob -------------------------------------------------------------------------------

    def _rayjob(self, job: Mapping[str, Any]) -> None:
        assert self.ray is not None
        meta, spec, status = job["metadata"], job["spec"], job.get("status") or {}
        name = meta["name"]
        if spec.get("suspend") or status.get("jobDeploymentStatus") in ("Complete", "Failed"):
            return
        sid = spec.get("jobId") or name
        owner = _handle(job)
        cluster = f"{name}-raycluster"
        if name not in self.submitted:
            self._patch_status(
                "rayjobs",
                name,
                {
                    "jobId": sid,
                    "rayClusterName": cluster,
                    "dashboardURL": f"{cluster}-head-svc.{self.namespace}.svc:8265",
                    "jobDeploymentStatus": "Initializing",
                    "startTime": status.get("startTime") or _now(),
                    "observedGeneration": meta.get("generation"),
                },
            )
            head = spec["rayClusterSpec"]["headGroupSpec"]["template"]
            runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "") or {}
            runtime_env.setdefault("env_vars", {}).update(self.pod_env(head))
            self.ray.submit_job(owner, sid, spec["entrypoint"], runtime_env)
            self.submitted[name] = sid
            logger.info("harness: submitted RayJob %s as Ray job %s", name, sid)
        state = self.ray.job_status(owner, sid)
        if state is None:
            return
        update: dict[str, Any] = {"jobId": sid, "jobStatus": state.status, "message": state.message or ""}
        if state.status in ("PENDING", "RUNNING"):
            update["jobDeploymentStatus"] = "Running"
        elif state.status == "SUCCEEDED":
            update.update(jobDeploymentStatus="Complete", endTime=_now(), succeeded=1)
        else:  # FAILED, STOPPED
            update.update(jobDeploymentStatus="Failed", reason="AppFailed", endTime=_now(), failed=1)
            update["message"] = f"{state.message}\n{self.ray.job_logs(owner, sid)[-2000:]}".strip()
        if any(status.get(k) != v for k, v in update.items()):
            self._patch_status("rayjobs", name, update)

    # -- RayService ---------------------------------------------------------------------------

    def _rayservice(self, svc: Mapping[str, Any]) -> None:
        assert self.ray is not None
        meta, spec, status = svc["metadata"], svc["spec"], svc.get("status") or {}
        name = meta["name"]
        text = spec.get("serveConfigV2") or ""
        config = yaml.safe_load(text) or {}
        apps = list(config.get("applications") or [])
        if self.deployed.get(name) != text:
            env = self.pod_env(spec["rayClusterConfig"]["headGroupSpec"]["template"])
            for app in apps:
                runtime_env = dict(app.get("runtime_env") or {})
                runtime_env["env_vars"] = {**env, **(runtime_env.get("env_vars") or {})}
                app["runtime_env"] = runtime_env
            self.ray.deploy_serve(_handle(svc), {"applications": apps})
            self.deployed[name] = text
            logger.info("harness: deployed serveConfigV2 of RayService %s (%d applications)", name, len(apps))
        running = self.ray.applications()
        app_statuses: dict[str, Any] = {}
        ready = bool(apps)
        for app in apps:
            state = running.get(app["name"])
            if state is None:
                ready = False
                continue
            deployments = {
                dep: {"status": "HEALTHY" if healthy >= target > 0 else "UPDATING"}
                for dep, (target, healthy) in state.deployments.items()
            }
            app_statuses[app["name"]] = {
                "status": state.status,
                "message": state.message,
                "serveDeploymentStatuses": deployments,
            }
            ready = ready and state.status == "RUNNING"
        cluster = f"{name}-raycluster"
        update = {
            "serviceStatus": "Running" if ready else "",
            "numServeEndpoints": 1 if ready else 0,
            "observedGeneration": meta.get("generation"),
            "activeServiceStatus": {"rayClusterName": cluster, "applicationStatuses": app_statuses},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": "NonZeroServeEndpoints" if ready else "WaitForServeDeploymentReady",
                    "message": "" if ready else "Serve applications are not all RUNNING yet",
                    "lastTransitionTime": _now(),
                }
            ],
        }
        old = {k: status.get(k) for k in update}
        same = {**old, "conditions": None} == {**update, "conditions": None} and [
            (c.get("type"), c.get("status")) for c in status.get("conditions") or []
        ] == [(c["type"], c["status"]) for c in update["conditions"]]
        if not same:
            self._patch_status("rayservices", name, update)
