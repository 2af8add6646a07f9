"""S3 failures and bad input: a missing bucket, a dead endpoint, absent keys, a lost bucket."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

import fb
from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from fb.exceptions import BlobNotFoundError, InvalidKeyError
from tests.s3.moto_fixtures import S3Bucket
from tests.s3.s3_helpers import (
    S3Calls,
    closed_port,
    fixture_s3_store,  # noqa: F401 - a fixture, found by name
)


def test_missing_bucket_is_a_clear_error(s3: S3Bucket) -> None:
    """A bucket that does not exist raises FileNotFoundError naming the URL, and is not created."""
    missing = S3Bucket(server=s3.server, name=f"fb-missing-{uuid.uuid4().hex[:12]}")
    url = missing.url("cache")
    with pytest.raises(FileNotFoundError, match=url):
        FBStore("pickle", PreparedPath(url, storage_options=missing.options))
    with pytest.raises(FileNotFoundError, match=url):
        fb.open_pool(url, max_items=1, storage_options=missing.options)
    backend: FBStore[Any] = FBStore("pickle", s3.location("cache"))
    with (
        BackingStore(backend) as store,
        pytest.raises(FileNotFoundError, match=missing.url("durable")),
    ):
        store.track_path(missing.location("durable"))
    assert not missing.exists()


@pytest.mark.timeout(60)
def test_unreachable_endpoint_fails_fast(s3: S3Bucket) -> None:
    """An endpoint nobody listens on raises a ConnectionError naming the URL within seconds."""
    options = {
        **s3.options,
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{closed_port()}"},
    }
    url = s3.url("cache")
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=url):
        FBStore("pickle", PreparedPath(url, storage_options=options))
    with pytest.raises(ConnectionError, match=url):
        fb.open_pool(url, max_items=1, storage_options=options)
    assert time.monotonic() - start < 30


def test_absent_key_on_s3(s3: S3Bucket, s3_store: BackingStore[Any]) -> None:
    """An absent key registers as None, loads as BlobNotFoundError, and a bad key does no I/O."""
    durable = s3.location("durable")
    tracked = s3_store.track_path(durable)
    pool: FBPool[Any] = FBPool(s3_store, max_items=1)
    calls = S3Calls()
    calls.watch(durable)
    calls.watch(s3_store.strategy.path)  # type: ignore[attr-defined]
    with pytest.raises(InvalidKeyError):
        pool.register(tracked, "../../etc/passwd")
    assert calls.names() == []
    key = uuid.uuid4()
    assert pool.register(tracked, key) is None
    with pytest.raises(BlobNotFoundError, match=key.hex):
        s3_store.strategy.load(key)
    assert s3.blobs() == []


def test_write_back_to_a_deleted_bucket_keeps_the_values(s3: S3Bucket) -> None:
    """When the bucket vanishes, write-back fails with an OSError naming it; values stay.

    The failed write is retried with backoff, so a slow machine may see the retry fail too
    before ``finished`` returns: every error raised must then be that same OSError.
    """
    backend: FBStore[str] = FBStore("pickle", s3.location("cache"))
    with BackingStore(backend) as store:
        pool: FBPool[str] = FBPool(store, max_items=0)
        s3.server.drop_bucket(s3.name)
        handle = pool.insert("nowhere to go")
        with pytest.raises((OSError, ExceptionGroup)) as caught:
            store.finished()
        errors = (
            list(caught.value.exceptions)
            if isinstance(caught.value, ExceptionGroup)
            else [caught.value]
        )
        assert errors
        assert all(isinstance(e, OSError) and s3.name in str(e) for e in errors), errors
        assert handle.resident
        assert pool.statistics().write_errors >= len(errors)  # a retry may have failed since
        handle.close()
