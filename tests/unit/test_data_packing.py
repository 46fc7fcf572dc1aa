"""corral.data: sample packing without leaking attention or positions across examples."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

from corral.data import IGNORE_INDEX, Example, collate_packed, collate_padded, pack, padding_waste
from corral.data._packing import block_causal_mask


def _examples(lengths: list[int], seed: int = 0, vocab: int = 96) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for k, n in enumerate(lengths):
        ids = [rng.randrange(3, vocab) for _ in range(n)]
        labels = [IGNORE_INDEX] * (n // 2) + ids[n // 2 :]
        out.append(Example(input_ids=ids, labels=labels, source_line=k + 1, original_length=n))
    return out


def _tiny_llama(attn: str) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    config._attn_implementation = attn
    return LlamaForCausalLM(config).eval()


def test_pack_places_every_example_once_within_capacity() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(1, 64) for _ in range(300)]
    examples = _examples(lengths)
    seqs = pack(examples, 64)
    assert all(len(s) <= 64 for s in seqs)
    assert sorted(line for s in seqs for line in s.source_lines) == list(range(1, 301))
    assert sum(len(s) for s in seqs) == sum(lengths)
    # best-fit decreasing is close to the lower bound
    assert len(seqs) <= -(-sum(lengths) // 64) * 1.1 + 1
    for s in seqs:
        assert s.lengths == [lengths[line - 1] for line in s.source_lines]
        start = 0
        for line, n in zip(s.source_lines, s.lengths, strict=True):
            assert s.position_ids[start : start + n] == list(range(n))
            assert s.input_ids[start : start + n] == examples[line - 1].input_ids
            assert s.labels[start] == IGNORE_INDEX
            assert s.labels[start + 1 : start + n] == examples[line - 1].labels[1:]
            start += n


def test_pack_rejects_too_long_or_empty() -> None:
    with pytest.raises(ValueError, match="line 1 has 10 tokens"):
        pack(_examples([10]), 8)
    with pytest.raises(ValueError, match="packing needs"):
        pack([Example([], [])], 8)


def test_block_causal_mask_shape_and_blocks() -> None:
    mask = block_causal_mask([[2, 3], [4]], 6, torch.float32)
    assert mask.shape == (2, 1, 6, 6)
    allowed = (mask[:, 0] == 0).int()
    assert allowed[0].tolist() == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],  # padding sees only itself
    ]
    assert allowed[1, 4:].tolist() == [[0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]]


def test_collate_packed_and_padded() -> None:
    examples = _examples([5, 3, 7])
    seqs = pack(examples, 8)
    batch = collate_packed(seqs, pad_token_id=0)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape
    assert batch["attention_mask"].shape == (len(seqs), 1, 8, 8)
    assert "attention_mask" not in collate_packed(seqs, 0, mask=False)
    padded = collate_padded(examples, pad_token_id=0, pad_to_multiple_of=4)
    assert padded["input_ids"].shape == (3, 8)
    assert padded["attention_mask"].sum(1).tolist() == [5, 3, 7]
    assert (padded["labels"][1, 3:] == IGNORE_INDEX).all()
    assert padding_waste([5, 3, 7], [3 * 8]) == pytest.approx(1 - 15 / 24)
    assert padding_waste([], []) == 0.0


def _separate_logits(model: Any, examples: list[Example]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(input_ids=torch.tensor([e.input_ids])).logits[0] for e in examples]


def _unpack(logits: torch.Tensor, seqs: list[Any]) -> dict[int, torch.Tensor]:
    out = {}
    for row, seq in enumerate(seqs):
        start = 0
        for line, n in zip(seq.source_lines, seq.lengths, strict=True):
            out[line] = logits[row, start : start + n]
            start += n
    return out


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_separate_logits(attn: str) -> None:
    """The no-leak proof: each example's logits inside a packed batch equal those of the example alone."""
    model = _tiny_llama(attn)
    examples = _examples([9, 4, 13, 6, 2, 11, 7])
    seqs = pack(examples, 24)
    assert any(len(s.lengths) > 1 for s in seqs)
    batch = collate_packed(seqs, pad_token_id=0)
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    alone = _separate_logits(model, examples)
    got = _unpack(packed, seqs)
    for example, expected in zip(examples, alone, strict=True):
        torch.testing.assert_close(got[example.source_line], expected, rtol=1e-4, atol=1e-5)
    # and without the mask (no position reset, plain causal), examples do leak: the test can fail
    with torch.no_grad():
        leaky = model(input_ids=batch["input_ids"]).logits
    leaked = _unpack(leaky, seqs)
    assert any(not torch.allclose(leaked[e.source_line], a, atol=1e-4) for e, a in zip(examples, alone, strict=True))


def test_position_ids_alone_with_transformers_packed_detection() -> None:
    """transformers 5 builds the block mask from resetting position_ids when there is no mask and no cache."""
    model = _tiny_llama("sdpa")
    examples = _examples([5, 8, 3], seed=3)
    seqs = pack(examples, 16)
    assert len(seqs) == 1
    batch = collate_packed(seqs, pad_token_id=0, mask=False)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    got = _unpack(packed, seqs)
    for example, expected in zip(examples, _separate_logits(model, examples), strict=True):
        torch.testing.assert_close(got[example.source_line], expected, rtol=1e-4, atol=1e-5)


def test_packed_loss_equals_token_weighted_separate_loss() -> None:
    model = _tiny_llama("sdpa")
    examples = _examples([9, 4, 13, 6], seed=5)
    for e in examples[:2]:  # loss on every token, as for plain text: the first label must not leak
        e.labels = list(e.input_ids)
    seqs = pack(examples, 32)
    assert len(seqs) == 1
    batch = collate_packed(seqs, pad_token_id=0)
    # shift per example: the label of an example's first token is never predicted from the previous example
    with torch.no_grad():
        packed_loss = model(**batch).loss
        total, count = 0.0, 0
        for e in examples:
            labels = torch.tensor([e.labels])
            n = int((labels[:, 1:] != IGNORE_INDEX).sum())
            total += float(model(input_ids=torch.tensor([e.input_ids]), labels=labels).loss) * n
            count += n
    assert float(packed_loss) == pytest.approx(total / count, rel=1e-4)
