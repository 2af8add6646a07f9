"""Persisting to and from S3: server-side copies, the streamed ladder, refusals, failures."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fb
from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from fb.exceptions import ForeignLocationError
from fb.testing.backends import PersistSuite
from tests.s3.moto_fixtures import MotoServer, S3Bucket
from tests.s3.s3_helpers import (
    S3Calls,
    closed_port,
    fixture_s3_store,  # noqa: F401 - a fixture, found by name
)


@pytest.fixture(name="other_bucket")
def fixture_other_bucket(moto_server: MotoServer) -> Iterator[S3Bucket]:
    """A second fresh bucket on the same server; deleted afterwards."""
    name = moto_server.make_bucket()
    yield S3Bucket(server=moto_server, name=name)
    moto_server.drop_bucket(name)


# -- the persist ladder within S3: server-side copies ---------------------------------------


@pytest.mark.parametrize("where", ["same-bucket", "other-bucket"])
def test_persist_within_s3_is_a_server_side_copy(
    s3: S3Bucket, other_bucket: S3Bucket, s3_store: BackingStore[Any], where: str
) -> None:
    """Persisting between two S3 locations is a CopyObject; the body is never downloaded or sent."""
    durable = s3.location("durable") if where == "same-bucket" else other_bucket.location("kept")
    pool: FBPool[bytes] = FBPool(s3_store, max_items=0)
    payload = random.Random(2).randbytes(2**20)
    handle = pool.insert(payload)
    s3_store.finished()  # the blob is in the cache now
    tracked = s3_store.track_path(durable)
    calls = S3Calls()
    calls.watch(s3_store.strategy.path)  # type: ignore[attr-defined]
    calls.watch(durable)
    key = handle.persist(tracked)
    operations = calls.on(key)
    assert "CopyObject" in operations
    assert "GetObject" not in operations
    assert "PutObject" not in operations
    assert not {"CreateMultipartUpload", "UploadPart"} & set(operations)
    cached = s3.get(f"cache/{key.hex[:2]}/{key.hex}")
    bucket = s3 if where == "same-bucket" else other_bucket
    root = "durable" if where == "same-bucket" else "kept"
    assert bucket.get(f"{root}/{key.hex[:2]}/{key.hex}") == cached
    handle.close()


def test_register_within_s3_is_a_server_side_copy(
    s3: S3Bucket, s3_store: BackingStore[Any]
) -> None:
    """Registering from an S3 location into an S3 cache copies server-side; loading is one GET."""
    pool: FBPool[bytes] = FBPool(s3_store, max_items=0)
    payload = random.Random(3).randbytes(2**20)
    original = pool.insert(payload)
    durable = s3.location("durable")
    tracked = s3_store.track_path(durable)
    key = original.persist(tracked)
    original.close()
    s3_store.finished()
    assert s3.blobs("cache/") == []
    calls = S3Calls()
    calls.watch(s3_store.strategy.path)  # type: ignore[attr-defined]
    calls.watch(durable)
    handle = pool.register(tracked, key)
    assert handle is not None
    operations = calls.on(key)
    assert "CopyObject" in operations
    assert not {"GetObject", "PutObject"} & set(operations)
    calls.clear()
    with handle.load() as value:
        assert value == payload
    assert calls.on(key).count("GetObject") == 1  # s3fs also HEADs it for its size
    handle.close()


class TestLocalCacheToS3(PersistSuite):
    """The ladder's streamed upload and download: a local cache, an S3 persist location."""

    @pytest.fixture(name="location")
    def fixture_location(self, tmp_path: Path) -> PreparedPath:
        return PreparedPath(tmp_path / "cache")

    @pytest.fixture(name="persist_location")
    def fixture_persist_location(self, s3: S3Bucket) -> PreparedPath:
        return s3.location("durable")


class TestS3CacheToLocal(PersistSuite):
    """The ladder the other way: an S3 cache, a local persist directory."""

    @pytest.fixture(name="location")
    def fixture_location(self, s3: S3Bucket) -> PreparedPath:
        return s3.location("cache")

    @pytest.fixture(name="persist_location")
    def fixture_persist_location(self, tmp_path: Path) -> PreparedPath:
        (tmp_path / "persist").mkdir()
        return PreparedPath(tmp_path / "persist")


# -- a durable location on the store's filesystem: the store's options -----------------------


def test_track_path_of_an_s3_url_reuses_the_store_filesystem(
    s3: S3Bucket, other_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``track_path("s3://…")`` next to an S3 cache reaches it with the store's options."""
    # Without the store's options a location would go to this endpoint, where nothing
    # listens: the test then fails fast, and never reaches out of 127.0.0.1.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    with fb.open_pool(s3.url("spill"), max_items=0, storage_options=s3.options) as pool:
        cache: PreparedPath = pool.store.strategy.path  # type: ignore[attr-defined]
        calls = S3Calls()
        calls.watch(cache)
        keys = {}
        for bucket, url in ((s3, s3.url("durable")), (other_bucket, other_bucket.url("kept"))):
            tracked = pool.store.track_path(url)
            assert tracked.path.fs is cache.fs
            assert tracked.path.url == url
            key = pool.insert(url).persist(tracked)
            assert "CopyObject" in calls.on(key)  # one filesystem: a server-side copy
            assert "GetObject" not in calls.on(key)
            root = url.removeprefix(f"s3://{bucket.name}/")
            assert f"{root}/{key.hex[:2]}/{key.hex}" in bucket.names(root)
            keys[url] = key
    with fb.open_pool(s3.url("spill"), max_items=0, storage_options=s3.options) as pool:
        for url, key in keys.items():
            handle = pool.register(pool.store.track_path(url), key)
            assert handle is not None
            with handle.load() as value:
                assert value == url


def test_track_path_of_a_prepared_path_keeps_its_own_options(
    s3: S3Bucket, s3_store: BackingStore[Any]
) -> None:
    """A `PreparedPath` given to ``track_path`` keeps its own filesystem: explicit options win."""
    durable = PreparedPath(
        s3.url("durable"), storage_options={**s3.options, "default_block_size": 5 * 2**20}
    )
    tracked = s3_store.track_path(durable)
    assert tracked.path is durable
    assert tracked.path.fs is not s3_store.strategy.path.fs  # type: ignore[attr-defined]
    assert tracked.path.fs.default_block_size == 5 * 2**20


# -- refused and failed persists ------------------------------------------------------------


def test_persist_into_a_prefix_in_use_raises(s3: S3Bucket, s3_store: BackingStore[Any]) -> None:
    """A first persist to S3 refuses a prefix that holds objects fb did not write."""
    s3.server.client.put_object(Bucket=s3.name, Key="reports/q3.csv", Body=b"a,b\n")
    tracked = s3_store.track_path(s3.location("reports"))
    handle = FBPool(s3_store, max_items=1).insert(b"x")
    with pytest.raises(ForeignLocationError, match=r"not empty .*q3\.csv"):
        handle.persist(tracked)
    assert s3.names("reports/") == ["reports/q3.csv"]


def test_failed_streamed_persist_leaves_no_partial_blob(s3: S3Bucket) -> None:
    """A copy between two S3 clients whose source vanishes midway leaves nothing at the target."""
    # Small read blocks make the source read in several ranged GETs; other credentials make
    # the durable filesystem a different one, so fb streams instead of copying server-side.
    cache = PreparedPath(
        s3.url("cache"), storage_options={**s3.options, "default_block_size": 5 * 2**20}
    )
    durable = PreparedPath(
        s3.url("durable"), storage_options={**s3.options, "key": "another-account"}
    )
    backend: FBStore[bytes] = FBStore("pickle", cache)
    vanished: list[str] = []
    with BackingStore(backend) as store:
        pool: FBPool[bytes] = FBPool(store, max_items=0)
        handle = pool.insert(random.Random(6).randbytes(12 * 2**20))
        store.finished()
        tracked = store.track_path(durable)
        cached = f"cache/{handle.key.hex[:2]}/{handle.key.hex}"

        def vanish(**kwargs: Any) -> None:
            # After the first block was read, the source disappears (as if another host
            # deleted it, or the network failed for good): the next ranged GET fails.
            if not vanished:
                vanished.append(cached)
                s3.server.client.delete_object(Bucket=s3.name, Key=cached)

        cache.fs.connect()
        cache.fs.s3.meta.events.register("after-call.s3.GetObject", vanish)
        with pytest.raises(OSError):  # any storage error will do: what is left matters
            handle.persist(tracked)
        pool.close()
    assert vanished == [cached]
    assert [name for name in s3.names("durable/") if handle.key.hex in name] == []
