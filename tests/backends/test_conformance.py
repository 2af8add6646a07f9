"""The backend conformance suite of `fb.testing.backends`, run against every built-in backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from fb.backends._segments import SLOT_HEAD, SLOT_MAGIC
from fb.testing.backends import BackendSuite, PersistSuite
from fb.typing import Strategy
from tests.s3.moto_fixtures import S3Bucket


class _FBStoreLayout(BackendSuite, PersistSuite):
    """What the generic suites leave to each backend: FBStore's names on a filesystem."""

    def test_fbstore_names_blobs_shard_slash_key(
        self, location: PreparedPath, persist_location: PreparedPath
    ) -> None:
        """FBStore keeps a blob as ``xx/<32 hex>`` in its cache and in a persist location."""
        store: BackingStore[Any] = BackingStore(self.make_strategy(location))
        with store:
            tracked = store.track_path(persist_location)
            pool: FBPool[str] = FBPool(store, max_items=0)
            handle = pool.insert("layout")
            key = handle.persist(tracked)
            expected = [f"{key.hex[:2]}/{key.hex}"]
            assert self.blob_names(store.strategy, location, key) == expected
            assert self.blob_names(store.strategy, persist_location, key) == expected
            pool.close()


class TestLocalDirectory(_FBStoreLayout):
    """A cache and a persist directory on the local disk (hard links between them).

    Every blob a file of its own (``segment_max=0``); `TestLocalSegments` keeps small ones
    in segment files.
    """

    def make_strategy(self, location: PreparedPath) -> Strategy[Any]:
        return FBStore(self.make_codec(), location, segment_max=0)

    @pytest.fixture(name="location")
    def fixture_location(self, tmp_path: Path) -> PreparedPath:
        return PreparedPath(tmp_path / "cache")

    @pytest.fixture(name="persist_location")
    def fixture_persist_location(self, tmp_path: Path) -> PreparedPath:
        (tmp_path / "persist").mkdir()
        return PreparedPath(tmp_path / "persist")


class TestLocalSegments(BackendSuite, PersistSuite):
    """A local cache whose small blobs live in segment files (the default on local disk)."""

    @pytest.fixture(name="location")
    def fixture_location(self, tmp_path: Path) -> PreparedPath:
        return PreparedPath(tmp_path / "cache")

    @pytest.fixture(name="persist_location")
    def fixture_persist_location(self, tmp_path: Path) -> PreparedPath:
        (tmp_path / "persist").mkdir()
        return PreparedPath(tmp_path / "persist")

    def read_raw(self, backend: Strategy[Any], location: PreparedPath, key: uuid.UUID) -> bytes:
        slot = _slot(backend, location, key)
        if slot is None:
            return super().read_raw(backend, location, key)
        path, offset, length = slot
        with open(path, "rb") as file:
            file.seek(offset)
            return file.read(length)

    def write_raw(
        self, backend: Strategy[Any], location: PreparedPath, key: uuid.UUID, data: bytes
    ) -> None:
        segments = getattr(backend, "_segments", None)
        slot = _slot(backend, location, key)
        if slot is None or segments is None:
            super().write_raw(backend, location, key, data)
            return
        # Damage in place: the slot's bytes and length become ``data`` (it fits the slot,
        # as the suite's damage only cuts or pads a few bytes of a small blob).
        segment, start, _ = segments._index[key]
        head = SLOT_HEAD.pack(SLOT_MAGIC, 1, key.bytes, len(data))
        with open(slot[0], "r+b") as file:
            file.seek(start)
            file.write(head + data)
        segments._index[key] = (segment, start, len(data))

    def blob_names(
        self, backend: Strategy[Any], location: PreparedPath, key: uuid.UUID
    ) -> list[str]:
        names = [n for n in super().blob_names(backend, location, key) if ".fbseg" not in n]
        slot = _slot(backend, location, key)
        if slot is not None:
            names.append(f"{Path(slot[0]).name}/{key.hex}")
        return names


def _slot(
    backend: Strategy[Any], location: PreparedPath, key: uuid.UUID
) -> tuple[str, int, int] | None:
    """The segment slot of blob ``key`` in ``backend``'s own cache, if it has one."""
    if location != getattr(backend, "path", None) or not isinstance(backend, FBStore):
        return None
    return backend.blob_slot(key)


@pytest.fixture(name="memory_root")
def fixture_memory_root() -> Iterator[str]:
    """A unique root on fsspec's process-wide memory filesystem, removed afterwards."""
    root = f"/fb-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


class TestMemory(_FBStoreLayout):
    """Cache and persist location on ``memory://`` (streamed copies, no hard links)."""

    @pytest.fixture(name="location")
    def fixture_location(self, memory_root: str) -> PreparedPath:
        return PreparedPath(f"memory://{memory_root}/cache")

    @pytest.fixture(name="persist_location")
    def fixture_persist_location(self, memory_root: str) -> PreparedPath:
        location = PreparedPath(f"memory://{memory_root}/persist")
        location.fs.makedirs(location.root, exist_ok=True)
        return location


class TestS3(_FBStoreLayout):
    """Cache and persist prefixes in one bucket of moto's S3 server (server-side copies)."""

    @pytest.fixture(name="location")
    def fixture_location(self, s3: S3Bucket) -> PreparedPath:
        return s3.location("cache")

    @pytest.fixture(name="persist_location")
    def fixture_persist_location(self, s3: S3Bucket) -> PreparedPath:
        return s3.location("durable")
