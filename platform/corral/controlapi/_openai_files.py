"""OpenAI-style files: ``POST/GET /v1/files``, ``GET/DELETE /v1/files/{id}``, ``GET /v1/files/{id}/content``.

An upload (``purpose=fine-tune``, multipart like OpenAI's) is stored as an artifact under the
control plane's artifact root (``<root>/files/<namespace>/<file id>/``: the data and a
``meta.json``) and validated at once with :func:`corral.data.check_dataset` (format ``auto``):
the File object's ``status`` is ``processed`` or ``error`` and its ``validation`` field holds
the report, errors with their line numbers. The id is ``file-`` + 24 hex of the SHA-256 of the
namespace and the content: uploading the same data twice gives the same file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from corral.artifacts import ArtifactNotFound, open_store

from ._openai_common import Namespace, call_store
from ._openai_schemas import FileObject, ListPage, OpenAIError

__all__ = ["FileStore", "files_router", "validate_file"]

log = logging.getLogger(__name__)

PURPOSES = ("fine-tune",)
MAX_BYTES = 512 * 1024 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_ID = re.compile(r"^file-[0-9a-f]{24}$")


def validate_file(uri: str) -> tuple[str, str | None, dict[str, Any]]:
    """Check one uploaded data file.

    Args:
        uri: Where the data is (``file://`` or ``s3://``).

    Returns:
        ``(status, status_details, validation)``: ``processed`` or ``error``, a one-line
        summary when in error, and the report (``ok``, ``format``, examples, errors with lines).
    """
    from corral.data import FormatDetectionError, check_dataset

    try:
        report = check_dataset(uri, format="auto")
    except (FormatDetectionError, ValueError, OSError) as exc:
        return "error", str(exc), {"ok": False, "format": None, "errors": [], "message": str(exc)}
    validation = {
        "ok": report.ok,
        "format": report.format,
        "tokenUnit": report.token_unit,
        **report.to_status().model_dump(mode="json", by_alias=True),
    }
    if report.ok:
        return "processed", None, validation
    first = "; ".join(f"line {e.line}: {e.message}" for e in report.errors[:3])
    details = f"{report.train.invalid} invalid record(s) of {report.train.records}" + (f": {first}" if first else "")
    if not report.train.examples:
        details = f"no usable example; {details}"
    return "error", details, validation


@dataclass(frozen=True)
class FileStore:
    """Uploaded files under ``<artifact root>/files`` (any scheme :func:`corral.artifacts.open_store` serves)."""

    root: str

    @classmethod
    def under(cls, artifact_root: str) -> FileStore:
        """The file store of a control plane whose artifacts live at ``artifact_root``."""
        return cls(artifact_root.rstrip("/") + "/files")

    def folder(self, namespace: str, file_id: str) -> str:
        """URI of one file's folder."""
        return f"{self.root}/{namespace}/{file_id}"

    def save(self, namespace: str, filename: str, data: bytes, purpose: str) -> FileObject:
        """Store and validate an upload (idempotent: the same content keeps its id and record)."""
        digest = hashlib.sha256(namespace.encode() + b"\0" + data).hexdigest()
        file_id = f"file-{digest[:24]}"
        try:
            return self.get(namespace, file_id)
        except OpenAIError:
            pass
        store = open_store(self.root)
        safe = _SAFE.sub("_", filename.rsplit("/", 1)[-1]).strip("._") or "data.jsonl"
        data_uri = f"{self.folder(namespace, file_id)}/{safe}"
        store.put_bytes(data, data_uri)
        status, details, validation = validate_file(data_uri)
        obj = FileObject(
            id=file_id,
            bytes=len(data),
            created_at=int(time.time()),
            filename=filename,
            purpose=purpose,
            status=status,
            status_details=details,
            validation=validation,
        )
        meta = {**obj.model_dump(mode="json"), "uri": data_uri}
        store.put_bytes(json.dumps(meta).encode(), f"{self.folder(namespace, file_id)}/meta.json")
        log.info("File %s/%s (%s, %d bytes): %s", namespace, file_id, filename, len(data), status)
        return obj

    def register(self, namespace: str, file_id: str, filename: str, uri: str, purpose: str) -> FileObject:
        """Record a file Corral wrote elsewhere (a job's ``results.csv``) under ``file_id`` (idempotent).

        Raises:
            ArtifactNotFound: Nothing is at ``uri``.
        """
        try:
            return self.get(namespace, file_id)
        except OpenAIError:
            pass
        size = len(open_store(uri).get_bytes(uri))
        obj = FileObject(
            id=file_id,
            bytes=size,
            created_at=int(time.time()),
            filename=filename,
            purpose=purpose,
            status="processed",
        )
        meta = {**obj.model_dump(mode="json"), "uri": uri}
        open_store(self.root).put_bytes(json.dumps(meta).encode(), f"{self.folder(namespace, file_id)}/meta.json")
        return obj

    def _meta(self, namespace: str, file_id: str) -> dict[str, Any]:
        if not _ID.match(file_id):
            raise _not_found(file_id)
        try:
            raw = open_store(self.root).get_bytes(f"{self.folder(namespace, file_id)}/meta.json")
        except ArtifactNotFound:
            raise _not_found(file_id) from None
        meta: dict[str, Any] = json.loads(raw)
        return meta

    def get(self, namespace: str, file_id: str) -> FileObject:
        """The File object (404 ``file_not_found`` when the namespace has no such file)."""
        meta = self._meta(namespace, file_id)
        meta.pop("uri", None)
        return FileObject.model_validate(meta)

    def data_uri(self, namespace: str, file_id: str) -> str:
        """Where the file's data is (what a Dataset created from it points at)."""
        return str(self._meta(namespace, file_id)["uri"])

    def content(self, namespace: str, file_id: str) -> bytes:
        """The file's bytes."""
        return open_store(self.root).get_bytes(self.data_uri(namespace, file_id))

    def list(self, namespace: str) -> list[FileObject]:
        """Every file of the namespace, newest first."""
        store = open_store(self.root)
        try:
            uris = store.list(f"{self.root}/{namespace}/")
        except ArtifactNotFound:
            return []
        out = []
        for uri in uris:
            if uri.endswith("/meta.json"):
                file_id = uri.rsplit("/", 2)[-2]
                try:
                    out.append(self.get(namespace, file_id))
                except OpenAIError:
                    continue
        return sorted(out, key=lambda f: (-f.created_at, f.id))

    def delete(self, namespace: str, file_id: str) -> None:
        """Remove a file (its Datasets keep pointing at a missing URI: delete them first)."""
        uri = self.data_uri(namespace, file_id)
        store = open_store(self.root)
        store.delete(uri)
        store.delete(f"{self.folder(namespace, file_id)}/meta.json")


def _not_found(file_id: str) -> OpenAIError:
    return OpenAIError(404, f"No such File object: {file_id}", code="file_not_found", param="id")


def _files(request: Request) -> FileStore:
    files: FileStore | None = getattr(request.app.state, "files", None)
    if files is None:
        raise OpenAIError(
            503, "file uploads are not configured: the control API has no artifact root", code="files_unavailable"
        )
    return files


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, str], tuple[str, bytes] | None]:
    """Parse ``multipart/form-data`` with the standard library: (text fields, (filename, bytes) of ``file``)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise OpenAIError(400, "expected a multipart/form-data body with a file", code="invalid_request")
    fields: dict[str, str] = {}
    upload: tuple[str, bytes] | None = None
    for part in message.iter_parts():
        assert isinstance(part, Message)
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if name == "file":
            upload = (part.get_filename() or "data.jsonl", data)
        elif isinstance(name, str):
            fields[name] = data.decode("utf-8", errors="replace")
    return fields, upload


def files_router() -> APIRouter:
    """The ``/v1/files`` routes (the app's ``state.files`` is the :class:`FileStore`)."""
    router = APIRouter(prefix="/v1/files", tags=["openai-files"])

    @router.post("", operation_id="createFile", summary="Upload and validate a fine-tuning data file")
    async def create_file(request: Request, namespace: Namespace) -> JSONResponse:
        files = _files(request)
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise OpenAIError(400, "upload the file as multipart/form-data (file, purpose)", code="invalid_request")
        body = await request.body()
        if len(body) > MAX_BYTES:
            raise OpenAIError(413, f"the file is larger than {MAX_BYTES} bytes", code="file_too_large", param="file")
        fields, upload = _multipart(content_type, body)
        purpose = fields.get("purpose")
        if purpose not in PURPOSES:
            raise OpenAIError(
                400,
                f"purpose must be one of {', '.join(PURPOSES)} (got {purpose!r})",
                code="invalid_purpose",
                param="purpose",
            )
        if upload is None or not upload[1]:
            raise OpenAIError(400, "missing or empty file", code="missing_file", param="file")
        obj = await call_store(files.save, namespace, upload[0], upload[1], purpose)
        return JSONResponse(obj.model_dump(mode="json"))

    @router.get("", operation_id="listFiles", summary="List uploaded files")
    async def list_files(
        request: Request,
        namespace: Namespace,
        purpose: str | None = None,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    ) -> JSONResponse:
        items = await call_store(_files(request).list, namespace)
        data = [f.model_dump(mode="json") for f in items if purpose is None or f.purpose == purpose]
        return JSONResponse(ListPage.of(data, after, limit).model_dump(mode="json"))

    @router.get("/{file_id}", operation_id="retrieveFile", summary="Retrieve a file and its validation report")
    async def get_file(request: Request, namespace: Namespace, file_id: str) -> JSONResponse:
        obj = await call_store(_files(request).get, namespace, file_id)
        return JSONResponse(obj.model_dump(mode="json"))

    @router.get("/{file_id}/content", operation_id="downloadFile", summary="Download a file's content")
    async def file_content(request: Request, namespace: Namespace, file_id: str) -> Response:
        data = await call_store(_files(request).content, namespace, file_id)
        return Response(data, media_type="application/octet-stream")

    @router.delete("/{file_id}", operation_id="deleteFile", summary="Delete a file")
    async def delete_file(request: Request, namespace: Namespace, file_id: str) -> JSONResponse:
        await call_store(_files(request).delete, namespace, file_id)
        return JSONResponse({"id": file_id, "object": "file", "deleted": True})

    return router
