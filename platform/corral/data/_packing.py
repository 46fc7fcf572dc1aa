"""Sample packing and padding collators.

:func:`pack` places several examples in one sequence of at most ``max_seq_len`` tokens
(best-fit decreasing), keeping each example's boundaries. :func:`collate_packed` turns
packed sequences into model inputs whose examples cannot see each other:

* ``position_ids`` restart at 0 for every example (what flash-attention varlen kernels
  and transformers' packed-sequence detection use; for the latter pass ``use_cache=False``
  in training, since a cache disables the detection);
* a 4D block-diagonal causal ``attention_mask`` (additive: 0 where a token may attend,
  the dtype's minimum elsewhere), which eager and SDPA attention honour on any device.
  It costs ``batch * seq_len**2`` elements; with flash attention use ``mask=False``.

:func:`collate_padded` is the baseline: right padding, labels ``-100`` on padding.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.data._tokenize import IGNORE_INDEX, Example

if TYPE_CHECKING:
    import torch

__all__ = ["PackedSequence", "collate_packed", "collate_padded", "pack", "padding_waste"]


@dataclass
class PackedSequence:
    """Several examples laid end to end.

    Attributes:
        input_ids: Concatenated token ids.
        labels: Concatenated labels.
        position_ids: Positions, restarting at 0 for each example.
        lengths: Length of each example, in order (the boundaries).
        source_lines: Source line of each example.
    """

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    source_lines: list[int] = field(default_factory=list)

    def add(self, example: Example) -> None:
        """Append one example.

        Its first label becomes ``-100``: alone, the first token is never a target; packed,
        it would be predicted from the previous example's last token (a leak into the loss).
        """
        n = len(example.input_ids)
        self.input_ids += example.input_ids
        self.labels += [IGNORE_INDEX, *example.labels[1:]]
        self.position_ids += range(n)
        self.lengths.append(n)
        self.source_lines.append(example.source_line)

    def __len__(self) -> int:
        return len(self.input_ids)


def pack(examples: Sequence[Example], max_seq_len: int) -> list[PackedSequence]:
    """Pack examples into sequences of at most ``max_seq_len`` tokens (best-fit decreasing).

    The result is deterministic for a given input order; shuffle the sequences, not the
    examples inside them, between epochs.

    Args:
        examples: Tokenized examples, each at most ``max_seq_len`` long (truncate or drop
            longer ones first).
        max_seq_len: Capacity of one sequence.

    Returns:
        The packed sequences; every example is in exactly one of them.

    Raises:
        ValueError: An example is longer than ``max_seq_len``, or is empty.
    """
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    bins: list[list[int]] = []
    # (remaining capacity, bin id), sorted: the best fit is the first with enough room.
    free: list[tuple[int, int]] = []
    for i in order:
        n = len(examples[i].input_ids)
        if n > max_seq_len or n == 0:
            raise ValueError(
                f"example from line {examples[i].source_line} has {n} tokens; packing needs 1..{max_seq_len}"
            )
        pos = bisect.bisect_left(free, (n, -1))
        if pos < len(free):
            room, b = free.pop(pos)
            bins[b].append(i)
            bisect.insort(free, (room - n, b))
        else:
            bins.append([i])
            bisect.insort(free, (max_seq_len - n, len(bins) - 1))
    sequences = []
    for members in bins:
        seq = PackedSequence()
        for i in sorted(members):
            seq.add(examples[i])
        sequences.append(seq)
    return sequences


def _pad(rows: list[list[int]], value: int, length: int) -> list[list[int]]:
    return [row + [value] * (length - len(row)) for row in rows]


def collate_padded(examples: Sequence[Example], pad_token_id: int, pad_to_multiple_of: int = 1) -> dict[str, Any]:
    """Right-pad examples into a batch (the no-packing baseline).

    Args:
        examples: Tokenized examples.
        pad_token_id: Id written into padding positions.
        pad_to_multiple_of: Round the batch length up to a multiple of this.

    Returns:
        ``input_ids``, ``labels`` (``-100`` on padding) and ``attention_mask`` (1 on
        tokens), each a ``[batch, length]`` ``torch.long`` tensor.
    """
    import torch

    length = max(len(e.input_ids) for e in examples)
    length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    ids = _pad([e.input_ids for e in examples], pad_token_id, length)
    labels = _pad([e.labels for e in examples], IGNORE_INDEX, length)
    mask = _pad([[1] * len(e.input_ids) for e in examples], 0, length)
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "attention_mask": torch.tensor(mask, dtype=torch.long),
    }


def block_causal_mask(lengths: Sequence[Sequence[int]], length: int, dtype: torch.dtype) -> torch.Tensor:
    """Build an additive ``[batch, 1, length, length]`` mask: causal inside each example only.

    Args:
        lengths: Per row, the lengths of its examples (the rest of the row is padding).
        length: Row length.
        dtype: Float dtype of the model's activations.

    Returns:
        0 where a query may attend to a key, ``torch.finfo(dtype).min`` elsewhere. Padding
        rows attend to themselves only (their output is ignored; this avoids NaNs).
    """
    import torch

    seq_ids = torch.full((len(lengths), length), -1, dtype=torch.long)
    for row, row_lengths in enumerate(lengths):
        start = 0
        for k, n in enumerate(row_lengths):
            seq_ids[row, start : start + n] = k
            start += n
        pad = torch.arange(start, length)
        seq_ids[row, start:] = -2 - pad  # unique per padding position
    same = seq_ids[:, :, None] == seq_ids[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = same & causal
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None, :, :]


def collate_packed(
    sequences: Sequence[PackedSequence],
    pad_token_id: int,
    *,
    mask: bool = True,
    dtype: torch.dtype | None = None,
    pad_to_multiple_of: int = 1,
) -> dict[str, Any]:
    """Batch packed sequences so that attention and positions stay inside each example.

    Args:
        sequences: Output of :func:`pack`.
        pad_token_id: Id written into padding positions.
        mask: Build the 4D block-diagonal causal ``attention_mask`` (needed for eager and
            SDPA attention); ``False`` leaves only ``position_ids`` (flash attention).
        dtype: Dtype of the additive mask (the model's dtype); ``torch.float32`` by default.
        pad_to_multiple_of: Round the batch length up to a multiple of this.

    Returns:
        ``input_ids``, ``labels`` (``-100`` on padding), ``position_ids`` (restarting at 0
        per example; padding continues from the last example so it reads as one more
        "example"), and with ``mask`` an ``attention_mask`` of shape
        ``[batch, 1, length, length]``.
    """
    import torch

    length = max(len(s) for s in sequences)
    length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    ids = _pad([s.input_ids for s in sequences], pad_token_id, length)
    labels = _pad([s.labels for s in sequences], IGNORE_INDEX, length)
    positions = [s.position_ids + list(range(length - len(s))) for s in sequences]
    batch: dict[str, Any] = {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "position_ids": torch.tensor(positions, dtype=torch.long),
    }
    if mask:
        batch["attention_mask"] = block_causal_mask([s.lengths for s in sequences], length, dtype or torch.float32)
    return batch


def padding_waste(lengths: Sequence[int], batch_lengths: Sequence[int]) -> float:
    """Fraction of the positions in a set of batches that are padding.

    Args:
        lengths: Real token count of each example (or packed sequence).
        batch_lengths: Per batch, ``rows * padded_length``.

    Returns:
        ``1 - sum(lengths) / sum(batch_lengths)``.
    """
    total = sum(batch_lengths)
    return 0.0 if total == 0 else 1.0 - sum(lengths) / total
