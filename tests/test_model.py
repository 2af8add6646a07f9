"""Model-based tests: random operation sequences against a plain dict model of the pool.

A hypothesis `RuleBasedStateMachine` drives a real pool on a real cache directory through
insert, load, load_mut (replace and mutate in place), write_now, try_load, close, persist,
register, eviction pressure (inserting fillers) and restart (close the store, open a new one
over the same cache and persist directories, register the persisted keys), for every
capacity ``max_items`` 0..5 (or none) and small ``max_bytes`` budgets (or none). The model
is a list of (handle, last value written through it) and a dict of persisted key -> value.

After every step, once background work drained (`BackingStore.finished`):

- resident values are within the budget (nothing is pinned or pending at rest);
- the blob files in the cache are exactly the keys the store references
  (`BackingStore.blob_keys`), each referenced by a live handle, and every handle whose value
  is not resident has its blob;
- every load returns the model's value: no value is lost, none is stale.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from uuid import UUID

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fb import BackingStore, Fb, FBPool, ReadGuard, TrackedPath
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from tests.reliability import blob_keys_on_storage

budgets = st.tuples(
    st.none() | st.integers(min_value=0, max_value=5),
    st.none() | st.sampled_from([0, 1, 16, 64, 100, 200, 400]),
).filter(lambda pair: pair != (None, None))
"""(max_items, max_bytes): at least one budget, both small."""

payloads = st.binary(max_size=80)


class PoolModel(RuleBasedStateMachine):
    """A pool on a real directory against a list of (handle, expected value) and a dict."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        work = Path(tempfile.mkdtemp(prefix="example-", dir=root))
        self.work = work
        self.cache = PreparedPath(work / "cache")
        (work / "persist").mkdir()
        self.store: BackingStore[bytearray] = BackingStore(FBStore(PickleCodec(), self.cache))
        self.tracked: TrackedPath = self.store.track_path(work / "persist")
        self.pool: FBPool[bytearray] | None = None
        self.max_items: int | None = None
        self.max_bytes: int | None = None
        self.handles: list[Fb[bytearray]] = []
        self.values: list[bytes] = []
        self.persisted: dict[UUID, bytes] = {}
        self.counter = 0
        self.pins: list[tuple[Fb[bytearray], ReadGuard[bytearray]]] = []

    # -- helpers ---------------------------------------------------------------------------

    def fresh(self, payload: bytes) -> bytearray:
        """A value no other write produced: a stale value can never pass for the right one."""
        self.counter += 1
        return bytearray(self.counter.to_bytes(4, "little") + payload)

    def add(self, handle: Fb[bytearray], value: bytes) -> None:
        self.handles.append(handle)
        self.values.append(value)

    def at(self, index: int) -> int:
        return index % len(self.handles)

    def pinned(self, handle: Fb[bytearray]) -> bool:
        return any(pinned is handle for pinned, _ in self.pins)

    def unpinned(self) -> list[int]:
        """Indices of the handles this thread may take a write guard of (no read guard held)."""
        return [i for i, handle in enumerate(self.handles) if not self.pinned(handle)]

    def unpin(self, handle: Fb[bytearray]) -> None:
        for guard in [guard for pinned, guard in self.pins if pinned is handle]:
            guard.release()
        self.pins = [(pinned, guard) for pinned, guard in self.pins if pinned is not handle]

    @property
    def live(self) -> FBPool[bytearray]:
        assert self.pool is not None
        return self.pool

    # -- rules -----------------------------------------------------------------------------

    @initialize(budget=budgets)
    def make_pool(self, budget: tuple[int | None, int | None]) -> None:
        self.max_items, self.max_bytes = budget
        self.pool = FBPool(self.store, max_items=self.max_items, max_bytes=self.max_bytes)

    @rule(payload=payloads)
    def insert(self, payload: bytes) -> None:
        value = self.fresh(payload)
        self.add(self.live.insert(value), bytes(value))

    @precondition(lambda self: self.handles)
    @rule(index=st.integers(min_value=0))
    def load(self, index: int) -> None:
        index = self.at(index)
        with self.handles[index].load() as value:
            assert value == self.values[index], "a lost or stale value"

    @precondition(lambda self: self.handles)
    @rule(index=st.integers(min_value=0))
    def try_load(self, index: int) -> None:
        index = self.at(index)
        guard = self.handles[index].try_load()
        if guard is not None:
            with guard as value:
                assert value == self.values[index]

    @precondition(lambda self: self.unpinned())
    @rule(index=st.integers(min_value=0), payload=payloads)
    def replace(self, index: int, payload: bytes) -> None:
        candidates = self.unpinned()
        index = candidates[index % len(candidates)]
        value = self.fresh(payload)
        handle = self.handles[index]
        old_key = handle.key
        with handle.load_mut() as guard:
            assert guard.value == self.values[index]
            guard.value = value
        self.values[index] = bytes(value)
        assert handle.key != old_key, "a write guard gives the item a new key"

    @precondition(lambda self: self.unpinned())
    @rule(index=st.integers(min_value=0), tail=st.binary(min_size=1, max_size=40))
    def mutate(self, index: int, tail: bytes) -> None:
        candidates = self.unpinned()
        index = candidates[index % len(candidates)]
        self.counter += 1
        with self.handles[index].load_mut() as guard:
            guard.value[:4] = self.counter.to_bytes(4, "little")
            guard.value.extend(tail)
            self.values[index] = bytes(guard.value)

    @precondition(lambda self: self.handles)
    @rule(index=st.integers(min_value=0))
    def write_now(self, index: int) -> None:
        self.handles[self.at(index)].write_now()

    @precondition(lambda self: self.handles)
    @rule(index=st.integers(min_value=0))
    def evict(self, index: int) -> None:
        """Fb.evict: an unpinned value leaves memory now (written first if it has no blob)."""
        handle = self.handles[self.at(index)]
        resident, pinned = handle.resident, self.pinned(handle)
        freed = handle.evict()
        if resident and not pinned:
            assert freed == len(self.values[self.at(index)])
            assert not handle.resident
            assert handle.key in self.store.blob_keys()
        else:
            assert freed == 0

    @rule()
    def evict_lru(self) -> None:
        """FBPool.evict_lru: the least recently used value that can leave memory leaves."""
        before = self.live.statistics().resident_items
        freed = self.live.evict_lru()
        after = self.live.statistics().resident_items
        assert (freed == -1) == (after == before)

    @precondition(lambda self: self.handles)
    @rule(index=st.integers(min_value=0))
    def drop(self, index: int) -> None:
        index = self.at(index)
        handle = self.handles.pop(index)
        handle.close()  # with read guards held, the item goes when they are released
        self.unpin(handle)
        self.values.pop(index)

    @precondition(lambda self: self.handles)
    @rule(index=st.integers(min_value=0))
    def pin(self, index: int) -> None:
        """Hold a read guard across the next steps: the value stays in memory meanwhile."""
        index = self.at(index)
        guard = self.handles[index].load()
        assert guard.value == self.values[index]
        self.pins.append((self.handles[index], guard))

    @precondition(lambda self: self.pins)
    @rule(index=st.integers(min_value=0))
    def release(self, index: int) -> None:
        handle, guard = self.pins.pop(index % len(self.pins))
        guard.release()
        assert handle in self.handles

    @precondition(lambda self: self.handles)
    @rule(index=st.integers(min_value=0))
    def persist(self, index: int) -> None:
        index = self.at(index)
        key = self.handles[index].persist(self.tracked)
        assert key == self.handles[index].key
        self.store.fsync(self.tracked)
        self.persisted[key] = self.values[index]

    @precondition(lambda self: self.persisted)
    @rule(data=st.data())
    def register(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.persisted)))
        handle = self.live.register(self.tracked, key)
        assert handle is not None, f"persisted key {key.hex} cannot be registered"
        assert handle.key == key
        assert not handle.resident
        self.add(handle, self.persisted[key])

    @rule(count=st.integers(min_value=1, max_value=6), size=st.integers(0, 120))
    def evict_pressure(self, count: int, size: int) -> None:
        for _ in range(count):
            value = self.fresh(bytes(size))
            self.add(self.live.insert(value), bytes(value))

    @rule()
    def restart(self) -> None:
        """Close the store, open a new one on the same directories, register what persisted."""
        for _, guard in self.pins:
            guard.release()
        self.pins = []
        self.store.finished()
        self.live.close()
        self.store.close()
        assert blob_keys_on_storage(self.cache) == set(), "a closed store leaves no blob"
        self.handles, self.values = [], []
        self.store = BackingStore(FBStore(PickleCodec(), self.cache))
        self.tracked = self.store.track_path(self.work / "persist")
        assert self.tracked.keys() == set(self.persisted)
        self.pool = FBPool(self.store, max_items=self.max_items, max_bytes=self.max_bytes)
        for key, value in sorted(self.persisted.items()):
            handle = self.pool.register(self.tracked, key)
            assert handle is not None
            self.add(handle, value)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def quiescent_state_is_consistent(self) -> None:
        if self.pool is None:
            return
        self.store.finished()
        stats = self.pool.statistics()
        assert stats.items == len(self.handles)
        assert (stats.pending_writes, stats.pending_bytes) == (0, 0)
        # Nothing is pending at rest: only pinned values may be in memory beyond the budget.
        pinned = {id(handle): handle for handle, _ in self.pins}
        pinned_bytes = sum(len(self.values[self.handles.index(h)]) for h in pinned.values())
        if self.max_items is not None:
            assert stats.resident_items <= self.max_items + len(pinned), stats
        if self.max_bytes is not None:
            assert stats.resident_bytes <= self.max_bytes + pinned_bytes, stats
        for handle in pinned.values():
            assert handle.resident, "a pinned value left memory"
        referenced = self.store.blob_keys()
        assert blob_keys_on_storage(self.cache) == set(referenced), "orphan or missing blob"
        keys = {handle.key for handle in self.handles}
        assert referenced <= keys, "the store references a key no live handle has"
        for handle in self.handles:
            assert handle.resident or handle.key in referenced, f"{handle!r} lost its value"

    def teardown(self) -> None:
        try:
            for _, guard in self.pins:
                guard.release()
            if self.pool is not None:
                for handle, value in zip(self.handles, self.values, strict=True):
                    with handle.load() as loaded:
                        assert loaded == value
                for handle in self.handles:
                    handle.close()
                self.store.finished()
                assert self.store.blob_keys() == frozenset()
                assert blob_keys_on_storage(self.cache) == set()
                self.pool.close()
        finally:
            self.store.close()
            shutil.rmtree(self.work, ignore_errors=True)


def run_model(root: Path, config: settings) -> None:
    class OnRoot(PoolModel):
        def __init__(self) -> None:
            super().__init__(root)

    run_state_machine_as_test(OnRoot, settings=config)


@pytest.mark.timeout(300, method="thread")
def test_the_pool_matches_its_model(tmp_path: Path) -> None:
    """Any sequence of operations, capacities and restarts keeps the pool equal to the model."""
    run_model(tmp_path, settings(max_examples=50, stateful_step_count=30, deadline=None))


@pytest.mark.stress
@pytest.mark.timeout(3600, method="thread")
def test_the_pool_matches_its_model_stress(tmp_path: Path) -> None:
    """The model-based test with 2,000 examples of up to 60 steps."""
    run_model(tmp_path, settings(max_examples=2000, stateful_step_count=60, deadline=None))
