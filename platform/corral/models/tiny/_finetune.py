"""A minimal LoRA fine-tune and exact-match check on the tiny models (plain PyTorch + PEFT).

This is the measurement behind the claim that the tiny bases are steerable by LoRA: used
by ``bench/tiny_lora.py`` and ``tests/integration/test_tiny_lora.py``. It is not Corral's
training path (that is :mod:`corral.training`, on Ray Train).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from corral.models.tiny._corpus import QAPair

__all__ = ["LoraRecipe", "LoraResult", "encode_pairs", "exact_match", "lora_finetune"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraRecipe:
    """LoRA hyper-parameters (the defaults are what the benchmark found to work)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"
    modules_to_save: list[str] | None = None
    lr: float = 3e-3
    batch_size: int = 8
    max_epochs: int = 60
    eval_every: int = 5
    weight_decay: float = 0.0
    seed: int = 0


@dataclass
class LoraResult:
    """What a LoRA fine-tune measured."""

    before: float
    after: float
    epochs: int
    seconds: float
    trainable_parameters: int
    total_parameters: int
    final_loss: float
    history: list[tuple[int, float]] = field(default_factory=list)


def _prompt(tok: Any, question: str) -> str:
    return str(
        tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
    )


def encode_pairs(tok: Any, pairs: Sequence[QAPair]) -> list[tuple[list[int], list[int]]]:
    """Encode pairs as (input_ids, labels) with the prompt masked out (-100).

    The target is the answer followed by the EOS token (``<|im_end|>``), as the chat
    template renders an assistant turn.
    """
    out = []
    for p in pairs:
        prompt = tok(_prompt(tok, p.question), add_special_tokens=False)["input_ids"]
        answer = tok(p.answer + tok.eos_token, add_special_tokens=False)["input_ids"]
        out.append((list(prompt) + list(answer), [-100] * len(prompt) + list(answer)))
    return out


@torch.no_grad()
def exact_match(model: Any, tok: Any, pairs: Sequence[QAPair], max_new_tokens: int = 16) -> float:
    """Fraction of pairs whose greedy answer (up to EOS) equals the expected answer."""
    model.eval()
    hits = 0
    for p in pairs:
        ids = tok(_prompt(tok, p.question), add_special_tokens=False, return_tensors="pt")
        gen = model.generate(
            **ids,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        text = tok.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        hits += int(text.strip() == p.answer)
    return hits / len(pairs)


def _collate(batch: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    n = max(len(x) for x, _ in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def lora_finetune(
    model_path: str | Path,
    pairs: Sequence[QAPair],
    recipe: LoraRecipe | None = None,
    stop_at: float = 1.0,
) -> tuple[LoraResult, Any]:
    """LoRA-fine-tune the model at ``model_path`` on ``pairs`` and measure exact match.

    Trains until greedy exact match reaches ``stop_at`` (checked every
    ``recipe.eval_every`` epochs) or ``recipe.max_epochs`` epochs. Data order is seeded.

    Args:
        model_path: A directory written by :func:`corral.models.tiny.build`.
        pairs: Question/answer pairs to learn.
        recipe: LoRA hyper-parameters.
        stop_at: Exact-match accuracy at which to stop early.

    Returns:
        The measurements and the (PEFT-wrapped) fine-tuned model.
    """
    from peft import LoraConfig, get_peft_model

    recipe = recipe or LoraRecipe()
    torch.manual_seed(recipe.seed)
    tok = AutoTokenizer.from_pretrained(model_path)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    before = exact_match(base, tok, pairs)
    cfg = LoraConfig(
        r=recipe.r,
        lora_alpha=recipe.alpha,
        lora_dropout=recipe.dropout,
        target_modules=recipe.target_modules,
        modules_to_save=recipe.modules_to_save,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
    )
    data = encode_pairs(tok, pairs)
    gen = torch.Generator().manual_seed(recipe.seed)
    history: list[tuple[int, float]] = []
    acc = before
    loss_val = float("nan")
    start = time.perf_counter()
    epoch = 0
    for epoch in range(1, recipe.max_epochs + 1):
        model.train()
        order = torch.randperm(len(data), generator=gen).tolist()
        for i in range(0, len(order), recipe.batch_size):
            batch = _collate([data[j] for j in order[i : i + recipe.batch_size]], tok.pad_token_id)
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss_val = float(loss.detach())
        if epoch % recipe.eval_every == 0 or epoch == recipe.max_epochs:
            acc = exact_match(model, tok, pairs)
            history.append((epoch, acc))
            logger.info("epoch %d loss %.4f exact match %.3f", epoch, loss_val, acc)
            if acc >= stop_at:
                break
    seconds = time.perf_counter() - start
    result = LoraResult(
        before=before,
        after=acc,
        epochs=epoch,
        seconds=round(seconds, 1),
        trainable_parameters=trainable,
        total_parameters=total,
        final_loss=round(loss_val, 4),
        history=history,
    )
    return result, model
