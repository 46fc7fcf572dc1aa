"""OpenAI-style files: ``POST/GET /v1/files``, ``GET/DELETE /v1/files/{id}``, ``GET /v1/files/{id}/content``.

An upload (``purpose=fine-tune``, multipart like OpenAI's) is spooled to disk as it arrives
(:mod:`corral.controlapi._multipart`; memory stays flat, the body is capped at 512 MiB while
it streams), stored as an artifact under the control plane's artifact root
(``<root>/files/<namespace>/<file id>/``: the data and a ``meta.json``) and validated at once
with :func:`corral.data.check_dataset` (format ``auto``) in a capped child process:
the File object's ``status`` is ``processed`` or ``error`` and its ``validation`` field holds
the report, errors with their line numbers. The id is ``file-`` + 24 hex of the SHA-256 of the
namespace and the content: uploading the same data twice gives the same file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from corral.api._show import show
from corral.artifacts import ArtifactNotFound, open_store, parse_uri
from corral.data._isolated import DataCheckFailed, check_dataset_isolated

from ._limits import MAX_UPLOAD_BYTES, BodyTooLarge
from ._multipart import MultipartError, Upload, boundary_of, split_multipart
from ._openai_common import Namespace, call_store
from ._openai_schemas import FileObject, ListPage, OpenAIError

__all__ = ["FileStore", "files_router", "validate_file"]

log = logging.getLogger(__name__)

PURPOSES = ("fine-tune",)
MAX_BYTES = MAX_UPLOAD_BYTES
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_ID = re.compile(r"^file-[0-9a-f]{24}$")


def validate_file(uri: str) -> tuple[str, str | None, dict[str, Any]]:
    """Check one uploaded data file (in a capped child process: the server's memory stays flat).

    Args:
        uri: Where the data is (a local path, ``file://`` or ``s3://``).

    Returns:
        ``(status, status_details, validation)``: ``processed`` or ``error``, a one-line
        summary when in error, and the report (``ok``, ``format``, examples, errors with lines).
    """
    try:
        checked = check_dataset_isolated(uri, format="auto")
    except DataCheckFailed as exc:
        return "error", str(exc), {"ok": False, "format": None, "errors": [], "message": str(exc)}
    validation = {"ok": checked.ok, "format": checked.format, "tokenUnit": checked.token_unit, **checked.status}
    if checked.ok:
        return "processed", None, validation
    first = "; ".join(f"line {line}: {message}" for line, message in checked.first_errors[:3])
    details = f"{checked.invalid} invalid record(s) of {checked.records}" + (f": {first}" if first else "")
    if not checked.examples:
        details = f"no usable example; {details}"
    return "error", details, validation


def file_id_of(digest: str) -> str:
    """The id of an upload whose namespace-prefixed SHA-256 is ``digest``."""
    return f"file-{digest[:24]}"


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

    def staging_dir(self) -> str | None:
        """Where an upload is spooled while it arrives: ``<root>/.incoming`` (0700) for a local root.

        On the same file system as the files, so nothing is held in memory and the final copy
        is local; ``None`` (the system's temp dir) for a remote root.
        """
        parsed = parse_uri(self.root)
        if parsed.scheme != "file":
            return None
        staging = Path(parsed.path) / ".incoming"
        staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        return str(staging)

    def save(self, namespace: str, filename: str, data: bytes, purpose: str) -> FileObject:
        """Store and validate an upload held in memory (small uploads, tests; see :meth:`save_file`)."""
        with tempfile.TemporaryDirectory(prefix="corral-upload-", dir=self.staging_dir()) as tmp:
            path = Path(tmp) / "data"
            path.write_bytes(data)
            digest = hashlib.sha256(namespace.encode() + b"\0" + data).hexdigest()
            return self.save_file(namespace, Upload(filename, path, len(data), digest), purpose)

    def save_file(self, namespace: str, upload: Upload, purpose: str) -> FileObject:
        """Validate and store an upload spooled to disk (idempotent: the same content keeps its id).

        The data is validated where it was spooled, then copied into the namespace's folder
        with its ``meta.json``; if storing fails half-way, the data is removed again, so no
        file is left that the API cannot list or delete.
        """
        file_id = file_id_of(upload.sha256)
        try:
            return self.get(namespace, file_id)
        except OpenAIError:
            pass
        store = open_store(self.root)
        safe = _SAFE.sub("_", upload.filename.rsplit("/", 1)[-1]).strip("._")[:200] or "data.jsonl"
        data_uri = f"{self.folder(namespace, file_id)}/{safe}"
        status, details, validation = validate_file(str(upload.path))
        obj = FileObject(
            id=file_id,
            bytes=upload.size,
            created_at=int(time.time()),
            filename=upload.filename[:1000],
            purpose=purpose,
            status=status,
            status_details=details,
            validation=validation,
        )
        meta = {**obj.model_dump(mode="json"), "uri": data_uri}
        try:
            store.put_file(upload.path, data_uri)
            store.put_bytes(json.dumps(meta).encode(), f"{self.folder(namespace, file_id)}/meta.json")
        except BaseException:
            for uri in (data_uri, f"{self.folder(namespace, file_id)}/meta.json"):
                with contextlib.suppress(Exception):
                    store.delete(uri)
            raise
        log.info("File %s/%s (%d bytes): %s", namespace, file_id, upload.size, status)
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

    def content_path(self, namespace: str, file_id: str) -> tuple[str, int]:
        """The file's URI and size (the route streams it)."""
        uri = self.data_uri(namespace, file_id)
        return uri, open_store(self.root).info(uri).size

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


async def _spool(request: Request, path: Path, limit: int) -> None:
    """Write the request body to ``path`` as it arrives (never held whole; capped by the body limit)."""
    try:
        with path.open("wb") as sink:
            async for chunk in request.stream():
                sink.write(chunk)
    except BodyTooLarge:
        raise OpenAIError(413, f"the file is larger than {limit} bytes", code="file_too_large", param="file") from None


def _split(body: Path, boundary: bytes, dest: Path, prefix: bytes, limit: int) -> tuple[dict[str, str], Upload | None]:
    with body.open("rb") as src:
        parts = split_multipart(src, boundary, dest, max_file_bytes=limit, digest_prefix=prefix)
    body.unlink()  # the spooled body is not needed any more: free the disk early
    return parts


def files_router() -> APIRouter:
    """The ``/v1/files`` routes (the app's ``state.files`` is the :class:`FileStore`)."""
    router = APIRouter(prefix="/v1/files", tags=["openai-files"])

    @router.post("", operation_id="createFile", summary="Upload and validate a fine-tuning data file")
    async def create_file(request: Request, namespace: Namespace) -> JSONResponse:
        files = _files(request)
        try:
            boundary = boundary_of(request.headers.get("content-type", ""))
        except MultipartError as exc:
            raise OpenAIError(400, str(exc), code="invalid_request") from None
        staging = await run_in_threadpool(files.staging_dir)
        with tempfile.TemporaryDirectory(prefix="corral-upload-", dir=staging) as tmp:
            body = Path(tmp) / "body"
            limit = int(getattr(request.app.state, "max_upload_bytes", MAX_BYTES))
            await _spool(request, body, limit)
            try:
                fields, upload = await run_in_threadpool(
                    lambda: _split(body, boundary, Path(tmp) / "data", namespace.encode() + b"\0", limit)
                )
            except MultipartError as exc:
                code = 413 if "larger than" in str(exc) else 400
                raise OpenAIError(code, str(exc), code="invalid_request", param="file") from None
            purpose = fields.get("purpose")
            if purpose not in PURPOSES:
                raise OpenAIError(
                    400,
                    f"purpose must be one of {', '.join(PURPOSES)} (got {show(purpose, 40)})",
                    code="invalid_purpose",
                    param="purpose",
                )
            if upload is None or not upload.size:
                raise OpenAIError(400, "missing or empty file", code="missing_file", param="file")
            obj = await call_store(files.save_file, namespace, upload, purpose)
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
        files = _files(request)
        uri, _ = await call_store(files.content_path, namespace, file_id)
        parsed = parse_uri(uri)
        if parsed.scheme == "file":  # streamed from disk, never held whole
            return FileResponse(parsed.path, media_type="application/octet-stream")
        data = await call_store(files.content, namespace, file_id)
        return Response(data, media_type="application/octet-stream")

    @router.delete("/{file_id}", operation_id="deleteFile", summary="Delete a file")
    async def delete_file(request: Request, namespace: Namespace, file_id: str) -> JSONResponse:
        await call_store(_files(request).delete, namespace, file_id)
        return JSONResponse({"id": file_id, "object": "file", "deleted": True})

    return router
