"""``POST /v1/attachments``: a file streamed into the blob store, answered with its reference.

The body is the file itself (any content type); its name and how it is shown
come as query parameters. The body goes to the store as it arrives: a worker
thread reads it chunk by chunk from the event loop (``anyio.from_thread``), the
store hashes and writes it, so memory stays at a chunk or an S3 part whatever
the file's size. Past ``EMAILER_ATTACHMENT_MAX_BYTES`` the upload is refused
with 413 and nothing is left in the store. The answer is the reference to put
in ``SendEmail.attachments``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

import anyio.from_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from contracts import AttachmentReference
from emailer.bootstrap import App
from emailer.entrypoints.gateway import errors
from emailer.entrypoints.gateway.body import field_errors
from emailer.entrypoints.gateway.openapi import ERROR_RESPONSES
from handlers.ports import BlobStoreUnavailable, BlobTooLarge, StoredBlob

DRAIN_FACTOR = 4
UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    k: v for k, v in ERROR_RESPONSES.items() if k in (401, 413, 422, 503)
}


class _BodyReader:
    """The request body as a blocking ``read`` for a worker thread; chunks come from the event loop."""

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self._stream = stream
        self._buffer = b""
        self._done = False

    def read(self, size: int = -1, /) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            chunk = anyio.from_thread.run(self._next)
            if chunk is None:
                self._done = True
            else:
                self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    async def _next(self) -> bytes | None:
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            return None


def attachments_router(app: App, require_send: Callable[[Request], None]) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/attachments",
        status_code=201,
        response_model=AttachmentReference,
        responses=UPLOAD_RESPONSES,
        dependencies=[Depends(require_send)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def upload(
        request: Request,
        filename: Annotated[str, Query(min_length=1, max_length=255, description="the file's name")],
        content_type: Annotated[str, Query(max_length=255)] = "application/octet-stream",
        disposition: Literal["attachment", "inline"] = "attachment",
        content_id: Annotated[str | None, Query(max_length=255)] = None,
    ) -> AttachmentReference | JSONResponse:
        """Stream a file into the blob store; the answer is the reference to put in a SendEmail."""
        limit = app.settings.attachment_max_bytes
        try:
            # Checked before a byte is stored: a bad name or type wastes no upload.
            AttachmentReference(
                key="0" * 64, sha256="0" * 64, size=0, filename=filename, content_type=content_type,
                disposition=disposition, content_id=content_id,
            )  # fmt: skip
        except ValidationError as exc:
            return JSONResponse({"error": "invalid attachment", "detail": field_errors(exc)}, status_code=422)
        stream = request.stream().__aiter__()
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return await _too_large(stream, limit)
        try:
            stored: StoredBlob = await run_in_threadpool(
                app.blobs.put_stream, _BodyReader(stream), content_type, limit
            )
        except BlobTooLarge:
            return await _too_large(stream, limit)
        except BlobStoreUnavailable as exc:
            raise errors.DependencyUnavailable("object store", exc) from exc
        return AttachmentReference(
            key=stored.key, sha256=stored.key, size=stored.size, filename=filename,
            content_type=content_type, disposition=disposition, content_id=content_id,
        )  # fmt: skip

    return router


async def _too_large(stream: AsyncIterator[bytes], limit: int) -> JSONResponse:
    """413, after reading (and dropping) the rest of the body up to a bound: answering with unread
    data would reset the connection, and the client would see a network error, not the 413."""
    dropped = 0
    try:
        async for chunk in stream:
            dropped += len(chunk)
            if dropped > DRAIN_FACTOR * limit:
                break
    except ClientDisconnect:
        pass
    return JSONResponse(
        {"error": f"the file is larger than {limit} bytes (EMAILER_ATTACHMENT_MAX_BYTES)", "limit": limit},
        status_code=413,
    )
