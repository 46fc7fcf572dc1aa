"""Models that need their own code (ChatGLM, PanGu-alpha): an explicit, administered opt-in, then training and serving.

The test writes a tiny "remote-code" model itself: the tiny llama's weights under a model_type
transformers does not know, with ``configuration_*.py`` / ``modeling_*.py`` beside them and an
``auto_map`` in config.json, as such checkpoints ship. Without ``trust_remote_code`` transformers
refuses to load it; the Model reconciler refuses it (and so admission, which waits for a Ready base)
unless the Model opts in and the namespace is allowed; with both, it trains and serves through
Corral's own loaders, and its custom class is the one that runs.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import torch

from corral.api.v1alpha1 import Model, ModelSpec
from corral.api.v1alpha1.finetunejob import Hyperparameters, LoRASpec
from corral.control import ArtifactProbe, ControlSettings, ModelWorld, reconcile_model
from corral.control._jobspec import job_document
from corral.control._observe import probe_artifact
from corral.data import get_template
from corral.models import tiny
from corral.serving import GenerationRequest, SamplingParams, TransformersEngine
from corral.serving._loading import load_base
from corral.serving._prompt import Prompter
from corral.training import LoopConfig, build_model, run_loop
from corral.training._data import load_conversations, prepare_units
from corral.training._job import TrainingJob
from tests.support.objects import meta

torch.set_num_threads(1)
NOW = datetime(2025, 1, 1, tzinfo=UTC)
FACTS = Path(__file__).resolve().parents[1] / "fixtures/data/train/facts8.jsonl"

CONFIGURATION = """
from transformers import LlamaConfig


class RemoteLlamaConfig(LlamaConfig):
    model_type = "corral_remote_llama"
"""
MODELING = """
from transformers import LlamaForCausalLM

from .configuration_remote_llama import RemoteLlamaConfig


class RemoteLlamaForCausalLM(LlamaForCausalLM):
    config_class = RemoteLlamaConfig
    calls = 0

    def forward(self, *args, **kwargs):
        type(self).calls += 1  # proves this file's code is what runs
        return super().forward(*args, **kwargs)
"""


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("remote-code")
    path = tiny.build("llama", root / "base")
    out = root / "remote"
    shutil.copytree(path, out)
    config = json.loads((out / "config.json").read_text())
    config.update(
        model_type="corral_remote_llama",
        architectures=["RemoteLlamaForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_remote_llama.RemoteLlamaConfig",
            "AutoModelForCausalLM": "modeling_remote_llama.RemoteLlamaForCausalLM",
        },
    )
    (out / "config.json").write_text(json.dumps(config))
    (out / "configuration_remote_llama.py").write_text(CONFIGURATION)
    (out / "modeling_remote_llama.py").write_text(MODELING)
    return out


def _model(uri: str, *, trust: bool, namespace: str = "team-a") -> Model:
    return Model(metadata=meta("glm-like", ns=namespace, uid=None), spec=ModelSpec(uri=uri, trust_remote_code=trust))


def test_the_probe_sees_code_shipped_with_the_weights(remote: Path) -> None:
    probe = probe_artifact(remote.as_uri())
    assert probe.exists and probe.remote_code and probe.architecture == "corral_remote_llama"
    assert not probe_artifact(remote.parent.joinpath("base").as_uri()).remote_code


@pytest.mark.parametrize(
    ("trust", "allowed", "reason"),
    [
        (False, ["team-a"], "RemoteCodeRequired"),
        (True, [], "RemoteCodeNotAllowed"),
        (True, ["team-b"], "RemoteCodeNotAllowed"),
        (True, ["team-a"], "ArtifactResolved"),
        (True, ["*"], "ArtifactResolved"),
    ],
)
def test_remote_code_needs_the_models_opt_in_and_the_namespaces_allowance(
    remote: Path, trust: bool, allowed: list[str], reason: str
) -> None:
    uri = remote.as_uri()
    settings = ControlSettings(artifact_root="file:///srv/a", remote_code_namespaces=frozenset(allowed))
    probe = ArtifactProbe(uri=uri, exists=True, size_bytes=1, sha256="a" * 64, remote_code=True)
    result = reconcile_model(_model(uri, trust=trust), ModelWorld(now=NOW, settings=settings, probe=probe))
    ready = next(c for c in result.status.conditions if c.type == "Ready")
    assert ready.reason == reason, ready.message
    if reason == "ArtifactResolved":
        assert result.status.remote_code is True
        assert result.status.lineage is not None
        assert any("trustRemoteCode" in c for c in result.status.lineage.conditions)
    else:
        assert ready.status == "False" and "trustRemoteCode" in ready.message
        assert any(getattr(a, "reason", None) == reason for a in result.actions)  # a Warning event


def test_a_catalog_model_that_needs_remote_code_is_refused_without_the_opt_in() -> None:
    model = Model(metadata=meta("glm", uid=None), spec=ModelSpec(catalog_name="chatglm-6b"))
    probe = ArtifactProbe(uri="hf://THUDM/chatglm-6b", exists=True, size_bytes=1, sha256="a" * 64)
    settings = ControlSettings(artifact_root="file:///srv/a", remote_code_namespaces=frozenset(["*"]))
    result = reconcile_model(model, ModelWorld(now=NOW, settings=settings, probe=probe))
    assert result.status.conditions[0].reason == "RemoteCodeRequired"


def test_transformers_refuses_it_without_trust_and_corral_trains_it_with_trust(remote: Path) -> None:
    lora = LoRASpec(rank=4, alpha=8, dropout=0.0)
    with pytest.raises(ValueError, match="trust_remote_code"):
        build_model(remote, "lora", lora, seed=0)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(remote, trust_remote_code=True)
    model = build_model(remote, "lora", lora, seed=0, trust_remote_code=True)
    inner: Any = model.base_model.model  # type: ignore[union-attr]
    assert type(inner).__name__ == "RemoteLlamaForCausalLM"
    convs = load_conversations([(str(FACTS), "auto")])
    data = prepare_units(
        convs, [], tok, get_template("chatml", tok), max_seq_len=128, loss_on="assistant", packing=False
    )
    hp = Hyperparameters(epochs=2, learning_rate=3e-3, global_batch_size=4, micro_batch_size=2, seed=0)
    cfg = LoopConfig(method="lora", strategy="ddp", lora=lora, hyperparameters=hp, checkpoint_every_steps=1000)
    calls = type(inner).calls
    result = run_loop(model, list(data.train), [], cfg, pad_id=tok.pad_token_id)
    assert result.total_steps > 0 and type(inner).calls > calls  # the shipped forward ran
    assert result.losses[-1] < result.losses[0]


def test_the_job_document_carries_the_opt_in() -> None:
    from tests.unit.test_control_finetunejob import base_model, dataset, job

    settings = ControlSettings(artifact_root="file:///srv/a")
    plain = base_model()
    trusted = plain.model_copy(update={"spec": plain.spec.model_copy(update={"trust_remote_code": True})})
    for base, want in ((plain, False), (trusted, True)):
        doc = job_document(job(), base, {"support": dataset()}, settings)
        assert TrainingJob.model_validate(doc).base_model.trust_remote_code is want


def test_it_serves_with_trust_and_not_without(remote: Path) -> None:
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_base(remote.as_uri())
    model, tok = load_base(remote.as_uri(), trust_remote_code=True)
    assert type(model).__name__ == "RemoteLlamaForCausalLM"
    engine = TransformersEngine(model, tok)
    ids = tuple(Prompter(tok).chat([{"role": "user", "content": "What is a Python list?"}]))

    async def answer() -> list[int]:
        try:
            req = GenerationRequest(ids, SamplingParams(max_tokens=8, temperature=0.0))
            return [t async for c in engine.generate(req) for t in c.token_ids]
        finally:
            await engine.close()

    before = type(model).calls
    assert asyncio.run(answer())
    assert type(model).calls > before
