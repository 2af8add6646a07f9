"""The S3 cache tier's layout and requests: which objects fb writes and which calls it makes."""

from __future__ import annotations

import random
import uuid
from typing import Any

from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from tests.s3.moto_fixtures import S3Bucket
from tests.s3.s3_helpers import (
    S3Calls,
    fixture_s3_store,  # noqa: F401 - a fixture, found by name
)


def test_opening_a_store_writes_only_its_lease(s3: S3Bucket) -> None:
    """An FBStore on an S3 prefix writes its lease, no lock file, marker or directory object."""
    location = s3.location("cache")
    calls = S3Calls()
    calls.watch(location)
    backend: FBStore[Any] = FBStore("pickle", location)
    (lease,) = s3.names()
    assert lease.startswith("cache/.fb-lease.")
    backend.close()
    assert s3.names() == []
    writes = [(name, key) for name, key in calls.calls if name in ("PutObject", "DeleteObject")]
    assert writes == [("PutObject", lease), ("DeleteObject", lease)]
    assert "DeleteObjects" not in calls.names()


def test_store_is_a_single_put_of_the_final_key(s3: S3Bucket) -> None:
    """Storing a blob is one PutObject to ``prefix/xx/<32 hex>``: no temporary, copy or rename."""
    location = s3.location("cache")
    backend: FBStore[Any] = FBStore("pickle", location)
    calls = S3Calls()
    calls.watch(location)
    key = uuid.uuid4()
    payload = random.Random(1).randbytes(3 * 2**20)
    size = backend.store(key, payload)
    backend.close()
    writes = [
        name
        for name, target in calls.calls
        if name not in ("HeadObject", "ListObjectsV2") and ".fb-lease." not in target
    ]
    assert writes == ["PutObject"]
    assert calls.on(key) == ["PutObject"]
    assert s3.names() == [f"cache/{key.hex[:2]}/{key.hex}"]
    assert len(s3.get(f"cache/{key.hex[:2]}/{key.hex}")) == size


def test_load_is_one_get(s3: S3Bucket) -> None:
    """Loading a blob reads its body with one GetObject."""
    location = s3.location("cache")
    backend: FBStore[Any] = FBStore("pickle", location)
    key = uuid.uuid4()
    backend.store(key, b"x" * 100_000)
    calls = S3Calls()
    calls.watch(location)
    assert backend.load(key) == b"x" * 100_000
    backend.close()
    assert calls.on(key).count("GetObject") == 1


def test_shared_prefix_is_never_swept(s3: S3Bucket) -> None:
    """A second store on a prefix in use leaves the first one's blobs alone and can read them."""
    first: FBStore[Any] = FBStore("pickle", s3.location("shared"))
    key = uuid.uuid4()
    first.store(key, "still here")
    second: FBStore[Any] = FBStore("pickle", s3.location("shared"))
    assert second.load(key) == "still here"
    assert first.load(key) == "still here"
    first.close()
    second.close()


def test_location_given_as_a_filesystem_object(s3: S3Bucket) -> None:
    """``PreparedPath(path, fs=...)`` with an s3fs object works like the URL form."""
    fs = s3.location().fs
    backend: FBStore[Any] = FBStore("pickle", PreparedPath(f"{s3.name}/by-fs", fs=fs))
    key = uuid.uuid4()
    backend.store(key, {"by": "fs"})
    assert backend.load(key) == {"by": "fs"}
    backend.close()
    assert s3.names("by-fs/") == [f"by-fs/{key.hex[:2]}/{key.hex}"]


def test_each_location_has_its_own_filesystem(s3: S3Bucket) -> None:
    """Two locations with one URL get separate s3fs objects (no instance cache)."""
    assert s3.location("cache").fs is not s3.location("cache").fs


def test_scan_sees_objects_written_by_another_client(
    s3: S3Bucket, s3_store: BackingStore[Any]
) -> None:
    """A rescan lists a blob persisted through another filesystem (no stale listing cache)."""
    tracked = s3_store.track_path(s3.location("durable"))
    assert tracked.keys() == frozenset()
    other_backend: FBStore[str] = FBStore("pickle", s3.location("elsewhere"))
    with BackingStore(other_backend) as other:
        pool: FBPool[str] = FBPool(other, max_items=1)
        handle = pool.insert("from another client")
        key = handle.persist(other.track_path(s3.location("durable")))
        handle.close()
    assert tracked.rescan() == {key}
