"""The claim check for services on the bus: put a file into Emailer's object store, get its reference.

A service that sends ``SendEmail`` over RabbitMQ uploads large attachments
straight to the shared S3 / MinIO bucket and puts the returned reference in the
command; the message then stays small, and Emailer checks the object (exists,
size, sha256) before it accepts the command. Objects are named
``<prefix><sha256>``, exactly as Emailer's S3 blob store names them::

    from minio import Minio
    from emailer_client.claim_check import ClaimCheck

    check = ClaimCheck(Minio("minio.internal:9000", "KEY", "SECRET"), "emailer-blobs")
    invoice = check.attach("invoice.pdf", content_type="application/pdf")
    command = SendEmail(..., attachments=[invoice])

Send the command within ``EMAILER_BLOB_GRACE`` (1 hour by default) of the
upload: an object nothing refers to after that is garbage-collected.
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path
from typing import BinaryIO, Literal

from minio import Minio

from contracts import Attachment

PART_BYTES = 8 * 1024 * 1024
_READ_BYTES = 1024 * 1024


class ClaimCheck:
    def __init__(self, client: Minio, bucket: str, prefix: str = "blobs/") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def attach(
        self,
        source: str | Path | BinaryIO,
        *,
        filename: str | None = None,
        content_type: str | None = None,
        disposition: Literal["attachment", "inline"] = "attachment",
        content_id: str | None = None,
    ) -> Attachment:
        """Upload a file (a path, or a seekable binary file) and return its reference for SendEmail."""
        if isinstance(source, str | Path):
            path = Path(source)
            with path.open("rb") as file:
                return self.attach(
                    file, filename=filename or path.name, content_type=content_type,
                    disposition=disposition, content_id=content_id,
                )  # fmt: skip
        if filename is None:
            raise ValueError("give the filename of a file object")
        content_type = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        start = source.tell()
        digest, size = hashlib.sha256(), 0
        while chunk := source.read(_READ_BYTES):  # first pass: the content address
            digest.update(chunk)
            size += len(chunk)
        source.seek(start)
        key = digest.hexdigest()
        # Written even if the object exists: the write time tells Emailer's purge it was just uploaded.
        self.client.put_object(
            self.bucket, f"{self.prefix}{key}", source, size, content_type=content_type,
            part_size=PART_BYTES, num_parallel_uploads=1,
        )  # fmt: skip
        return Attachment(
            filename=filename, content_type=content_type, disposition=disposition, content_id=content_id,
            sha256=key, size=size, key=key,
        )  # fmt: skip
