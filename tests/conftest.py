"""Shared fixtures: real stores on temporary directories, and a counting wrapper around them."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from fb import BackingStore, Fb
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec

# The moto S3 server and its buckets, shared by tests/s3 and the conformance suite's S3 run.
from tests.s3.moto_fixtures import (  # noqa: F401 - fixtures are found by name
    fixture_aws_env,
    fixture_moto_server,
    fixture_s3,
    fixture_s3_options,
)

TIMEOUT = 10.0
"""Seconds any wait in a test may last before the test fails instead of hanging."""


class GateTimeoutError(AssertionError):
    """A gated call waited longer than `TIMEOUT` for its gate: the test is stuck."""


class CountingStore:
    """A `Strategy` that delegates to a real `FBStore` and records every call.

    ``store`` and ``load`` can be held at a gate: while ``store_gate`` (or ``load_gate``) is
    not None, the call sets ``store_started`` (``load_started``) and waits for the gate, so a
    test can look at the pool while a write (or read) is in flight.
    """

    def __init__(self, inner: FBStore[Any]) -> None:
        self.inner = inner
        self.stored: list[UUID] = []
        self.loaded: list[UUID] = []
        self.deleted: list[UUID] = []
        self.events: list[tuple[str, UUID]] = []
        self.closes = 0
        self.store_gate: threading.Event | None = None
        self.load_gate: threading.Event | None = None
        self.store_started = threading.Event()
        self.load_started = threading.Event()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CountingStore({self.inner!r})"

    def _record(self, kind: str, key: UUID, into: list[UUID]) -> None:
        with self._lock:
            into.append(key)
            self.events.append((kind, key))

    @staticmethod
    def _pass(gate: threading.Event | None, started: threading.Event) -> None:
        started.set()
        if gate is not None and not gate.wait(TIMEOUT):
            raise GateTimeoutError("a gated storage call was never released")

    def store(self, key: UUID, value: Any) -> int:
        self._record("store", key, self.stored)
        self._pass(self.store_gate, self.store_started)
        return self.inner.store(key, value)

    def load(self, key: UUID) -> Any:
        self._record("load", key, self.loaded)
        self._pass(self.load_gate, self.load_started)
        return self.inner.load(key)

    def delete(self, key: UUID) -> None:
        self._record("delete", key, self.deleted)
        self.inner.delete(key)

    def close(self) -> None:
        with self._lock:
            self.closes += 1
        self.inner.close()

    # Persistence passes straight through: these tests count the cache tier only.

    def scan(self, location: PreparedPath) -> tuple[set[UUID], list[str]]:
        return self.inner.scan(location)

    def persist(self, key: UUID, location: PreparedPath) -> list[str]:
        return self.inner.persist(key, location)

    def register(self, key: UUID, location: PreparedPath) -> bool:
        return self.inner.register(key, location)

    def delete_persisted(self, key: UUID, location: PreparedPath) -> list[str]:
        return self.inner.delete_persisted(key, location)

    def fsync(self, location: PreparedPath, paths: set[str]) -> None:
        self.inner.fsync(location, paths)

    @property
    def io_calls(self) -> int:
        """Every store, load and delete so far."""
        return len(self.stored) + len(self.loaded) + len(self.deleted)

    def delete_counts(self) -> Counter[UUID]:
        """How many times each key was deleted."""
        return Counter(self.deleted)

    def blob_path(self, key: UUID) -> Path:
        """Where the real store keeps blob ``key``."""
        return Path(self.inner.blob_path(key))


def value_of(handle: Fb[Any]) -> Any:
    """Load ``handle`` and return its value."""
    with handle.load() as value:
        return value


@pytest.fixture(name="cache_dir")
def fixture_cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(name="counting")
def fixture_counting(cache_dir: Path) -> CountingStore:
    # Blob files (no segments): tests reach a blob through ``blob_path`` to damage it.
    return CountingStore(FBStore(PickleCodec(), PreparedPath(cache_dir), segment_max=0))


@pytest.fixture(name="store")
def fixture_store(counting: CountingStore) -> Iterator[BackingStore[Any]]:
    store: BackingStore[Any] = BackingStore(counting, max_workers=4)
    yield store
    # Release any gate a failed test left shut, so closing cannot hang.
    for gate in (counting.store_gate, counting.load_gate):
        if gate is not None:
            gate.set()
    store.close()


@pytest.fixture(name="persist_dir")
def fixture_persist_dir(tmp_path: Path) -> Path:
    """An empty durable location on the same device as ``cache_dir``."""
    path = tmp_path / "persist"
    path.mkdir()
    return path


@pytest.fixture(name="shm_dir")
def fixture_shm_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty durable location on another device than ``cache_dir`` (a tmpfs, /dev/shm)."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("/dev/shm does not exist: no second device for the cross-device copy")
    if os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is on the same device as the temporary directory")
    path = Path(tempfile.mkdtemp(prefix="fb-test-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
