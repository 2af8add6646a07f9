"""The stress workload: shared state, every blocking and asyncio operation, value checks.

Used by ``test_stress.py``: each item's value is ``[origin, count, payload]``, and every write
through a handle is logged inside its write guard, so `World.check` knows each value a handle
ever held and the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from fb import Fb, FBPool, TrackedPath
from fb.exceptions import HandleClosedError
from tests.conftest import TIMEOUT
from tests.reliability import injected_op, leaves

MIN_ITEMS = 12

Value = list[Any]
Snapshot = tuple[int, int, bytes]


@dataclass(eq=False)
class Item:
    """One live handle and the log of every value written through it (count -> value)."""

    handle: Fb[Value]
    origin: int
    history: dict[int, Snapshot]
    last: Snapshot
    closed: bool = False


@dataclass
class World:
    """The shared state of a stress run: the items, what was persisted, and counters."""

    pool: FBPool[Value]
    tracked: TrackedPath
    lock: threading.Lock = field(default_factory=threading.Lock)
    items: list[Item] = field(default_factory=list)
    persisted: list[tuple[UUID, Snapshot]] = field(default_factory=list)
    ops: Counter[str] = field(default_factory=Counter)
    next_origin: int = 0
    faulty: bool = False
    """Storage fails at random: injected errors are expected, and counted in `raised`."""
    raised: Counter[str] = field(default_factory=Counter)

    # -- bookkeeping -----------------------------------------------------------------------

    def new_value(self, rng: random.Random) -> Value:
        with self.lock:
            self.next_origin += 1
            origin = self.next_origin
        return [origin, 0, rng.randbytes(rng.randint(50, 800))]

    def adopt(self, handle: Fb[Value], snapshot: Snapshot) -> None:
        item = Item(handle, snapshot[0], {snapshot[1]: snapshot}, snapshot)
        with self.lock:
            self.items.append(item)

    def pick(self, rng: random.Random) -> Item:
        with self.lock:
            return rng.choice(self.items)

    def check(self, item: Item, value: Value) -> Snapshot:
        """Inside a guard: the value must be one this handle held."""
        snapshot: Snapshot = (value[0], value[1], value[2])
        assert snapshot[0] == item.origin, f"{item.handle!r} holds another item's value"
        assert item.history.get(snapshot[1]) == snapshot, f"{item.handle!r}: a stale value"
        return snapshot

    def written(self, item: Item, value: Value) -> None:
        """Inside the write guard: log the value just written."""
        snapshot: Snapshot = (value[0], value[1], value[2])
        item.history[snapshot[1]] = snapshot
        item.last = snapshot

    def retire(self, rng: random.Random) -> Item | None:
        with self.lock:
            if len(self.items) <= MIN_ITEMS:
                return None
            item = self.items.pop(rng.randrange(len(self.items)))
            item.closed = True
            return item

    def persisted_pick(self, rng: random.Random) -> tuple[UUID, Snapshot] | None:
        with self.lock:
            return rng.choice(self.persisted) if self.persisted else None

    # -- one operation, blocking -----------------------------------------------------------

    def step(self, rng: random.Random) -> None:
        """Run one random blocking operation (from a thread)."""
        name, op = rng.choice(SYNC_OPS)
        item = self.pick(rng)
        try:
            op(self, item, rng)
        except Exception as exc:
            settle(self, exc, item, name)
        self.ops[name] += 1


def settle(world: World, exc: Exception, item: Item, name: str) -> None:
    """Accept ``exc`` if it is expected (else re-raise it): count injected faults.

    Expected are a handle closed by another thread, and — when storage fails at random —
    injected faults. A prefetch of several handles raises one error per failed load (a group
    when there are several); a load that failed while its handle was closed raises
    HandleClosedError from the injected fault.
    """
    for leaf in leaves(exc):
        op = injected_in(leaf)
        if op is not None:
            if not world.faulty:
                raise exc
            with world.lock:
                world.raised[op] += 1
        if isinstance(leaf, HandleClosedError):
            assert item.closed or name in ("prefetch", "aprefetch"), f"{name}: closed a live one"
        elif op is None:
            raise exc


def injected_in(exc: BaseException | None) -> str | None:
    """The operation of the injected fault ``exc`` is, or was caused by; None if none."""
    while exc is not None:
        op = injected_op(exc)
        if op is not None:
            return op
        exc = exc.__cause__
    return None


# -- the blocking operations -------------------------------------------------------------------


def op_insert(world: World, item: Item, rng: random.Random) -> None:
    value = world.new_value(rng)
    world.adopt(world.pool.insert(value), (value[0], value[1], value[2]))


def op_load(world: World, item: Item, rng: random.Random) -> None:
    with item.handle.load() as value:
        world.check(item, value)


def op_try_load(world: World, item: Item, rng: random.Random) -> None:
    guard = item.handle.try_load()
    if guard is not None:
        with guard as value:
            world.check(item, value)


def op_replace(world: World, item: Item, rng: random.Random) -> None:
    with item.handle.load_mut() as guard:
        old = world.check(item, guard.value)
        guard.value = [old[0], old[1] + 1, rng.randbytes(rng.randint(50, 800))]
        world.written(item, guard.value)


def op_mutate(world: World, item: Item, rng: random.Random) -> None:
    with item.handle.load_mut() as guard:
        world.check(item, guard.value)
        guard.value[1] += 1
        guard.value[2] = rng.randbytes(rng.randint(50, 800))
        world.written(item, guard.value)


def op_try_load_mut(world: World, item: Item, rng: random.Random) -> None:
    guard = item.handle.try_load_mut()
    if guard is not None:
        with guard:
            world.check(item, guard.value)
            guard.value[1] += 1
            world.written(item, guard.value)


def op_write_now(world: World, item: Item, rng: random.Random) -> None:
    item.handle.write_now()


def op_spawn_write_now(world: World, item: Item, rng: random.Random) -> None:
    item.handle.spawn_write_now().result(TIMEOUT)


def op_persist(world: World, item: Item, rng: random.Random) -> None:
    with item.handle.load() as value:  # no write guard meanwhile: the key matches the value
        snapshot = world.check(item, value)
        if rng.random() < 0.5:
            key = item.handle.persist(world.tracked)
        else:
            key = item.handle.spawn_persist(world.tracked).result(TIMEOUT)
    with world.lock:
        world.persisted.append((key, snapshot))


def op_fsync(world: World, item: Item, rng: random.Random) -> None:
    world.pool.store.fsync(world.tracked)


def op_register(world: World, item: Item, rng: random.Random) -> None:
    chosen = world.persisted_pick(rng)
    if chosen is not None:
        handle = world.pool.register(world.tracked, chosen[0])
        assert handle is not None, f"persisted key {chosen[0].hex} is missing"
        world.adopt(handle, chosen[1])


def op_prefetch(world: World, item: Item, rng: random.Random) -> None:
    with world.lock:
        handles = [chosen.handle for chosen in rng.sample(world.items, 3)]
    world.pool.prefetch(handles).result(TIMEOUT)


def op_evict(world: World, item: Item, rng: random.Random) -> None:
    item.handle.evict()


def op_evict_lru(world: World, item: Item, rng: random.Random) -> None:
    world.pool.evict_lru()  # other threads close its candidates meanwhile: no error escapes


def op_close(world: World, item: Item, rng: random.Random) -> None:
    retired = world.retire(rng)
    if retired is not None:
        retired.handle.close()


def op_abandon(world: World, item: Item, rng: random.Random) -> None:
    guard = item.handle.load()  # never released: the garbage collector's path
    world.check(item, guard.value)
    del guard


SYNC_OPS: list[tuple[str, Callable[[World, Item, random.Random], None]]] = [
    ("insert", op_insert),
    ("load", op_load),
    ("load", op_load),
    ("try_load", op_try_load),
    ("replace", op_replace),
    ("mutate", op_mutate),
    ("try_load_mut", op_try_load_mut),
    ("write_now", op_write_now),
    ("spawn_write_now", op_spawn_write_now),
    ("persist", op_persist),
    ("fsync", op_fsync),
    ("register", op_register),
    ("prefetch", op_prefetch),
    ("evict", op_evict),
    ("evict_lru", op_evict_lru),
    ("close", op_close),
    ("abandon", op_abandon),
]


# -- the asyncio operations --------------------------------------------------------------------


async def astep(world: World, rng: random.Random) -> None:
    """Run one random asynchronous operation (from a task)."""
    names = [*ASYNC_OPS, "aload"]  # loads twice as often
    if world.faulty:
        # The error of a load whose awaiting task was cancelled has nobody to go to.
        names.remove("cancelled_aload")
    name = rng.choice(names)
    item = world.pick(rng)
    try:
        await ASYNC_OPS[name](world, item, rng)
    except Exception as exc:
        settle(world, exc, item, name)
    world.ops[name] += 1


async def aop_insert(world: World, item: Item, rng: random.Random) -> None:
    value = world.new_value(rng)
    world.adopt(await world.pool.ainsert(value), (value[0], value[1], value[2]))


async def aop_load(world: World, item: Item, rng: random.Random) -> None:
    async with item.handle.aload() as value:
        world.check(item, value)


async def aop_replace(world: World, item: Item, rng: random.Random) -> None:
    async with item.handle.aload_mut() as guard:
        old = world.check(item, guard.value)
        guard.value = [old[0], old[1] + 1, rng.randbytes(rng.randint(50, 800))]
        world.written(item, guard.value)


async def aop_mutate(world: World, item: Item, rng: random.Random) -> None:
    async with item.handle.aload_mut() as guard:
        world.check(item, guard.value)
        guard.value[1] += 1
        world.written(item, guard.value)


async def aop_write_now(world: World, item: Item, rng: random.Random) -> None:
    await item.handle.awrite_now()


async def aop_persist(world: World, item: Item, rng: random.Random) -> None:
    async with item.handle.aload() as value:
        snapshot = world.check(item, value)
        key = await item.handle.apersist(world.tracked)
    with world.lock:
        world.persisted.append((key, snapshot))


async def aop_register(world: World, item: Item, rng: random.Random) -> None:
    chosen = world.persisted_pick(rng)
    if chosen is not None:
        handle = await world.pool.aregister(world.tracked, chosen[0])
        assert handle is not None
        world.adopt(handle, chosen[1])


async def aop_prefetch(world: World, item: Item, rng: random.Random) -> None:
    with world.lock:
        handles = [chosen.handle for chosen in rng.sample(world.items, 3)]
    await world.pool.aprefetch(handles)


async def aop_cancelled_load(world: World, item: Item, rng: random.Random) -> None:
    task = asyncio.ensure_future(item.handle.aload())
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        (await task).release()  # it won the race: give the pin back


async def aop_try_load(world: World, item: Item, rng: random.Random) -> None:
    guard = item.handle.try_load()
    if guard is not None:
        async with guard as value:
            world.check(item, value)


ASYNC_OPS = {
    "ainsert": aop_insert,
    "aload": aop_load,
    "areplace": aop_replace,
    "amutate": aop_mutate,
    "awrite_now": aop_write_now,
    "apersist": aop_persist,
    "aregister": aop_register,
    "aprefetch": aop_prefetch,
    "cancelled_aload": aop_cancelled_load,
    "try_load": aop_try_load,
}
