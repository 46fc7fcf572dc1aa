"""A new user's path through the official ``openai`` client only, on one base URL, with ``auto`` everywhere.

One :class:`EmbeddedControlPlane` for the module. Its own data (``tests/fixtures/data/ferry``:
16 invented facts about an island ferry, 4 phrasings each, OpenAI chat format; not the demo's
data, nothing from the tiny bases' corpus) is uploaded with ``files.create`` and fine-tuned
with ``fine_tuning.jobs.create(model="tiny-llama")`` and no hyper-parameter at all. Then:

* the job object reports the chosen hyper-parameters, an event says why, the job's
  ``result_files`` hold the step-metrics CSV and a ``metrics`` event the evaluation;
* chatting through the control API's own ``/v1`` (the same client, the same token) with
  ``fine_tuned_model`` answers at least 80% of the trained questions with the trained fact,
  streamed and not streamed, and ``/v1/models`` lists it;
* a deliberately under-trained job (1 epoch) with a gate succeeds but is not promoted: its
  ``Promoted`` condition and its events name the score and the threshold.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from corral.api.v1alpha1 import FineTuneJob
from corral.client import CorralClient
from corral.data import load_dataset
from corral.embedded import EmbeddedControlPlane
from corral.training._data import split_validation
from corral.training._evaluate import normalize
from tests.support.poll import wait_until

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "ferry" / "ferry-faq.jsonl"
TOKEN = "e2e-token-openai-auto-01"
NAMESPACE = "ferry"
DEADLINE = 900.0


@dataclass
class Plane:
    api: str
    corral: CorralClient
    client: openai.OpenAI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    data_dir = tmp_path_factory.mktemp("corral-openai-auto")
    tokens = {"tokens": [{"name": "ferry", "token": TOKEN, "namespaces": [NAMESPACE]}]}
    (data_dir / "tokens.yaml").write_text(yaml.safe_dump(tokens), encoding="utf-8")
    port = _free_port()
    control = EmbeddedControlPlane(data_dir, port=port, num_cpus=4, resync_seconds=1.0)
    control.start()
    api = f"http://127.0.0.1:{port}"
    corral = CorralClient(api, token=TOKEN, namespace=NAMESPACE)
    client = openai.OpenAI(base_url=f"{api}/v1", api_key=TOKEN, max_retries=2, timeout=300.0)
    try:
        wait_until("control API", lambda: corral.list("Model") is not None, 60, 0.5)
        yield Plane(api, corral, client)
    finally:
        corral.close()
        control.stop()


def _finished(client: openai.OpenAI, job_id: str) -> Any:
    def done() -> Any:
        got = client.fine_tuning.jobs.retrieve(job_id)
        assert got.status not in ("failed", "cancelled"), got.error
        return got if got.status == "succeeded" else None

    return wait_until(f"{job_id} succeeded", done, DEADLINE, 3.0)


@pytest.fixture(scope="module")
def upload(plane: Plane) -> Any:
    with DATA.open("rb") as fh:
        uploaded = plane.client.files.create(file=fh, purpose="fine-tune")
    assert uploaded.status == "processed"
    return uploaded


@pytest.fixture(scope="module")
def auto_job(plane: Plane, upload: Any) -> Any:
    """The job with every hyper-parameter left to auto, succeeded (its adapter served)."""
    job = plane.client.fine_tuning.jobs.create(model="tiny-llama", training_file=upload.id, suffix="ferry")
    assert job.hyperparameters.n_epochs in ("auto", None) or isinstance(job.hyperparameters.n_epochs, int)
    return _finished(plane.client, job.id)


def _trained_and_held_out() -> tuple[list[Any], list[Any]]:
    """The job's split: auto holds out 10% with the default seed, as the trainer does."""
    conversations = load_dataset(str(DATA), format="auto").train
    return split_validation(conversations, 10, 42)


def _ask(client: openai.OpenAI, model: str, conv: Any, stream: bool = False) -> str:
    messages = [{"role": m.role, "content": m.content} for m in conv.messages[:-1]]
    if not stream:
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=48, temperature=0.0)  # type: ignore[arg-type]
        return (reply.choices[0].message.content or "").strip()
    parts = []
    for chunk in client.chat.completions.create(
        model=model,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=48,
        temperature=0.0,
        stream=True,
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts).strip()


def test_auto_hyperparameters_are_chosen_and_explained(plane: Plane, auto_job: Any) -> None:
    hp = auto_job.hyperparameters
    assert isinstance(hp.n_epochs, int) and isinstance(hp.batch_size, int)
    assert hp.learning_rate_multiplier == 1.0  # the tiny recipe's own rate
    ftj = plane.corral.get(FineTuneJob, auto_job.id)
    chosen = ftj["status"]["hyperparameters"]
    assert chosen["totalSteps"] >= 240, chosen  # the tiny recipe's minSteps
    assert chosen["validationSplitPercent"] == 10 and chosen["trainExamples"] == 58, chosen
    events = plane.client.fine_tuning.jobs.list_events(auto_job.id, limit=100).data
    assert any(e.message.startswith("Hyper-parameters:") and "minSteps=240" in e.message for e in events)


def test_auto_fine_tune_answers_its_trained_questions(plane: Plane, auto_job: Any) -> None:
    trained, held_out = _trained_and_held_out()
    model = auto_job.fine_tuned_model
    right = sum(normalize(_ask(plane.client, model, c)) == normalize(c.messages[-1].content) for c in trained)
    held = sum(normalize(_ask(plane.client, model, c)) == normalize(c.messages[-1].content) for c in held_out)
    base = sum(normalize(_ask(plane.client, "tiny-llama", c)) == normalize(c.messages[-1].content) for c in trained)
    print(
        f"\nferry data via the control API: trained {right}/{len(trained)}, held-out {held}/{len(held_out)}, "
        f"base on trained {base}/{len(trained)}"
    )
    assert right >= 0.8 * len(trained), (right, len(trained))
    assert base < 0.2 * len(trained)
    streamed = _ask(plane.client, model, trained[0], stream=True)
    assert streamed == _ask(plane.client, model, trained[0])
    served = {m.id for m in plane.client.models.list()}
    assert {model, "tiny-llama"} <= served


def test_evaluation_reaches_status_events_and_result_files(plane: Plane, auto_job: Any) -> None:
    evaluation = plane.corral.get(FineTuneJob, auto_job.id)["status"]["evaluation"]
    print("\nferry evaluation:", json.dumps(evaluation))
    splits = {s["name"]: s for s in evaluation["splits"]}
    assert set(splits) == {"heldOut", "trained"}
    trained = splits["trained"]
    assert trained["examples"] == 58
    assert trained["fineTuned"]["exactMatchPercent"] >= 80
    assert trained["fineTuned"]["similarityPercent"] > trained["base"]["similarityPercent"] + 30
    events = plane.client.fine_tuning.jobs.list_events(auto_job.id, limit=100).data
    metrics = [e for e in events if e.type == "metrics" and e.data and "evaluation" in e.data]
    assert metrics and metrics[0].data["train_exact_match"] == trained["fineTuned"]["exactMatchPercent"]
    assert len(auto_job.result_files) == 1
    content = plane.client.files.content(auto_job.result_files[0]).text
    rows = list(csv.DictReader(io.StringIO(content)))
    assert rows[0].keys() >= {"step", "train_loss", "valid_loss"}
    assert (
        int(rows[-1]["step"]) == plane.corral.get(FineTuneJob, auto_job.id)["status"]["hyperparameters"]["totalSteps"]
    )
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_gate_refuses_an_under_trained_job(plane: Plane, upload: Any, auto_job: Any) -> None:
    job = plane.client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=upload.id,
        suffix="onepass",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
        extra_body={"corral": {"gate": {"minTrainedScorePercent": 60}}},
    )
    final = _finished(plane.client, job.id)
    ftj = plane.corral.get(FineTuneJob, job.id)
    print("\none-epoch evaluation:", json.dumps(ftj["status"]["evaluation"]))
    promoted = next(c for c in ftj["status"]["conditions"] if c["type"] == "Promoted")
    assert promoted["status"] == "False" and promoted["reason"] == "EvaluationBelowThreshold", promoted
    assert (
        "below minTrainedScorePercent 60%" in promoted["message"] and "trained similarity score" in promoted["message"]
    )
    events = plane.client.fine_tuning.jobs.list_events(final.id, limit=100).data
    assert any(e.message.startswith("EvaluationBelowThreshold:") for e in events), [e.message for e in events]
    served = {m.id for m in plane.client.models.list()}
    assert final.fine_tuned_model not in served
    assert auto_job.fine_tuned_model in served  # the live adapter was not replaced
