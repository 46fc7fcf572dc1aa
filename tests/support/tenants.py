"""A control API with two tenants, an admin, a controller and a scrape token, over real HTTP.

Used by the tenant-isolation matrix, the bad-input corpus and the schemathesis run: a real
uvicorn server on loopback, a SQLite store and a file artifact root, and team-b owning one
object of every kind, an uploaded file and an OpenAI-style fine-tuning job.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import CollectorRegistry

from corral.api.v1alpha1 import Dataset, FineTuneJob, Model, ModelDeployment
from corral.controlapi import TokenAuth, create_app, hash_token
from corral.store import SqliteStore
from tests.support.http import serve

__all__ = ["API", "MERGE", "TOKENS", "Tenants", "tenants"]

API = "/apis/corral.dev/v1alpha1"
MERGE = {"Content-Type": "application/merge-patch+json"}
TOKENS = {
    "team-a": "tenant-token-team-a-0001",
    "team-b": "tenant-token-team-b-0002",
    "admin": "tenant-token-admin-0003",
    "controller": "tenant-token-controller-0004",
    "prometheus": "tenant-token-prometheus-0005",
}
DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "openai.jsonl"


@dataclass
class Tenants:
    """The running server and what team-b owns."""

    url: str
    store: SqliteStore
    root: Path
    b_file: str = ""
    b_job: str = ""
    b_objects: dict[str, str] = field(default_factory=dict)  # plural -> name

    def client(self, who: str | None = "team-a", **headers: str) -> httpx.Client:
        auth = {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers={**auth, **headers}, timeout=httpx.Timeout(30.0))

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"


def _seed(world: Tenants) -> None:
    with world.client("team-b") as b:
        with DATA.open("rb") as fh:
            upload = b.post("/v1/files", files={"file": ("b.jsonl", fh)}, data={"purpose": "fine-tune"})
        assert upload.status_code == 200, upload.text
        world.b_file = upload.json()["id"]
        job = b.post("/v1/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": world.b_file})
        assert job.status_code == 200, job.text
        world.b_job = job.json()["id"]
    ns = "team-b"
    data_uri = f"{(world.artifacts / 'files' / ns).as_uri()}/{world.b_file}/b.jsonl"
    objects = [
        Model.model_validate({"metadata": {"name": "b-model", "namespace": ns}, "spec": {"catalogName": "tiny-llama"}}),
        Dataset.model_validate(
            {
                "metadata": {"name": "b-data", "namespace": ns},
                "spec": {"uri": data_uri, "license": {"name": "proprietary", "commercialUse": "allowed"}},
            }
        ),
        FineTuneJob.model_validate(
            {
                "metadata": {"name": "b-job", "namespace": ns},
                "spec": {"baseModel": {"name": "b-model"}, "datasets": [{"name": "b-data"}]},
            }
        ),
        ModelDeployment.model_validate(
            {"metadata": {"name": "b-deploy", "namespace": ns}, "spec": {"model": {"name": "b-model"}}}
        ),
    ]
    for obj in objects:
        created = world.store.create(obj)
        world.store.record_event(created, "Normal", "Seeded", f"team-b's {obj.kind}")
        world.b_objects[type(obj).PLURAL] = obj.metadata.name


@contextmanager
def tenants(root: Path, **app_options: Any) -> Iterator[Tenants]:
    """Start the server under ``root`` and seed team-b's objects; yield the world."""
    tokens = {
        "tokens": [
            {"name": "team-a", "tokenSha256": hash_token(TOKENS["team-a"]), "namespaces": ["team-a"]},
            {"name": "team-b", "tokenSha256": hash_token(TOKENS["team-b"]), "namespaces": ["team-b"]},
            {"name": "admin", "token": TOKENS["admin"], "namespaces": ["*"], "cluster": True},
            {"name": "controller", "token": TOKENS["controller"], "namespaces": ["*"], "controller": True},
            {"name": "prometheus", "token": TOKENS["prometheus"], "namespaces": [], "metrics": True},
        ]
    }
    (root / "tokens.yaml").write_text(yaml.safe_dump(tokens), encoding="utf-8")
    store = SqliteStore(root / "state.db")
    app = create_app(
        store,
        TokenAuth.from_file(root / "tokens.yaml"),
        registry=CollectorRegistry(),
        artifact_root=(root / "artifacts").as_uri(),
        **app_options,
    )
    try:
        with serve(app) as port:
            world = Tenants(f"http://127.0.0.1:{port}", store, root)
            _seed(world)
            yield world
    finally:
        store.close()
