"""S3 / MinIO blob store through the ``minio`` client: one object per blob, named by its sha256.

Objects live under ``<prefix><sha256>`` in one bucket, so the same file sent to
10,000 people is stored once. A streamed put cannot know its key before the
last byte, so it uploads to a temporary name under ``<prefix>.incoming/``
(multipart for large bodies, one part in memory at a time, sha256 computed on
the way), then copies server-side to the content address and removes the
temporary object. A put that is too large or fails aborts the multipart upload
and leaves nothing behind. Copying over an existing blob refreshes its time,
which is what the purge's grace period reads.

Network failures and server errors become ``BlobStoreUnavailable``: the store
being down is a reason to wait, never to call a blob missing.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import MinioException, S3Error

from emailer.adapters.blobstore.local import is_key
from handlers.ports import BlobInfo, BlobReader, BlobStoreUnavailable, BlobTooLarge, StoredBlob

MIN_PART_BYTES = 5 * 1024 * 1024
_MISSING = ("NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound")


class S3BlobStore:
    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str | None,
        secret_key: str | None,
        *,
        region: str | None = None,
        secure: bool = True,
        prefix: str = "blobs/",
        part_size: int = 8 * 1024 * 1024,
        timeout: float = 30.0,
    ) -> None:
        if part_size < MIN_PART_BYTES:
            raise ValueError(f"part_size must be at least {MIN_PART_BYTES} bytes (S3's smallest part)")
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
            maxsize=16,
        )
        self.client = Minio(endpoint, access_key, secret_key, secure=secure, region=region, http_client=http)
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size

    def __repr__(self) -> str:
        return f"S3BlobStore(endpoint={self.endpoint!r}, bucket={self.bucket!r}, prefix={self.prefix!r})"

    def ensure_bucket(self) -> bool:
        """Create the bucket if it does not exist; True if it was created."""
        with _answering(self.endpoint):
            if self.client.bucket_exists(self.bucket):
                return False
            self.client.make_bucket(self.bucket)
            return True

    def _name(self, key: str) -> str:
        if not is_key(key):
            raise KeyError(key)
        return f"{self.prefix}{key}"

    # ------------------------------------------------------------------ port

    def put(self, data: bytes, content_type: str = "application/octet-stream") -> str:
        return self.put_stream(io.BytesIO(data), content_type).key

    def put_stream(
        self,
        reader: BlobReader,
        content_type: str = "application/octet-stream",
        max_size: int | None = None,
    ) -> StoredBlob:
        hashing = _HashingReader(reader, max_size)
        temporary = f"{self.prefix}.incoming/{uuid.uuid4().hex}"
        try:
            return self._put_via(temporary, hashing, content_type)
        except _SourceFailed as failed:  # the caller's stream broke: its error, not the store's
            raise failed.cause from None

    def _put_via(self, temporary: str, hashing: _HashingReader, content_type: str) -> StoredBlob:
        with _answering(self.endpoint):
            # One part at a time (num_parallel_uploads=1): memory stays at about one part.
            self.client.put_object(
                self.bucket, temporary, cast(BinaryIO, hashing), -1, content_type=content_type,
                part_size=self.part_size, num_parallel_uploads=1,
            )  # fmt: skip
            try:
                key = hashing.digest.hexdigest()
                self.client.copy_object(self.bucket, self._name(key), CopySource(self.bucket, temporary))
            finally:
                self.client.remove_object(self.bucket, temporary)
        return StoredBlob(key, hashing.size)

    @contextmanager
    def open(self, key: str) -> Iterator[BlobReader]:
        name = self._name(key)
        with _answering(self.endpoint):
            try:
                response = self.client.get_object(self.bucket, name)
            except S3Error as exc:
                if exc.code in _MISSING:
                    raise KeyError(key) from None
                raise
        try:
            yield _Reader(response, self.endpoint)
        finally:
            response.close()
            response.release_conn()

    def get(self, key: str) -> bytes:
        with self.open(key) as reader:
            return reader.read()

    def stat(self, key: str) -> BlobInfo | None:
        try:
            name = self._name(key)
        except KeyError:
            return None
        with _answering(self.endpoint):
            try:
                found = self.client.stat_object(self.bucket, name)
            except S3Error as exc:
                if exc.code in _MISSING:
                    return None
                raise
        return BlobInfo(key, int(found.size or 0), found.last_modified or datetime.now(UTC))

    def size(self, key: str) -> int | None:
        info = self.stat(key)
        return info.size if info is not None else None

    def delete(self, key: str) -> None:
        try:
            name = self._name(key)
        except KeyError:
            return
        with _answering(self.endpoint):
            self.client.remove_object(self.bucket, name)

    def list(self) -> Iterator[BlobInfo]:
        with _answering(self.endpoint):
            for found in self.client.list_objects(self.bucket, prefix=self.prefix, recursive=True):
                key = (found.object_name or "").removeprefix(self.prefix)
                if is_key(key):
                    yield BlobInfo(key, int(found.size or 0), found.last_modified or datetime.now(UTC))


class _SourceFailed(Exception):
    """The stream being stored failed (not S3); carries the original error through minio."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _HashingReader:
    """What minio reads from: the caller's stream, hashed and counted, refused past ``max_size``."""

    def __init__(self, inner: BlobReader, max_size: int | None) -> None:
        self.inner = inner
        self.max_size = max_size
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        try:
            data = self.inner.read(size)
        except Exception as exc:
            raise _SourceFailed(exc) from exc
        self.size += len(data)
        if self.max_size is not None and self.size > self.max_size:
            raise BlobTooLarge(self.max_size)
        self.digest.update(data)
        return data


class _Reader:
    """A GET response as a ``BlobReader``; a broken connection is the store being unavailable."""

    def __init__(self, response: Any, endpoint: str) -> None:
        self.response = response
        self.endpoint = endpoint

    def read(self, size: int = -1, /) -> bytes:
        with _answering(self.endpoint):
            data: bytes = self.response.read(None if size < 0 else size)
            return data


@contextmanager
def _answering(endpoint: str) -> Iterator[None]:
    """Turn "the store did not answer" into ``BlobStoreUnavailable``; S3's own answers pass through."""
    try:
        yield
    except S3Error as exc:
        if exc.code in _MISSING or exc.code in ("NoSuchBucket", "AccessDenied", "InvalidAccessKeyId"):
            raise
        raise BlobStoreUnavailable(f"S3 at {endpoint} answered {exc.code}") from exc
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise BlobStoreUnavailable(f"S3 at {endpoint} is not answering: {type(exc).__name__}") from exc
