"""Reading raw records from JSON or JSONL files, local or ``s3://``.

A file whose first non-space character is ``[`` is a JSON array: records are numbered by
their 0-based index. Anything else is JSON Lines: records are numbered by their 1-based
line. A line that is not valid JSON (or not UTF-8) is yielded as a :class:`RecordError`
with code ``invalid_json`` in place of the record, so the caller can count it; blank lines
are not records and are counted by :class:`RecordReader`.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from corral import artifacts
from corral.api.v1alpha1.dataset import DatasetErrorCode

__all__ = ["ErrorCode", "RecordError", "RecordReader", "read_records"]

ErrorCode = DatasetErrorCode
"""The error classes (defined once, with the report that carries them, in ``corral.api``)."""


class RecordError(ValueError):
    """One problem with one record, in the error classes of OpenAI's data preparation checks.

    Attributes:
        code: The error class (see :data:`ErrorCode`).
        field: Path of the offending field inside the record, e.g. ``messages[2].role``
            (empty for the record as a whole).
        message: What is wrong and what is allowed.
        line: 1-based line (JSONL) or 0-based index (JSON array); ``-1`` until known.
    """

    def __init__(self, code: ErrorCode, field: str, message: str, line: int = -1) -> None:
        """Create the error.

        Args:
            code: The error class.
            field: Path of the offending field ("" for the whole record).
            message: Human-readable explanation.
            line: Line or index of the record, when known.
        """
        super().__init__(message)
        self.code: ErrorCode = code
        self.field = field
        self.message = message
        self.line = line

    def at(self, line: int) -> RecordError:
        """Return a copy of this error located at ``line``."""
        return RecordError(self.code, self.field, self.message, line)

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line >= 0 else "record"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"RecordError({self.code!r}, {self.field!r}, {self.message!r}, line={self.line})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordError):
            return NotImplemented
        return (self.code, self.field, self.message, self.line) == (other.code, other.field, other.message, other.line)

    def __hash__(self) -> int:
        return hash((self.code, self.field, self.message, self.line))


@dataclass
class RecordReader:
    """Iterates the records of one file and remembers how it was read.

    Attributes:
        source: The path or URI given.
        layout: ``"jsonl"`` or ``"json"`` once iteration has started.
        blank_lines: Number of blank JSONL lines (not records, reported for completeness).
        records: Number of records yielded (valid JSON or not).
        sha256: Hex SHA-256 of the file, once iteration has started.
        settings: :class:`~corral.artifacts.ArtifactSettings` for an ``s3://`` source (the
            credentials to read it with; ``None``: the server's own chain).
    """

    source: str | os.PathLike[str]
    settings: Any = None
    layout: Literal["jsonl", "json", ""] = ""
    blank_lines: int = 0
    records: int = 0
    sha256: str = ""
    _tmp: list[tempfile.TemporaryDirectory[str]] = field(default_factory=list, repr=False)

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        path = _local_path(self.source, self._tmp, self.settings)
        try:
            yield from self._iter_file(path)
        finally:
            for tmp in self._tmp:
                tmp.cleanup()
            self._tmp.clear()

    def _iter_file(self, path: Path) -> Iterator[tuple[int, Any]]:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        self.sha256 = digest.hexdigest()
        with path.open("rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf").lstrip()
        if head.startswith(b"["):
            self.layout = "json"
            yield from self._iter_array(path)
        else:
            self.layout = "jsonl"
            yield from self._iter_lines(path)

    def _iter_array(self, path: Path) -> Iterator[tuple[int, Any]]:
        # Two streaming passes: the first checks the whole array's syntax (keeping nothing),
        # so an invalid array still yields one error and no record; the second yields.
        try:
            for _ in _stream_array(path):
                pass
        except _ArrayError as exc:
            self.records += 1
            yield 0, RecordError("invalid_json", "", exc.message, 0)
            return
        for index, record in enumerate(_stream_array(path)):
            self.records += 1
            yield index, record

    def _iter_lines(self, path: Path) -> Iterator[tuple[int, Any]]:
        with path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                data = raw[3:] if number == 1 and raw.startswith(b"\xef\xbb\xbf") else raw
                if not data.strip():
                    self.blank_lines += 1
                    continue
                self.records += 1
                try:
                    yield number, json.loads(data.decode("utf-8").rstrip("\r\n"))
                except UnicodeDecodeError as exc:
                    yield number, RecordError("invalid_json", "", f"line is not UTF-8 (byte {exc.start})", number)
                except json.JSONDecodeError as exc:
                    yield (
                        number,
                        RecordError("invalid_json", "", f"not valid JSON: {exc.msg} at column {exc.colno}", number),
                    )


class _ArrayError(ValueError):
    """A JSON array that cannot be split into records."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_CHUNK = 1 << 20
_WHITESPACE = " \t\n\r"


def _stream_array(path: Path) -> Iterator[Any]:
    """Yield the elements of the JSON array in ``path`` one by one, reading 1 MiB at a time.

    Memory holds one element and a chunk, never the whole array (a 4.5 MB array used to
    cost 122 MB as Python objects at once).

    Raises:
        _ArrayError: Not UTF-8, or not a valid JSON array (with the line and column).
    """
    decoder = json.JSONDecoder(parse_constant=_no_constant)
    utf8 = codecs.getincrementaldecoder("utf-8-sig")()
    buf, pos, line_base, column_base, consumed_bytes, eof = "", 0, 1, 0, 0, False
    with path.open("rb") as fh:

        def more() -> bool:
            nonlocal buf, pos, line_base, column_base, consumed_bytes, eof
            if eof:
                return False
            raw = fh.read(_CHUNK)
            try:
                text = utf8.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                raise _ArrayError(f"file is not UTF-8 (byte {consumed_bytes + exc.start})") from None
            consumed_bytes += len(raw)
            newlines = buf.count("\n", 0, pos)
            line_base += newlines
            column_base = pos - (buf.rfind("\n", 0, pos) + 1) + (0 if newlines else column_base)
            buf, pos = buf[pos:] + text, 0
            eof = not raw
            return True

        def fail(msg: str, at: int) -> _ArrayError:
            newlines = buf.count("\n", 0, at)
            column = at - (buf.rfind("\n", 0, at) + 1) + (0 if newlines else column_base) + 1
            line = line_base + newlines
            return _ArrayError(
                f"the JSON array is not valid JSON: {msg} at line {line} column {column}; no record could be read"
            )

        def skip() -> None:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in _WHITESPACE:
                    pos += 1
                if pos < len(buf) or not more():
                    return

        skip()
        if pos >= len(buf) or buf[pos] != "[":
            raise fail("expected '['", pos)
        pos += 1
        first = True
        while True:
            skip()
            if pos >= len(buf):
                raise fail("the array is not closed", pos)
            if buf[pos] == "]":
                pos += 1
                skip()
                if pos < len(buf):
                    raise fail("extra data after the array", pos)
                return
            if not first:
                if buf[pos] != ",":
                    raise fail("expected ',' or ']'", pos)
                pos += 1
                skip()
            first = False
            wanted = 0
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as exc:
                    if eof or len(buf) - pos < wanted:
                        raise fail(exc.msg, exc.pos) from None
                    wanted = 2 * (len(buf) - pos)  # grow geometrically: no quadratic re-parsing
                    while len(buf) - pos < wanted and more():
                        pass
                    continue
                except (RecursionError, ValueError) as exc:
                    raise fail(str(exc)[:200] or "too deeply nested", pos) from None
                number = isinstance(value, int | float) and not isinstance(value, bool)
                if number and not eof and (end == len(buf) or buf[end] not in ",]" + _WHITESPACE):
                    more()  # a number may continue in the next chunk: parse it again
                    continue
                pos = end
                break
            yield value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number: numbers must be finite")


def read_records(source: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_or_index, record)`` for every record of a JSON or JSONL file.

    Args:
        source: A local path, a ``file://`` URI or an ``s3://`` URI (downloaded to a
            temporary directory through :mod:`corral.artifacts`).

    Yields:
        ``(line, record)``: the 1-based line (JSONL) or 0-based index (JSON array) and the
        decoded value, or a :class:`RecordError` with code ``invalid_json`` for a line
        that does not parse.

    Raises:
        FileNotFoundError: The local file does not exist.
    """
    return iter(RecordReader(source))


def _local_path(
    source: str | os.PathLike[str], tmp: list[tempfile.TemporaryDirectory[str]], settings: Any = None
) -> Path:
    text = os.fspath(source)
    if text.startswith("s3://"):
        directory = tempfile.TemporaryDirectory(prefix="corral-data-")
        tmp.append(directory)
        local = Path(directory.name) / (text.rstrip("/").rsplit("/", 1)[-1] or "data.jsonl")
        artifacts.open_store(text, settings).get_file(text, local)
        return local
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        raise ValueError(f"unsupported dataset URI {text!r}: use a local path, file:// or s3://")
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    return path
