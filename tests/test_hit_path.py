"""The lock-free hit path: a pin is never lost, whatever runs beside it."""

from __future__ import annotations

import gc
import random
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fb import BackingStore, Fb, FBPool
from fb.backends import FBStore
from fb.exceptions import GuardTimeoutError
from tests.conftest import TIMEOUT

ITEMS = 24
BUDGET = 8


@pytest.fixture(name="switchy")
def fixture_switchy() -> Iterator[None]:
    """Switch threads as often as the interpreter allows, so races show up."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def hammer(tmp_path: Path, seconds: float, seed: int) -> dict[str, int]:
    """Readers hit, while other threads insert, evict, rewrite and prefetch the same items.

    Inside each read guard the value must be the item's resident value (a pinned value
    never leaves memory). Returns how many operations of each kind ran.
    """
    counts = dict.fromkeys(("hit", "evict", "rewrite", "insert", "prefetch"), 0)
    failures: list[str] = []
    store: BackingStore[tuple[int, int]] = BackingStore(
        FBStore("pickle", tmp_path / "cache"), max_workers=3
    )
    with store:
        pool: FBPool[tuple[int, int]] = FBPool(store, max_items=BUDGET)
        handles: list[Fb[tuple[int, int]]] = [pool.insert((i, 0)) for i in range(ITEMS)]
        extra: list[Fb[tuple[int, int]]] = []
        stop = time.monotonic() + seconds

        def reader(number: int) -> None:
            rng = random.Random(seed * 100 + number)
            while time.monotonic() < stop and not failures:
                index = rng.randrange(8) if rng.random() < 0.8 else rng.randrange(ITEMS)
                handle = handles[index]
                with handle.load(timeout=TIMEOUT) as value:
                    entry = handle._entry
                    if value[0] != index or entry.value is not value:
                        failures.append(f"item {index}: pinned {value!r}, holds {entry.value!r}")
                counts["hit"] += 1

        def churner(number: int) -> None:
            rng = random.Random(seed * 100 + 50 + number)
            while time.monotonic() < stop and not failures:
                kind = rng.choice(("evict", "evict", "rewrite", "insert", "prefetch"))
                handle = handles[rng.randrange(ITEMS)]
                if kind == "evict":
                    handle.evict()
                    pool.evict_lru()
                elif kind == "rewrite":
                    try:
                        with handle.load_mut(timeout=0.05) as guard:
                            guard.value = (guard.value[0], guard.value[1] + 1)
                    except GuardTimeoutError:
                        pass  # readers kept it busy: fine, try something else
                elif kind == "insert":
                    extra.append(pool.insert((-1, 0)))
                    if len(extra) > ITEMS:
                        extra.pop(0).close()
                else:
                    pool.prefetch([handle]).result(TIMEOUT)
                counts[kind] += 1

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
        threads += [threading.Thread(target=churner, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + TIMEOUT)
            assert not thread.is_alive(), "a thread hung: a pin or a wake-up was lost"
        assert failures == []
        store.finished(TIMEOUT)
        for handle in handles + extra:
            entry = handle._entry
            assert entry.pins == [], f"a pin outlived its guard: {entry.pins}"
            assert not entry.writer
        # Every item pushed out while pinned was re-offered when its pins went.
        assert pool.statistics().resident_items <= BUDGET
        for index, handle in enumerate(handles):
            with handle.load(timeout=TIMEOUT) as value:
                assert value[0] == index
        pool.close()
    return counts


@pytest.mark.usefixtures("switchy")
def test_hits_beside_evictions_and_writers_lose_no_pin(tmp_path: Path) -> None:
    """A second of hits racing evictions, write guards and inserts keeps every pin."""
    counts = hammer(tmp_path, 1.0, seed=1)
    assert counts["hit"] > 100
    assert counts["evict"] > 0


@pytest.mark.stress
@pytest.mark.usefixtures("switchy")
@pytest.mark.parametrize("seed", range(3))
def test_hits_beside_evictions_and_writers_lose_no_pin_for_long(tmp_path: Path, seed: int) -> None:
    """Thirty seconds of the same race per seed: still no pin lost, no value dropped."""
    counts = hammer(tmp_path, 30.0, seed=seed)
    assert counts["hit"] > 1000


def test_a_guard_released_by_with_takes_no_lock(tmp_path: Path) -> None:
    """``with handle.load()`` on a hot item neither acquires nor waits for the pool's lock."""
    store: BackingStore[str] = BackingStore(FBStore("pickle", tmp_path / "cache"))
    with store:
        pool: FBPool[str] = FBPool(store, max_items=8)
        handle = pool.insert("hot")
        # The lock is held by this thread: a hit path that took it would deadlock here.
        with pool._lock, handle.load() as value:
            assert value == "hot"
        assert handle._entry.pins == []
        assert pool.statistics().hits == 1
        pool.close()


def test_a_pinned_item_pushed_out_leaves_memory_at_release(tmp_path: Path) -> None:
    """An item evicted while a fast-path guard pins it leaves once the guard is released."""
    store: BackingStore[int] = BackingStore(FBStore("pickle", tmp_path / "cache"))
    with store:
        pool: FBPool[int] = FBPool(store, max_items=2)
        first = pool.insert(0)
        with first.load() as value:
            others = [pool.insert(1), pool.insert(2)]  # push the pinned first item out
            store.finished(TIMEOUT)
            assert first._entry.value is value  # pinned: still resident
            assert value == 0
        store.finished(TIMEOUT)
        assert not first.resident
        assert pool.statistics().resident_items == len(others)
        pool.close()


def python_calls(action: Callable[[], object]) -> list[str]:
    """The names of the Python functions that ``action`` runs (itself first), in call order."""
    names: list[str] = []

    def profile(frame: object, event: str, arg: object) -> None:
        if event == "call":
            names.append(frame.f_code.co_name)  # type: ignore[attr-defined]

    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
    return names


def test_a_hit_runs_load_and_exit_only(tmp_path: Path) -> None:
    """``with handle.load()`` on a hot item runs two Python frames: the guard enters in C."""
    store: BackingStore[str] = BackingStore(FBStore("pickle", tmp_path / "cache"))
    with store:
        pool: FBPool[str] = FBPool(store, max_items=8)
        handle = pool.insert("hot")
        seen: list[str] = []

        def hit() -> None:
            with handle.load() as value:
                seen.append(value)

        assert python_calls(hit) == ["hit", "load", "__exit__"]
        assert seen == ["hot"]
        assert handle._entry.pins == []
        pool.close()


def gate_open(handle: Fb[Any]) -> bool:
    """Whether a hit on ``handle`` would take the lock-free path right now."""
    return handle._entry.fast


def test_an_item_out_of_the_hot_segment_takes_the_locked_path(tmp_path: Path) -> None:
    """An item pushed into the warm segment has its gate shut; a hit moves it back and opens it."""
    store: BackingStore[str] = BackingStore(FBStore("pickle", tmp_path / "cache"))
    with store:
        pool: FBPool[str] = FBPool(store, max_items=4)  # two items fit in the hot segment
        first = pool.insert("first")
        assert gate_open(first)
        others = [pool.insert("second"), pool.insert("third")]
        assert first._entry.segment == 1
        assert not gate_open(first)
        with first.load() as value:
            assert value == "first"
        assert first._entry.segment == 0
        assert gate_open(first)
        assert all(other.resident for other in others)
        pool.close()


class _Value:
    """A value that can be weakly referenced, to see when it leaves memory."""


def test_an_evicted_value_leaves_memory_after_hits(tmp_path: Path) -> None:
    """Nothing the hit path keeps for an item holds its value once it was evicted."""
    store: BackingStore[_Value] = BackingStore(FBStore("pickle", tmp_path / "cache"))
    with store:
        pool: FBPool[_Value] = FBPool(store, max_items=8)
        handle = pool.insert(_Value())
        with handle.load() as value:
            ref = weakref.ref(value)
        del value
        assert handle.evict() > 0
        store.finished(TIMEOUT)
        gc.collect()
        assert ref() is None
        pool.close()


def test_a_hit_after_a_write_guard_sees_the_new_value(tmp_path: Path) -> None:
    """A value replaced through a write guard is what the next lock-free hit enters to."""
    store: BackingStore[str] = BackingStore(FBStore("pickle", tmp_path / "cache"))
    with store:
        pool: FBPool[str] = FBPool(store, max_items=8)
        handle = pool.insert("old")
        with handle.load() as value:
            assert value == "old"
        with handle.load_mut() as writer:
            writer.value = "new"
        assert gate_open(handle)
        with handle.load() as value:
            assert value == "new"
        reader = handle.load()
        reader.release()
        with pytest.raises(RuntimeError, match="released"), reader:
            pass
        pool.close()


class CountingLock:
    """A pool lock that counts how often it is taken."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.taken = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self.taken += 1
        return self.lock.acquire(blocking, timeout)

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_a_miss_takes_the_lock_twice(tmp_path: Path) -> None:
    """A load from storage decides under the lock once and installs under it once."""
    store: BackingStore[str] = BackingStore(FBStore("pickle", tmp_path / "cache"))
    with store:
        pool: FBPool[str] = FBPool(store, max_items=4)
        handle = pool.insert("cold")
        assert handle.evict() > 0
        store.finished(TIMEOUT)
        counting = CountingLock()
        pool._lock = counting  # type: ignore[assignment]
        with handle.load() as value:
            assert value == "cold"
        assert counting.taken == 2
        assert pool.statistics().misses == 1
        pool.close()


def test_a_warm_hit_takes_the_lock_once(tmp_path: Path) -> None:
    """A hit on an item outside the hot segment reorders and pins in one lock section."""
    store: BackingStore[str] = BackingStore(FBStore("pickle", tmp_path / "cache"))
    with store:
        pool: FBPool[str] = FBPool(store, max_items=4)
        first = pool.insert("first")
        others = [pool.insert("second"), pool.insert("third")]
        assert first._entry.segment == 1
        counting = CountingLock()
        pool._lock = counting  # type: ignore[assignment]
        with first.load() as value:
            assert value == "first"
        assert counting.taken == 1
        assert pool.statistics().hits == 1
        assert all(other.resident for other in others)
        pool.close()
