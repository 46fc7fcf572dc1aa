"""The dataset validation report, and the loader that refuses malformed files.

:func:`check_dataset` reads every record, normalizes it, and reports: examples, records
with errors (each error with its line, field and class), per-role token statistics,
examples over ``max_seq_len`` and what training will do with them, exact duplicates, and
validation examples that also appear in training (leakage). Nothing is skipped without
being counted: every record is either an example or an invalid record, and blank JSONL
lines are counted too.

:func:`load_dataset` is what the trainer calls before any worker starts: it raises
:class:`DatasetInvalid` unless every record of every file is valid.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.api.v1alpha1.dataset import DatasetError, DatasetReport, RoleTokenStats
from corral.data._formats import FORMATS, Conversation, FormatDetectionError, detect_format, normalize_all_errors
from corral.data._records import RecordError, RecordReader
from corral.data._templates import TemplateError, get_template
from corral.data._tokenize import IGNORE_INDEX, LossOn, OverLength, tokenize_many

__all__ = ["DataReport", "DatasetInvalid", "FileReport", "LoadedDataset", "TokenStats", "check_dataset", "load_dataset"]

#: How many errors the API status keeps (the full list stays on :class:`DataReport`).
STATUS_MAX_ERRORS = 100
_ROLES = ("system", "user", "assistant", "all")


class DatasetInvalid(ValueError):  # noqa: N818 - the name says what the caller gets
    """The dataset has malformed records (or no usable example); training must not start.

    Attributes:
        report: The validation report, when one could be made.
    """

    def __init__(self, message: str, report: DataReport | None = None) -> None:
        """Create the error.

        Args:
            message: Summary with the first errors and their count.
            report: The full report.
        """
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class TokenStats:
    """Token counts of one role over the examples (nearest-rank percentiles).

    Attributes:
        role: ``system``, ``user``, ``assistant`` or ``all`` (the whole rendered example).
        count: Examples that have the role.
        min: Fewest tokens. p5: 5th percentile. median: 50th. p95: 95th. max: Most tokens.
    """

    role: str
    count: int
    min: int
    p5: int
    median: int
    p95: int
    max: int

    @classmethod
    def of(cls, role: str, values: Sequence[int]) -> TokenStats:
        """Compute the statistics of ``values``."""
        v = sorted(values)

        def rank(p: float) -> int:
            return v[min(len(v) - 1, max(0, math.ceil(p / 100 * len(v)) - 1))]

        return cls(role, len(v), v[0], rank(5), rank(50), rank(95), v[-1])


@dataclass
class FileReport:
    """What was read from one file.

    Attributes:
        source: Path or URI.
        format: The format used (detected when ``auto``).
        format_reason: Why (for ``auto``: what detection saw).
        layout: ``jsonl`` or ``json``.
        sha256: SHA-256 of the file.
        records: Records read (each is an example or invalid).
        blank_lines: Blank JSONL lines (not records).
        errors: Every error, in file order.
        conversations: The valid examples.
    """

    source: str
    format: str
    format_reason: str
    layout: str
    sha256: str
    records: int
    blank_lines: int
    errors: list[RecordError]
    conversations: list[Conversation]

    @property
    def invalid(self) -> int:
        """Records with at least one error."""
        return len({e.line for e in self.errors})

    @property
    def examples(self) -> int:
        """Valid examples."""
        return len(self.conversations)


def _read_file(source: str | os.PathLike[str], fmt: str, settings: Any = None) -> FileReport:
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; allowed: auto, {', '.join(FORMATS)}")
    reader = RecordReader(source, settings)
    items = list(reader)
    if fmt == "auto":
        chosen, reason = detect_format(r for _, r in items if not isinstance(r, RecordError))
    else:
        chosen, reason = fmt, "set explicitly"
    errors: list[RecordError] = []
    conversations: list[Conversation] = []
    for line, record in items:
        if isinstance(record, RecordError):
            errors.append(record)
            continue
        conv, errs = normalize_all_errors(record, chosen, line)
        if conv is None:
            errors += errs
        else:
            conversations.append(conv)
    return FileReport(
        source=os.fspath(source),
        format=chosen,
        format_reason=reason,
        layout=reader.layout,
        sha256=reader.sha256,
        records=reader.records,
        blank_lines=reader.blank_lines,
        errors=errors,
        conversations=conversations,
    )


@dataclass
class DataReport:
    """The validation report of a dataset (training file plus optional validation file).

    Attributes:
        train: What was read from the training file.
        validation: What was read from the validation file, if any.
        token_unit: ``tokens`` (with a tokenizer) or ``words`` (whitespace split).
        chat_template: Template used to count whole examples (``None``: content only).
        token_stats: Per role, over the training examples.
        max_seq_len: The limit checked against.
        over_length: What training does with longer examples: ``drop`` or ``truncate``.
        over_length_lines: Lines of the training examples longer than ``max_seq_len``.
        no_loss_lines: Lines of examples with no supervised token left after truncation
            (or no trained assistant turn); training drops them.
        duplicate_lines: ``(line, first_line)`` for each training example that repeats an
            earlier one exactly.
        leaked_lines: ``(validation_line, train_line)`` for each validation example that
            also appears in the training file.
    """

    train: FileReport
    validation: FileReport | None = None
    token_unit: str = "words"
    chat_template: str | None = None
    token_stats: list[TokenStats] = field(default_factory=list)
    max_seq_len: int = 2048
    over_length: str = "truncate"
    over_length_lines: list[int] = field(default_factory=list)
    no_loss_lines: list[int] = field(default_factory=list)
    duplicate_lines: list[tuple[int, int]] = field(default_factory=list)
    leaked_lines: list[tuple[int, int]] = field(default_factory=list)

    @property
    def format(self) -> str:
        """The training file's format."""
        return self.train.format

    @property
    def errors(self) -> list[RecordError]:
        """Every error of the training file."""
        return self.train.errors

    @property
    def ok(self) -> bool:
        """No error in any file and at least one example."""
        return not self.train.errors and self.train.examples > 0 and not (self.validation and self.validation.errors)

    def to_status(self) -> DatasetReport:
        """The report as the ``Dataset`` status type (first 100 training errors)."""
        return DatasetReport(
            examples=self.train.examples,
            invalid=self.train.invalid,
            duplicates=len(self.duplicate_lines),
            over_max_seq_len=len(self.over_length_lines),
            leaked=len(self.leaked_lines),
            token_stats=[
                RoleTokenStats(role=s.role, min=s.min, p5=s.p5, median=s.median, p95=s.p95, max=s.max)
                for s in self.token_stats
            ],
            errors=[
                DatasetError(line=max(e.line, 0), field=e.field, code=e.code, message=e.message)
                for e in self.train.errors[:STATUS_MAX_ERRORS]
            ],
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything in the report as JSON-ready data (``corral dataset check --json``)."""

        def file(f: FileReport) -> dict[str, Any]:
            return {
                "source": f.source,
                "format": f.format,
                "format_reason": f.format_reason,
                "layout": f.layout,
                "sha256": f.sha256,
                "records": f.records,
                "examples": f.examples,
                "invalid": f.invalid,
                "blank_lines": f.blank_lines,
                "errors": [
                    {"line": e.line, "field": e.field, "code": e.code, "message": e.message} for e in f.errors
                ],
            }

        return {
            "ok": self.ok,
            "train": file(self.train),
            "validation": file(self.validation) if self.validation else None,
            "error_counts": dict(Counter(e.code for e in self.train.errors)),
            "token_unit": self.token_unit,
            "chat_template": self.chat_template,
            "token_stats": [vars(s) for s in self.token_stats],
            "max_seq_len": self.max_seq_len,
            "over_length": self.over_length,
            "over_max_seq_len": len(self.over_length_lines),
            "over_length_lines": self.over_length_lines,
            "no_loss_after_truncation": len(self.no_loss_lines),
            "no_loss_lines": self.no_loss_lines,
            "duplicates": len(self.duplicate_lines),
            "duplicate_lines": [list(p) for p in self.duplicate_lines],
            "leaked": len(self.leaked_lines),
            "leaked_lines": [list(p) for p in self.leaked_lines],
        }


def _resolve_template(tokenizer: Any, chat_template: str | None) -> str | None:
    if tokenizer is None:
        return None
    if chat_template not in (None, "auto"):
        return get_template(chat_template, tokenizer)
    try:
        return get_template("auto", tokenizer)
    except TemplateError:
        if chat_template == "auto":
            raise
        return None  # count content tokens only


def _count(texts: list[str], tokenizer: Any) -> list[int]:
    if tokenizer is None:
        return [len(t.split()) for t in texts]
    counts: list[int] = []
    for i in range(0, len(texts), 1024):
        counts += [len(ids) for ids in tokenizer(texts[i : i + 1024], add_special_tokens=False)["input_ids"]]
    return counts


def _measure(
    report: DataReport, tokenizer: Any, template: str | None, loss_on: LossOn
) -> None:
    convs = report.train.conversations
    texts: list[str] = []
    owners: list[tuple[int, str]] = []
    for k, conv in enumerate(convs):
        if conv.kind == "text":
            texts.append(conv.text or "")
            owners.append((k, "text"))
        for m in conv.messages:
            texts.append(m.content)
            owners.append((k, m.role))
    per_role: dict[str, list[int]] = {r: [0] * len(convs) for r in ("system", "user", "assistant", "text")}
    present: dict[str, set[int]] = {r: set() for r in per_role}
    for (k, role), n in zip(owners, _count(texts, tokenizer), strict=True):
        per_role[role][k] += n
        present[role].add(k)
    rendered = tokenizer is not None and (template is not None or all(c.kind == "text" for c in convs))
    fulls = tokenize_many(convs, tokenizer, template, 1 << 62, loss_on=loss_on) if rendered else []
    totals: list[int] = []
    for k, conv in enumerate(convs):
        if rendered:
            full = fulls[k]
            assert full is not None
            total = len(full.input_ids)
            # Position 0's label is never trained (labels are shifted by one).
            if total <= report.max_seq_len:
                kept = full.labels[1:]
            else:
                kept = full.labels[1 : report.max_seq_len] if report.over_length == "truncate" else [0]
            if all(label == IGNORE_INDEX for label in kept):
                report.no_loss_lines.append(conv.source_line)
        else:
            total = sum(per_role[r][k] for r in per_role)
        totals.append(total)
        if total > report.max_seq_len:
            report.over_length_lines.append(conv.source_line)
    for role in _ROLES:
        values = totals if role == "all" else [per_role[role][k] for k in sorted(present[role])]
        if values:
            report.token_stats.append(TokenStats.of(role, values))


def check_dataset(
    source: str | os.PathLike[str],
    *,
    format: str = "auto",
    tokenizer: Any = None,
    max_seq_len: int = 2048,
    over_length: OverLength = "truncate",
    validation_source: str | os.PathLike[str] | None = None,
    chat_template: str | None = None,
    loss_on: LossOn = "assistant",
    artifact_settings: Any = None,
) -> DataReport:
    """Read and validate a dataset.

    Args:
        source: Training file: path, ``file://`` or ``s3://`` URI (JSON array or JSONL).
        format: ``auto`` or one of :data:`~corral.data.FORMATS`.
        tokenizer: Tokenizer of the base model; ``None`` counts whitespace words.
        max_seq_len: Sequence length to check against.
        over_length: What training will do with longer examples (``drop``/``truncate``).
        validation_source: Optional validation file (same format as the training file
            unless it is detected otherwise), checked for errors and leakage.
        chat_template: Template name, ``auto`` (the tokenizer's, required), or ``None``
            (the tokenizer's if it has one). With a tokenizer and a template, the ``all``
            statistics and the length checks use the fully rendered example.
        loss_on: Loss masking used to find examples left without supervised tokens.
        artifact_settings: How to reach ``s3://`` sources (the namespace's credentials);
            ``None``: the standard chain.

    Returns:
        The report; ``report.ok`` tells whether training may use the data.

    Raises:
        FormatDetectionError: ``format="auto"`` and the format cannot be told.
        FileNotFoundError: A local file does not exist.
        TemplateError: An unknown template name, or ``auto`` without a tokenizer template.
    """
    if over_length not in ("drop", "truncate"):
        raise ValueError(f"over_length must be drop or truncate, got {over_length!r}")
    template = _resolve_template(tokenizer, chat_template)
    train = _read_file(source, format, artifact_settings)
    report = DataReport(
        train=train,
        token_unit="words" if tokenizer is None else "tokens",
        chat_template=chat_template if chat_template not in (None, "auto") else ("auto" if template else None),
        max_seq_len=max_seq_len,
        over_length=over_length,
    )
    _measure(report, tokenizer, template, loss_on)
    first: dict[tuple[tuple[str, str], ...], int] = {}
    for conv in train.conversations:
        key = conv.content_key()
        if key in first:
            report.duplicate_lines.append((conv.source_line, first[key]))
        else:
            first[key] = conv.source_line
    if validation_source is not None:
        report.validation = _read_file(
            validation_source, train.format if format == "auto" else format, artifact_settings
        )
        for conv in report.validation.conversations:
            key = conv.content_key()
            if key in first:
                report.leaked_lines.append((conv.source_line, first[key]))
    return report


@dataclass
class LoadedDataset:
    """A validated dataset, ready to tokenize.

    Attributes:
        train: Training examples.
        validation: Validation examples (empty without a validation file).
        format: The format the data was read as.
        report: The validation report.
    """

    train: list[Conversation]
    validation: list[Conversation]
    format: str
    report: DataReport


def _summary(report: DataReport) -> str:
    files = [report.train] + ([report.validation] if report.validation else [])
    errors = [(f, e) for f in files for e in f.errors]
    if not errors:
        return f"{report.train.source}: no valid example in {report.train.records} records"
    head = "; ".join(f"{f.source} {e}" for f, e in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    records = sum(f.invalid for f in files)
    return f"dataset is invalid: {len(errors)} errors in {records} records: {head}{more}"


def load_dataset(
    source: str | os.PathLike[str],
    *,
    format: str = "auto",
    validation_source: str | os.PathLike[str] | None = None,
    tokenizer: Any = None,
    max_seq_len: int = 2048,
    over_length: OverLength = "truncate",
    chat_template: str | None = None,
    loss_on: LossOn = "assistant",
) -> LoadedDataset:
    """Load a dataset for training, refusing it when any record is malformed.

    Args:
        source: Training file (path, ``file://`` or ``s3://``).
        format: ``auto`` or a concrete format.
        validation_source: Optional validation file.
        tokenizer: Tokenizer for the report's statistics (optional).
        max_seq_len: Sequence length for the report.
        over_length: ``drop`` or ``truncate``, for the report.
        chat_template: Template name for the report's statistics.
        loss_on: Loss masking, for the report.

    Returns:
        The conversations and the report.

    Raises:
        DatasetInvalid: Any record of either file has an error, the format cannot be
            detected, or there is no example; the message names the first errors and
            counts them all.
    """
    try:
        report = check_dataset(
            source,
            format=format,
            tokenizer=tokenizer,
            max_seq_len=max_seq_len,
            over_length=over_length,
            validation_source=validation_source,
            chat_template=chat_template,
            loss_on=loss_on,
        )
    except FormatDetectionError as exc:
        raise DatasetInvalid(f"{os.fspath(source)}: {exc}") from exc
    if not report.ok:
        raise DatasetInvalid(_summary(report), report)
    return LoadedDataset(
        train=report.train.conversations,
        validation=report.validation.conversations if report.validation else [],
        format=report.format,
        report=report,
    )
