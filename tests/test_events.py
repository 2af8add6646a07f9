"""Structured logging events on the ``fb.events`` logger."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from fb import BackingStore, FBPool
from fb.backends import FBStore
from fb.testing.faults import ENOSPC, FaultyStrategy


def _events(caplog: pytest.LogCaptureFixture, kind: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "fb_event", None) == kind]


def test_evictions_are_debug_events_with_their_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each eviction logs an ``evict`` event with the key, the size and whether it was written."""
    caplog.set_level(logging.DEBUG, logger="fb.events")
    strategy: FBStore[bytes] = FBStore("pickle", tmp_path / "cache")
    with BackingStore(strategy) as store:
        pool: FBPool[bytes] = FBPool(store, max_items=1, write="on_evict")
        first = pool.insert(b"x" * 100)
        second = pool.insert(b"y" * 100)  # kept: a collected handle would free the budget
        store.finished()
        records = _events(caplog, "evict")
        assert [r.fb_key for r in records] == [first.key.hex]  # type: ignore[attr-defined]
        assert records[0].fb_nbytes == 100  # type: ignore[attr-defined]
        assert records[0].fb_dirty is True  # type: ignore[attr-defined]
        assert records[0].levelno == logging.DEBUG
        assert second.resident
        pool.close()


def test_failed_write_backs_and_their_retries_are_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed write-back logs ``write_failed`` (a warning) and its retry logs ``retry``."""
    caplog.set_level(logging.DEBUG, logger="fb")
    faulty: FaultyStrategy[Any] = FaultyStrategy(FBStore("pickle", tmp_path / "cache"))
    faulty.fail("store", ENOSPC, times=1)
    with BackingStore(faulty) as store:
        pool: FBPool[bytes] = FBPool(store, max_items=0)
        handle = pool.insert(b"z" * 10)
        with pytest.raises(OSError, match="No space left"):
            store.finished()
        failed = _events(caplog, "write_failed")
        assert [r.fb_key for r in failed] == [handle.key.hex]  # type: ignore[attr-defined]
        assert failed[0].levelno == logging.WARNING
        assert pool.retry_writes() == 1
        store.finished()
        retries = _events(caplog, "retry")
        assert [r.fb_key for r in retries] == [handle.key.hex]  # type: ignore[attr-defined]
        assert not handle.resident  # the retried write succeeded and the value left memory
        pool.close()
