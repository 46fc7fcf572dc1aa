"""corral.data: named chat templates, the tokenizer's own, and recording the template in the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.data import TEMPLATE_NAMES, Message, TemplateError, get_template, install_template
from corral.data._templates import missing_special_tokens, render
from tests.fixtures.data_tokenizer import make_tokenizer

CHAT = (
    Message("system", "Be brief."),
    Message("user", "Capital of France?"),
    Message("assistant", "Paris."),
    Message("user", "And Germany?"),
    Message("assistant", "Berlin."),
)


@pytest.fixture(scope="module")
def tok() -> Any:
    return make_tokenizer()


EXPECTED = {
    "llama-2": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nCapital of France? [/INST] Paris. </s>"
    "<s>[INST] And Germany? [/INST] Berlin. </s>",
    "llama-3": "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nCapital of France?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nParis.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nAnd Germany?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nBerlin.<|eot_id|>",
    "vicuna": "<s>Be brief. USER: Capital of France? ASSISTANT: Paris.</s>USER: And Germany? ASSISTANT: Berlin.</s>",
    "alpaca": "<s>Be brief.\n\n### Instruction:\nCapital of France?\n\n### Response:\nParis.</s>"
    "\n\n### Instruction:\nAnd Germany?\n\n### Response:\nBerlin.</s>",
    "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n"
    "<|im_start|>assistant\nParis.<|im_end|>\n<|im_start|>user\nAnd Germany?<|im_end|>\n"
    "<|im_start|>assistant\nBerlin.<|im_end|>\n",
    "chatglm": "[gMASK]sopBe brief.\n\n[Round 1]\n\n问\uff1aCapital of France?\n\n答\uff1aParis.</s>"
    "\n\n[Round 2]\n\n问\uff1aAnd Germany?\n\n答\uff1aBerlin.</s>",
}

GENERATION_PROMPT = {
    "llama-2": " [/INST]",
    "llama-3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "vicuna": " ASSISTANT:",
    "alpaca": "### Response:\n",
    "chatml": "<|im_start|>assistant\n",
    "chatglm": "答\uff1a",
}


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_named_template_renders_the_projects_format(tok: Any, name: str) -> None:
    template = get_template(name, tok)
    assert render(CHAT, tok, template) == EXPECTED[name]
    prompt = render(CHAT[:4], tok, template, add_generation_prompt=True)
    assert prompt.endswith(GENERATION_PROMPT[name])
    # prefix-stable: the prompt for the last answer is a prefix of the full conversation
    assert EXPECTED[name].startswith(prompt)


def test_default_system_prompts(tok: Any) -> None:
    convo = (Message("user", "Hi"), Message("assistant", "Hello"))
    assert render(convo, tok, get_template("vicuna", tok)).startswith(
        "<s>A chat between a curious user and an artificial intelligence assistant."
    )
    assert render(convo, tok, get_template("alpaca", tok)).startswith(
        "<s>Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nHi"
    )
    assert render(convo, tok, get_template("llama-2", tok)) == "<s>[INST] Hi [/INST] Hello </s>"


def test_llama2_refuses_non_alternating_roles(tok: Any) -> None:
    with pytest.raises(TemplateError, match="alternate"):
        render((Message("user", "a"), Message("user", "b")), tok, get_template("llama-2", tok))


def test_auto_uses_the_tokenizer_template_or_says_it_has_none(tok: Any) -> None:
    with pytest.raises(TemplateError, match="no chat template"):
        get_template("auto", tok)
    with pytest.raises(TemplateError, match="unknown chat template 'mistral'"):
        get_template("mistral", tok)
    tok2 = make_tokenizer.__wrapped__()
    tok2.chat_template = get_template("chatml", tok2)
    assert get_template("auto", tok2) == get_template("chatml", tok2)
    assert get_template(None, tok2) == tok2.chat_template


def test_install_template_records_it_in_the_saved_model(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = make_tokenizer.__wrapped__()
    install_template(tok, "llama-3")
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.chat_template == get_template("llama-3", tok)
    out = loaded.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert out == (
        "<s><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_markers_are_special_tokens_of_the_fixture_tokenizer(tok: Any) -> None:
    for name in TEMPLATE_NAMES:
        assert missing_special_tokens(name, tok) == []
