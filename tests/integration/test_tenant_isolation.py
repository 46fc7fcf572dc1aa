"""The tenant-isolation matrix: team-a's token against everything team-b owns, on every route and kind.

Objects of every kind (list, watch, create, read, replace, patch, delete, status, events),
uploaded files (metadata, content, delete), OpenAI-style fine-tuning jobs (read, cancel,
events, checkpoints), the estimate and ``/metrics``: every answer is 403 or 404 and never
shows team-b's data; lists and watches across namespaces leave team-b's objects out; and
team-a cannot point its own objects at team-b's data (the URI rule).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.api.v1alpha1 import KINDS
from tests.support.tenants import API, MERGE, TOKENS, Tenants, tenants

NAMESPACED = [cls for cls in KINDS.values() if cls.NAMESPACED]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    with tenants(tmp_path_factory.mktemp("isolation")) as running:
        yield running


def _refused(response: httpx.Response, *secrets: str) -> None:
    assert response.status_code in (403, 404), f"{response.request.method} {response.request.url}: {response.text}"
    for secret in (*secrets, TOKENS["team-a"], TOKENS["team-b"]):
        assert secret not in response.text, f"{response.request.url} leaked {secret!r}"


def _body(plural: str, name: str, namespace: str = "team-b") -> dict[str, Any]:
    cls = next(c for c in KINDS.values() if plural == c.PLURAL)
    return {"apiVersion": "corral.dev/v1alpha1", "kind": cls.KIND, "metadata": {"name": name, "namespace": namespace}}


@pytest.mark.parametrize("plural", [cls.PLURAL for cls in NAMESPACED])
def test_every_resource_route_of_another_namespace_is_refused(world: Tenants, plural: str) -> None:
    name = world.b_objects[plural]
    base = f"{API}/namespaces/team-b/{plural}"
    item = f"{base}/{name}"
    with world.client("team-a") as a:
        calls = [
            a.get(base),
            a.get(base, params={"watch": "1", "timeoutSeconds": "1"}),
            a.post(base, json=_body(plural, "intruder")),
            a.get(item),
            a.put(item, json=_body(plural, name)),
            a.patch(item, content=b'{"metadata":{"labels":{"x":"y"}}}', headers=MERGE),
            a.delete(item),
            a.get(f"{item}/status"),
            a.put(f"{item}/status", json=_body(plural, name)),
            a.patch(f"{item}/status", content=b'{"status":{"phase":"Succeeded"}}', headers=MERGE),
            a.get(f"{item}/events"),
        ]
    for response in calls:
        _refused(response, name, "Seeded")
    cls = next(c for c in NAMESPACED if plural == c.PLURAL)
    assert world.store.get(cls, "team-b", name).metadata.labels == {}  # nothing changed


@pytest.mark.parametrize("plural", [cls.PLURAL for cls in NAMESPACED])
def test_lists_and_watches_across_namespaces_leave_other_tenants_out(world: Tenants, plural: str) -> None:
    with world.client("team-a") as a:
        listed = a.get(f"{API}/{plural}")
        assert listed.status_code == 200
        assert all(i["metadata"]["namespace"] == "team-a" for i in listed.json()["items"])
        with a.stream("GET", f"{API}/{plural}", params={"watch": "1", "timeoutSeconds": "1"}) as stream:
            lines = [json.loads(line) for line in stream.iter_lines() if line.strip()]
    assert all(e["object"]["metadata"]["namespace"] == "team-a" for e in lines)
    assert world.b_objects[plural] not in listed.text


def test_files_of_another_namespace_are_not_found(world: Tenants) -> None:
    file_id = world.b_file
    with world.client("team-a") as a, world.client("team-a", **{"X-Corral-Namespace": "team-b"}) as as_b:
        for response in (
            a.get(f"/v1/files/{file_id}"),
            a.get(f"/v1/files/{file_id}/content"),
            a.delete(f"/v1/files/{file_id}"),
        ):
            assert response.status_code == 404, response.text
            assert "b.jsonl" not in response.text
        assert file_id not in a.get("/v1/files").text
        for response in (
            as_b.get("/v1/files"),
            as_b.get(f"/v1/files/{file_id}"),
            as_b.get(f"/v1/files/{file_id}/content"),
            as_b.delete(f"/v1/files/{file_id}"),
            as_b.post("/v1/files", files={"file": ("x.jsonl", b"{}")}, data={"purpose": "fine-tune"}),
        ):
            assert response.status_code == 403, response.text
    with world.client("team-b") as b:
        assert b.get(f"/v1/files/{file_id}").status_code == 200  # still there


def test_fine_tuning_jobs_of_another_namespace_are_not_found(world: Tenants) -> None:
    job = world.b_job
    with world.client("team-a") as a, world.client("team-a", **{"OpenAI-Organization": "team-b"}) as as_b:
        for response in (
            a.get(f"/v1/fine_tuning/jobs/{job}"),
            a.post(f"/v1/fine_tuning/jobs/{job}/cancel"),
            a.get(f"/v1/fine_tuning/jobs/{job}/events"),
            a.get(f"/v1/fine_tuning/jobs/{job}/checkpoints"),
        ):
            assert response.status_code == 404, response.text
        assert job not in a.get("/v1/fine_tuning/jobs").text
        stolen = a.post("/v1/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": world.b_file})
        assert stolen.status_code in (400, 404) and "b.jsonl" not in stolen.text
        for response in (
            as_b.get("/v1/fine_tuning/jobs"),
            as_b.get(f"/v1/fine_tuning/jobs/{job}"),
            as_b.post(f"/v1/fine_tuning/jobs/{job}/cancel"),
            as_b.get(f"/v1/fine_tuning/jobs/{job}/events"),
            as_b.post("/v1/estimate", json={"kind": "ModelDeployment", "spec": {"model": {"name": "b-model"}}}),
        ):
            assert response.status_code == 403, response.text
        estimate = a.post(
            "/v1/estimate",
            json={
                "kind": "ModelDeployment",
                "metadata": {"namespace": "team-b"},
                "spec": {"model": {"name": "b-model"}},
            },
        )
        assert estimate.status_code == 403
    with world.client("team-b") as b:
        assert b.get(f"/v1/fine_tuning/jobs/{job}").json()["status"] != "cancelled"


def test_metrics_are_not_a_tenants(world: Tenants) -> None:
    with world.client("team-a") as a, world.client(None) as anonymous, world.client("prometheus") as scrape:
        assert a.get("/metrics").status_code == 403
        assert anonymous.get("/metrics").status_code == 401
        text = scrape.get("/metrics").text
    assert 'namespace="team-b"' in text  # the scrape token sees everything; tenants see none of it


def _uri_cases(world: Tenants) -> dict[str, str]:
    b_folder = world.artifacts / "files" / "team-b" / world.b_file
    link = world.artifacts / "files" / "team-a" / "link-to-b"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(b_folder)
    return {
        "team-b's upload": f"{b_folder.as_uri()}/b.jsonl",
        "team-b's meta.json": f"{b_folder.as_uri()}/meta.json",
        "a symlink to team-b": f"{link.as_uri()}/b.jsonl",
        "a dotted path": f"{(world.artifacts / 'files' / 'team-a').as_uri()}/../team-b/{world.b_file}/b.jsonl",
        "/etc/passwd": "file:///etc/passwd",
        "a missing file": "file:///nonexistent/x.jsonl",
        "the server's docs": "file:///usr/share/doc",
        "team-b's job folder": f"{(world.artifacts / 'finetunejobs' / 'team-b').as_uri()}/b-job/output",
        "a bucket": "s3://someone-elses-bucket/data.jsonl",
    }


def test_a_tenant_cannot_point_its_objects_at_data_it_does_not_own(world: Tenants) -> None:
    """The URI rule: one refusal, the same whether the target exists or not, before anything is read."""
    messages = set()
    with world.client("team-a") as a:
        for what, uri in _uri_cases(world).items():
            dataset = {
                "apiVersion": "corral.dev/v1alpha1",
                "kind": "Dataset",
                "metadata": {"name": "steal"},
                "spec": {"uri": uri, "license": {"name": "x", "commercialUse": "allowed"}},
            }
            model = {
                "apiVersion": "corral.dev/v1alpha1",
                "kind": "Model",
                "metadata": {"name": "steal"},
                "spec": {"uri": uri, "license": {"name": "x"}},
            }
            for plural, body in (("datasets", dataset), ("models", model)):
                response = a.post(f"{API}/namespaces/team-a/{plural}", json=body)
                assert response.status_code == 422, (what, response.text)
                status = response.json()
                assert status["details"]["causes"][0]["field"] == "spec.uri"
                assert "root:x:0" not in response.text and "examples" not in response.text  # nothing read
                messages.add(re.sub(r"spec\.uri: '[^']*'", "spec.uri: <uri>", status["message"]))
        own = a.post(f"{API}/namespaces/team-a/datasets", json={**dataset, "metadata": {"name": "legit"}})
        # patch cannot smuggle a URI in either
        legit = {"uri": f"{(world.artifacts / 'files' / 'team-a').as_uri()}/file-x/data.jsonl"}
        created = a.post(
            f"{API}/namespaces/team-a/datasets",
            json={
                "kind": "Dataset",
                "metadata": {"name": "mine"},
                "spec": {**legit, "license": {"name": "x", "commercialUse": "allowed"}},
            },
        )
        assert created.status_code == 201, created.text
        smuggled = a.patch(
            f"{API}/namespaces/team-a/datasets/mine",
            content=json.dumps({"spec": {"uri": "file:///etc/passwd"}}),
            headers=MERGE,
        )
        assert smuggled.status_code == 422
        replaced = created.json()
        replaced["spec"]["uri"] = _uri_cases(world)["team-b's upload"]
        assert a.put(f"{API}/namespaces/team-a/datasets/mine", json=replaced).status_code == 422
    assert own.status_code == 422
    assert len(messages) == 2, messages  # one message per kind: no existence or content oracle
    with world.client("admin") as admin:  # the administrator may point anywhere
        body = {**dataset, "metadata": {"name": "admin-data"}, "spec": {**dataset["spec"], "uri": "file:///tmp/x"}}
        assert admin.post(f"{API}/namespaces/team-a/datasets", json=body).status_code == 201


def test_tenants_cannot_write_status_even_their_own(world: Tenants, tmp_path: Path) -> None:
    """The reconciler acts on status (submission ids): only the controller writes it."""
    with world.client("team-b") as b, world.client("controller") as controller:
        forged = {"status": {"submissionId": "corral-team-a.victim-1", "phase": "Succeeded"}}
        url = f"{API}/namespaces/team-b/finetunejobs/b-job/status"
        response = b.patch(url, content=json.dumps(forged), headers=MERGE)
        assert response.status_code == 403
        assert world.store.get("FineTuneJob", "team-b", "b-job").status.submission_id is None
        fixed = controller.patch(url, content=b'{"status":{"phase":"Pending"}}', headers=MERGE)
        assert fixed.status_code == 200, fixed.text
