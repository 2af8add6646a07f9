"""Concurrency on S3: requests in flight at once, sharing between processes, a forked child."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import traceback
import uuid
import warnings
from pathlib import Path
from typing import Any

import fb
from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from tests.s3.moto_fixtures import S3Bucket
from tests.s3.s3_helpers import fixture_s3_store  # noqa: F401 - a fixture, found by name

SHARE_CHILD = Path(__file__).with_name("share_child.py")
CHILD_TIMEOUT = 60.0


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


# -- concurrency ----------------------------------------------------------------------------


def test_write_back_keeps_several_puts_in_flight(s3: S3Bucket) -> None:
    """Write-back of many items runs several PUTs at once, and every item loads back bit-exact."""
    rng = random.Random(4)
    payloads = [rng.randbytes(256 * 1024 + i) for i in range(48)]
    with fb.open_pool(
        s3.url("spill"), max_items=0, max_workers=8, storage_options=s3.options
    ) as pool:
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
