"""Instruction data: formats, validation report, chat templates, loss masking, packing.

Reading and validating::

    report = check_dataset("train.jsonl", tokenizer=tok, max_seq_len=2048)
    data = load_dataset("train.jsonl")          # raises DatasetInvalid on malformed files

Training inputs::

    template = get_template("llama-3", tok)     # or "auto": the tokenizer's own
    examples, stats = tokenize_dataset(data.train, tok, template, 2048, loss_on="assistant")
    batch = collate_packed(pack(examples, 2048)[:8], tok.pad_token_id)
"""

from __future__ import annotations

from corral.data._formats import (
    FORMATS,
    Conversation,
    FormatDetectionError,
    Message,
    detect_format,
    normalize,
)
from corral.data._packing import PackedSequence, collate_packed, collate_padded, pack, padding_waste
from corral.data._records import RecordError, read_records
from corral.data._report import DataReport, DatasetInvalid, LoadedDataset, check_dataset, load_dataset
from corral.data._templates import TEMPLATE_NAMES, TemplateError, get_template, install_template
from corral.data._tokenize import IGNORE_INDEX, Example, TokenizeStats, tokenize_conversation, tokenize_dataset

__all__ = [
    "FORMATS",
    "IGNORE_INDEX",
    "TEMPLATE_NAMES",
    "Conversation",
    "DataReport",
    "DatasetInvalid",
    "Example",
    "FormatDetectionError",
    "LoadedDataset",
    "Message",
    "PackedSequence",
    "RecordError",
    "TemplateError",
    "TokenizeStats",
    "check_dataset",
    "collate_packed",
    "collate_padded",
    "detect_format",
    "get_template",
    "install_template",
    "load_dataset",
    "normalize",
    "pack",
    "padding_waste",
    "read_records",
    "tokenize_conversation",
    "tokenize_dataset",
]
