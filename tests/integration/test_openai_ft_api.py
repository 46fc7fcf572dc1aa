"""The OpenAI-style fine-tuning API through the official ``openai`` client (no Ray, no reconciler).

A real uvicorn server on loopback with a SQLite store and a file artifact root: upload files
(valid, malformed), create jobs and check the Corral objects they map to, list/retrieve/
cancel/events/checkpoints parsed by the official client, the status mapping (by patching the
FineTuneJob's status as the reconciler would), OpenAI error bodies, namespace isolation and
the ``/v1/estimate`` dry run.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client import CollectorRegistry

from corral.api import load_documents
from corral.api.v1alpha1 import Dataset, FineTuneJob, GPUPool, Model, ModelDeployment
from corral.controlapi import TokenAuth, create_app, hash_token
from corral.store import SqliteStore
from tests.support.http import serve

TOKEN_A = "token-for-team-a-0001"
TOKEN_B = "token-for-team-b-0002"
TOKEN_ADMIN = "token-for-the-admin-03"
REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "support-bot" / "data" / "support-faq.alpaca.jsonl"
BAD = (
    b'{"instruction": "What are your hours?", "input": "", "output": "9 to 6."}\n'
    b'{"instruction": "broken json", \n'
    b'{"instruction": "No answer here", "input": ""}\n'
)


@dataclass
class Server:
    url: str
    store: SqliteStore

    def openai(self, token: str = TOKEN_A, namespace: str | None = None) -> openai.OpenAI:
        headers = {"X-Corral-Namespace": namespace} if namespace else None
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=token, organization=None, max_retries=0, default_headers=headers
        )

    def http(self, token: str | None = TOKEN_A) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("openai-ft")
    tokens = {
        "tokens": [
            {"name": "team-a", "tokenSha256": hash_token(TOKEN_A), "namespaces": ["team-a"]},
            {"name": "team-b", "token": TOKEN_B, "namespaces": ["team-b"]},
            {"name": "admin", "tokenSha256": hash_token(TOKEN_ADMIN), "namespaces": ["*"], "cluster": True},
        ]
    }
    (root / "tokens.yaml").write_text(yaml.safe_dump(tokens), encoding="utf-8")
    store = SqliteStore(root / "state.db")
    app = create_app(
        store,
        TokenAuth.from_file(root / "tokens.yaml"),
        registry=CollectorRegistry(),
        artifact_root=(root / "artifacts").as_uri(),
    )
    try:
        with serve(app) as port:
            yield Server(f"http://127.0.0.1:{port}", store)
    finally:
        store.close()


@pytest.fixture(scope="module")
def training_file(server: Server) -> str:
    with DATA.open("rb") as fh:
        return server.openai().files.create(file=fh, purpose="fine-tune").id


def _create_job(server: Server, training_file: str, **extra: Any) -> Any:
    return server.openai().fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=training_file,
        suffix="bot",
        seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 5, "batch_size": 8}}},
        **extra,
    )


# -- files ----------------------------------------------------------------------------------


def test_upload_returns_a_processed_file_with_its_validation_report(server: Server, training_file: str) -> None:
    client = server.openai()
    got = client.files.retrieve(training_file)
    assert got.id.startswith("file-") and got.object == "file"
    assert got.status == "processed" and got.purpose == "fine-tune"
    assert got.filename == "support-faq.alpaca.jsonl" and got.bytes == DATA.stat().st_size
    raw = server.http().get(f"/v1/files/{training_file}").json()
    assert raw["validation"]["ok"] is True
    assert raw["validation"]["format"] == "alpaca"
    assert raw["validation"]["examples"] == 128 and raw["validation"]["errors"] == []
    assert [f.id for f in client.files.list()] == [training_file]
    assert client.files.content(training_file).read() == DATA.read_bytes()
    with DATA.open("rb") as fh:  # the same content again: the same file
        assert client.files.create(file=fh, purpose="fine-tune").id == training_file


def test_malformed_file_reports_errors_with_line_numbers(server: Server) -> None:
    client = server.openai()
    obj = client.files.create(file=("bad.jsonl", io.BytesIO(BAD)), purpose="fine-tune")
    assert obj.status == "error"
    assert obj.status_details and "line 2" in obj.status_details
    report = server.http().get(f"/v1/files/{obj.id}").json()["validation"]
    assert report["ok"] is False
    by_line = {e["line"]: e["code"] for e in report["errors"]}
    assert by_line == {2: "invalid_json", 3: "missing_field"}
    with pytest.raises(openai.BadRequestError) as info:
        _create_job(server, obj.id)
    assert info.value.code == "invalid_training_file" and info.value.param == "training_file", info.value.message


def test_upload_errors(server: Server) -> None:
    client = server.openai()
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    assert info.value.code == "invalid_purpose" and info.value.param == "purpose"
    with pytest.raises(openai.NotFoundError) as missing:
        client.files.retrieve("file-000000000000000000000000")
    assert missing.value.code == "file_not_found"


# -- jobs -----------------------------------------------------------------------------------


def test_create_job_maps_to_dataset_model_and_finetunejob(server: Server, training_file: str) -> None:
    job = _create_job(
        server,
        training_file,
        metadata={"team": "support"},
        extra_body={"corral": {"lora": {"rank": 8}, "resources": {"workers": 1, "cpusPerWorker": "1"}}},
    )
    assert job.object == "fine_tuning.job" and job.id.startswith("ftjob-")
    assert job.status == "validating_files" and job.fine_tuned_model is None
    assert job.model == "tiny-llama" and job.training_file == training_file and job.suffix == "bot"
    assert job.organization_id == "team-a" and job.seed == 7 and job.metadata == {"team": "support"}
    assert job.hyperparameters.n_epochs == 5 and job.hyperparameters.batch_size == 8
    assert job.method is not None and job.method.type == "supervised"

    ftj = server.store.get(FineTuneJob, "team-a", job.id)
    spec = ftj.spec
    assert spec.base_model.name == "tiny-llama" and [d.name for d in spec.datasets] == [training_file]
    assert spec.method == "lora" and spec.lora is not None and spec.lora.rank == 8
    assert spec.hyperparameters.epochs == 5 and spec.hyperparameters.global_batch_size == 8
    assert spec.hyperparameters.seed == 7
    assert spec.deploy_on_success is not None
    assert spec.deploy_on_success.deployment == "openai-tiny-llama"
    assert spec.deploy_on_success.served_name == f"ft:tiny-llama:bot:{job.id}"
    assert spec.output.model_name == job.id

    dataset = server.store.get(Dataset, "team-a", training_file)
    assert dataset.spec.uri.startswith("file://") and dataset.spec.uri.endswith("support-faq.alpaca.jsonl")
    assert dataset.spec.format == "auto"
    assert dataset.spec.license.name == "proprietary" and dataset.spec.license.commercial_use == "allowed"
    model = server.store.get(Model, "team-a", "tiny-llama")
    assert model.spec.catalog_name == "tiny-llama" and model.spec.type == "base"


def test_learning_rate_multiplier_and_license_extension(server: Server, training_file: str) -> None:
    job = server.openai().fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=training_file,
        hyperparameters={"learning_rate_multiplier": 10, "n_epochs": "auto"},
        extra_body={"corral": {"hyperparameters": {"maxSeqLen": 256}, "deployment": "support-bot"}},
    )
    spec = server.store.get(FineTuneJob, "team-a", job.id).spec
    assert spec.hyperparameters.learning_rate == pytest.approx(2e-2)  # 10 x the tiny recipe's 2e-3
    assert spec.hyperparameters.epochs is None and spec.hyperparameters.max_seq_len == 256  # auto: chosen at submission
    assert job.hyperparameters.n_epochs == "auto" and job.hyperparameters.batch_size == "auto"
    assert spec.deploy_on_success is not None and spec.deploy_on_success.deployment == "support-bot"
    assert spec.deploy_on_success.served_name == f"ft:tiny-llama:corral:{job.id}"
    assert job.hyperparameters.learning_rate_multiplier == pytest.approx(10)


def test_list_retrieve_and_idempotency(server: Server, training_file: str) -> None:
    client = server.openai()
    first = _create_job(server, training_file)
    ids = [j.id for j in client.fine_tuning.jobs.list()]
    assert first.id in ids
    assert client.fine_tuning.jobs.retrieve(first.id).id == first.id
    page = client.fine_tuning.jobs.list(limit=1)
    assert len(page.data) == 1 and page.has_more
    body = {"model": "tiny-llama", "training_file": training_file}
    with server.http() as http:
        one = http.post("/v1/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "k-1"}).json()["id"]
        two = http.post("/v1/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "k-1"}).json()["id"]
    assert one == two


def _set_status(server: Server, name: str, status: dict[str, Any]) -> None:
    server.store.patch_status(FineTuneJob, "team-a", name, status)


def _cond(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2025-01-01T00:00:00Z",
    }


def test_status_mapping(server: Server, training_file: str) -> None:
    client = server.openai()
    job = _create_job(server, training_file)
    retrieve = client.fine_tuning.jobs.retrieve
    _set_status(
        server,
        job.id,
        {"phase": "Pending", "conditions": [_cond("Admitted", "False", "DatasetNotReady", "Dataset x is not Ready")]},
    )
    assert retrieve(job.id).status == "validating_files"
    _set_status(server, job.id, {"phase": "Pending", "conditions": [_cond("Admitted", "False", "NoCapacity", "full")]})
    assert retrieve(job.id).status == "queued"
    _set_status(server, job.id, {"phase": "Admitted"})
    assert retrieve(job.id).status == "queued"
    _set_status(server, job.id, {"phase": "Running", "progress": {"step": 3, "totalSteps": 10, "etaSeconds": 60}})
    running = retrieve(job.id)
    assert running.status == "running" and running.estimated_finish is not None
    _set_status(server, job.id, {"phase": "Succeeded", "completionTime": "2025-01-01T01:00:00Z"})
    assert retrieve(job.id).status == "running"  # trained, not yet served
    served = f"ft:tiny-llama:bot:{job.id}"
    dep = ModelDeployment.model_validate(
        {"metadata": {"name": "openai-tiny-llama", "namespace": "team-a"}, "spec": {"model": {"name": "tiny-llama"}}}
    )
    server.store.create(dep)
    server.store.patch_status(
        ModelDeployment, "team-a", "openai-tiny-llama", {"phase": "Ready", "servedModels": ["tiny-llama", served]}
    )
    done = retrieve(job.id)
    assert done.status == "succeeded" and done.fine_tuned_model == served
    assert done.finished_at is not None and done.error is None

    failed = _create_job(server, training_file)
    _set_status(
        server,
        failed.id,
        {"phase": "Failed", "conditions": [_cond("Failed", "True", "OutOfMemory", "the worker ran out of memory")]},
    )
    got = retrieve(failed.id)
    assert got.status == "failed" and got.error is not None
    assert got.error.code == "OutOfMemory" and "out of memory" in got.error.message

    refused = _create_job(server, training_file)
    message = "trained similarity score 41.2% is below minTrainedScorePercent 60%"
    _set_status(
        server,
        refused.id,
        {"phase": "Succeeded", "conditions": [_cond("Promoted", "False", "EvaluationBelowThreshold", message)]},
    )
    gated = retrieve(refused.id)
    assert gated.status == "succeeded" and gated.error is None  # not promoted: succeeded, the events say why


def test_events_and_checkpoints(server: Server, training_file: str) -> None:
    client = server.openai()
    job = _create_job(server, training_file)
    obj = server.store.get(FineTuneJob, "team-a", job.id)
    server.store.record_event(obj, "Normal", "Submitted", "Submitted Ray job corral-x")
    server.store.record_event(obj, "Warning", "BaseModelNotReady", "waiting for the base")
    server.store.record_event(obj, "Warning", "JobFailed", "something broke")
    _set_status(
        server,
        job.id,
        {
            "phase": "Running",
            "progress": {"step": 20, "totalSteps": 40, "epoch": 2},
            "metrics": {"loss": 1.25},
            "checkpoints": [
                {"step": 10, "uri": "file:///tmp/ckpt-10", "createdAt": "2025-01-01T00:10:00Z"},
                {"step": 20, "uri": "file:///tmp/ckpt-20", "createdAt": "2025-01-01T00:20:00Z"},
            ],
        },
    )
    events = client.fine_tuning.jobs.list_events(job.id, limit=50).data
    messages = [e.message for e in events]
    assert any(m.startswith("Submitted:") for m in messages)
    assert any(m.startswith("Created fine-tuning job") for m in messages)
    metrics = [e for e in events if e.type == "metrics"]
    assert len(metrics) == 1 and metrics[0].data == {
        "step": 20,
        "total_steps": 40,
        "epoch": 2,
        "train_loss": 1.25,
        "valid_loss": None,
    }
    assert {e.level for e in events} == {"info", "warn", "error"}
    assert all(e.object == "fine_tuning.job.event" for e in events)

    ckpts = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in ckpts] == [20, 10]
    assert ckpts[0].object == "fine_tuning.job.checkpoint" and ckpts[0].fine_tuning_job_id == job.id
    assert ckpts[0].fine_tuned_model_checkpoint == f"ft:tiny-llama:bot:{job.id}:ckpt-step-20"
    assert ckpts[0].metrics.train_loss == 1.25 and ckpts[1].metrics.train_loss is None
    assert ckpts[0].metrics.step == 20


def test_cancel(server: Server, training_file: str) -> None:
    client = server.openai()
    job = _create_job(server, training_file)
    _set_status(server, job.id, {"phase": "Running"})
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    obj = server.store.get(FineTuneJob, "team-a", job.id)
    assert obj.spec.suspend is True and obj.metadata.annotations["corral.dev/cancelled"] == "true"
    _set_status(server, job.id, {"phase": "Suspended"})  # what the reconciler writes next
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.cancel(job.id)
    assert info.value.code == "invalid_state"


# -- errors and namespaces ------------------------------------------------------------------


def test_error_shapes(server: Server, training_file: str) -> None:
    with server.http(None) as http:
        response = http.get("/v1/fine_tuning/jobs")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.AuthenticationError):
        server.openai(token="not-a-valid-token-xx").fine_tuning.jobs.list()
    client = server.openai()
    with pytest.raises(openai.NotFoundError) as missing:
        client.fine_tuning.jobs.retrieve("ftjob-doesnotexist")
    assert missing.value.code == "fine_tuning_job_not_found"
    with pytest.raises(openai.NotFoundError) as model:
        client.fine_tuning.jobs.create(model="no-such-model", training_file=training_file)
    assert model.value.code == "model_not_found" and model.value.param == "model"
    with pytest.raises(openai.BadRequestError) as dpo:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=training_file, method={"type": "dpo"})
    assert dpo.value.param == "method.type"
    with pytest.raises(openai.BadRequestError) as epochs:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=training_file, hyperparameters={"n_epochs": 0})
    assert epochs.value.code == "invalid_value"
    with server.http() as http:
        bad = http.post("/v1/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": "f", "bogus": 1})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "bogus"
    with pytest.raises(openai.BadRequestError) as file_missing:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file="file-000000000000000000000000")
    assert file_missing.value.code == "file_not_found" and file_missing.value.param == "training_file"


def test_namespace_isolation(server: Server, training_file: str) -> None:
    job = _create_job(server, training_file)
    other = server.openai(TOKEN_B)
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(training_file)
    assert list(other.fine_tuning.jobs.list()) == []
    assert list(other.files.list()) == []
    with pytest.raises(openai.BadRequestError):  # team-b cannot train on team-a's file
        other.fine_tuning.jobs.create(model="tiny-llama", training_file=training_file)
    with pytest.raises(openai.PermissionDeniedError):
        server.openai(TOKEN_B, namespace="team-a").fine_tuning.jobs.list()
    admin = server.openai(TOKEN_ADMIN, namespace="team-a")
    assert admin.fine_tuning.jobs.retrieve(job.id).organization_id == "team-a"
    assert list(server.openai(TOKEN_ADMIN).fine_tuning.jobs.list()) == []  # no header: "default"


# -- estimate -------------------------------------------------------------------------------


def test_estimate_dry_run(server: Server) -> None:
    objects = load_documents(REPO / "examples" / "support-bot")
    pool = next(o for o in objects if isinstance(o, GPUPool))
    server.store.create(pool)
    job = next(o for o in objects if isinstance(o, FineTuneJob))
    body = job.to_dict()
    body["metadata"]["namespace"] = "team-a"
    with server.http() as http:
        response = http.post("/v1/estimate", json=body)
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["kind"] == "FineTuneJob" and result["object"] == "estimate"
        assert result["estimate"]["memory"]
        assert result["pool"] == "local-cpu" and result["decision"]["admitted"] is True
        dep = next(o for o in objects if isinstance(o, ModelDeployment)).to_dict()
        dep["metadata"]["namespace"] = "team-a"
        yaml_body = yaml.safe_dump(dep)
        served = http.post("/v1/estimate", content=yaml_body, headers={"Content-Type": "application/yaml"})
        assert served.status_code == 200, served.text
        assert served.json()["kind"] == "ModelDeployment"
        wrong = http.post("/v1/estimate", json={"kind": "Dataset", "metadata": {"name": "x"}, "spec": {}})
        assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "kind"
        assert http.post("/v1/estimate", json=body, headers={"X-Corral-Namespace": "team-b"}).status_code == 403
    assert not server.store.list(FineTuneJob, "team-a", "app=nothing").items  # nothing was created
