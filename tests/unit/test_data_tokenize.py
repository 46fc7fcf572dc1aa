"""corral.data: tokenization with loss masking (assistant, completion, all) across templates."""

from __future__ import annotations

from typing import Any

import pytest

from corral.data import (
    IGNORE_INDEX,
    TEMPLATE_NAMES,
    Conversation,
    Message,
    TemplateError,
    get_template,
    load_dataset,
    tokenize_conversation,
    tokenize_dataset,
)
from tests.conftest import REPO
from tests.fixtures.data_tokenizer import make_tokenizer

DATA = REPO / "tests" / "fixtures" / "data"

#: What ends an assistant turn in each template (trained, so the model learns to stop).
END = {
    "llama-2": " </s>",
    "llama-3": "<|eot_id|>",
    "vicuna": "</s>",
    "alpaca": "</s>",
    "chatml": "<|im_end|>",
    "chatglm": "</s>",
}

CHAT = Conversation(
    messages=(
        Message("system", "Be brief."),
        Message("user", "Capital of France?"),
        Message("assistant", "Paris, of course."),
        Message("user", "And Germany?"),
        Message("assistant", "Berlin (since 1990)!"),
    ),
    source_line=3,
)


@pytest.fixture(scope="module")
def tok() -> Any:
    return make_tokenizer()


def _label_runs(labels: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for label in labels:
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(label)
        previous = label
    return runs


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_assistant_masking_keeps_exactly_the_answers(tok: Any, name: str) -> None:
    example = tokenize_conversation(CHAT, tok, get_template(name, tok), 512)
    assert example is not None and example.source_line == 3
    assert len(example.input_ids) == len(example.labels)
    runs = [tok.decode(run).strip() for run in _label_runs(example.labels)]
    assert runs == [("Paris, of course." + END[name]).strip(), ("Berlin (since 1990)!" + END[name]).strip()]
    # unmasked labels are the input tokens themselves
    assert all(lab in (IGNORE_INDEX, i) for i, lab in zip(example.input_ids, example.labels, strict=True))
    # the sequence is the rendered template, tokenized once
    assert tok.decode(example.input_ids) == tok.decode(
        tok(
            tok.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in CHAT.messages],
                chat_template=get_template(name, tok),
                tokenize=False,
            ),
            add_special_tokens=False,
        )["input_ids"]
    )


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_completion_masking_keeps_only_the_last_answer(tok: Any, name: str) -> None:
    example = tokenize_conversation(CHAT, tok, get_template(name, tok), 512, loss_on="completion")
    assert example is not None
    runs = [tok.decode(r).strip() for r in _label_runs(example.labels)]
    assert runs == [("Berlin (since 1990)!" + END[name]).strip()]


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_all_keeps_every_token(tok: Any, name: str) -> None:
    example = tokenize_conversation(CHAT, tok, get_template(name, tok), 512, loss_on="all")
    assert example is not None and example.labels == example.input_ids


def test_prompt_completion_masks_the_prompt(tok: Any) -> None:
    conv = load_dataset(DATA / "prompt_completion.jsonl").train[0]
    for loss_on in ("assistant", "completion"):
        example = tokenize_conversation(conv, tok, get_template("chatml", tok), 512, loss_on=loss_on)  # type: ignore[arg-type]
        assert example is not None
        assert tok.decode([t for t in example.labels if t != IGNORE_INDEX]).strip() == "positive<|im_end|>"


def test_weight_zero_turns_are_context_only(tok: Any) -> None:
    conv = load_dataset(DATA / "openai.jsonl").train[1]
    example = tokenize_conversation(conv, tok, get_template("llama-3", tok), 512)
    assert example is not None
    assert [tok.decode(r) for r in _label_runs(example.labels)] == ["William Shakespeare wrote it.<|eot_id|>"]


def test_text_examples_train_on_every_token(tok: Any) -> None:
    conv = load_dataset(DATA / "text.jsonl").train[0]
    for loss_on in ("assistant", "completion", "all"):
        example = tokenize_conversation(conv, tok, None, 512, loss_on=loss_on)  # type: ignore[arg-type]
        assert example is not None
        assert example.labels == example.input_ids
        assert example.input_ids[0] == tok.bos_token_id and example.input_ids[-1] == tok.eos_token_id


def test_over_length_truncate_and_drop(tok: Any) -> None:
    template = get_template("chatml", tok)
    full = tokenize_conversation(CHAT, tok, template, 10_000)
    assert full is not None and not full.truncated
    cut = tokenize_conversation(CHAT, tok, template, 20, over_length="truncate")
    assert cut is not None and len(cut.input_ids) == 20 and cut.truncated
    assert cut.original_length == len(full.input_ids)
    assert cut.input_ids == full.input_ids[:20] and cut.labels == full.labels[:20]
    assert tokenize_conversation(CHAT, tok, template, 20, over_length="drop") is None


def test_tokenize_dataset_counts_what_it_drops(tok: Any) -> None:
    template = get_template("chatml", tok)
    long_prompt = Conversation(messages=(Message("user", "word " * 200), Message("assistant", "ok")), source_line=7)
    unweighted = Conversation(messages=(Message("user", "hi"), Message("assistant", "x", weight=0)), source_line=8)
    convs = [CHAT, long_prompt, unweighted]
    full = tokenize_conversation(CHAT, tok, template, 10_000)
    assert full is not None and len(full.input_ids) < 200
    limit = len(full.input_ids)
    examples, stats = tokenize_dataset(convs, tok, template, limit, over_length="truncate")
    assert [e.source_line for e in examples] == [3]
    assert (stats.examples, stats.dropped_no_loss, stats.dropped_over_length) == (1, 2, 0)
    assert stats.dropped_lines == [7, 8]
    examples, stats = tokenize_dataset(convs, tok, template, limit, over_length="drop")
    assert (stats.examples, stats.dropped_no_loss, stats.dropped_over_length) == (1, 1, 1)


def test_errors(tok: Any) -> None:
    with pytest.raises(TemplateError, match="chat template is needed"):
        tokenize_conversation(CHAT, tok, None, 64)
    unstable = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}>>{% endif %}"
    with pytest.raises(TemplateError, match="not prefix-stable"):
        tokenize_conversation(CHAT, tok, unstable, 64)
    with pytest.raises(ValueError, match="loss_on"):
        tokenize_conversation(CHAT, tok, get_template("chatml", tok), 64, loss_on="prompt")  # type: ignore[arg-type]
