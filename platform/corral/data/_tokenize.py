"""Tokenization with loss masking.

A conversation is rendered once with its chat template and tokenized once (what the model
sees in training is exactly what the template produces). The loss spans are located in
the rendered text by rendering each trained assistant turn's prefix with the generation
prompt and the conversation up to that turn: the characters between the two are the
assistant's answer and the template's end-of-turn marker. Tokens overlapping a span keep
their label; every other label is ``-100``. This works for any prefix-stable template
(all named ones, and the usual tokenizer templates) and needs a fast tokenizer (offsets).

``loss_on`` selects the supervised tokens:

* ``assistant``: every assistant turn whose ``weight`` is 1.
* ``completion``: only the last assistant turn (the completion of a prompt/completion
  record; the final answer of a chat), if its weight is 1.
* ``all``: every token.

Plain-text examples (``kind="text"``) have no roles: they are ``bos + text + eos`` with
the loss on every token whatever ``loss_on`` says.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from corral.data._formats import Conversation
from corral.data._templates import TemplateError, render

__all__ = [
    "IGNORE_INDEX",
    "Example",
    "LossOn",
    "OverLength",
    "TokenizeStats",
    "loss_spans",
    "tokenize_conversation",
    "tokenize_dataset",
    "tokenize_many",
]

IGNORE_INDEX = -100
LossOn = Literal["assistant", "completion", "all"]
OverLength = Literal["drop", "truncate"]


@dataclass
class Example:
    """One tokenized training example.

    Attributes:
        input_ids: Token ids (at most ``max_seq_len``).
        labels: Same length; ``-100`` where no loss is computed.
        source_line: Line or index of the record it came from.
        original_length: Tokens before truncation.
    """

    input_ids: list[int]
    labels: list[int]
    source_line: int = -1
    original_length: int = 0

    @property
    def truncated(self) -> bool:
        """Whether tokens were cut off at ``max_seq_len``."""
        return self.original_length > len(self.input_ids)

    @property
    def num_loss_tokens(self) -> int:
        """Tokens that carry a label."""
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass
class TokenizeStats:
    """What :func:`tokenize_dataset` did to each conversation, so nothing goes uncounted.

    Attributes:
        examples: Examples produced.
        truncated: Examples cut to ``max_seq_len`` (kept).
        dropped_over_length: Examples longer than ``max_seq_len`` dropped (``over_length=drop``).
        dropped_no_loss: Examples with no supervised token left (e.g. truncation removed the
            whole answer, or every assistant turn has weight 0), dropped.
        dropped_lines: Source lines of the dropped examples.
    """

    examples: int = 0
    truncated: int = 0
    dropped_over_length: int = 0
    dropped_no_loss: int = 0
    dropped_lines: list[int] = field(default_factory=list)


def loss_spans(conv: Conversation, tokenizer: Any, template: str, loss_on: LossOn) -> tuple[str, list[tuple[int, int]]]:
    """Render a chat conversation and locate the character spans that carry the loss.

    Args:
        conv: A ``chat`` or ``completion`` conversation.
        tokenizer: The tokenizer whose special tokens fill the template.
        template: Jinja source of the chat template.
        loss_on: Which tokens are supervised (see the module docstring).

    Returns:
        ``(text, spans)``: the rendered text and ``[start, end)`` character spans.

    Raises:
        TemplateError: The template is not prefix-stable, so the turns cannot be located.
    """
    messages = conv.messages
    text = render(messages, tokenizer, template)
    if loss_on == "all":
        return text, [(0, len(text))]
    assistant = [i for i, m in enumerate(messages) if m.role == "assistant"]
    if loss_on == "completion":
        assistant = assistant[-1:]
    spans: list[tuple[int, int]] = []
    for i in assistant:
        if messages[i].weight != 1:
            continue
        prefix = render(messages[:i], tokenizer, template, add_generation_prompt=True)
        upto = render(messages[: i + 1], tokenizer, template)
        if not (upto.startswith(prefix) and text.startswith(upto)):
            raise TemplateError(
                f"the chat template is not prefix-stable at message {i} (rendering the conversation up to an "
                "assistant turn does not extend the prompt before it), so the assistant tokens cannot be located; "
                "use a named template or loss_on='all'"
            )
        spans.append((len(prefix), len(upto)))
    return text, spans


def _label_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[bool]:
    """Per token: does its character range overlap a loss span? (one sweep; both are sorted)."""
    keep = []
    k = 0
    for start, end in offsets:
        while k < len(spans) and spans[k][1] <= start:
            k += 1
        if k == len(spans):
            keep.append(False)
        elif start == end:  # zero-width token
            keep.append(spans[k][0] <= start)
        else:
            keep.append(end > spans[k][0])
    return keep


def _prepare(
    conv: Conversation, tokenizer: Any, template: str | None, loss_on: LossOn
) -> tuple[str, list[tuple[int, int]]]:
    """The text to tokenize and its loss spans (``text`` examples: the document, all of it)."""
    if loss_on not in ("assistant", "completion", "all"):
        raise ValueError(f"loss_on must be assistant, completion or all, got {loss_on!r}")
    if conv.kind == "text":
        return conv.text or "", []
    if not template:
        raise TemplateError("a chat template is needed to tokenize chat examples")
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("loss masking needs a fast tokenizer (PreTrainedTokenizerFast) for token offsets")
    return loss_spans(conv, tokenizer, template, loss_on)


def _finish(  # noqa: PLR0917 - private helper of tokenize_many
    conv: Conversation,
    tokenizer: Any,
    ids: list[int],
    offsets: list[tuple[int, int]],
    spans: list[tuple[int, int]],
    max_seq_len: int,
    over_length: OverLength,
) -> Example | None:
    if conv.kind == "text":
        if tokenizer.bos_token_id is not None:
            ids.insert(0, tokenizer.bos_token_id)
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
        labels = list(ids)
    else:
        keep = _label_mask(offsets, spans)
        labels = [t if k else IGNORE_INDEX for t, k in zip(ids, keep, strict=True)]
    length = len(ids)
    if length > max_seq_len:
        if over_length == "drop":
            return None
        ids, labels = ids[:max_seq_len], labels[:max_seq_len]
    return Example(input_ids=ids, labels=labels, source_line=conv.source_line, original_length=length)


def tokenize_conversation(
    conv: Conversation,
    tokenizer: Any,
    template: str | None,
    max_seq_len: int,
    *,
    loss_on: LossOn = "assistant",
    over_length: OverLength = "truncate",
) -> Example | None:
    """Tokenize one conversation with its loss mask.

    Args:
        conv: The normalized example.
        tokenizer: A fast Hugging Face tokenizer (``PreTrainedTokenizerFast``).
        template: Chat template source (:func:`~corral.data.get_template`); unused for
            ``text`` examples, required otherwise.
        max_seq_len: Longest sequence allowed.
        loss_on: ``assistant``, ``completion`` or ``all``.
        over_length: ``truncate`` keeps the first ``max_seq_len`` tokens; ``drop`` returns
            ``None`` for a longer example.

    Returns:
        The example, or ``None`` when ``over_length="drop"`` and it is too long.

    Raises:
        TemplateError: No template for a chat example, or one that is not prefix-stable.
        TypeError: The tokenizer is not a fast tokenizer.
    """
    return tokenize_many([conv], tokenizer, template, max_seq_len, loss_on=loss_on, over_length=over_length)[0]


def tokenize_many(
    conversations: Sequence[Conversation],
    tokenizer: Any,
    template: str | None,
    max_seq_len: int,
    *,
    loss_on: LossOn = "assistant",
    over_length: OverLength = "truncate",
    batch_size: int = 512,
) -> list[Example | None]:
    """Tokenize conversations in batches (one tokenizer call per batch); see :func:`tokenize_conversation`.

    Returns:
        One result per conversation, in order (``None``: dropped as too long).
    """
    out: list[Example | None] = []
    for i in range(0, len(conversations), batch_size):
        chunk = conversations[i : i + batch_size]
        prepared = [_prepare(conv, tokenizer, template, loss_on) for conv in chunk]
        enc = tokenizer([text for text, _ in prepared], add_special_tokens=False, return_offsets_mapping=True)
        rows = zip(chunk, prepared, enc["input_ids"], enc["offset_mapping"], strict=True)
        for conv, (_, spans), ids, offsets in rows:
            offs = [(int(a), int(b)) for a, b in offsets]
            out.append(_finish(conv, tokenizer, list(ids), offs, spans, max_seq_len, over_length))
    return out


def tokenize_dataset(
    conversations: Iterable[Conversation],
    tokenizer: Any,
    template: str | None,
    max_seq_len: int,
    *,
    loss_on: LossOn = "assistant",
    over_length: OverLength = "truncate",
) -> tuple[list[Example], TokenizeStats]:
    """Tokenize every conversation and count what was truncated or dropped.

    Args:
        conversations: Normalized examples.
        tokenizer: A fast Hugging Face tokenizer.
        template: Chat template source.
        max_seq_len: Longest sequence allowed.
        loss_on: ``assistant``, ``completion`` or ``all``.
        over_length: ``truncate`` or ``drop``.

    Returns:
        The kept examples and the counts of what happened to the others.
    """
    stats = TokenizeStats()
    examples: list[Example] = []
    convs = list(conversations)
    results = tokenize_many(convs, tokenizer, template, max_seq_len, loss_on=loss_on, over_length=over_length)
    for conv, example in zip(convs, results, strict=True):
        if example is None:
            stats.dropped_over_length += 1
            stats.dropped_lines.append(conv.source_line)
            continue
        if example.num_loss_tokens == 0:
            stats.dropped_no_loss += 1
            stats.dropped_lines.append(conv.source_line)
            continue
        stats.truncated += example.truncated
        examples.append(example)
    stats.examples = len(examples)
    return examples, stats
