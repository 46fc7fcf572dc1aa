"""Stream ``multipart/form-data`` from a spooled request body: the file part straight to disk.

The upload route writes the request body to a file as it arrives (capped by
:class:`~corral.controlapi._limits.BodyLimitMiddleware`), then :func:`split_multipart` reads
that file in 1 MiB chunks: text fields are kept (each at most :data:`MAX_FIELD_BYTES`), the
``file`` part is copied to its own file while its SHA-256 is computed. Memory stays at a few
chunks whatever the upload's size.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email.parser import HeaderParser
from email.policy import HTTP
from pathlib import Path
from typing import BinaryIO

__all__ = ["MultipartError", "Upload", "boundary_of", "split_multipart"]

CHUNK = 1 << 20
MAX_FIELD_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_PARTS = 16
_BOUNDARY = re.compile(r"""boundary=(?:"([^"]{1,200})"|([^\s;,]{1,200}))""", re.IGNORECASE)


class MultipartError(ValueError):
    """The body is not the multipart form the route expects; the message says what is wrong."""


@dataclass(frozen=True)
class Upload:
    """The ``file`` part of a form.

    Attributes:
        filename: The filename the client sent (unsanitized: sanitize before use in a path).
        path: Where its bytes were written.
        size: Its size in bytes.
        sha256: Hex SHA-256 of ``digest_prefix`` followed by its bytes.
    """

    filename: str
    path: Path
    size: int
    sha256: str


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` content type.

    Raises:
        MultipartError: Not multipart/form-data, or no usable boundary.
    """
    if not content_type.lower().startswith("multipart/form-data"):
        raise MultipartError("upload the file as multipart/form-data (file, purpose)")
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise MultipartError("the multipart/form-data content type has no boundary")
    return (found.group(1) or found.group(2)).encode("latin-1")


class _Reader:
    """A buffered reader that can search for a marker across chunk edges."""

    def __init__(self, src: BinaryIO) -> None:
        self.src = src
        self.buf = b""
        self.eof = False

    def fill(self) -> bool:
        if self.eof:
            return False
        chunk = self.src.read(CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def until(self, marker: bytes, limit: int, what: str) -> bytes:
        """Return the bytes before ``marker`` (consumed with it), at most ``limit`` of them."""
        while True:
            at = self.buf.find(marker)
            if at >= 0:
                head, self.buf = self.buf[:at], self.buf[at + len(marker) :]
                return head
            if len(self.buf) > limit + len(marker):
                raise MultipartError(f"{what} is longer than {limit} bytes")
            if not self.fill():
                raise MultipartError(f"the multipart body ends inside {what}")

    def copy_until(self, marker: bytes, sink: BinaryIO, digest: hashlib._Hash, limit: int) -> int:
        """Copy the bytes before ``marker`` to ``sink`` (consumed with it); return how many."""
        size = 0
        keep = len(marker) - 1
        while True:
            at = self.buf.find(marker)
            if at >= 0:
                part, self.buf = self.buf[:at], self.buf[at + len(marker) :]
            else:
                cut = max(len(self.buf) - keep, 0)
                part, self.buf = self.buf[:cut], self.buf[cut:]
            size += len(part)
            if size > limit:
                raise MultipartError(f"the file is larger than {limit} bytes")
            sink.write(part)
            digest.update(part)
            if at >= 0:
                return size
            if not self.fill():
                raise MultipartError("the multipart body ends inside the file part")


def _disposition(header_block: bytes) -> tuple[str | None, str | None]:
    headers = HeaderParser(policy=HTTP).parsestr(header_block.decode("utf-8", errors="replace") + "\r\n\r\n")
    value = headers.get("content-disposition")
    if value is None:
        return None, None
    params = dict(value.params) if hasattr(value, "params") else {}
    name, filename = params.get("name"), params.get("filename")
    return (str(name) if name is not None else None), (str(filename) if filename is not None else None)


def split_multipart(
    src: BinaryIO, boundary: bytes, dest: Path, *, max_file_bytes: int, digest_prefix: bytes = b""
) -> tuple[dict[str, str], Upload | None]:
    """Read a multipart body from ``src``: the text fields, and the ``file`` part written to ``dest``.

    Args:
        src: The spooled request body.
        boundary: From :func:`boundary_of`.
        dest: Where the file part goes (created).
        max_file_bytes: Largest file part.
        digest_prefix: Bytes hashed before the file's (the namespace, so ids differ per namespace).

    Raises:
        MultipartError: A malformed body, more than one file, too many or too large fields.
    """
    reader = _Reader(src)
    delimiter = b"--" + boundary
    reader.until(delimiter, MAX_HEADER_BYTES, "the preamble")
    fields: dict[str, str] = {}
    upload: Upload | None = None
    for _ in range(MAX_PARTS + 1):
        while len(reader.buf) < 2 and reader.fill():
            pass
        if reader.buf.startswith(b"--"):
            return fields, upload  # the closing delimiter
        if not reader.buf.startswith(b"\r\n"):
            raise MultipartError("malformed multipart body: expected a line break after the boundary")
        reader.buf = reader.buf[2:]
        name, filename = _disposition(reader.until(b"\r\n\r\n", MAX_HEADER_BYTES, "a part's headers"))
        end = b"\r\n" + delimiter
        if name == "file":
            if upload is not None:
                raise MultipartError("send exactly one file part")
            digest = hashlib.sha256(digest_prefix)
            with dest.open("wb") as sink:
                size = reader.copy_until(end, sink, digest, max_file_bytes)
            upload = Upload(filename or "data.jsonl", dest, size, digest.hexdigest())
        else:
            value = reader.until(end, MAX_FIELD_BYTES, f"the field {name!r}"[:80])
            if name is not None:
                fields[name] = value.decode("utf-8", errors="replace")
    raise MultipartError(f"a form may have at most {MAX_PARTS} parts")
