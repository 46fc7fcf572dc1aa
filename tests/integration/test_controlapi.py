"""The control API over real HTTP: a uvicorn server on a free loopback port, an httpx client.

CRUD, merge patch, the status subresource, watch streaming, bearer-token auth with
namespace isolation, Kubernetes ``Status`` errors, the OpenAPI document, health and metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from corral.api.v1alpha1 import Model
from corral.controlapi import TokenAuth, create_app, hash_token
from corral.store import SqliteStore
from tests.support.http import serve

API = "/apis/corral.dev/v1alpha1"
TOKEN_A = "token-for-team-a-0001"
TOKEN_B = "token-for-team-b-0002"
TOKEN_ADMIN = "token-for-the-admin-03"
TOKEN_CONTROLLER = "token-for-the-controller-04"
TOKEN_METRICS = "token-for-prometheus-05"
MERGE = {"Content-Type": "application/merge-patch+json"}


@dataclass
class Server:
    url: str
    port: int
    store: SqliteStore

    def client(self, token: str | None = TOKEN_A) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(10.0))


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokens = {
        "tokens": [
            {"name": "team-a", "tokenSha256": hash_token(TOKEN_A), "namespaces": ["team-a"]},
            {"name": "team-b", "token": TOKEN_B, "namespaces": ["team-b"]},
            {"name": "admin", "tokenSha256": hash_token(TOKEN_ADMIN), "namespaces": ["*"], "cluster": True},
            {"name": "controller", "token": TOKEN_CONTROLLER, "namespaces": ["team-a", "team-b"], "controller": True},
            {"name": "prometheus", "token": TOKEN_METRICS, "namespaces": [], "metrics": True},
        ]
    }
    path = tmp_path_factory.mktemp("auth") / "tokens.yaml"
    path.write_text(yaml.safe_dump(tokens), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tokens_file: Path) -> Iterator[Server]:
    store = SqliteStore(tmp_path_factory.mktemp("controlapi") / "state.db")
    app = create_app(store, TokenAuth.from_file(tokens_file), registry=CollectorRegistry())
    try:
        with serve(app) as port:
            yield Server(f"http://127.0.0.1:{port}", port, store)
    finally:
        store.close()


def model_body(name: str, labels: dict[str, str] | None = None, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels or {}}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "corral.dev/v1alpha1",
        "kind": "Model",
        "metadata": meta,
        "spec": {"catalogName": "tiny-llama"},
    }


def models(namespace: str) -> str:
    return f"{API}/namespaces/{namespace}/models"


# -- CRUD ------------------------------------------------------------------------------------


def test_create_get_list_replace_patch_delete(server: Server) -> None:
    with server.client() as c:
        created = c.post(models("team-a"), json=model_body("crud", {"app": "bot"}))
        assert created.status_code == 201, created.text
        obj = created.json()
        assert obj["metadata"]["namespace"] == "team-a" and obj["metadata"]["generation"] == 1

        again = c.post(models("team-a"), json=model_body("crud"))
        assert again.status_code == 409 and again.json()["reason"] == "AlreadyExists"

        got = c.get(f"{models('team-a')}/crud").json()
        assert got["metadata"]["uid"] == obj["metadata"]["uid"]

        listed = c.get(models("team-a"), params={"labelSelector": "app=bot"}).json()
        assert listed["kind"] == "ModelList" and listed["apiVersion"] == "corral.dev/v1alpha1"
        assert [i["metadata"]["name"] for i in listed["items"]] == ["crud"]
        assert int(listed["metadata"]["resourceVersion"]) >= int(obj["metadata"]["resourceVersion"])
        assert c.get(models("team-a"), params={"labelSelector": "app=web"}).json()["items"] == []
        bad_selector = c.get(models("team-a"), params={"labelSelector": "app in ()"})
        assert bad_selector.status_code == 400 and bad_selector.json()["reason"] == "BadRequest"

        got["spec"]["displayName"] = "Crud bot"
        replaced = c.put(f"{models('team-a')}/crud", json=got)
        assert replaced.status_code == 200, replaced.text
        assert replaced.json()["metadata"]["generation"] == 2

        stale = c.put(f"{models('team-a')}/crud", json=got)  # got still carries the old resourceVersion
        assert stale.status_code == 409 and stale.json()["reason"] == "Conflict"

        patched = c.patch(
            f"{models('team-a')}/crud",
            content=json.dumps({"metadata": {"labels": {"tier": "prod"}}, "spec": {"displayName": None}}),
            headers=MERGE,
        )
        assert patched.status_code == 200, patched.text
        body = patched.json()
        assert body["metadata"]["labels"] == {"app": "bot", "tier": "prod"}
        assert "displayName" not in body["spec"] and body["metadata"]["generation"] == 3

        wrong_type = c.patch(f"{models('team-a')}/crud", json={"spec": {}})
        assert wrong_type.status_code == 415 and wrong_type.json()["reason"] == "UnsupportedMediaType"

        mismatch = c.put(f"{models('team-a')}/crud", json=model_body("other"))
        assert mismatch.status_code == 400 and "does not match the name on the URL" in mismatch.json()["message"]
        wrong_ns = c.post(models("team-a"), json=model_body("x", namespace="team-b"))
        assert wrong_ns.status_code == 400

        deleted = c.delete(f"{models('team-a')}/crud")
        assert deleted.status_code == 200 and deleted.json()["metadata"]["name"] == "crud"
        missing = c.get(f"{models('team-a')}/crud")
        assert missing.status_code == 404
        assert missing.json() | {"message": ""} == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "",
            "reason": "NotFound",
            "code": 404,
            "details": {"name": "crud", "group": "corral.dev", "kind": "Model"},
        }


def test_delete_with_finalizer_marks_then_removes(server: Server) -> None:
    with server.client() as c:
        body = model_body("final")
        body["metadata"]["finalizers"] = ["corral.dev/cleanup"]
        assert c.post(models("team-a"), json=body).status_code == 201
        marked = c.delete(f"{models('team-a')}/final").json()
        assert marked["metadata"]["deletionTimestamp"]
        assert c.get(f"{models('team-a')}/final").status_code == 200
        cleared = c.patch(f"{models('team-a')}/final", content=b'{"metadata":{"finalizers":null}}', headers=MERGE)
        assert cleared.status_code == 200
        assert c.get(f"{models('team-a')}/final").status_code == 404


def test_invalid_object_is_422_with_field_paths(server: Server) -> None:
    with server.client() as c:
        body = model_body("bad")
        body["spec"] = {"catalogNam": "tiny-llama", "chatTemplate": "klingon"}
        response = c.post(models("team-a"), json=body)
    assert response.status_code == 422
    status = response.json()
    assert (status["kind"], status["status"], status["reason"], status["code"]) == ("Status", "Failure", "Invalid", 422)
    fields = {cause["field"] for cause in status["details"]["causes"]}
    assert {"spec.catalogNam", "spec.chatTemplate"} <= fields
    assert status["details"]["kind"] == "Model" and status["details"]["name"] == "bad"


# -- status subresource ------------------------------------------------------------------------


def test_status_subresource_never_changes_spec(server: Server) -> None:
    with server.client() as tenant, server.client(TOKEN_CONTROLLER) as c:
        created = tenant.post(models("team-a"), json=model_body("stat")).json()
        url = f"{models('team-a')}/stat/status"
        patch = {"spec": {"displayName": "sneaky"}, "status": {"architecture": "llama", "observedGeneration": 1}}
        patched = c.patch(url, content=json.dumps(patch), headers=MERGE)
        assert patched.status_code == 200, patched.text
        body = patched.json()
        assert body["status"]["architecture"] == "llama"
        assert "displayName" not in body["spec"]
        assert body["metadata"]["generation"] == 1
        assert body["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]

        body["status"]["parameters"] = 1000
        body["metadata"]["labels"] = {"sneaky": "yes"}
        put = c.put(url, json=body).json()
        assert put["status"]["parameters"] == 1000 and put["metadata"]["labels"] == {}
        assert c.get(url).json()["status"]["parameters"] == 1000

        put["spec"]["displayName"] = "Real"
        put["status"] = {}
        main = c.put(f"{models('team-a')}/stat", json=put).json()
        assert main["status"]["parameters"] == 1000 and main["spec"]["displayName"] == "Real"


def test_only_the_controller_and_admins_write_status(server: Server) -> None:
    """A tenant cannot write its own objects' status (the reconciler acts on it); reads stay open."""
    with server.client(TOKEN_A) as a, server.client(TOKEN_ADMIN) as admin:
        created = a.post(models("team-a"), json=model_body("own-status"))
        assert created.status_code == 201, created.text
        url = f"{models('team-a')}/own-status/status"
        forged = {"status": {"architecture": "forged"}}
        patched = a.patch(url, content=json.dumps(forged), headers=MERGE)
        assert patched.status_code == 403 and patched.json()["reason"] == "Forbidden"
        assert "written by the controller" in patched.json()["message"]
        body = created.json() | {"status": {"architecture": "forged"}}
        assert a.put(url, json=body).status_code == 403
        assert a.get(url).status_code == 200 and "architecture" not in a.get(url).json().get("status", {})
        created_with_status = a.post(models("team-a"), json=model_body("born-ready") | {"status": {"parameters": 9}})
        assert created_with_status.status_code == 201 and "parameters" not in created_with_status.json()["status"]
        repaired = admin.patch(url, content=json.dumps({"status": {"architecture": "llama"}}), headers=MERGE)
        assert repaired.status_code == 200 and repaired.json()["status"]["architecture"] == "llama"


# -- watch -----------------------------------------------------------------------------------


def read_events(response: httpx.Response, count: int, deadline: float = 15.0) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    end = time.monotonic() + deadline
    for line in response.iter_lines():  # each read is bounded by the client's 10 s read timeout
        if line.strip():
            events.append(json.loads(line))
        if len(events) == count:
            return events
        assert time.monotonic() < end, f"only {len(events)} of {count} events before the deadline"
    raise AssertionError(f"stream ended after {len(events)} of {count} events")


def test_watch_streams_changes_from_a_resource_version(server: Server) -> None:
    with server.client() as c, server.client(TOKEN_CONTROLLER) as writer:
        since = c.get(models("team-a")).json()["metadata"]["resourceVersion"]
        with c.stream("GET", models("team-a"), params={"watch": "1", "resourceVersion": since}) as stream:
            assert stream.status_code == 200
            writer.post(models("team-a"), json=model_body("w1"))
            writer.patch(f"{models('team-a')}/w1/status", content=b'{"status":{"parameters":7}}', headers=MERGE)
            writer.delete(f"{models('team-a')}/w1")
            events = read_events(stream, 3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "w1"),
        ("MODIFIED", "w1"),
        ("DELETED", "w1"),
    ]
    assert events[1]["object"]["status"]["parameters"] == 7


def test_watch_without_version_replays_then_times_out(server: Server) -> None:
    with server.client() as c:
        c.post(models("team-a"), json=model_body("replay", {"watch": "me"}))
        params = {"watch": "true", "labelSelector": "watch=me", "timeoutSeconds": "1"}
        with c.stream("GET", models("team-a"), params=params) as stream:
            lines = [json.loads(line) for line in stream.iter_lines() if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == [("ADDED", "replay")]


def test_watch_all_namespaces_only_shows_the_callers(server: Server) -> None:
    with server.client(TOKEN_A) as a, server.client(TOKEN_B) as b:
        since = a.get(f"{API}/models").json()["metadata"]["resourceVersion"]
        with a.stream("GET", f"{API}/models", params={"watch": "1", "resourceVersion": since}) as stream:
            assert b.post(models("team-b"), json=model_body("secret-b")).status_code == 201
            assert a.post(models("team-a"), json=model_body("visible-a")).status_code == 201
            events = read_events(stream, 1)
    assert events[0]["object"]["metadata"]["name"] == "visible-a"


# -- auth and isolation -----------------------------------------------------------------------


def test_missing_or_bad_token_is_401_without_echoing_it(server: Server) -> None:
    with server.client(None) as anonymous:
        response = anonymous.get(models("team-a"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["reason"] == "Unauthorized"
    bogus = "not-a-real-token-xyz"
    with server.client(bogus) as bad:
        response = bad.get(models("team-a"))
    assert response.status_code == 401 and bogus not in response.text


def test_a_token_only_sees_its_namespaces(server: Server) -> None:
    with server.client(TOKEN_A) as a, server.client(TOKEN_B) as b, server.client(TOKEN_ADMIN) as admin:
        assert b.post(models("team-b"), json=model_body("iso-b")).status_code == 201
        assert a.post(models("team-a"), json=model_body("iso-a")).status_code == 201

        for response in (
            a.get(models("team-b")),
            a.get(f"{models('team-b')}/iso-b"),
            a.post(models("team-b"), json=model_body("intruder")),
            a.delete(f"{models('team-b')}/iso-b"),
            a.patch(f"{models('team-b')}/iso-b/status", content=b'{"status":{}}', headers=MERGE),
        ):
            assert response.status_code == 403, response.text
            assert response.json()["reason"] == "Forbidden"
            assert TOKEN_A not in response.text

        names_a = {i["metadata"]["name"] for i in a.get(f"{API}/models").json()["items"]}
        assert "iso-a" in names_a and "iso-b" not in names_a
        assert all(i["metadata"]["namespace"] == "team-a" for i in a.get(f"{API}/models").json()["items"])
        names_admin = {i["metadata"]["name"] for i in admin.get(f"{API}/models").json()["items"]}
        assert {"iso-a", "iso-b"} <= names_admin
        assert admin.get(f"{models('team-b')}/iso-b").status_code == 200


def test_cluster_scoped_pools_readable_by_all_writable_by_cluster_tokens(server: Server) -> None:
    pool = {
        "apiVersion": "corral.dev/v1alpha1",
        "kind": "GPUPool",
        "metadata": {"name": "cpu"},
        "spec": {"acceleratorType": "cpu", "gpusPerNode": 0, "maxNodes": 1},
    }
    with server.client(TOKEN_A) as a, server.client(TOKEN_ADMIN) as admin:
        denied = a.post(f"{API}/gpupools", json=pool)
        assert denied.status_code == 403 and "at the cluster scope" in denied.json()["message"]
        created = admin.post(f"{API}/gpupools", json=pool)
        assert created.status_code == 201, created.text
        assert "namespace" not in created.json()["metadata"]
        assert [p["metadata"]["name"] for p in a.get(f"{API}/gpupools").json()["items"]] == ["cpu"]
        assert a.get(f"{API}/gpupools/cpu").status_code == 200
        status = admin.patch(f"{API}/gpupools/cpu/status", content=b'{"status":{"allocatableGpus":0}}', headers=MERGE)
        assert status.status_code == 200, status.text


# -- health, metrics, OpenAPI, discovery ------------------------------------------------------


def test_metrics_need_a_metrics_token(server: Server) -> None:
    """/metrics names every namespace's jobs and costs: only a metrics token (or an admin) reads it."""
    with server.client(None) as anonymous, server.client(TOKEN_A) as tenant, server.client(TOKEN_ADMIN) as admin:
        assert anonymous.get("/metrics").status_code == 401
        denied = tenant.get("/metrics")
        assert denied.status_code == 403 and "metrics: true" in denied.json()["message"]
        assert admin.get("/metrics").status_code == 200


def test_health_and_readiness(server: Server) -> None:
    with server.client(None) as c:
        assert c.get("/healthz").text == "ok"
        assert c.get("/readyz").text == "ok"


def test_metrics_count_requests_by_route_template(server: Server) -> None:
    with server.client() as c, server.client(TOKEN_METRICS) as prometheus:
        c.get(f"{models('team-a')}/does-not-exist")
        text = prometheus.get("/metrics").text
    assert "# TYPE corral_controlapi_requests_total counter" in text
    assert (
        'corral_controlapi_requests_total{code="404",method="GET",'
        'route="/apis/corral.dev/v1alpha1/namespaces/{namespace}/models/{name}"}' in text
    )
    assert "corral_controlapi_request_duration_seconds_bucket" in text


def test_openapi_document_lists_resource_paths(server: Server) -> None:
    with server.client(None) as c:
        doc = c.get("/openapi.json").json()
    paths = doc["paths"]
    for plural in ("models", "datasets", "finetunejobs", "modeldeployments"):
        base = f"{API}/namespaces/{{namespace}}/{plural}"
        assert {"get", "post"} <= set(paths[base])
        assert {"get", "put", "patch", "delete"} <= set(paths[f"{base}/{{name}}"])
        assert {"get", "put", "patch"} <= set(paths[f"{base}/{{name}}/status"])
        assert "get" in paths[f"{API}/{plural}"]
    assert f"{API}/gpupools/{{name}}/status" in paths
    assert f"{API}/namespaces/{{namespace}}/gpupools" not in paths
    create = paths[f"{API}/namespaces/{{namespace}}/finetunejobs"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FineTuneJob"
    }
    assert "application/merge-patch+json" in paths[f"{API}/gpupools/{{name}}"]["patch"]["requestBody"]["content"]
    schemas = doc["components"]["schemas"]
    assert {"Model", "Dataset", "FineTuneJob", "ModelDeployment", "GPUPool", "Status"} <= set(schemas)
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    operation_ids = [op["operationId"] for path in paths.values() for op in path.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_discovery_lists_every_kind(server: Server) -> None:
    with server.client() as c:
        doc = c.get(API).json()
    names = {r["name"]: r for r in doc["resources"]}
    assert doc["groupVersion"] == "corral.dev/v1alpha1"
    assert names["gpupools"]["namespaced"] is False and names["finetunejobs"]["namespaced"] is True


@pytest.mark.skipif(shutil.which("kubectl") is None or shutil.which("openssl") is None, reason="needs kubectl, openssl")
def test_kubectl_get_raw(tokens_file: Path, tmp_path: Path) -> None:
    """kubectl talks to the API like to a Kubernetes API server (over TLS: client-go sends no token over http)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n", encoding="utf-8")
    with SqliteStore(tmp_path / "state.db") as store:
        store.create(Model.model_validate(model_body("kubectl-sees-me", namespace="team-a")))
        app = create_app(store, TokenAuth.from_file(tokens_file), registry=CollectorRegistry())
        with serve(app, ssl_keyfile=str(key), ssl_certfile=str(cert)) as port:

            def kubectl(token: str, path: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    ["kubectl", "--server", f"https://127.0.0.1:{port}", "--insecure-skip-tls-verify",
                     "--token", token, "get", "--raw", path],
                    capture_output=True, text=True, timeout=60, check=False,
                    env={**os.environ, "KUBECONFIG": str(kubeconfig)},
                )  # fmt: skip

            ok = kubectl(TOKEN_A, models("team-a"))
            forbidden = kubectl(TOKEN_A, models("team-b"))
    assert ok.returncode == 0, ok.stderr
    assert [i["metadata"]["name"] for i in json.loads(ok.stdout)["items"]] == ["kubectl-sees-me"]
    assert forbidden.returncode != 0 and "forbidden" in forbidden.stderr
    assert TOKEN_A not in forbidden.stderr
