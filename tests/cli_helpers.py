"""Helpers shared by the ``fb`` command line tests: running it, and locations to run it on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec


def fb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fb ARGS`` and return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "fb", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def fb_json(*args: str, code: int = 0, env: dict[str, str] | None = None) -> Any:
    """Run ``fb ARGS --json``, check its exit status, and return the parsed output."""
    done = fb(*args, "--json", env=env)
    assert done.returncode == code, done.stdout + done.stderr
    return json.loads(done.stdout)


def blob_file(root: Path, key: UUID) -> Path:
    return root / key.hex[:2] / key.hex


def flip(path: Path, offset: int) -> None:
    """Flip every bit of the byte at ``offset`` of ``path``."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def write_blobs(root: Path, count: int, secret: str | None = None) -> list[UUID]:
    """Write ``count`` blobs through an FBStore on ``root``, then close it as a dead store.

    Blob files (no segments, which a closing store deletes): the tests look at the files.
    """
    store: FBStore[bytes] = FBStore(
        PickleCodec(), PreparedPath(root), secret_key=secret, segment_max=0
    )
    keys = [uuid4() for _ in range(count)]
    try:
        for index, key in enumerate(keys):
            store.store(key, bytes([index]) * 3000)
    finally:
        store.close()
    return keys


@pytest.fixture(name="cache")
def fixture_cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(name="dead_cache")
def fixture_dead_cache(cache: Path) -> list[UUID]:
    """Four blobs left in ``cache`` by a store that is gone (its lock is free)."""
    return write_blobs(cache, 4)


@pytest.fixture(name="persisted")
def fixture_persisted(tmp_path: Path) -> tuple[Path, list[UUID]]:
    """A persist location with five items persisted (and fsynced) through a pool."""
    persist = tmp_path / "persist"
    persist.mkdir()
    with BackingStore(FBStore(PickleCodec(), PreparedPath(tmp_path / "work"))) as store:
        pool: FBPool[str] = FBPool(store, max_items=2)
        tracked = store.track_path(persist)
        handles = [pool.insert(f"value {i}" * 100) for i in range(5)]
        keys = [handle.persist(tracked) for handle in handles]
        store.fsync(tracked)
        pool.close()
        store.finished()
    return persist, keys


@pytest.fixture(name="live_store")
def fixture_live_store(cache: Path) -> Iterator[FBStore[bytes]]:
    """A live store in this process that owns ``cache`` (holds its lock) during the test."""
    store: FBStore[bytes] = FBStore(PickleCodec(), PreparedPath(cache), segment_max=0)
    yield store
    store.close()
