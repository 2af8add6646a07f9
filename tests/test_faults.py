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
from fb.testing.faults import OPERATIONS, FaultyStrategy
from tests.conftest import TIMEOUT
from tests.reliability import ERRORS, blob_keys_on_storage, drain, injected_op, leaves
from tests.s3.moto_fixtures import S3Bucket


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
