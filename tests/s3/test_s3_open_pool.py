"""``fb.open_pool`` on S3 and other filesystems: session prefixes, a shared URL, cleanup."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import fb
from fb.backends import PreparedPath
from tests.s3.moto_fixtures import S3Bucket


def test_open_pool_round_trip_on_s3(s3: S3Bucket) -> None:
    """``open_pool`` on S3 spills under a session prefix and removes it all when closed."""
    values = [{"item": i, "data": bytes(range(i % 256)) * 100} for i in range(20)]
    with fb.open_pool(s3.url("spill"), max_items=2, storage_options=s3.options) as pool:
        root = pool.store.strategy.path  # type: ignore[attr-defined]
        assert root.url.startswith(s3.url("spill", "fb-"))
        handles = [pool.insert(value) for value in values]
        pool.store.finished()
        assert len(s3.blobs("spill/")) == len(values) - 2
        for handle, value in zip(handles, values, strict=True):
            with handle.load() as loaded:
                assert loaded == value
    assert pool.store.closed
    assert s3.names("spill/") == []


def test_open_pools_share_one_url(s3: S3Bucket) -> None:
    """Two pools opened on one URL write under different prefixes and never touch each other."""
    first = fb.open_pool(s3.url("spill"), max_items=0, storage_options=s3.options)
    second = fb.open_pool(s3.url("spill"), max_items=0, storage_options=s3.options)
    a, b = first.insert("first"), second.insert("second")
    first.store.finished()
    second.store.finished()
    roots = {pool.store.strategy.path.root for pool in (first, second)}  # type: ignore[attr-defined]
    assert len(roots) == 2
    first.close()  # deletes the first pool's blobs, and only those
    assert a.closed
    assert not b.resident
    with b.load() as value:
        assert value == "second"
    second.close()
    assert s3.names("spill/") == []


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_open_pool_on_other_filesystems(kind: str, tmp_path: Path) -> None:
    """``open_pool`` takes a local path or a ``memory://`` URL as well."""
    url = str(tmp_path / "spill") if kind == "local" else f"memory://fb-test-{uuid.uuid4().hex}"
    try:
        with fb.open_pool(url, max_items=1, codec="pickle") as pool:
            handles = [pool.insert(i) for i in range(5)]
            pool.store.finished()
            assert [handle.resident for handle in handles] == [False] * 4 + [True]
            assert [handle.load().value for handle in handles] == list(range(5))
        assert pool.store.closed
    finally:
        if kind == "memory":
            location = PreparedPath(url)
            if location.fs.exists(location.root):
                location.fs.rm(location.root, recursive=True)
