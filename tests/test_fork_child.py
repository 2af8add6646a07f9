"""Forked children: a child never deletes, overwrites or sweeps a blob its parent may reference.

A child inherits the parent's pool and store. Blobs referenced at the fork stay the parent's;
a dirty value (no blob yet, or a write in flight in the parent) gets a fresh key in the
child, so the two processes never write the same blob name.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from tests.conftest import TIMEOUT, CountingStore

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def _in_child(body: Callable[[], None], gate: tuple[int, int] | None = None) -> int:
    """Fork; run ``body`` in the child; return its pid.

    With ``gate`` (a pipe), the child closes its write end and waits for a byte, or for the
    parent to close its end (a failing parent never leaves the child waiting).
    """
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if gate is not None:
                os.close(gate[1])
            body()
            code = 0
        finally:
            os._exit(code)
    if gate is not None:
        os.close(gate[0])
    return pid


def _exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _then_child(pid: int, write: int, parent_first: Callable[[], None]) -> None:
    """Run ``parent_first``, then let the waiting child go on; check that it succeeded."""
    try:
        parent_first()
        os.write(write, b"go")
    finally:
        os.close(write)  # a failing parent never leaves the child waiting
    assert _exit_code(pid) == 0


def _churn(
    pool: FBPool[Any], store: BackingStore[Any], *handles: Any, before_close: int | None = None
) -> None:
    """What a child does with an inherited pool: load, push out, close everything.

    With ``before_close``, it waits for a byte on that descriptor before it closes.
    """
    for handle in handles:
        with handle.load() as value:
            assert value in ("A", "B")
    pool.insert("C")
    pool.insert("D")
    store.finished()
    if before_close is not None and not os.read(before_close, 1):
        raise RuntimeError("the parent failed before letting the child close")
    pool.close()
    store.close()


def test_a_child_never_deletes_a_blob_whose_write_was_in_flight_at_the_fork(
    tmp_path: Path,
) -> None:
    """The parent's write in flight at fork() completes, and the child's close leaves it alone."""
    counting = CountingStore(FBStore(PickleCodec(), PreparedPath(tmp_path / "cache")))
    store: BackingStore[Any] = BackingStore(counting)
    pool: FBPool[Any] = FBPool(store, max_items=1, write="on_evict")
    gate = counting.store_gate = threading.Event()
    a = pool.insert("A")
    pool.insert("B")  # A is evicted: its write waits at the gate
    assert counting.store_started.wait(TIMEOUT)

    read, write = os.pipe()

    def child() -> None:
        counting.store_gate = None  # the child's own writes run freely
        _churn(pool, store, a, before_close=read)

    pid = _in_child(child, gate=(read, write))

    def parent_first() -> None:
        # The parent's write completes while the child holds a copy of A; then the child closes.
        gate.set()
        store.finished()

    _then_child(pid, write, parent_first)
    with a.load() as value:
        assert value == "A"
    pool.close()
    store.close()


def test_a_child_never_deletes_a_blob_its_parent_writes_after_the_fork(tmp_path: Path) -> None:
    """A value dirty at fork() that both processes later write keeps the parent's blob."""
    store: BackingStore[Any] = BackingStore(FBStore("pickle", tmp_path / "cache"))
    # Written on eviction only: an early write could give A its blob before the fork.
    pool: FBPool[Any] = FBPool(store, max_items=2, write="on_evict")
    a = pool.insert("A")
    read, write = os.pipe()

    def child() -> None:
        if not os.read(read, 1):
            raise RuntimeError("the parent failed before letting the child run")
        _churn(pool, store, a)

    pid = _in_child(child, gate=(read, write))

    def parent_first() -> None:
        # The parent writes A's blob and drops the value, then lets the child run.
        a.evict()
        assert a.try_load() is None

    _then_child(pid, write, parent_first)
    with a.load() as value:
        assert value == "A"
    pool.close()
    store.close()


def test_a_child_writes_its_own_blobs_under_its_own_keys(tmp_path: Path) -> None:
    """A value dirty at fork() gets a fresh key in the child; the parent's key is unchanged."""
    store: BackingStore[Any] = BackingStore(FBStore("pickle", tmp_path / "cache"))
    pool: FBPool[Any] = FBPool(store, max_items=4, write="on_evict")
    a = pool.insert("A")
    parent_key = a.key
    read, write = os.pipe()

    def child() -> None:
        os.close(read)
        a.write_now()
        os.write(write, a.key.bytes)
        store.close()

    pid = _in_child(child)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child_key = pipe.read()
    assert _exit_code(pid) == 0
    assert len(child_key) == 16
    assert child_key != parent_key.bytes
    assert a.key == parent_key
    pool.close()
    store.close()


def test_a_pool_dropped_during_a_fork_has_its_lock_released(tmp_path: Path) -> None:
    """A pool (and store) that becomes garbage between the fork steps does not keep its lock.

    Otherwise the janitor, closing that pool's handles, waits on the lock forever and every
    later ``finished()`` hangs (seen in a forked child whose other fork handlers ran a GC).
    """
    import gc

    from fb import _core, _workers

    store: BackingStore[Any] = BackingStore(FBStore("pickle", tmp_path / "cache"))
    pool: FBPool[Any] = FBPool(store, max_items=1)
    pool_lock, store_lock = pool._lock, store._lock
    _core._before_fork()
    _workers._before_fork()
    del pool, store
    gc.collect()
    _workers._after_fork_in_parent()
    _core._after_fork_in_parent()
    assert not pool_lock.locked()
    assert not store_lock.locked()


def test_the_fork_handlers_start_no_thread_in_the_child(tmp_path: Path) -> None:
    """No fb thread runs in a child until every fork handler has reset fb's locks.

    A janitor started by the stores' handler closed a handle of a pool whose lock the pools'
    handler had not replaced yet, and waited on the parent's lock forever.
    """
    from fb import _janitor

    store: BackingStore[Any] = BackingStore(FBStore("pickle", tmp_path / "cache"))
    pool: FBPool[Any] = FBPool(store, max_items=1)
    pool.insert("A")
    read, write = os.pipe()

    def child() -> None:
        os.close(read)
        thread = _janitor._thread
        os.write(write, b"started" if thread is not None and thread.is_alive() else b"none")

    pid = _in_child(child)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        seen = pipe.read()
    assert _exit_code(pid) == 0
    assert seen == b"none"
    pool.close()
    store.close()
