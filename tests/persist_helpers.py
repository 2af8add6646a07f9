"""Helpers shared by the persistence tests: a store that counts persist calls, gates, listings.

The ``counting``, ``tracked`` and ``pool`` fixtures are imported by every ``test_persist*``
module, where ``counting`` overrides the shared fixture of ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from fb import BackingStore, FBPool, TrackedPath
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from tests.conftest import CountingStore

MARKER = ".fb-persist"


class PersistCounting(CountingStore):
    """A `CountingStore` that also records the persistence calls and can hold ``persist``.

    While ``persist_gate`` is not None, `persist` sets ``persist_started`` and waits for the
    gate *before* it places the blob: the handle has a blob and persist holds a reference
    to it, so a test can close, evict or rewrite the handle at exactly that point.
    """

    def __init__(self, inner: FBStore[Any]) -> None:
        super().__init__(inner)
        self.calls: list[tuple[str, UUID | None]] = []
        self.synced: list[set[str]] = []
        self.persist_gate: threading.Event | None = None
        self.persist_started = threading.Event()
        self.persist_threads: set[str] = set()
        self.active_persists = 0
        self.peak_persists = 0
        self.changed = threading.Condition()

    def _call(self, kind: str, key: UUID | None) -> None:
        with self.changed:
            self.calls.append((kind, key))

    def scan(self, location: PreparedPath) -> tuple[set[UUID], list[str]]:
        self._call("scan", None)
        return super().scan(location)

    def persist(self, key: UUID, location: PreparedPath) -> list[str]:
        self._call("persist", key)
        with self.changed:
            self.active_persists += 1
            self.peak_persists = max(self.peak_persists, self.active_persists)
            self.persist_threads.add(threading.current_thread().name)
            self.changed.notify_all()
        try:
            self._pass(self.persist_gate, self.persist_started)
            return super().persist(key, location)
        finally:
            with self.changed:
                self.active_persists -= 1

    def register(self, key: UUID, location: PreparedPath) -> bool:
        self._call("register", key)
        return super().register(key, location)

    def delete_persisted(self, key: UUID, location: PreparedPath) -> list[str]:
        self._call("delete_persisted", key)
        return super().delete_persisted(key, location)

    def fsync(self, location: PreparedPath, paths: set[str]) -> None:
        self._call("fsync", None)
        self.synced.append(set(paths))
        super().fsync(location, paths)

    def kinds(self) -> list[str]:
        """The persistence calls so far, by kind."""
        return [kind for kind, _ in self.calls]


@pytest.fixture(name="counting")
def fixture_counting(cache_dir: Path) -> PersistCounting:
    """Override of the shared fixture: the same counting store, persistence calls included.

    Blob files (no segments): these tests follow a blob's file into its persist location
    (a hard link); small blobs in segments are tests/backends/test_segments.py's.
    """
    return PersistCounting(FBStore(PickleCodec(), PreparedPath(cache_dir), segment_max=0))


@pytest.fixture(name="tracked")
def fixture_tracked(store: BackingStore[Any], persist_dir: Path) -> TrackedPath:
    return store.track_path(persist_dir)


@pytest.fixture(name="pool")
def fixture_pool(store: BackingStore[Any]) -> FBPool[Any]:
    return FBPool(store, max_items=4)


@contextlib.contextmanager
def open_store(cache: Path) -> Iterator[tuple[BackingStore[Any], PersistCounting]]:
    """Open another store (a "second host" or a "later run") on ``cache``; close it after."""
    counting = PersistCounting(FBStore(PickleCodec(), PreparedPath(cache), segment_max=0))
    store: BackingStore[Any] = BackingStore(counting, max_workers=4)
    try:
        yield store, counting
    finally:
        store.close()


@contextlib.contextmanager
def _gate(counting: PersistCounting, name: str) -> Iterator[threading.Event]:
    """Hold every call of ``counting`` that passes gate ``name`` until the event is set."""
    gate = threading.Event()
    setattr(counting, name, gate)
    try:
        yield gate
    finally:
        gate.set()
        setattr(counting, name, None)


def persist_gate(counting: PersistCounting) -> contextlib.AbstractContextManager[threading.Event]:
    """Hold every `persist` of ``counting`` at its gate until the event is set (or the end)."""
    return _gate(counting, "persist_gate")


def store_gate(counting: PersistCounting) -> contextlib.AbstractContextManager[threading.Event]:
    """Hold every blob write of ``counting`` at its gate until the event is set (or the end)."""
    return _gate(counting, "store_gate")


def blob(location: Path, key: UUID) -> Path:
    """Where blob ``key`` lives under ``location``."""
    return location / key.hex[:2] / key.hex


def listing(root: Path) -> dict[str, bytes | None]:
    """Every name under ``root`` with its content (None for a directory)."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = None if path.is_dir() else path.read_bytes()
    return found


def cache_files(cache: Path) -> list[str]:
    """Every file in a cache directory's shards (blobs and temporary files)."""
    return sorted(str(p.relative_to(cache)) for p in cache.glob("??/*"))
