"""What only the S3 adapter has: temporary upload objects, multipart uploads, a server that is down."""

from __future__ import annotations

import io

import pytest
from minio import Minio

from emailer.adapters.blobstore.s3 import S3BlobStore
from handlers.ports import BlobStoreUnavailable, BlobTooLarge
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.e2e.harness import free_port

pytestmark = pytest.mark.s3


def store_for(
    endpoint: str, bucket: str, part_size: int = 8 * 1024 * 1024, timeout: float = 30.0
) -> S3BlobStore:
    return S3BlobStore(
        endpoint, bucket, S3_ACCESS_KEY, S3_SECRET_KEY, secure=False, region="us-east-1",
        part_size=part_size, timeout=timeout,
    )  # fmt: skip


def every_object(endpoint: str, bucket: str) -> list[str]:
    client = Minio(endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, secure=False, region="us-east-1")
    return [o.object_name or "" for o in client.list_objects(bucket, recursive=True)]


def test_a_large_put_is_one_object_at_its_content_address(s3_endpoint: str, s3_bucket: str) -> None:
    store = store_for(s3_endpoint, s3_bucket, part_size=5 * 1024 * 1024)
    data = bytes(range(256)) * 50_000  # 12.8 MB: three parts

    stored = store.put_stream(io.BytesIO(data))

    assert every_object(s3_endpoint, s3_bucket) == [f"blobs/{stored.key}"]
    assert store.get(stored.key) == data


def test_an_upload_over_the_maximum_leaves_no_object_and_no_upload(s3_endpoint: str, s3_bucket: str) -> None:
    store = store_for(s3_endpoint, s3_bucket, part_size=5 * 1024 * 1024)

    with pytest.raises(BlobTooLarge):
        store.put_stream(io.BytesIO(b"z" * 12_000_000), max_size=11_000_000)

    assert every_object(s3_endpoint, s3_bucket) == []
    uploads = store.client._list_multipart_uploads(s3_bucket)
    assert list(uploads.uploads) == []


def test_the_bucket_is_created_when_asked(s3_endpoint: str, unique_name: str) -> None:
    store = store_for(s3_endpoint, f"{unique_name}-new")

    assert store.ensure_bucket() is True
    assert store.ensure_bucket() is False
    assert store.size(store.put(b"hello")) == 5


def test_a_server_that_is_down_is_unavailable_not_missing() -> None:
    store = store_for(f"127.0.0.1:{free_port()}", "nowhere", timeout=1.0)
    key = "0" * 64

    for call in (lambda: store.stat(key), lambda: store.put(b"x"), lambda: store.open(key).__enter__()):
        with pytest.raises(BlobStoreUnavailable):
            call()
