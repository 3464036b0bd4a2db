"""The blob store port: content-addressed bytes, the same behaviour from every adapter.

Every adapter in ``BLOB_STORES`` runs the whole suite; the in-memory fake is
there so that the unit tests' fake cannot drift from the real stores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from emailer.adapters.blobstore.local import LocalBlobStore
from handlers.ports import BlobStore, BlobTooLarge, StoredBlob
from tests.factories import PDF_BYTES, PNG_BYTES
from tests.fakes import FakeBlobStore

BlobStoreFactory = Callable[[pytest.FixtureRequest], AbstractContextManager[BlobStore]]


@contextmanager
def local_folder(request: pytest.FixtureRequest) -> Iterator[BlobStore]:
    yield LocalBlobStore(request.getfixturevalue("tmp_path") / "blobs")


@contextmanager
def s3_bucket(request: pytest.FixtureRequest) -> Iterator[BlobStore]:
    from emailer.adapters.blobstore.s3 import S3BlobStore
    from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY

    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    yield S3BlobStore(endpoint, bucket, S3_ACCESS_KEY, S3_SECRET_KEY, secure=False, region="us-east-1")


@contextmanager
def in_memory_fake(request: pytest.FixtureRequest) -> Iterator[BlobStore]:
    yield FakeBlobStore()


# One line per adapter. A server-backed one carries its marker, e.g.
# pytest.param(s3_bucket, id="s3", marks=pytest.mark.s3)
BLOB_STORES = [
    pytest.param(local_folder, id="local-folder"),
    pytest.param(s3_bucket, id="s3", marks=pytest.mark.s3),
    pytest.param(in_memory_fake, id="in-memory-fake"),
]


@pytest.fixture(params=BLOB_STORES)
def store(request: pytest.FixtureRequest) -> Iterator[BlobStore]:
    factory: BlobStoreFactory = request.param
    with factory(request) as adapter:
        yield adapter


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_key_is_the_sha256_of_the_content_and_get_returns_the_exact_bytes(store: BlobStore) -> None:
    key = store.put(PDF_BYTES, "application/pdf")

    assert key == sha256(PDF_BYTES)
    assert store.get(key) == PDF_BYTES
    assert store.size(key) == len(PDF_BYTES)


def test_the_content_type_does_not_change_the_key(store: BlobStore) -> None:
    assert store.put(PNG_BYTES, "image/png") == store.put(PNG_BYTES) == sha256(PNG_BYTES)


def test_the_same_content_twice_is_one_blob(store: BlobStore) -> None:
    first = store.put(PDF_BYTES)
    second = store.put(PDF_BYTES)

    assert first == second
    store.delete(first)
    assert store.size(first) is None  # one delete removes it: it was stored once


def test_different_contents_are_different_blobs(store: BlobStore) -> None:
    pdf, png = store.put(PDF_BYTES), store.put(PNG_BYTES)

    assert pdf != png
    assert (store.get(pdf), store.get(png)) == (PDF_BYTES, PNG_BYTES)


def test_an_empty_blob_is_a_blob(store: BlobStore) -> None:
    key = store.put(b"")

    assert key == sha256(b"")
    assert store.get(key) == b""
    assert store.size(key) == 0


def test_a_large_blob_round_trips(store: BlobStore) -> None:
    data = bytes(range(256)) * 20_000  # about 5 MB

    key = store.put(data)

    assert store.size(key) == len(data)
    assert store.get(key) == data


def test_a_missing_blob_raises_key_error_and_has_no_size(store: BlobStore) -> None:
    absent = sha256(b"never stored")

    with pytest.raises(KeyError):
        store.get(absent)
    assert store.size(absent) is None


def test_delete_removes_only_that_blob_and_is_idempotent(store: BlobStore) -> None:
    pdf, png = store.put(PDF_BYTES), store.put(PNG_BYTES)

    store.delete(pdf)
    store.delete(pdf)  # again: nothing to do, no error

    with pytest.raises(KeyError):
        store.get(pdf)
    assert store.size(pdf) is None
    assert store.get(png) == PNG_BYTES


def test_deleting_a_blob_that_never_existed_is_not_an_error(store: BlobStore) -> None:
    store.delete(sha256(b"never stored"))


@pytest.mark.parametrize("key", ["", "nope", "../../etc/passwd", "A" * 64, "0" * 63, "0" * 65])
def test_a_key_that_is_not_a_sha256_names_no_blob(store: BlobStore, key: str) -> None:
    store.put(PDF_BYTES)

    with pytest.raises(KeyError):
        store.get(key)
    assert store.size(key) is None
    store.delete(key)  # nothing stored under it: no error, nothing else touched
    assert store.get(sha256(PDF_BYTES)) == PDF_BYTES


# ------------------------------------------------------------------ streaming


class Trickle:
    """A reader that hands out at most ``step`` bytes per read, as a network body does."""

    def __init__(self, data: bytes, step: int = 100_003) -> None:
        self.data = data
        self.step = step
        self.position = 0
        self.reads = 0

    def read(self, size: int = -1, /) -> bytes:
        self.reads += 1
        size = self.step if size < 0 else min(size, self.step)
        chunk = self.data[self.position : self.position + size]
        self.position += len(chunk)
        return chunk


def test_a_streamed_put_gives_the_sha256_and_the_size(store: BlobStore) -> None:
    data = bytes(range(256)) * 30_000  # 7.68 MB: more than one S3 part

    stored = store.put_stream(Trickle(data), "application/pdf")

    assert stored == StoredBlob(sha256(data), len(data))
    assert store.get(stored.key) == data


def test_a_streamed_put_of_stored_content_is_the_same_blob(store: BlobStore) -> None:
    key = store.put(PDF_BYTES)

    assert store.put_stream(Trickle(PDF_BYTES, step=7)).key == key
    assert [info.key for info in store.list()] == [key]


def test_a_streamed_put_over_the_maximum_stores_nothing(store: BlobStore) -> None:
    data = b"x" * 6_000_000

    with pytest.raises(BlobTooLarge) as refused:
        store.put_stream(Trickle(data), max_size=5_999_999)

    assert refused.value.limit == 5_999_999
    assert list(store.list()) == []
    assert store.size(sha256(data)) is None


def test_a_streamed_put_at_the_maximum_is_stored(store: BlobStore) -> None:
    assert store.put_stream(Trickle(PNG_BYTES), max_size=len(PNG_BYTES)).size == len(PNG_BYTES)


def test_a_failing_reader_stores_nothing(store: BlobStore) -> None:
    class Broken(Trickle):
        def read(self, size: int = -1, /) -> bytes:
            if self.position > 1_000_000:
                raise ConnectionResetError("the client went away")
            return super().read(size)

    with pytest.raises(ConnectionResetError):
        store.put_stream(Broken(b"y" * 3_000_000))

    assert list(store.list()) == []


def test_open_streams_the_bytes_in_pieces(store: BlobStore) -> None:
    data = bytes(range(256)) * 4000
    key = store.put(data)

    with store.open(key) as reader:
        first = reader.read(1000)
        rest = b"".join(iter(lambda: reader.read(65_536), b""))

    assert len(first) <= 1000 and first + rest == data


def test_open_of_a_missing_blob_raises_key_error(store: BlobStore) -> None:
    with pytest.raises(KeyError):
        store.open(sha256(b"never stored")).__enter__()


def test_stat_gives_size_and_a_recent_write_time(store: BlobStore) -> None:
    before = datetime.now(UTC) - timedelta(minutes=5)  # moto's clock has a resolution of seconds
    key = store.put(PDF_BYTES)

    info = store.stat(key)

    assert info is not None and info.key == key and info.size == len(PDF_BYTES)
    assert info.modified_at >= before
    assert store.stat(sha256(b"never stored")) is None
    assert store.stat("not-a-key") is None


def test_list_gives_every_blob_once(store: BlobStore) -> None:
    keys = {store.put(PDF_BYTES), store.put(PNG_BYTES), store.put(b"")}
    store.put(PDF_BYTES)

    assert sorted(info.key for info in store.list()) == sorted(keys)
