"""Score a finished fine-tune, and its base on the same questions, before it is promoted.

Two splits, each up to ``spec.evaluation.maxExamples`` conversations:

* ``heldOut``: the validation dataset, or the ``validationSplitPercent`` hold-out (questions
  the fine-tune never trained on);
* ``trained``: a seeded sample of the training conversations (does it reproduce what it was
  taught).

For every conversation the prompt is everything before its last assistant turn, rendered
with the job's chat template; the reference is that turn. Each model answers greedily (up to
``maxNewTokens``, stopping at EOS) and is scored with:

* exact match: the answer equals the reference after normalization (case folded, whitespace
  collapsed, surrounding spaces and a final period dropped);
* similarity: ``difflib.SequenceMatcher`` ratio of the normalized answer and reference
  (1.0 = identical), the mean over the split, in percent;
* loss: mean token loss on the reference answers (teacher-forced, as in training).

The base model is the same network with the adapter disabled (LoRA/QLoRA), or a fresh copy
of the base weights (full fine-tuning, merged outputs are scored before merging).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name

from corral.api.v1alpha1.finetunejob import Evaluation, EvaluationScores, EvaluationSpec, EvaluationSplit
from corral.data import IGNORE_INDEX, Conversation, tokenize_dataset
from corral.data._templates import render

__all__ = ["BaseModelContext", "answer", "base_of", "evaluate", "normalize", "sample", "similarity"]

logger = logging.getLogger(__name__)

BaseModelContext = Callable[[], contextlib.AbstractContextManager[torch.nn.Module]]
"""Enters a context in which it returns the base model (the adapter disabled, or a fresh base)."""

_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Case-folded, whitespace-collapsed, without surrounding spaces or a final period."""
    return _SPACE.sub(" ", text).strip().rstrip(".").strip().casefold()


def similarity(answer_text: str, reference: str) -> float:
    """Normalized similarity in [0, 1] (``difflib.SequenceMatcher`` ratio of the normalized texts)."""
    a, b = normalize(answer_text), normalize(reference)
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def sample(conversations: Sequence[Conversation], limit: int, seed: int) -> list[Conversation]:
    """Up to ``limit`` scorable conversations (ending with an assistant turn), a seeded choice in file order."""
    usable = [c for c in conversations if c.messages and c.messages[-1].role == "assistant" and len(c.messages) > 1]
    if len(usable) <= limit:
        return usable
    gen = torch.Generator().manual_seed(seed)
    keep = sorted(int(i) for i in torch.randperm(len(usable), generator=gen)[:limit])
    return [usable[i] for i in keep]


@torch.no_grad()
def answer(model: torch.nn.Module, tokenizer: Any, template: str, conv: Conversation, max_new_tokens: int) -> str:
    """The model's greedy answer to ``conv`` without its last (assistant) turn."""
    prompt = render(conv.messages[:-1], tokenizer, template, add_generation_prompt=True)
    device = next(model.parameters()).device
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = model.generate(  # type: ignore[operator]
        **ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=pad
    )
    return str(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)).strip()


@torch.no_grad()
def _loss(model: torch.nn.Module, tokenizer: Any, template: str, convs: Sequence[Conversation]) -> float | None:
    examples, _ = tokenize_dataset(convs, tokenizer, template, 1_000_000, loss_on="assistant")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for ex in examples:
        ids = torch.tensor([list(ex.input_ids)], device=device)
        labels = torch.tensor([list(ex.labels)], device=device)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1, :].float()
        target = labels[:, 1:]
        total += float(
            F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
            )
        )
        count += int((target != IGNORE_INDEX).sum())
    return total / count if count else None


def _scores(
    model: torch.nn.Module, tokenizer: Any, template: str, convs: Sequence[Conversation], max_new_tokens: int
) -> tuple[EvaluationScores, list[str]]:
    was_training = model.training
    model.eval()
    answers = [answer(model, tokenizer, template, c, max_new_tokens) for c in convs]
    refs = [c.messages[-1].content for c in convs]
    exact = sum(normalize(a) == normalize(r) for a, r in zip(answers, refs, strict=True))
    sim = sum(similarity(a, r) for a, r in zip(answers, refs, strict=True))
    loss = _loss(model, tokenizer, template, convs)
    if was_training:
        model.train()
    n = max(1, len(convs))
    scores = EvaluationScores(
        loss=round(loss, 4) if loss is not None else None,
        exact_match_percent=round(100 * exact / n, 2),
        similarity_percent=round(100 * sim / n, 2),
    )
    return scores, answers


def base_of(model: torch.nn.Module, rebuild_base: Callable[[], torch.nn.Module]) -> BaseModelContext:
    """How to reach the base model: the adapter disabled (PEFT), else a freshly loaded base."""
    from peft import PeftModel

    @contextlib.contextmanager
    def context() -> Iterator[torch.nn.Module]:
        if isinstance(model, PeftModel):
            with model.disable_adapter():
                yield model
        else:
            yield rebuild_base()

    return context


def evaluate(
    model: torch.nn.Module,
    tokenizer: Any,
    template: str,
    *,
    trained: Sequence[Conversation],
    held_out: Sequence[Conversation],
    base: BaseModelContext,
    spec: EvaluationSpec,
    seed: int,
) -> Evaluation:
    """Score the fine-tune and its base on the held-out and trained splits.

    Args:
        model: The fine-tuned model (unwrapped; a ``PeftModel`` for lora/qlora).
        tokenizer: Its tokenizer.
        template: The chat template it trained with.
        trained: The training conversations (a sample is scored).
        held_out: The validation conversations (empty: no held-out split).
        base: Enters the base model (:func:`base_of`).
        spec: ``spec.evaluation`` (sizes).
        seed: Seeds the samples.

    Returns:
        The scores per split.
    """
    start = time.perf_counter()
    splits = []
    for name, convs in (("heldOut", held_out), ("trained", trained)):
        chosen = sample(convs, spec.max_examples, seed)
        if not chosen:
            continue
        tuned, answers = _scores(model, tokenizer, template, chosen, spec.max_new_tokens)
        with base() as base_model:
            base_scores, _ = _scores(base_model, tokenizer, template, chosen, spec.max_new_tokens)
        logger.info(
            "evaluation %s (%d): fine-tune exact %.1f%% similarity %.1f%%; base exact %.1f%% similarity %.1f%%; "
            "first answer %r",
            name,
            len(chosen),
            tuned.exact_match_percent,
            tuned.similarity_percent,
            base_scores.exact_match_percent,
            base_scores.similarity_percent,
            answers[0][:80],
        )
        splits.append(EvaluationSplit(name=name, examples=len(chosen), fine_tuned=tuned, base=base_scores))
    return Evaluation(splits=splits, seconds=round(time.perf_counter() - start, 2))
