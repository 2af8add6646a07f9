"""The S3 spill tier, against moto's real HTTP server through s3fs.

What the conformance suite cannot see: how many requests (and which) fb makes, server-side
copies, errors on bad input, requests in flight, sharing between processes, fork safety.
Requests are observed through botocore's event system on the filesystem's own client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fb
from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from fb.exceptions import BlobNotFoundError, ForeignLocationError, InvalidKeyError
from fb.testing.backends import PersistSuite
from tests.s3.moto_fixtures import MotoServer, S3Bucket

SHARE_CHILD = Path(__file__).with_name("share_child.py")
CHILD_TIMEOUT = 60.0


class S3Calls:
    """Records the S3 operations of the filesystems it watches, with the key each names.

    A handler on botocore's ``before-parameter-build`` event of the filesystem's own client
    sees every API call (``PutObject``, ``CopyObject``, ``GetObject``...) before it is sent.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def watch(self, location: PreparedPath) -> None:
        """Record the calls made through ``location``'s filesystem from now on."""
        fs = location.fs
        fs.connect()  # s3fs creates its client lazily; make it exist to hook it
        fs.s3.meta.events.register("before-parameter-build.s3", self._record)

    def _record(self, params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        with self._lock:
            self.calls.append((str(model.name), str(params.get("Key", ""))))

    def clear(self) -> None:
        """Forget what was recorded."""
        with self._lock:
            self.calls.clear()

    def on(self, key: uuid.UUID) -> list[str]:
        """Return the operations, in order, on objects whose name holds ``key``."""
        with self._lock:
            return [name for name, target in self.calls if key.hex in target]

    def names(self) -> list[str]:
        """Return every operation recorded, in order."""
        with self._lock:
            return [name for name, _ in self.calls]


class InFlightBarrier:
    """Holds the first ``target`` requests of one operation until that many are in flight.

    The handler is a coroutine on the client's event loop: requests that reach it wait
    there, so when the ``target``-th arrives, ``target`` requests are provably in flight at
    once. It never hangs a test: after ``timeout`` seconds the waiting requests go on and
    `reached` stays False.
    """

    def __init__(self, operation: str, target: int, timeout: float = 20.0) -> None:
        self.operation = operation
        self.target = target
        self.timeout = timeout
        self.arrived = 0
        self.reached = False
        self._event: asyncio.Event | None = None

    def watch(self, location: PreparedPath) -> None:
        """Hold the requests made through ``location``'s filesystem."""
        fs = location.fs
        fs.connect()
        fs.s3.meta.events.register(f"before-call.s3.{self.operation}", self._before)

    async def _before(self, **kwargs: Any) -> None:
        # Runs on the filesystem's single event-loop thread: no lock is needed.
        if self._event is None:
            self._event = asyncio.Event()
        self.arrived += 1
        if self.arrived > self.target:
            return
        if self.arrived == self.target:
            self.reached = True
            self._event.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), self.timeout)
        self._event.set()  # a timed-out barrier lets everyone through


def digest(data: bytes) -> str:
    """Return the SHA-256 of ``data`` in hex."""
    return hashlib.sha256(data).hexdigest()


def closed_port() -> int:
    """Return a port of 127.0.0.1 on which nothing listens (a socket bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(name="other_bucket")
def fixture_other_bucket(moto_server: MotoServer) -> Iterator[S3Bucket]:
    """A second fresh bucket on the same server; deleted afterwards."""
    name = moto_server.make_bucket()
    yield S3Bucket(server=moto_server, name=name)
    moto_server.drop_bucket(name)


@pytest.fixture(name="s3_store")
def fixture_s3_store(s3: S3Bucket) -> Iterator[BackingStore[Any]]:
    """A `BackingStore` over an `FBStore` on ``s3://<bucket>/cache``; closed afterwards."""
    store: BackingStore[Any] = BackingStore(FBStore("pickle", s3.location("cache")))
    yield store
    store.close()


# -- layout and requests of the cache tier --------------------------------------------------


def test_opening_a_store_writes_nothing(s3: S3Bucket) -> None:
    """An FBStore on an S3 prefix creates no lock file, marker or directory object."""
    location = s3.location("cache")
    calls = S3Calls()
    calls.watch(location)
    backend: FBStore[Any] = FBStore("pickle", location)
    backend.close()
    assert s3.names() == []
    assert not {"PutObject", "DeleteObject", "DeleteObjects"} & set(calls.names())


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
    writes = [name for name in calls.names() if name not in ("HeadObject", "ListObjectsV2")]
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
    assert s3.names("cache/") == []
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


# -- bad input ------------------------------------------------------------------------------


def test_missing_bucket_is_a_clear_error(s3: S3Bucket) -> None:
    """A bucket that does not exist raises FileNotFoundError naming the URL, and is not created."""
    missing = S3Bucket(server=s3.server, name=f"fb-missing-{uuid.uuid4().hex[:12]}")
    url = missing.url("cache")
    with pytest.raises(FileNotFoundError, match=url):
        FBStore("pickle", PreparedPath(url, **missing.options))
    with pytest.raises(FileNotFoundError, match=url):
        fb.open_pool(url, max_items=1, **missing.options)
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
        FBStore("pickle", PreparedPath(url, **options))
    with pytest.raises(ConnectionError, match=url):
        fb.open_pool(url, max_items=1, **options)
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
    assert s3.names() == []


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


# -- concurrency ----------------------------------------------------------------------------


def test_write_back_keeps_several_puts_in_flight(s3: S3Bucket) -> None:
    """Write-back of many items runs several PUTs at once, and every item loads back bit-exact."""
    rng = random.Random(4)
    payloads = [rng.randbytes(256 * 1024 + i) for i in range(48)]
    with fb.open_pool(s3.url("spill"), max_items=0, max_workers=8, **s3.options) as pool:
        barrier = InFlightBarrier("PutObject", target=4)
        barrier.watch(pool.store.strategy.path)  # type: ignore[attr-defined]
        handles = [pool.insert(payload) for payload in payloads]
        pool.store.finished()
        assert barrier.reached, f"only {barrier.arrived} PUTs, never 4 at once"
        assert not any(handle.resident for handle in handles)
        assert pool.statistics().stores == len(payloads)
        for handle, payload in zip(handles, payloads, strict=True):
            with handle.load() as value:
                assert digest(value) == digest(payload)


def test_prefetch_loads_several_handles_at_once(s3: S3Bucket, s3_store: BackingStore[Any]) -> None:
    """``prefetch`` loads registered handles concurrently; afterwards they are all hits."""
    rng = random.Random(5)
    payloads = [rng.randbytes(100_000 + i) for i in range(12)]
    writer: FBPool[bytes] = FBPool(s3_store, max_items=0)
    tracked = s3_store.track_path(s3.location("durable"))
    originals = [writer.insert(payload) for payload in payloads]
    keys = [handle.persist(tracked) for handle in originals]
    writer.close()
    s3_store.finished()
    pool: FBPool[bytes] = FBPool(s3_store, max_items=len(payloads))
    handles = [pool.register(tracked, key) for key in keys]
    assert all(handle is not None and not handle.resident for handle in handles)
    barrier = InFlightBarrier("GetObject", target=3)
    barrier.watch(s3_store.strategy.path)  # type: ignore[attr-defined]
    registered = [handle for handle in handles if handle is not None]
    pool.prefetch(registered).result(timeout=CHILD_TIMEOUT)
    assert barrier.reached, f"only {barrier.arrived} GETs, never 3 at once"
    for handle, payload in zip(registered, payloads, strict=True):
        guard = handle.try_load()
        assert guard is not None
        with guard as value:
            assert value == payload
    assert pool.statistics().loads == len(payloads)
    pool.close()


# -- open_pool ------------------------------------------------------------------------------


def test_open_pool_round_trip_on_s3(s3: S3Bucket) -> None:
    """``open_pool`` on S3 spills under a session prefix and removes it all when closed."""
    values = [{"item": i, "data": bytes(range(i % 256)) * 100} for i in range(20)]
    with fb.open_pool(s3.url("spill"), max_items=2, **s3.options) as pool:
        root = pool.store.strategy.path  # type: ignore[attr-defined]
        assert root.url.startswith(s3.url("spill", "fb-"))
        handles = [pool.insert(value) for value in values]
        pool.store.finished()
        assert len(s3.names("spill/")) == len(values) - 2
        for handle, value in zip(handles, values, strict=True):
            with handle.load() as loaded:
                assert loaded == value
    assert pool.store.closed
    assert s3.names("spill/") == []


def test_open_pools_share_one_url(s3: S3Bucket) -> None:
    """Two pools opened on one URL write under different prefixes and never touch each other."""
    first = fb.open_pool(s3.url("spill"), max_items=0, **s3.options)
    second = fb.open_pool(s3.url("spill"), max_items=0, **s3.options)
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


# -- several processes ----------------------------------------------------------------------


def run_child(s3: S3Bucket, *args: str) -> list[list[str]]:
    """Run ``share_child.py`` with ``args`` in a new interpreter; return its output's words."""
    result = subprocess.run(
        [sys.executable, "-W", "error", str(SHARE_CHILD), *args],
        env={**os.environ, "FB_TEST_S3_ENDPOINT": s3.endpoint},
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [line.split() for line in result.stdout.splitlines()]


def test_persist_into_a_prefix_in_use_raises(s3: S3Bucket, s3_store: BackingStore[Any]) -> None:
    """A first persist to S3 refuses a prefix that holds objects fb did not write."""
    s3.server.client.put_object(Bucket=s3.name, Key="reports/q3.csv", Body=b"a,b\n")
    tracked = s3_store.track_path(s3.location("reports"))
    handle = FBPool(s3_store, max_items=1).insert(b"x")
    with pytest.raises(ForeignLocationError, match=r"not empty .*q3\.csv"):
        handle.persist(tracked)
    assert s3.names("reports/") == ["reports/q3.csv"]


def test_items_persisted_by_one_process_load_in_another(s3: S3Bucket) -> None:
    """A process persists to S3; a second, separate process registers and loads them bit-exact."""
    written = run_child(s3, "write", s3.name, "6", "42")
    assert len(written) == 6
    read = run_child(s3, "read", s3.name, *(key for key, _ in written))
    assert read == written
    assert all(name.startswith("durable/") for name in s3.names())  # both spill prefixes gone


def _fork_child(
    backend: FBStore[Any], pool: FBPool[Any], parent_key: uuid.UUID, report: int
) -> None:
    """In a forked child: use the parent's store and pool, write JSON to ``report``, exit."""
    status = 1
    try:
        signal.alarm(int(CHILD_TIMEOUT))  # a hung child must not outlive the test
        result: dict[str, Any] = {"pid": os.getpid()}
        result["parent_value"] = backend.load(parent_key)
        child_key = uuid.uuid4()
        backend.store(child_key, "from the child's FBStore")
        result["child_key"] = child_key.hex
        handle = pool.insert("from the child's pool")
        pool.store.finished()
        result["pool_resident"] = handle.resident
        with handle.load() as value:
            result["pool_value"] = value
        status = 0
    except BaseException:
        result = {"error": traceback.format_exc()}
    finally:
        with contextlib.suppress(BaseException):
            os.write(report, json.dumps(result).encode())
        os._exit(status)


def test_fork_child_rebuilds_its_filesystem(s3: S3Bucket) -> None:
    """A forked child uses an FBStore and pool made in the parent: it builds its own client."""
    backend: FBStore[Any] = FBStore("pickle", s3.location("cache"))
    with BackingStore(backend) as store:
        pool: FBPool[Any] = FBPool(store, max_items=0)
        parent_key = uuid.uuid4()
        backend.store(parent_key, "from the parent")  # the parent's client and loop are live
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():
            # Python >= 3.12 warns that forking a threaded process may deadlock: that risk
            # is what this test is about.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _fork_child(backend, pool, parent_key, write_end)  # never returns
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            report = json.loads(pipe.read() or b'{"error": "no report"}')
        _, status = os.waitpid(pid, 0)
        assert "error" not in report, report.get("error")
        assert os.waitstatus_to_exitcode(status) == 0
        assert report["pid"] != os.getpid()
        assert report["parent_value"] == "from the parent"
        assert report["pool_resident"] is False
        assert report["pool_value"] == "from the child's pool"
        assert backend.load(uuid.UUID(report["child_key"])) == "from the child's FBStore"
        assert backend.load(parent_key) == "from the parent"  # the parent's client still works
        pool.close()


def test_failed_streamed_persist_leaves_no_partial_blob(s3: S3Bucket) -> None:
    """A copy between two S3 clients whose source vanishes midway leaves nothing at the target."""
    # Small read blocks make the source read in several ranged GETs; other credentials make
    # the durable filesystem a different one, so fb streams instead of copying server-side.
    cache = PreparedPath(s3.url("cache"), default_block_size=5 * 2**20, **s3.options)
    durable = PreparedPath(s3.url("durable"), **{**s3.options, "key": "another-account"})
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
