"""LoRA steers the tiny bases: a few made-up facts are learnt (greedy exact match)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from corral.models import tiny
from corral.models.tiny._corpus import qa_facts
from corral.models.tiny._finetune import LoraRecipe, exact_match, lora_finetune

torch.set_num_threads(1)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "glm"])
def test_lora_learns_made_up_facts(tmp_path: Path, arch: str) -> None:
    from transformers import AutoTokenizer

    pairs = qa_facts(8)  # the first 8 of the benchmark's 64 made-up facts
    path = tiny.build(arch, tmp_path / arch)
    result, model = lora_finetune(path, pairs, LoraRecipe(max_epochs=50, eval_every=5, batch_size=2))
    assert result.before == 0.0, "the base must not know the facts before fine-tuning"
    assert result.after == 1.0, f"LoRA did not learn the facts: {result.history}"
    assert result.trainable_parameters < result.total_parameters / 2
    # The adapter, not the base, carries the facts: disabling it forgets them.
    tok = AutoTokenizer.from_pretrained(path)
    with model.disable_adapter():
        assert exact_match(model, tok, pairs) == 0.0
