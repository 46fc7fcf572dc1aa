"""Training inputs from ``corral.data``: the job's datasets as tokenized units.

A *unit* is what the sampler shuffles and batches: one example (no packing) or one packed
sequence. This module is a thin adapter over ``corral.data``'s public API; it adds what
the trainer needs on top:

* a deterministic validation hold-out (``validationSplitPercent``) when the job names no
  validation dataset;
* packed units whose first token of every example carries no label, so no example is
  trained to predict the start of the next one;
* per-unit token and loss-token counts, so every worker knows the size of every step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from corral.data import (
    IGNORE_INDEX,
    Conversation,
    Example,
    PackedSequence,
    TokenizeStats,
    collate_packed,
    collate_padded,
    load_dataset,
    pack,
    tokenize_dataset,
)

__all__ = ["PreparedData", "Unit", "collate_units", "load_conversations", "prepare_units", "split_validation"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """One training sequence.

    Attributes:
        input_ids: Token ids.
        labels: Labels aligned with ``input_ids`` (the model shifts them); ``-100`` where no loss.
        lengths: Example lengths inside the sequence (one entry when not packed).
        packed: Whether this is a packed sequence (batched with a block-diagonal mask).
    """

    input_ids: list[int]
    labels: list[int]
    lengths: tuple[int, ...]
    packed: bool = False

    @property
    def loss_tokens(self) -> int:
        """Tokens that carry loss after the shift (the first token is never a target)."""
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


@dataclass
class PreparedData:
    """The job's data, ready for the loop.

    Attributes:
        train: Training units.
        validation: Validation units (may be empty).
        stats: What tokenization truncated or dropped, for training and validation.
    """

    train: list[Unit]
    validation: list[Unit]
    stats: dict[str, TokenizeStats]


def _from_example(example: Example) -> Unit:
    return Unit(list(example.input_ids), list(example.labels), (len(example.input_ids),))


def _from_packed(seq: PackedSequence) -> Unit:
    labels = list(seq.labels)
    start = 0
    for n in seq.lengths:
        labels[start] = IGNORE_INDEX  # predicted from the previous example's last token: not a target
        start += n
    return Unit(list(seq.input_ids), labels, tuple(seq.lengths), packed=True)


def collate_units(units: Sequence[Unit], pad_id: int) -> dict[str, torch.Tensor]:
    """Batch units: right padding, or packed sequences with a block-diagonal causal mask.

    Args:
        units: Units of one micro-batch (all packed or none).
        pad_id: Padding token id.

    Returns:
        Model inputs plus ``labels``.
    """
    if units and units[0].packed:
        seqs = []
        for u in units:
            seq = PackedSequence()
            start = 0
            for n in u.lengths:
                seq.add(Example(u.input_ids[start : start + n], u.labels[start : start + n]))
                start += n
            seqs.append(seq)
        return dict(collate_packed(seqs, pad_id))
    examples = [Example(u.input_ids, u.labels) for u in units]
    return dict(collate_padded(examples, pad_id))


def split_validation(
    conversations: Sequence[Conversation], percent: int, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """Hold out ``percent`` of the conversations for validation, deterministically.

    Args:
        conversations: All training conversations.
        percent: 0-50; 0 holds out nothing.
        seed: Seeds the choice.

    Returns:
        ``(train, validation)``; at least one conversation is held out when ``percent > 0``.
    """
    if percent == 0 or not conversations:
        return list(conversations), []
    n_val = max(1, math.floor(len(conversations) * percent / 100))
    gen = torch.Generator().manual_seed(seed)
    order = [int(i) for i in torch.randperm(len(conversations), generator=gen)]
    held = set(order[:n_val])
    train = [c for i, c in enumerate(conversations) if i not in held]
    val = [c for i, c in enumerate(conversations) if i in held]
    return train, val


def load_conversations(sources: Sequence[tuple[str, str]]) -> list[Conversation]:
    """Load and validate data files, concatenated in order.

    Args:
        sources: ``(uri, format)`` pairs.

    Returns:
        Every conversation of every file.

    Raises:
        corral.data.DatasetInvalid: A file has a malformed record (with its line).
    """
    out: list[Conversation] = []
    for uri, fmt in sources:
        out += load_dataset(uri, format=fmt).train
    return out


def prepare_units(
    train: Sequence[Conversation],
    validation: Sequence[Conversation],
    tokenizer: Any,
    template: str,
    *,
    max_seq_len: int,
    loss_on: str,
    packing: bool,
) -> PreparedData:
    """Tokenize (and optionally pack) the conversations.

    Args:
        train: Training conversations.
        validation: Validation conversations.
        tokenizer: Fast tokenizer of the base model.
        template: Chat template source.
        max_seq_len: Longest sequence; longer examples are truncated (and counted).
        loss_on: ``assistant``, ``completion`` or ``all``.
        packing: Pack examples into sequences of ``max_seq_len``.

    Returns:
        The units and the tokenization counts.

    Raises:
        ValueError: No training example is left after tokenization.
    """
    stats: dict[str, TokenizeStats] = {}
    units: dict[str, list[Unit]] = {}
    for split, convs in (("train", train), ("validation", validation)):
        examples, st = tokenize_dataset(convs, tokenizer, template, max_seq_len, loss_on=loss_on)  # type: ignore[arg-type]
        stats[split] = st
        if st.truncated or st.dropped_no_loss:
            logger.warning(
                "%s: %d examples truncated to %d tokens, %d dropped without loss tokens (lines %s)",
                split,
                st.truncated,
                max_seq_len,
                st.dropped_no_loss,
                st.dropped_lines[:10],
            )
        if packing and examples:
            units[split] = [_from_packed(s) for s in pack(examples, max_seq_len)]
        else:
            units[split] = [_from_example(e) for e in examples]
    if not units["train"]:
        raise ValueError("no training example is left after tokenization (every example lost its loss tokens)")
    return PreparedData(units["train"], units["validation"], stats)
