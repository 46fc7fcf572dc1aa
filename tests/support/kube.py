"""A real Kubernetes control plane on loopback for the tests: etcd + kube-apiserver + kube-controller-manager.

The binaries come from ``scripts/install_kube.sh`` (kube-apiserver and kube-controller-manager
built from the Go module ``k8s.io/kubernetes`` once per machine, etcd from Debian, kubectl within
one minor of the server), linked under ``.tools/kube/bin``. No kubelet runs, so pods are never
started; everything else is the real thing: RBAC authorization, a static token file for an admin
and tenant users, service-account tokens signed by a key made here (``kubectl create token``
works), the default admission plugins plus ``OwnerReferencesPermissionEnforcement``, CRD
validation (structural schemas, CEL), server-side apply, and the controller manager's garbage
collector and namespace controller.

Processes are started here and stopped by their own PIDs. The API server serves a self-signed
certificate it makes in its ``--cert-dir``; clients skip verification (loopback only).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import urllib3
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".tools" / "kube" / "bin"
KUBERAY_CRDS = REPO / "tests" / "fixtures" / "kuberay" / "v1.7.0"
CORRAL_CRDS = REPO / "charts" / "corral" / "crds"

#: Users of the static token file: name -> groups. ``admin`` is a cluster admin
#: (``system:masters``); the tenants have no rights until a test binds some.
USERS: dict[str, tuple[str, ...]] = {
    "admin": ("system:masters",),
    "alice": ("tenants",),
    "bob": ("tenants",),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binaries_missing() -> list[str]:
    """The control-plane binaries ``scripts/install_kube.sh`` has not provided yet."""
    names = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
    return [n for n in names if not os.access(BIN / n, os.X_OK)]


@dataclass
class KubeCluster:
    """etcd, kube-apiserver and kube-controller-manager running under ``workdir``.

    Attributes:
        workdir: Data, keys, logs and kubeconfigs.
        url: ``https://127.0.0.1:<port>`` of the API server.
        tokens: Bearer token of each user in :data:`USERS`.
    """

    workdir: Path
    url: str = ""
    tokens: dict[str, str] = field(default_factory=dict)
    _procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> KubeCluster:
        """Start the three processes and wait until the API server is ready."""
        missing = binaries_missing()
        if missing:
            raise RuntimeError(
                f"no {', '.join(missing)} under {BIN}: run `bash scripts/install_kube.sh` "
                "(`make tools` does; the first build takes ~10 min)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        w = self.workdir
        etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn(
            "etcd",
            [
                str(BIN / "etcd"),
                f"--data-dir={w / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--log-level=warn",
            ],
        )
        key = w / "sa.key"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
        pub = w / "sa.pub"
        subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True
        )
        lines = []
        for i, (user, groups) in enumerate(USERS.items()):
            self.tokens[user] = secrets.token_hex(16)
            lines.append(f'{self.tokens[user]},{user},uid-{i},"{",".join(groups)}"')
        (w / "tokens.csv").write_text("\n".join(lines) + "\n")
        self.url = f"https://127.0.0.1:{api_port}"
        self._spawn(
            "kube-apiserver",
            [
                str(BIN / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={w / 'certs'}",
                f"--token-auth-file={w / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                f"--service-account-key-file={pub}",
                f"--service-account-signing-key-file={key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--api-audiences=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=false",
                "--profiling=false",
                "--v=0",
            ],
        )
        self._wait_ready(timeout)
        admin_kubeconfig = self.write_kubeconfig(w / "admin.kubeconfig", "admin")
        self._spawn(
            "kube-controller-manager",
            [
                str(BIN / "kube-controller-manager"),
                f"--kubeconfig={admin_kubeconfig}",
                f"--authentication-kubeconfig={admin_kubeconfig}",
                f"--authorization-kubeconfig={admin_kubeconfig}",
                "--controllers=garbagecollector,namespace,serviceaccount,clusterrole-aggregation",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={_free_port()}",
                f"--cert-dir={w / 'kcm-certs'}",
                f"--service-account-private-key-file={key}",
                "--concurrent-gc-syncs=5",
                "--v=0",
            ],
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        # Same process group as the tests: a CI timeout that kills the group stops the cluster too.
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._procs.append((name, proc))

    def _wait_ready(self, timeout: float) -> None:
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")
            try:
                r = requests.get(f"{self.url}/readyz", headers=self._auth("admin"), verify=False, timeout=5)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[-300:]}"
            except requests.RequestException as exc:
                last = str(exc)
            time.sleep(0.3)
        raise RuntimeError(f"kube-apiserver not ready after {timeout:.0f}s: {last}\n{self.log_tail('kube-apiserver')}")

    def stop(self) -> None:
        """Stop the processes this object started (by PID), newest first."""
        for _name, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        for _name, proc in reversed(self._procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs.clear()

    def __enter__(self) -> KubeCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, name: str, chars: int = 3000) -> str:
        """The end of one process's log."""
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # -- clients ------------------------------------------------------------------------------

    def _auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def write_kubeconfig(
        self, path: Path, user: str = "admin", namespace: str = "default", token: str | None = None
    ) -> Path:
        """Write a kubeconfig for ``user`` (a :data:`USERS` name, or any name with ``token``)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "corral-test", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": user, "user": {"token": token or self.tokens[user]}}],
            "contexts": [{"name": user, "context": {"cluster": "corral-test", "user": user, "namespace": namespace}}],
            "current-context": user,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def configuration(self, user: str = "admin", token: str | None = None) -> Any:
        """A ``kubernetes.client.Configuration`` for ``user`` (or a bearer ``token``)."""
        import kubernetes.client

        cfg = kubernetes.client.Configuration()
        cfg.host = self.url
        cfg.verify_ssl = False
        cfg.api_key = {"authorization": f"Bearer {token or self.tokens[user]}"}
        return cfg

    @contextlib.contextmanager
    def api_client(self, user: str = "admin", token: str | None = None) -> Iterator[Any]:
        """A ``kubernetes.client.ApiClient`` for ``user``, closed on exit."""
        import kubernetes.client

        client = kubernetes.client.ApiClient(self.configuration(user, token))
        try:
            yield client
        finally:
            client.close()

    def kubectl(
        self,
        *args: str,
        user: str = "admin",
        stdin: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run the installed kubectl as ``user``; ``check`` raises with its stderr on failure."""
        config = kubeconfig or self.workdir / f"{user}.kubeconfig"
        if kubeconfig is None and not config.exists():
            self.write_kubeconfig(config, user)
        env = {**os.environ, "KUBECONFIG": str(config), "KUBECACHEDIR": str(self.workdir / "kubectl-cache")}
        result = subprocess.run(
            [str(BIN / "kubectl"), *args],
            check=False,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def apply(self, docs: Iterable[Mapping[str, Any]], user: str = "admin", *extra: str) -> str:
        """``kubectl apply -f -`` of ``docs`` as ``user``."""
        body = yaml.safe_dump_all([dict(d) for d in docs])
        return self.kubectl("apply", *extra, "-f", "-", user=user, stdin=body).stdout

    def service_account_token(self, namespace: str, name: str, seconds: int = 86400) -> str:
        """A token for a ServiceAccount through the TokenRequest API (what a pod would be given)."""
        out = self.kubectl("create", "token", name, "-n", namespace, f"--duration={seconds}s").stdout
        return out.strip()

    def service_account_with_rules(self, namespace: str, name: str, rules: list[dict[str, Any]]) -> str:
        """A ServiceAccount bound cluster-wide to a ClusterRole of ``rules`` (both named ``name``); its token."""
        rbac = "rbac.authorization.k8s.io/v1"
        self.apply(
            [
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
                {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules},
                {
                    "apiVersion": rbac,
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
                },
            ]
        )
        return self.service_account_token(namespace, name)

    def install_crds(self, paths: Iterable[Path], timeout: float = 60.0) -> list[str]:
        """Server-side apply CRD files and wait until established (KubeRay's exceed client-side apply's limit)."""
        names = []
        for path in paths:
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    names.append(doc["metadata"]["name"])
        for name in names:
            self.kubectl("wait", "--for=condition=Established", f"crd/{name}", f"--timeout={int(timeout)}s")
        return names

    def get_json(self, *args: str, user: str = "admin") -> Any:
        """``kubectl get ... -o json`` parsed; ``None`` when not found."""
        result = self.kubectl("get", *args, "-o", "json", user=user, check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        return json.loads(result.stdout)


def kuberay_crd_files() -> list[Path]:
    """KubeRay v1.7.0's RayCluster/RayJob/RayService CRDs, unchanged from KubeRay."""
    return sorted(KUBERAY_CRDS.glob("ray.io_*.yaml"))


def corral_crd_files() -> list[Path]:
    """Corral's generated CRDs (``charts/corral/crds``)."""
    return sorted(CORRAL_CRDS.glob("*.yaml"))
