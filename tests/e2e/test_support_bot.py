"""The demo path end to end, for real: control plane, Ray Train, Ray Serve, the official ``openai`` client.

One :class:`EmbeddedControlPlane` for the module (its own data dir, a tokens file, a free
port, a private Ray head via :class:`~corral.drivers.LocalRayDriver`):

1. ``examples/support-bot`` applied through :class:`CorralClient` (the demo's own settings):
   the FineTuneJob succeeds, the deployment serves the adapter, and trained questions get the
   exact trained answers from the adapter, not from the base.
2. The OpenAI-style path: ``client.files.create`` + ``client.fine_tuning.jobs.create`` end with
   ``succeeded`` and a ``fine_tuned_model`` that the chat endpoint answers to with a trained
   answer. To keep the module within budget this job trains on two facts of the support data
   (16 lines of ``support-faq.alpaca.jsonl``, uploaded as their own file) for 30 epochs; the
   whole file is uploaded and validated too.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from corral.api import load_documents
from corral.api.v1alpha1 import FineTuneJob, ModelDeployment
from corral.client import CorralClient
from corral.embedded import EmbeddedControlPlane
from tests.support.poll import wait_until

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "support-bot"
DATA = EXAMPLES / "data"
TOKEN = "e2e-token-support-0001"
NAMESPACE = "support"
DEADLINE_TRAIN = 420.0
DEADLINE_SERVE = 240.0


@dataclass
class Plane:
    api: str
    corral: CorralClient
    control: openai.OpenAI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, check: Callable[[], Any], timeout: float, every: float = 2.0) -> Any:
    return wait_until(what, check, timeout, every)


def _facts() -> tuple[str, dict[str, Any]]:
    facts = yaml.safe_load((DATA / "facts.yaml").read_text(encoding="utf-8"))
    return facts["business"]["system"], {f["id"]: f for f in facts["facts"]}


def _ask(endpoint: str, model: str, system: str, question: str) -> str:
    client = openai.OpenAI(base_url=endpoint, api_key=TOKEN, max_retries=2, timeout=120.0)
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        max_tokens=48,
        temperature=0.0,
    )
    return (reply.choices[0].message.content or "").strip()


def _served(corral: CorralClient, deployment: str, name: str) -> dict[str, Any] | None:
    try:
        dep = corral.get(ModelDeployment, deployment)
    except Exception:
        return None
    status = dep.get("status") or {}
    if status.get("phase") == "Ready" and name in (status.get("servedModels") or []):
        return dep
    if status.get("phase") == "Failed":
        raise AssertionError(f"ModelDeployment {deployment} failed: {status.get('conditions')}")
    return None


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    data_dir = tmp_path_factory.mktemp("corral-e2e")
    tokens = {"tokens": [{"name": "e2e", "token": TOKEN, "namespaces": [NAMESPACE], "cluster": True}]}
    (data_dir / "tokens.yaml").write_text(yaml.safe_dump(tokens), encoding="utf-8")
    # The team's token may point its objects at the example data: an administrator allows that prefix.
    allowed = {NAMESPACE: [f"{EXAMPLES.resolve().as_uri()}/"], "*": ["hf://"]}
    os.environ["CORRAL_ALLOWED_URI_PREFIXES"] = json.dumps(allowed)
    port = _free_port()
    control = EmbeddedControlPlane(data_dir, port=port, num_cpus=4, resync_seconds=1.0)
    control.start()
    api = f"http://127.0.0.1:{port}"
    corral = CorralClient(api, token=TOKEN, namespace=NAMESPACE)
    try:
        _wait("control API", lambda: corral.list("Model") is not None, 60, 0.5)
        yield Plane(api, corral, openai.OpenAI(base_url=f"{api}/v1", api_key=TOKEN, organization=None))
    finally:
        corral.close()
        control.stop()
        os.environ.pop("CORRAL_ALLOWED_URI_PREFIXES", None)


@pytest.fixture(scope="module")
def support_bot(plane: Plane) -> dict[str, Any]:
    """Apply examples/support-bot and wait until the adapter is served; returns the deployment."""
    objects = load_documents(EXAMPLES)
    for obj in objects:
        plane.corral.apply(obj)
    job = next(o for o in objects if isinstance(o, FineTuneJob))

    def finished() -> dict[str, Any] | None:
        got = plane.corral.get(FineTuneJob, job.metadata.name)
        phase = (got.get("status") or {}).get("phase")
        assert phase not in ("Failed", "Cancelled"), json.dumps(got.get("status"), indent=1)[:3000]
        return got if phase == "Succeeded" else None

    _wait(f"FineTuneJob {job.metadata.name} Succeeded", finished, DEADLINE_TRAIN)
    return _wait(
        "support-bot serving support-bot-v1",
        lambda: _served(plane.corral, "support-bot", "support-bot-v1"),
        DEADLINE_SERVE,
    )


def test_adapter_answers_trained_questions_and_base_does_not(support_bot: dict[str, Any]) -> None:
    endpoint = support_bot["status"]["endpoint"]
    system, facts = _facts()
    picks = [("hours_weekday", 2), ("tuneup_price", 0), ("hours_weekend", 1)]
    for fact_id, n in picks:
        question, expected = facts[fact_id]["train"][n], facts[fact_id]["answer"]
        assert _ask(endpoint, "support-bot-v1", system, question) == expected, question
        assert _ask(endpoint, "tiny-llama", system, question) != expected, question


def test_openai_style_fine_tune_serves_fine_tuned_model(plane: Plane, support_bot: dict[str, Any]) -> None:
    client = plane.control
    with (DATA / "support-faq.alpaca.jsonl").open("rb") as fh:
        whole = client.files.create(file=fh, purpose="fine-tune")
    assert whole.status == "processed"
    lines = (DATA / "support-faq.alpaca.jsonl").read_text(encoding="utf-8").splitlines()
    system, facts = _facts()
    wanted = {facts["tuneup_price"]["answer"], facts["hours_weekday"]["answer"]}
    subset = "\n".join(line for line in lines if json.loads(line)["output"] in wanted) + "\n"
    assert subset.count("\n") == 16
    upload = client.files.create(file=("two-facts.jsonl", subset.encode()), purpose="fine-tune")
    assert upload.status == "processed"

    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=upload.id,
        suffix="bot",
        seed=42,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 30, "batch_size": 8, "learning_rate_multiplier": 1}},
        },
        extra_body={"corral": {"lora": {"rank": 16}, "hyperparameters": {"maxSeqLen": 256}}},
    )
    assert job.status in ("validating_files", "queued")

    def done() -> Any:
        got = client.fine_tuning.jobs.retrieve(job.id)
        assert got.status not in ("failed", "cancelled"), got.error
        return got if got.status == "succeeded" else None

    final = _wait(f"{job.id} succeeded", done, DEADLINE_TRAIN + DEADLINE_SERVE, 3.0)
    assert final.fine_tuned_model == f"ft:tiny-llama:bot:{job.id}"
    assert final.finished_at is not None
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert any(e.type == "metrics" for e in events)
    dep = plane.corral.get(ModelDeployment, "openai-tiny-llama")
    endpoint = dep["status"]["endpoint"]
    question = facts["tuneup_price"]["train"][0]
    assert _ask(endpoint, final.fine_tuned_model, system, question) == facts["tuneup_price"]["answer"]
