"""The bad-input corpus: what an attacker sent to ``corral up``, and more, against the real API.

Every case must be answered with a 4xx (never a 5xx, never accepted when it should not be),
with a clear error, and leave nothing behind. The issue's cases first (deep JSON, malformed
preconditions, hostile namespace headers, NaN timeouts, YAML alias bombs, huge objects and
bodies, failed uploads), then more of the same kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.tenants import API, MERGE, Tenants, tenants

UPLOAD_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    with tenants(tmp_path_factory.mktemp("corpus"), max_upload_bytes=UPLOAD_LIMIT, max_watches_per_token=4) as w:
        yield w


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[httpx.Client], httpx.Response]
    codes: tuple[int, ...]
    says: str = ""  # a phrase the error must contain


DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJ = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
MODELS = f"{API}/namespaces/team-a/models"
JOBS = f"{API}/namespaces/team-a/finetunejobs"
JSON = {"Content-Type": "application/json"}
YAML = {"Content-Type": "application/yaml"}


def _bomb(levels: int = 9) -> bytes:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(1, levels):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        text += f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 10) + "]\n"
    return text.encode()


def _model(name: str = "m", **meta: object) -> dict[str, object]:
    return {"kind": "Model", "metadata": {"name": name, **meta}, "spec": {"catalogName": "tiny-llama"}}


CASES = [
    # -- from the issue: 500s where a 400 belongs -----------------------------------------
    Case("deep JSON on create", lambda c: c.post(MODELS, content=DEEP, headers=JSON), (400,), "nested deeper"),
    Case("deep JSON object", lambda c: c.post(MODELS, content=DEEP_OBJ, headers=JSON), (400,), "nested deeper"),
    Case("deep JSON on patch", lambda c: c.patch(f"{MODELS}/x", content=DEEP, headers=MERGE), (400,), "nested"),
    Case("deep JSON on delete", lambda c: c.request("DELETE", f"{MODELS}/x", content=DEEP), (400,), "nested"),
    Case("deep JSON on ft jobs", lambda c: c.post("/v1/fine_tuning/jobs", content=DEEP, headers=JSON), (400,)),
    Case("deep JSON on estimate", lambda c: c.post("/v1/estimate", content=DEEP, headers=JSON), (400,)),
    Case(
        "preconditions as a list",
        lambda c: c.request("DELETE", f"{MODELS}/x", json={"preconditions": ["1"]}),
        (400,),
        "preconditions",
    ),
    Case(
        "preconditions as a string",
        lambda c: c.request("DELETE", f"{MODELS}/x", json={"preconditions": "rv"}),
        (400,),
        "preconditions",
    ),
    Case(
        "preconditions.resourceVersion as an object",
        lambda c: c.request("DELETE", f"{MODELS}/x", json={"preconditions": {"resourceVersion": {"a": 1}}}),
        (400,),
    ),
    Case("DeleteOptions as a list", lambda c: c.request("DELETE", f"{MODELS}/x", json=[1]), (400,)),
    *[
        Case(
            f"namespace header {ns!r}",
            lambda c, ns=ns: c.get("/v1/files", headers={"X-Corral-Namespace": ns}),
            (400,),
            "not a valid namespace",
        )
        for ns in ("..", "../x", "x?y", "a/b", "A", "-x", "x" * 64, "%2e%2e")
    ],
    Case(
        "namespace header a/b on upload",
        lambda c: c.post(
            "/v1/files",
            headers={"X-Corral-Namespace": "a/b"},
            files={"file": ("x.jsonl", b"{}")},
            data={"purpose": "fine-tune"},
        ),
        (400,),
    ),
    Case("timeoutSeconds=nan", lambda c: c.get(MODELS, params={"watch": "1", "timeoutSeconds": "nan"}), (400,)),
    Case("timeoutSeconds=inf", lambda c: c.get(MODELS, params={"watch": "1", "timeoutSeconds": "inf"}), (400,)),
    Case("timeoutSeconds=-1", lambda c: c.get(MODELS, params={"watch": "1", "timeoutSeconds": "-1"}), (400,)),
    Case("timeoutSeconds=1e999", lambda c: c.get(MODELS, params={"watch": "1", "timeoutSeconds": "1e999"}), (400,)),
    Case("YAML alias bomb", lambda c: c.post("/v1/estimate", content=_bomb(), headers=YAML), (400,), "anchors"),
    Case("YAML alias", lambda c: c.post("/v1/estimate", content=b"kind: *x\n", headers=YAML), (400,), "alias"),
    Case(
        "YAML !!python tag",
        lambda c: c.post("/v1/estimate", content=b"!!python/object/apply:os.system [id]\n", headers=YAML),
        (400,),
    ),
    Case("YAML .nan", lambda c: c.post("/v1/estimate", content=b"kind: FineTuneJob\nx: .nan\n", headers=YAML), (400,)),
    Case("YAML not UTF-8", lambda c: c.post("/v1/estimate", content=b"kind: \xff\n", headers=YAML), (400,)),
    Case(
        "YAML of 2.3 MB",
        lambda c: c.post("/v1/estimate", content=b"items:\n" + b"  - aaaaaaaaaaaa\n" * 150_000, headers=YAML),
        (413,),
    ),
    Case(
        "a 30 MB annotation",
        lambda c: c.post(MODELS, json=_model("big", annotations={"x": "y" * 30_000_000})),
        (413,),
        "limit",
    ),
    Case(
        "a 2 MB object (under the body limit, over the object limit)",
        lambda c: c.post(MODELS, json=_model("big2", annotations={"x": "y" * 2_000_000})),
        (413,),
        "at most",
    ),
    Case("a 4 MB body", lambda c: c.post(MODELS, content=b" " * 4_000_000, headers=JSON), (413,)),
    Case(
        "a 4 MB chunked body",
        lambda c: c.post(MODELS, content=iter([b" " * 1_000_000] * 4), headers=JSON),
        (413,),
    ),
    Case("NaN in a body", lambda c: c.post(MODELS, content=b'{"kind": "Model", "x": NaN}', headers=JSON), (400,)),
    Case(
        "Infinity in a patch",
        lambda c: c.patch(f"{MODELS}/x", content=b'{"spec": {"n": Infinity}}', headers=MERGE),
        (400,),
    ),
    Case(
        "a tenant writes status", lambda c: c.patch(f"{JOBS}/j/status", content=b'{"status":{}}', headers=MERGE), (403,)
    ),
    # -- uploads -----------------------------------------------------------------------------
    Case(
        "an upload over the limit",
        lambda c: c.post(
            "/v1/files", files={"file": ("x.jsonl", b"{}\n" * UPLOAD_LIMIT)}, data={"purpose": "fine-tune"}
        ),
        (413,),
    ),
    Case(
        "a chunked upload over the limit",
        lambda c: c.post(
            "/v1/files",
            content=iter([b"--b\r\nContent-Disposition: form-data; name=file\r\n\r\n"] + [b"x" * 65536] * 4),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        ),
        (413,),
    ),
    Case(
        "a multipart body cut short",
        lambda c: c.post(
            "/v1/files",
            content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n{"a":1}',
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        ),
        (400,),
        "ends inside",
    ),
    Case(
        "multipart without a boundary",
        lambda c: c.post("/v1/files", content=b"x", headers={"Content-Type": "multipart/form-data"}),
        (400,),
    ),
    Case("an upload as JSON", lambda c: c.post("/v1/files", json={"file": "x"}), (400,)),
    Case(
        "an empty file",
        lambda c: c.post("/v1/files", files={"file": ("x.jsonl", b"")}, data={"purpose": "fine-tune"}),
        (400,),
    ),
    Case(
        "a wrong purpose",
        lambda c: c.post("/v1/files", files={"file": ("x.jsonl", b"{}")}, data={"purpose": "x" * 10000}),
        (400,),
    ),
    Case(
        "two file parts",
        lambda c: c.post(
            "/v1/files",
            files=[("file", ("x.jsonl", b"{}")), ("file", ("y.jsonl", b"{}"))],
            data={"purpose": "fine-tune"},
        ),
        (400,),
    ),
    Case("a traversal file id", lambda c: c.get("/v1/files/..%2F..%2Fetc%2Fpasswd"), (404,)),
    Case("a file id of the right shape", lambda c: c.get(f"/v1/files/file-{'0' * 24}/content"), (404,)),
    Case("list files limit 0", lambda c: c.get("/v1/files", params={"limit": "0"}), (400,)),
    Case("list files limit 10^12", lambda c: c.get("/v1/files", params={"limit": str(10**12)}), (400,)),
    Case("list files limit nan", lambda c: c.get("/v1/files", params={"limit": "nan"}), (400,)),
    # -- fine-tuning jobs and estimates ---------------------------------------------------------
    Case("ft job body not an object", lambda c: c.post("/v1/fine_tuning/jobs", json=[1, 2]), (400,)),
    Case("ft job unknown field", lambda c: c.post("/v1/fine_tuning/jobs", json={"model": "m", "x": 1}), (400,)),
    Case(
        "ft job n_epochs NaN",
        lambda c: c.post(
            "/v1/fine_tuning/jobs",
            content=b'{"model": "tiny-llama", "training_file": "file-x", "hyperparameters": {"n_epochs": NaN}}',
            headers=JSON,
        ),
        (400,),
    ),
    Case(
        "ft job n_epochs 10^30",
        lambda c: c.post(
            "/v1/fine_tuning/jobs",
            json={"model": "tiny-llama", "training_file": "file-x", "hyperparameters": {"n_epochs": 10**30}},
        ),
        (400,),
    ),
    Case("ft jobs limit -1", lambda c: c.get("/v1/fine_tuning/jobs", params={"limit": "-1"}), (400,)),
    Case("estimate metadata as a list", lambda c: c.post("/v1/estimate", json={"metadata": [1]}), (400,)),
    Case("estimate kind as an object", lambda c: c.post("/v1/estimate", json={"kind": {"x": "y" * 10**6}}), (400,)),
    Case(
        "estimate a huge number",
        lambda c: c.post(
            "/v1/estimate",
            json={"kind": "ModelDeployment", "spec": {"model": {"name": "tiny-llama"}, "replicas": 10**400}},
        ),
        (400, 404),
    ),
    # -- resources -------------------------------------------------------------------------------
    Case("body not JSON", lambda c: c.post(MODELS, content=b"{", headers=JSON), (400,)),
    Case("body not UTF-8", lambda c: c.post(MODELS, content=b'{"a": "\xff"}', headers=JSON), (400,)),
    Case("body a list", lambda c: c.post(MODELS, json=[1]), (400,)),
    Case("kind mismatch", lambda c: c.post(MODELS, json={"kind": "Dataset", "metadata": {"name": "x"}}), (400,)),
    Case("kind as an object", lambda c: c.post(MODELS, json={"kind": {"a": "b" * 10**6}}), (400,)),
    Case("metadata a string", lambda c: c.post(MODELS, json={"kind": "Model", "metadata": "x"}), (422,)),
    Case("name 10,000 chars", lambda c: c.post(MODELS, json=_model("x" * 10_000)), (422,)),
    Case("name with a slash", lambda c: c.post(MODELS, json=_model("a/b")), (422,)),
    Case("wrong namespace in body", lambda c: c.post(MODELS, json=_model("x", namespace="team-b")), (400,)),
    Case("namespace as a list in body", lambda c: c.post(MODELS, json=_model("x", namespace=["team-a"])), (400,)),
    Case("labels not strings", lambda c: c.post(MODELS, json=_model("x", labels={"a": {"b": 1}})), (422,)),
    Case("a patch that is a list", lambda c: c.patch(f"{MODELS}/x", content=b"[1]", headers=MERGE), (400,)),
    Case("a patch as JSON", lambda c: c.patch(f"{MODELS}/x", json={"spec": {}}), (415,)),
    Case(
        "status patch with a status list",
        lambda c: c.patch(f"{JOBS}/j/status", content=b'{"status": [1]}', headers=MERGE),
        (403,),
    ),
    Case("bad label selector", lambda c: c.get(MODELS, params={"labelSelector": "a in (("}), (400,)),
    Case(
        "label selector of 30 kB",
        lambda c: c.get(MODELS, params={"labelSelector": "a=" + "b" * 30_000}),
        (400, 414, 431),
    ),
    Case(
        "watch from a bad version", lambda c: c.get(MODELS, params={"watch": "1", "resourceVersion": "abc"}), (422, 400)
    ),
    Case(
        "watch from version -5",
        lambda c: c.get(MODELS, params={"watch": "1", "resourceVersion": "-5", "timeoutSeconds": "0.1"}),
        (200, 410),
    ),
    Case("a namespace path of ..", lambda c: c.get(f"{API}/namespaces/%2e%2e/models"), (403, 404)),
    Case("an unknown kind", lambda c: c.get(f"{API}/namespaces/team-a/pods"), (404,)),
    Case("an unknown method", lambda c: c.request("BREW", MODELS), (405, 400)),
    Case("PUT on a collection", lambda c: c.put(MODELS, json=_model()), (405,)),
    # -- who is calling ------------------------------------------------------------------------
    Case("no token", lambda c: c.get(MODELS, headers={"Authorization": ""}), (401,)),
    Case("Basic auth", lambda c: c.get(MODELS, headers={"Authorization": "Basic YTpi"}), (401,)),
    Case("a 10 kB token", lambda c: c.get(MODELS, headers={"Authorization": "Bearer " + "t" * 10_000}), (401,)),
    Case("metrics as a tenant", lambda c: c.get("/metrics"), (403,)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_cleanly(world: Tenants, case: Case) -> None:
    with world.client("team-a") as client:
        try:
            response = case.send(client)
        except httpx.TransportError as exc:  # pragma: no cover - a refused body must still be answered
            pytest.fail(f"{case.name}: the connection broke instead of an answer: {exc!r}")
    assert response.status_code in case.codes, f"{case.name}: {response.status_code} {response.text[:300]}"
    assert response.status_code < 500
    assert len(response.content) < 20_000, f"{case.name}: the error repeats the input ({len(response.content)} B)"
    if case.says:
        assert case.says in response.text, response.text[:300]


def test_nothing_is_left_behind(world: Tenants) -> None:
    """Refused uploads leave no file, and a hostile namespace header made no folder."""
    with world.client("team-a") as client:
        for case in CASES:
            if "upload" in case.name or "multipart" in case.name or "namespace header" in case.name:
                case.send(client)
        assert client.get("/v1/files").json()["data"] == []
    files = world.artifacts / "files"
    assert sorted(p.name for p in files.iterdir()) == [".incoming", "team-b"]
    assert list((files / ".incoming").iterdir()) == []
    assert not (files / "a").exists()


def test_watches_are_capped_per_token_and_hold_no_thread(world: Tenants) -> None:
    """A token's watches beyond its quota get 429; open watches do not slow other calls down."""
    clients = [world.client("team-a") for _ in range(5)]
    streams = []
    try:
        for client in clients[:4]:
            stream = client.stream("GET", MODELS, params={"watch": "1", "timeoutSeconds": "30"})
            response = stream.__enter__()
            assert response.status_code == 200
            streams.append(stream)
        over = clients[4].get(MODELS, params={"watch": "1", "timeoutSeconds": "30"})
        assert over.status_code == 429 and over.json()["reason"] == "TooManyRequests"
        with world.client("team-b") as other:  # another token is not affected
            with other.stream(
                "GET", f"{API}/namespaces/team-b/models", params={"watch": "1", "timeoutSeconds": "1"}
            ) as s:
                assert s.status_code == 200
            assert other.get("/readyz").status_code == 200
    finally:
        for stream in streams:
            stream.__exit__(None, None, None)
        for client in clients:
            client.close()
    with world.client("team-a") as client:  # closed watches give their slots back (the server sees the close)
        deadline_ok = False
        for _ in range(100):
            response = client.get(MODELS, params={"watch": "1", "timeoutSeconds": "0.1"})
            if response.status_code == 200:
                deadline_ok = True
                break
            import time

            time.sleep(0.1)
        assert deadline_ok


def test_a_failed_store_write_leaves_no_orphan(world: Tenants, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Storing fails half-way (meta.json cannot be written): the data written before it is removed."""
    from corral.artifacts._local import LocalStore

    real = LocalStore.put_bytes

    def failing(self: LocalStore, data: bytes, uri: object) -> object:
        if str(uri).endswith("meta.json"):
            raise OSError("disk full")
        return real(self, data, uri)  # type: ignore[arg-type]

    monkeypatch.setattr(LocalStore, "put_bytes", failing)
    with world.client("team-a") as client:
        response = client.post(
            "/v1/files",
            files={"file": ("x.jsonl", b'{"prompt": "a", "completion": "b"}\n')},
            data={"purpose": "fine-tune"},
        )
    assert response.status_code >= 500  # the disk is full: a server error, honestly reported
    monkeypatch.undo()
    leftovers = [p for p in (world.artifacts / "files" / "team-a").rglob("*") if p.is_file()]
    assert leftovers == []
