"""The blob store port: content-addressed bytes, the same behaviour from every adapter.

Every adapter in ``BLOB_STORES`` runs the whole suite; the in-memory fake is
there so that the unit tests' fake cannot drift from the real stores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from emailer.adapters.blobstore.local import LocalBlobStore
from handlers.ports import BlobStore
from tests.factories import PDF_BYTES, PNG_BYTES
from tests.fakes import FakeBlobStore

BlobStoreFactory = Callable[[pytest.FixtureRequest], AbstractContextManager[BlobStore]]


@contextmanager
def local_folder(request: pytest.FixtureRequest) -> Iterator[BlobStore]:
    yield LocalBlobStore(request.getfixturevalue("tmp_path") / "blobs")


@contextmanager
def in_memory_fake(request: pytest.FixtureRequest) -> Iterator[BlobStore]:
    yield FakeBlobStore()


# One line per adapter. A server-backed one carries its marker, e.g.
# pytest.param(s3_bucket, id="s3", marks=pytest.mark.s3)
BLOB_STORES = [
    pytest.param(local_folder, id="local-folder"),
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
