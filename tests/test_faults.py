"""Fault injection: storage fails at random, and no value and no error is ever lost.

`fb.testing.faults.FaultyStrategy` wraps a real `FBStore` (local directory, ``memory://``,
S3 on a moto server) and makes a seeded random share of every backend operation fail with
the errors real storage raises (ENOSPC, EIO, EACCES, S3 503 Slow Down, dropped
connections). A random workload runs over it; then the faults stop and the tests check:

- every live handle loads the last value written through it;
- failed write-backs kept their values in memory and were retried (by `FBPool.retry_writes`
  and by the automatic backoff);
- every injected fault surfaced exactly once: raised to the caller, or collected by
  `BackingStore.finished` (and seen by the ``on_error`` hooks) — nothing is swallowed.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import fsspec
import pytest

from fb import BackingStore, Fb, FBPool, TrackedPath
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from fb.exceptions import StoreClosedError
from fb.testing.faults import (
    EACCES,
    EIO,
    ENOSPC,
    OPERATIONS,
    S3_CONNECTION,
    S3_SLOW_DOWN,
    ErrorFactory,
    FaultyStrategy,
)
from tests.conftest import TIMEOUT
from tests.reliability import blob_keys_on_storage, drain, injected_op, leaves, wait_until
from tests.s3.moto_fixtures import S3Bucket

ERRORS: dict[str, ErrorFactory] = {
    "ENOSPC": ENOSPC,
    "EIO": EIO,
    "EACCES": EACCES,
    "S3_SLOW_DOWN": S3_SLOW_DOWN,
    "S3_CONNECTION": S3_CONNECTION,
}


@dataclass
class Locations:
    """A cache location and a persist location on one kind of storage."""

    cache: PreparedPath
    persist: PreparedPath


@pytest.fixture(name="locations", params=["local", "memory", "s3"])
def fixture_locations(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Locations]:
    """A cache and a persist location on a local disk, on ``memory://`` or on S3 (moto)."""
    if request.param == "local":
        (tmp_path / "persist").mkdir()
        yield Locations(PreparedPath(tmp_path / "cache"), PreparedPath(tmp_path / "persist"))
    elif request.param == "memory":
        root = f"/fb-faults-{uuid.uuid4().hex}"
        fs = fsspec.filesystem("memory")
        fs.makedirs(f"{root}/persist", exist_ok=True)
        yield Locations(
            PreparedPath(f"memory://{root}/cache"), PreparedPath(f"memory://{root}/persist")
        )
        if fs.exists(root):
            fs.rm(root, recursive=True)
    else:
        s3: S3Bucket = request.getfixturevalue("s3")
        yield Locations(s3.location("cache"), s3.location("persist"))


# -- the random workload ----------------------------------------------------------------------


@dataclass
class Ledger:
    """Where every injected fault surfaced."""

    raised: Counter[str] = field(default_factory=Counter)
    """Injected faults raised to the caller of an operation, by operation."""
    collected: Counter[str] = field(default_factory=Counter)
    """Injected faults raised by `BackingStore.finished` (background work), by operation."""
    collected_errors: list[BaseException] = field(default_factory=list)
    store_hook: list[BaseException] = field(default_factory=list)
    pool_hook: list[BaseException] = field(default_factory=list)
    failed_deletes: set[UUID] = field(default_factory=set)

    def caught(self, exc: BaseException) -> None:
        """Account for an error raised to a caller; anything not injected is a real failure."""
        op = injected_op(exc)
        if op is None:
            raise exc
        self.raised[op] += 1

    def finished(self, store: BackingStore[Any]) -> None:
        """Drain background work and account for what it collected."""
        for exc in drain(store.finished):
            op = injected_op(exc)
            if op is None:
                raise exc
            self.collected[op] += 1
            self.collected_errors.append(exc)
            if op == "delete":
                assert isinstance(exc, OSError)
                self.failed_deletes.add(UUID(hex=str(exc.filename)))


class Chaos:
    """A seeded random workload over a pool whose storage fails at random."""

    def __init__(
        self, pool: FBPool[bytearray], tracked: TrackedPath, seed: int, ledger: Ledger
    ) -> None:
        self.pool = pool
        self.store = pool.store
        self.tracked = tracked
        self.rng = random.Random(seed)
        self.handles: list[Fb[bytearray]] = []
        self.expected: list[bytes] = []
        self.persisted: dict[UUID, bytes] = {}
        self.ever_persisted: set[UUID] = set()
        self.ledger = ledger
        self.ops: Counter[str] = Counter()

    def value(self) -> bytearray:
        return bytearray(self.rng.randbytes(self.rng.randint(16, 1500)))

    def step(self) -> None:
        """Run one random operation; an injected fault it raises is accounted for."""
        choices: list[Callable[[], None]] = [self.insert, self.insert]
        if self.handles:
            choices += [
                self.load,
                self.load,
                self.replace,
                self.mutate,
                self.close,
                self.write_now,
                self.spawn_write_now,
                self.persist,
                self.prefetch,
                self.try_load,
                self.evict,
                self.evict_lru,
            ]
        if self.persisted:
            choices += [self.register, self.delete_persisted, self.rescan]
        action = self.rng.choice(choices)
        self.ops[action.__name__] += 1
        try:
            action()
        except Exception as exc:  # a prefetch of several handles raises a group
            for leaf in leaves(exc):
                self.ledger.caught(leaf)

    def pick(self) -> int:
        return self.rng.randrange(len(self.handles))

    def insert(self) -> None:
        value = self.value()
        self.handles.append(self.pool.insert(value))
        self.expected.append(bytes(value))

    def load(self) -> None:
        index = self.pick()
        with self.handles[index].load() as value:
            assert value == self.expected[index], "a stale or lost value"

    def try_load(self) -> None:
        index = self.pick()
        guard = self.handles[index].try_load()
        if guard is not None:
            with guard as value:
                assert value == self.expected[index]

    def replace(self) -> None:
        index, new = self.pick(), self.value()
        with self.handles[index].load_mut() as guard:
            assert guard.value == self.expected[index]
            guard.value = new
        self.expected[index] = bytes(new)

    def mutate(self) -> None:
        index, tail = self.pick(), self.rng.randbytes(self.rng.randint(1, 64))
        with self.handles[index].load_mut() as guard:
            guard.value[0] ^= 0xFF
            guard.value.extend(tail)
            self.expected[index] = bytes(guard.value)

    def close(self) -> None:
        index = self.pick()
        self.handles.pop(index).close()
        self.expected.pop(index)

    def write_now(self) -> None:
        self.handles[self.pick()].write_now()

    def spawn_write_now(self) -> None:
        self.handles[self.pick()].spawn_write_now().result(TIMEOUT)

    def persist(self) -> None:
        index = self.pick()
        key = self.handles[index].persist(self.tracked)
        self.persisted[key] = self.expected[index]
        self.ever_persisted.add(key)
        self.store.fsync(self.tracked)

    def prefetch(self) -> None:
        handles = self.rng.sample(self.handles, min(3, len(self.handles)))
        self.pool.prefetch(handles).result(TIMEOUT)

    def evict(self) -> None:
        index = self.pick()
        freed = self.handles[index].evict()
        assert freed == 0 or not self.handles[index].resident

    def evict_lru(self) -> None:
        self.pool.evict_lru()

    def register(self) -> None:
        key = self.rng.choice(sorted(self.persisted))
        handle = self.pool.register(self.tracked, key)
        assert handle is not None, f"persisted key {key.hex} is missing"
        self.handles.append(handle)
        self.expected.append(self.persisted[key])

    def delete_persisted(self) -> None:
        key = self.rng.choice(sorted(self.persisted))
        self.store.delete_persisted(self.tracked, key)
        del self.persisted[key]
        self.store.fsync(self.tracked)

    def rescan(self) -> None:
        assert set(self.persisted) <= self.tracked.rescan()

    def check_values(self) -> None:
        """Every live handle loads the last value written through it."""
        for handle, expected in zip(self.handles, self.expected, strict=True):
            with handle.load() as value:
                assert value == expected, f"{handle!r} lost its last value"


STEPS = {"local": 400, "memory": 300, "s3": 100}
"""Operations per run, by backend (an S3 call to moto is some 10 ms)."""

CASES = {
    "local-posix-errors": ("local", ("ENOSPC", "EIO", "EACCES")),
    "local-s3-errors": ("local", ("S3_SLOW_DOWN", "S3_CONNECTION")),
    "memory-all-errors": ("memory", tuple(ERRORS)),
    "s3-s3-errors": ("s3", ("S3_SLOW_DOWN", "S3_CONNECTION")),
}


def run_chaos(locations: Locations, errors: tuple[str, ...], seed: int, steps: int) -> None:
    """Run ``steps`` random operations with faults in every backend operation, then check."""
    faulty: FaultyStrategy[bytearray] = FaultyStrategy(
        FBStore(PickleCodec(), locations.cache), seed=seed
    )
    ledger = Ledger()
    store: BackingStore[bytearray] = BackingStore(
        faulty, max_workers=3, on_error=ledger.store_hook.append
    )
    try:
        pool: FBPool[bytearray] = FBPool(
            store, max_items=4, max_bytes=4000, on_error=ledger.pool_hook.append
        )
        tracked = store.track_path(locations.persist)
        chaos = Chaos(pool, tracked, seed, ledger)
        for number, op in enumerate(sorted(OPERATIONS)):
            faulty.fail(op, ERRORS[errors[number % len(errors)]], probability=0.15)
        for number in range(steps):
            chaos.step()
            if number % 50 == 49:
                ledger.finished(store)
        faulty.heal()
        # Drain what is in flight, then retry every write that failed: nothing fails now.
        ledger.finished(store)
        pool.retry_writes()
        ledger.finished(store)
        chaos.check_values()
        ledger.finished(store)  # the loads above pushed items out: let those writes end

        stats = pool.statistics()
        assert (stats.pending_writes, stats.pending_bytes) == (0, 0)
        # Failed write-backs were retried: the pool is back within its budget.
        assert stats.resident_items <= 4
        assert stats.resident_bytes <= 4000
        # Nothing swallowed: every injected fault surfaced exactly once.
        assert sum(faulty.injected.values()) > steps // 20, "too few faults injected"
        assert faulty.injected == ledger.raised + ledger.collected
        assert stats.write_errors == faulty.injected["store"]
        assert stats.load_errors == faulty.injected["load"]
        assert set(ledger.collected) <= {"store", "delete"}, "only background work is collected"
        # (Several workers report at once: the hook may see them in another order.)
        assert sorted(map(id, ledger.store_hook)) == sorted(map(id, ledger.collected_errors))
        assert len(ledger.pool_hook) == ledger.collected["store"]
        assert all(injected_op(exc) == "store" for exc in ledger.pool_hook)

        for handle in chaos.handles:
            handle.close()
        ledger.finished(store)
        # A failed delete leaks exactly its own blob: nothing else stays in the cache (a
        # leaked key may be gone all the same if it was registered again and deleted then).
        assert store.blob_keys() == frozenset()
        left = blob_keys_on_storage(locations.cache)
        assert left <= ledger.failed_deletes
        assert ledger.failed_deletes - left <= chaos.ever_persisted
        pool.close()
    finally:
        faulty.heal()
        drain(store.close)


@pytest.mark.parametrize(
    ("locations", "errors"),
    [pytest.param(*case, id=name) for name, case in CASES.items()],
    indirect=["locations"],
)
@pytest.mark.timeout(120, method="thread")
def test_random_faults_lose_no_value_and_no_error(
    locations: Locations, errors: tuple[str, ...], request: pytest.FixtureRequest
) -> None:
    """Random faults in every operation: afterwards every handle loads its last value, and
    every injected fault was raised to its caller or collected by finished() exactly once."""
    backend = request.node.callspec.params["locations"]
    run_chaos(locations, errors, sum(map(ord, request.node.callspec.id)), STEPS[backend])


@pytest.mark.stress
@pytest.mark.parametrize(
    ("locations", "errors"),
    [pytest.param(*case, id=name) for name, case in CASES.items()],
    indirect=["locations"],
)
@pytest.mark.parametrize("seed", range(10))
@pytest.mark.timeout(900, method="thread")
def test_random_faults_stress(
    locations: Locations, errors: tuple[str, ...], seed: int, request: pytest.FixtureRequest
) -> None:
    """The same as the default run, ten seeds per case and five times the operations each."""
    backend = request.node.callspec.params["locations"]
    run_chaos(locations, errors, 1000 + seed, 5 * STEPS[backend])


# -- write-backs that fail ---------------------------------------------------------------------


@pytest.fixture(name="faulty")
def fixture_faulty(cache_dir: Path) -> FaultyStrategy[Any]:
    return FaultyStrategy(FBStore(PickleCodec(), PreparedPath(cache_dir)), seed=0)


@pytest.fixture(name="faulty_store")
def fixture_faulty_store(faulty: FaultyStrategy[Any]) -> Iterator[BackingStore[Any]]:
    store: BackingStore[Any] = BackingStore(faulty, max_workers=2)
    yield store
    faulty.heal()
    drain(store.close)


@pytest.mark.parametrize("error", list(ERRORS), ids=list(ERRORS))
def test_failed_write_backs_keep_values_until_retry_writes(
    faulty: FaultyStrategy[Any], faulty_store: BackingStore[Any], error: str
) -> None:
    """While storage fails every write, evicted values stay in memory; retry_writes spills them."""
    faulty.fail("store", ERRORS[error])
    pool: FBPool[bytes] = FBPool(faulty_store, max_items=2)
    values = [bytes([i]) * 100 for i in range(10)]
    handles = [pool.insert(value) for value in values]
    errors = drain(faulty_store.finished)
    # Eight write-backs failed (more if the automatic retry came round meanwhile).
    assert len(errors) >= 8
    assert {injected_op(exc) for exc in errors} == {"store"}
    stats = pool.statistics()
    assert (stats.resident_items, stats.write_errors, stats.evictions) == (10, len(errors), 0)
    loads_before = faulty.calls["load"]
    for handle, value in zip(handles, values, strict=True):
        with handle.load() as loaded:
            assert loaded == value
    assert faulty.calls["load"] == loads_before, "the values were in memory all along"

    faulty.heal()
    pool.retry_writes()
    faulty_store.finished()
    stats = pool.statistics()
    assert (stats.resident_items, stats.evictions_dirty) == (2, 8)
    for handle, value in zip(handles, values, strict=True):
        with handle.load() as loaded:
            assert loaded == value
    pool.close()


def test_a_failed_write_back_is_retried_automatically(
    faulty: FaultyStrategy[Any], faulty_store: BackingStore[Any]
) -> None:
    """A write-back that failed once is retried after the backoff, with no call from the user."""
    evicted = threading.Event()
    errors: list[BaseException] = []
    keys: list[UUID] = []

    def on_evict(key: UUID, nbytes: int, dirty: bool) -> None:
        if keys and key == keys[0] and dirty:
            evicted.set()

    faulty.fail("store", S3_SLOW_DOWN, times=1)
    pool: FBPool[bytes] = FBPool(
        faulty_store, max_items=1, on_evict=on_evict, on_error=errors.append
    )
    first = pool.insert(b"first")
    keys.append(first.key)
    second = pool.insert(b"second")  # pushes the first out: its write fails
    assert evicted.wait(TIMEOUT), "the failed write-back was never retried"
    assert [injected_op(exc) for exc in errors] == ["store"]
    assert "503 Slow Down" in str(errors[0])
    (collected,) = drain(faulty_store.finished)
    assert collected is errors[0]
    stats = pool.statistics()
    assert (stats.write_errors, stats.stores, stats.evictions_dirty) == (1, 1, 1)
    assert faulty.calls["store"] == 2
    with first.load() as value:
        assert value == b"first"
    second.close()
    pool.close()


def test_once_storage_is_back_failed_write_backs_are_retried_promptly(
    faulty: FaultyStrategy[Any], faulty_store: BackingStore[Any]
) -> None:
    """After a burst of failed write-backs, a successful write brings the retries forward."""
    written: set[UUID] = set()
    all_written = threading.Event()
    failed_keys: list[UUID] = []

    def on_evict(key: UUID, nbytes: int, dirty: bool) -> None:
        written.add(key)
        if failed_keys and set(failed_keys) <= written:
            all_written.set()

    pool: FBPool[bytes] = FBPool(faulty_store, max_items=1, on_evict=on_evict)
    faulty.fail("store", EIO)
    handles = [pool.insert(bytes([i]) * 100) for i in range(10)]  # nine write-backs fail
    assert len(drain(faulty_store.finished)) == 9
    failed_keys.extend(handle.key for handle in handles[:9])
    faulty.heal()
    handles.append(pool.insert(b"storage is back"))  # this eviction is written at once
    faulty_store.finished()
    assert handles[9].key in written
    # No retry_writes(): the automatic retries must follow now that storage works.
    assert all_written.wait(4.0), f"{len(set(failed_keys) - written)} values still wait"
    pool.close()


def test_background_errors_reach_finished_and_both_hooks(faulty: FaultyStrategy[Any]) -> None:
    """Several background failures: finished() raises an ExceptionGroup of them, each once,
    and the store's and the pool's on_error saw each one as it happened."""
    store_seen: list[BaseException] = []
    pool_seen: list[BaseException] = []
    store: BackingStore[Any] = BackingStore(faulty, max_workers=2, on_error=store_seen.append)
    try:
        pool: FBPool[bytes] = FBPool(store, max_items=0, on_error=pool_seen.append)
        doomed = pool.insert(b"written, then deleted")  # max_items=0: written at once
        store.finished()
        faulty.fail("store", ENOSPC, times=2)
        faulty.fail("delete", EACCES, times=1)
        kept = [pool.insert(bytes([i])) for i in range(2)]  # both writes fail
        doomed.close()  # its delete fails
        with pytest.raises(BaseExceptionGroup) as info:
            store.finished()
        errors = leaves(info.value)
        assert sorted(str(injected_op(exc)) for exc in errors) == ["delete", "store", "store"]
        assert sorted(map(id, store_seen)) == sorted(map(id, errors))
        written = [e for e in errors if injected_op(e) == "store"]
        assert sorted(map(id, pool_seen)) == sorted(map(id, written))
        store.finished()  # each error is raised once, then forgotten
        faulty.heal()
        pool.retry_writes()
        store.finished()
        for index, handle in enumerate(kept):
            with handle.load() as value:
                assert value == bytes([index])
        pool.close()
    finally:
        drain(store.close)


def test_a_failed_delete_is_collected_and_leaks_only_its_blob(
    faulty: FaultyStrategy[Any], faulty_store: BackingStore[Any], cache_dir: Path
) -> None:
    """A delete that fails is raised by finished() naming the key; the other blobs are gone."""
    pool: FBPool[bytes] = FBPool(faulty_store, max_items=0)
    handles = [pool.insert(bytes([i]) * 10) for i in range(5)]
    faulty_store.finished()
    faulty.fail("delete", EIO, times=1)
    for handle in handles:
        handle.close()
    (error,) = drain(faulty_store.finished)
    assert isinstance(error, OSError)
    assert injected_op(error) == "delete"
    leaked = UUID(hex=str(error.filename))
    assert blob_keys_on_storage(PreparedPath(cache_dir)) == {leaked}
    assert leaked in {handle.key for handle in handles}
    pool.close()


def test_write_now_and_persist_raise_the_write_error_and_keep_the_value(
    faulty: FaultyStrategy[Any], faulty_store: BackingStore[Any], persist_dir: Path
) -> None:
    """An explicit write that fails raises to its caller (not to finished) and keeps the value."""
    pool: FBPool[bytes] = FBPool(faulty_store, max_items=4)
    tracked = faulty_store.track_path(persist_dir)
    handle = pool.insert(b"precious")
    faulty.fail("store", S3_CONNECTION, times=2)
    with pytest.raises(ConnectionError, match="injected into store"):
        handle.write_now()
    with pytest.raises(ConnectionError, match="injected into store"):
        handle.persist(tracked)
    assert drain(faulty_store.finished) == []
    assert pool.statistics().write_errors == 2
    key = handle.persist(tracked)
    faulty_store.fsync(tracked)
    assert key in faulty_store.track_path(persist_dir)
    with handle.load() as value:
        assert value == b"precious"
    pool.close()


def test_closing_the_store_drains_a_blocked_write_back(
    faulty: FaultyStrategy[Any],
) -> None:
    """Closing the store while writes are blocked drains them first; the store then refuses."""
    gate = threading.Event()
    store: BackingStore[Any] = BackingStore(faulty, max_workers=1)
    faulty.block("store", gate, times=1)
    pool: FBPool[bytes] = FBPool(store, max_items=1)
    handle = pool.insert(b"a")
    other = pool.insert(b"b")  # pushes the first out: its write blocks
    wait_until(lambda: faulty.injected["store"] == 1, TIMEOUT, "the write-back to block")
    closer = threading.Thread(target=store.close, name="closer")
    closer.start()
    gate.set()
    closer.join(TIMEOUT)
    assert not closer.is_alive()
    assert store.closed
    assert pool.statistics().stores == 1, "the blocked write ran to its end, not cut off"
    with pytest.raises(StoreClosedError):
        handle.load()
    other.close()
    pool.close()


def test_prefetch_of_one_failing_handle_raises_its_error(
    faulty: FaultyStrategy[Any], faulty_store: BackingStore[Any]
) -> None:
    """A prefetch whose load fails hands the error to its future; the handle loads later."""
    pool: FBPool[bytes] = FBPool(faulty_store, max_items=1)
    handle = pool.insert(b"x")
    other = pool.insert(b"y")  # held: a dropped handle would free the budget again
    faulty_store.finished()
    faulty.fail("load", EIO, times=1)
    with pytest.raises(OSError, match="injected into load"):
        pool.prefetch([handle]).result(TIMEOUT)
    with handle.load() as value:
        assert value == b"x"
    other.close()
    pool.close()


def test_prefetch_reports_every_failed_load(
    faulty: FaultyStrategy[Any], faulty_store: BackingStore[Any]
) -> None:
    """Three prefetched loads fail: all three errors surface (its future or finished())."""
    pool: FBPool[bytes] = FBPool(faulty_store, max_items=1)
    handles = [pool.insert(bytes([i])) for i in range(4)]
    faulty_store.finished()
    faulty.fail("load", EIO)
    seen: list[BaseException] = []
    try:
        pool.prefetch(handles[:3]).result(TIMEOUT)
    except Exception as exc:
        seen += leaves(exc)
    seen += drain(faulty_store.finished)
    assert faulty.injected["load"] == 3
    assert len([exc for exc in seen if injected_op(exc) == "load"]) == 3
    faulty.heal()
    pool.close()


def test_evict_lru_racing_a_close_of_its_candidate(
    faulty: FaultyStrategy[Any], faulty_store: BackingStore[Any]
) -> None:
    """The least recently used handle is closed while evict_lru writes it: no error escapes."""
    pool: FBPool[bytes] = FBPool(faulty_store, max_items=10)
    oldest = pool.insert(b"a" * 100)
    other = pool.insert(b"b" * 100)
    gate = threading.Event()
    faulty.block("store", gate, times=1)
    outcome: list[int | BaseException] = []

    def evict() -> None:
        try:
            outcome.append(pool.evict_lru())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=evict, name="evict-lru", daemon=True)
    thread.start()
    wait_until(lambda: faulty.injected["store"] == 1, TIMEOUT, "evict_lru to write")
    oldest.close()
    gate.set()
    thread.join(TIMEOUT)
    (result,) = outcome
    if isinstance(result, BaseException):
        raise result
    assert result == -1 or result > 0
    with other.load() as value:
        assert value == b"b" * 100
    other.close()
    pool.close()
