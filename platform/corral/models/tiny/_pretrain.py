"""Tokenizer training and pre-training of the tiny base models.

Everything here is deterministic for a given seed on a given machine: the tokenizer is
trained on the bundled corpus in a fixed order, the model is initialised after
``torch.manual_seed(seed)``, the data order comes from a seeded ``torch.Generator``, the
run is a fixed number of optimizer steps (not a time budget), and torch runs on one thread.

Run it through ``scripts/pretrain_tiny.py``; :func:`pretrain` is the library entry point.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

from corral.models.tiny import _corpus
from corral.models.tiny._configs import MAX_POSITIONS, VOCAB_SIZE, make_config

__all__ = [
    "CHAT_TEMPLATE_PATH",
    "DEFAULT_STEPS",
    "PretrainConfig",
    "PretrainResult",
    "load_tokenizer",
    "pretrain",
    "train_tokenizer",
    "wrap_tokenizer",
]

logger = logging.getLogger(__name__)

CHAT_TEMPLATE_PATH = Path(__file__).resolve().parent / "chat_template.jinja"


@dataclass(frozen=True)
class PretrainConfig:
    """Hyper-parameters of a pre-training run (the defaults made the shipped weights)."""

    steps: int = 600
    batch_size: int = 16
    seq_len: int = 256
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    docs_repeat: int = 2  # the prose corpus is small: show it twice per data epoch


#: Steps each shipped model was pre-trained for. ``glm`` got fewer because the shared
#: 2-core build machine was saturated by other work when it ran (see README.md).
DEFAULT_STEPS = {"llama": 600, "gpt_neox": 600, "glm": 600}


@dataclass(frozen=True)
class PretrainResult:
    """What a pre-training run measured."""

    arch: str
    seed: int
    parameters: int
    tokens: int
    corpus_tokens: int
    seconds: float
    final_loss: float
    config: dict[str, Any]


def train_tokenizer(vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Train the byte-level BPE tokenizer on the bundled corpus.

    Special tokens get ids 0..5 in :data:`corral.models.tiny._corpus.SPECIAL_TOKENS`
    order. No BOS is added automatically: the chat template writes it.

    Args:
        vocab_size: Vocabulary size including special tokens.

    Returns:
        The trained ``tokenizers.Tokenizer``.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_corpus.SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    texts = _corpus.load_docs() + _corpus.load_chat()
    # Split on the special tokens, as encoding does, so "user" after <|im_start|> is learnt.
    splitter = re.compile("|".join(re.escape(s) for s in _corpus.SPECIAL_TOKENS))
    segments = [seg for t in texts for seg in splitter.split(t) if seg]
    tok.train_from_iterator(segments, trainer=trainer, length=len(segments))
    return tok


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a trained tokenizer with special tokens and the chat template."""
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token=_corpus.BOS,
        eos_token=_corpus.EOS,
        pad_token=_corpus.PAD,
        unk_token=_corpus.UNK,
        extra_special_tokens=[_corpus.IM_START, _corpus.EOT],
        chat_template=CHAT_TEMPLATE_PATH.read_text(),
        model_max_length=MAX_POSITIONS,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer(tokenizer_json: Path) -> PreTrainedTokenizerFast:
    """Load the shipped ``tokenizer.json`` as a :class:`PreTrainedTokenizerFast`."""
    return wrap_tokenizer(Tokenizer.from_file(str(tokenizer_json)))


def _encode_corpus(tok: PreTrainedTokenizerFast, docs_repeat: int) -> list[list[int]]:
    docs = [f"{_corpus.BOS}{p}{_corpus.EOT}" for p in _corpus.load_docs()] * docs_repeat
    texts = docs + _corpus.load_chat()
    enc = tok(texts, add_special_tokens=False)["input_ids"]
    return [list(x) for x in enc]


def _batches(seqs: list[list[int]], cfg: PretrainConfig, gen: torch.Generator) -> Any:
    """Yield ``[batch, seq_len]`` blocks forever: shuffle, concatenate, chunk, per epoch."""
    block = cfg.seq_len
    while True:
        order = torch.randperm(len(seqs), generator=gen).tolist()
        stream = torch.tensor([t for i in order for t in seqs[i]], dtype=torch.long)
        n = stream.numel() // block
        blocks = stream[: n * block].view(n, block)
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - cfg.batch_size + 1, cfg.batch_size):
            yield blocks[perm[i : i + cfg.batch_size]]


def pretrain(
    arch: str,
    out: Path,
    seed: int = 0,
    cfg: PretrainConfig | None = None,
    tokenizer_json: Path | None = None,
) -> PretrainResult:
    """Pre-train the tiny ``arch`` model on the bundled corpus and save it into ``out``.

    Writes ``config.json``, ``generation_config.json``, ``model.safetensors`` (float32)
    and ``pretrain.json`` (the measurements) into ``out``.

    Args:
        arch: One of the supported architectures.
        out: Output directory (created).
        seed: Seed of initialisation and data order.
        cfg: Hyper-parameters; defaults to :class:`PretrainConfig` with
            :data:`DEFAULT_STEPS` for ``arch``.
        tokenizer_json: The tokenizer to use; trained from the corpus when ``None``.

    Returns:
        The measurements of the run.
    """
    cfg = cfg or PretrainConfig(steps=DEFAULT_STEPS.get(arch, PretrainConfig.steps))
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    tok = load_tokenizer(tokenizer_json) if tokenizer_json else wrap_tokenizer(train_tokenizer())
    seqs = _encode_corpus(tok, cfg.docs_repeat)
    corpus_tokens = sum(len(s) for s in seqs)

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(make_config(arch), dtype=torch.float32)  # type: ignore[no-untyped-call]
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("%s: %d parameters, corpus %d tokens", arch, n_params, corpus_tokens)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        cos = 0.5 * (1 + math.cos(math.pi * progress))
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos)

    gen = torch.Generator().manual_seed(seed)
    batches = _batches(seqs, cfg, gen)
    model.train()
    start = time.perf_counter()
    ema = float("nan")
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        x = next(batches)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        val = float(loss.detach())
        ema = val if math.isnan(ema) else 0.95 * ema + 0.05 * val
        if step % 50 == 0 or step == cfg.steps - 1:
            logger.info(
                "%s step %d/%d loss %.3f (ema %.3f) %.0fs",
                arch,
                step,
                cfg.steps,
                val,
                ema,
                time.perf_counter() - start,
            )
    seconds = time.perf_counter() - start

    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model.save_pretrained(out)
    result = PretrainResult(
        arch=arch,
        seed=seed,
        parameters=n_params,
        tokens=cfg.steps * cfg.batch_size * cfg.seq_len,
        corpus_tokens=corpus_tokens,
        seconds=round(seconds, 1),
        final_loss=round(ema, 4),
        config=asdict(cfg),
    )
    (out / "pretrain.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result
