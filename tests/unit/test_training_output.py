"""The output Model folder: adapter or merged weights, tokenizer with the template, model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from corral.api.v1alpha1.finetunejob import LoRASpec
from corral.data import get_template
from corral.training import TrainingJob, build_model, save_output

torch.set_num_threads(1)


def _job(out: Path, merge: bool) -> TrainingJob:
    return TrainingJob.model_validate(
        {
            "name": "bot",
            "baseModel": {"name": "tiny-llama", "builtin": "llama", "chatTemplate": "chatml", "license": "Apache-2.0"},
            "datasets": [{"name": "facts", "uri": "/d.jsonl"}],
            "spec": {
                "baseModel": {"name": "tiny-llama"},
                "datasets": [{"name": "facts"}],
                "output": {"merge": merge},
            },
            "outputUri": f"file://{out}",
            "eventsUri": f"file://{out}.events.jsonl",
            "checkpointUri": f"file://{out}.ckpt",
        }
    )


def _lora(base: Path) -> Any:
    model = build_model(base, "lora", LoRASpec(rank=4, alpha=8, dropout=0.0), seed=0)
    with torch.no_grad():  # make the adapter non-trivial (B starts at zero)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model.eval()


@pytest.mark.parametrize("merge", [False, True])
def test_adapter_or_merged_output_loads_back(base: Path, tmp_path: Path, merge: bool) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = _lora(base)
    ids = torch.tensor([[2, 10, 20, 30, 40]])
    with torch.no_grad():
        want = model(input_ids=ids).logits
    tok = AutoTokenizer.from_pretrained(base)
    out = tmp_path / "out"
    template = get_template("chatml", tok)
    save_output(model, tok, _job(out, merge), template_name="chatml", template=template, metrics={"loss": 0.5})

    meta = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert meta["base_model_relation"] == ("finetune" if merge else "adapter")
    assert (out / "adapter_config.json").exists() != merge
    if merge:
        loaded = AutoModelForCausalLM.from_pretrained(out)
    else:
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out)
    with torch.no_grad():
        got = loaded.eval()(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert AutoTokenizer.from_pretrained(out).chat_template == template
