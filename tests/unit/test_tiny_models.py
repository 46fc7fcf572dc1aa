"""Unit tests of corral.models.tiny: offline build, load-back, tokenizer, template."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from corral.models import tiny
from corral.models.tiny import _corpus

torch.set_num_threads(1)

_EXPECTED_CLASS = {
    "llama": "LlamaForCausalLM",
    "gpt_neox": "GPTNeoXForCausalLM",
    "glm": "GlmForCausalLM",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: tiny.build(arch, root / arch) for arch in tiny.ARCHITECTURES}


def test_architectures() -> None:
    assert tiny.ARCHITECTURES == ("llama", "gpt_neox", "glm")


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "glm"])
def test_build_loads_back_with_auto_classes(built: dict[str, Path], arch: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(built[arch])
    cfg = model.config
    assert type(model).__name__ == _EXPECTED_CLASS[arch]
    assert cfg.model_type == arch
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    assert head_dim == 64
    assert cfg.hidden_size // cfg.num_attention_heads == 64
    n_params = sum(p.numel() for p in model.parameters())
    assert 500_000 < n_params < 5_000_000
    assert (built[arch] / "model.safetensors").is_file()


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "glm"])
def test_generation_follows_chat_form(built: dict[str, Path], arch: str) -> None:
    tok = AutoTokenizer.from_pretrained(built[arch])
    model = AutoModelForCausalLM.from_pretrained(built[arch])
    ids: Any = tok.apply_chat_template(
        [{"role": "user", "content": "What comes after Monday?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    # A pre-trained base, not a random one: a short answer, then the end-of-turn token.
    assert tok.eos_token_id in new
    answer = str(tok.decode(new[: new.index(tok.eos_token_id)]))
    assert answer.strip()
    assert _corpus.IM_START not in answer


def test_tokenizer_round_trips_and_special_tokens(built: dict[str, Path]) -> None:
    tok = AutoTokenizer.from_pretrained(built["llama"])
    text = "Hello, Corral! naïve café 123 — ok\n  indented\ttab"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert len(tok) == 2048
    assert tok.bos_token == _corpus.BOS
    assert tok.eos_token == _corpus.EOS
    assert tok.pad_token == _corpus.PAD
    assert tok.unk_token == _corpus.UNK
    assert tok.pad_token_id != tok.eos_token_id
    # special tokens are single tokens, never split
    im = tok(_corpus.IM_START + "user", add_special_tokens=False)["input_ids"]
    assert im[0] == tok.convert_tokens_to_ids(_corpus.IM_START)


def test_chat_template_renders(built: dict[str, Path]) -> None:
    tok = AutoTokenizer.from_pretrained(built["glm"])
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
    ]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|startoftext|><|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
    )
    assert text == _corpus.render_chat(messages)
    gen: Any = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert gen.endswith("<|im_start|>assistant\n")
    assert gen == _corpus.render_chat(messages[:2], add_generation_prompt=True)
    assert (built["glm"] / "chat_template.jinja").is_file() or "chat_template" in (
        built["glm"] / "tokenizer_config.json"
    ).read_text()


def test_build_twice_gives_identical_files(tmp_path: Path) -> None:
    a = tiny.build("gpt_neox", tmp_path / "a")
    b = tiny.build("gpt_neox", tmp_path / "b")
    files_a = sorted(p.name for p in a.iterdir())
    assert files_a == sorted(p.name for p in b.iterdir())
    assert "model.safetensors" in files_a and "tokenizer.json" in files_a
    for name in files_a:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_unknown_arch_names_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        tiny.build("gpt2", tmp_path)
    for arch in tiny.ARCHITECTURES:
        assert arch in str(err.value)


def test_other_seed_points_to_pretrain_script(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"pretrain_tiny\.py"):
        tiny.build("llama", tmp_path, seed=1)


def test_qa_facts_absent_from_corpus() -> None:
    pairs = _corpus.qa_facts(64)
    assert len({p.question for p in pairs}) == 64
    words = set(re.findall(r"\w+", (_corpus.DATA_DIR / "chat.txt").read_text()))
    for p in pairs:
        names = [w for w in p.question.rstrip("?").split() if w[0].isupper() and w not in {"What", "Where"}]
        assert len(names) == 1
        assert names[0] not in words
        if p.answer[0].isupper():
            assert p.answer not in words
