"""corral.training._evaluate: answers, scores, and the base reached through the disabled adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from corral.api.v1alpha1.finetunejob import EvaluationSpec, LoRASpec
from corral.data import Conversation, Message
from corral.data._templates import get_template
from corral.training._evaluate import base_of, evaluate, normalize, sample, similarity
from corral.training._model import build_model


def _conv(question: str, answer: str) -> Conversation:
    return Conversation(messages=(Message("user", question), Message("assistant", answer)))


def test_normalize_and_similarity() -> None:
    assert normalize("  The Ferry  leaves at 6:40am. ") == "the ferry leaves at 6:40am"
    assert similarity("The ferry leaves at 6:40am", "the ferry leaves at 6:40am.") == 1.0
    assert 0.0 < similarity("The ferry leaves at 7am", "The ferry leaves at 6:40am") < 1.0
    assert similarity("", "") == 1.0 and similarity("abc", "") == 0.0


def test_sample_is_seeded_and_keeps_file_order() -> None:
    convs = [_conv(f"q{i}", f"a{i}") for i in range(10)]
    picked = sample(convs, 4, seed=1)
    assert picked == sample(convs, 4, seed=1) and len(picked) == 4
    assert [c.messages[0].content for c in picked] == sorted(
        (c.messages[0].content for c in picked), key=lambda q: int(q[1:])
    )
    assert sample([Conversation(kind="text", text="x")], 4, seed=1) == []


def test_an_untrained_adapter_scores_exactly_like_its_base(base: Path, tok: Any) -> None:
    model = build_model(base, "lora", LoRASpec(rank=4), seed=0)  # LoRA's B starts at zero: the base's function
    template = get_template("chatml", tok)
    convs = [_conv("What is the ferry called?", "The ferry is called the Marta Quell."), _conv("Hello", "Hi.")]
    evaluation = evaluate(
        model,
        tok,
        template,
        trained=convs,
        held_out=convs[:1],
        base=base_of(model, lambda: model),
        spec=EvaluationSpec(max_examples=8, max_new_tokens=12),
        seed=0,
    )
    assert [s.name for s in evaluation.splits] == ["heldOut", "trained"]
    for split in evaluation.splits:
        assert split.fine_tuned == split.base
        assert split.fine_tuned.loss is not None and split.fine_tuned.loss > 1.0
        assert split.fine_tuned.exact_match_percent == 0.0
