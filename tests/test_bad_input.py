"""The bad-input catalogue: every public entry point, given what it must refuse.

Wrong types, malformed keys, keys that try to walk the filesystem (``../x``, ``/etc/passwd``,
keys with slashes), closed stores, closed handles, other stores' locations and handles,
foreign directories. Each call must raise a typed error whose message names the culprit —
and the pool must go on working afterwards (an insert/load round trip and a clean
`BackingStore.finished` after every bad call). Nothing here ever writes outside the test's
temporary directory: the traversal attempts are refused before any I/O.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import fb
from fb import BackingStore, Fb, FBPool, TrackedPath
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec, get_codec
from fb.exceptions import (
    BlobNotFoundError,
    ForeignLocationError,
    HandleClosedError,
    InvalidKeyError,
    PluginNotFoundError,
    StoreClosedError,
    StoreLockedError,
)
from fb.testing.faults import FaultyStrategy


@dataclass
class Ctx:
    """A working pool and everything a bad call can be made with."""

    tmp: Path
    store: BackingStore[Any]
    pool: FBPool[Any]
    tracked: TrackedPath
    handle: Fb[Any]
    closed_handle: Fb[Any]
    other_store: BackingStore[Any]
    other_pool: FBPool[Any]
    other_tracked: TrackedPath
    other_handle: Fb[Any]
    dead_store: BackingStore[Any]
    dead_pool: FBPool[Any]
    dead_handle: Fb[Any]
    dead_tracked: TrackedPath
    foreign_dir: Path

    @property
    def cache(self) -> Path:
        return self.tmp / "cache"

    @property
    def persist(self) -> Path:
        return self.tmp / "persist"


@pytest.fixture(name="ctx")
def fixture_ctx(tmp_path: Path) -> Iterator[Ctx]:
    store: BackingStore[Any] = BackingStore(
        FBStore(PickleCodec(), PreparedPath(tmp_path / "cache"))
    )
    other: BackingStore[Any] = BackingStore(
        FBStore(PickleCodec(), PreparedPath(tmp_path / "other"))
    )
    dead: BackingStore[Any] = BackingStore(FBStore(PickleCodec(), PreparedPath(tmp_path / "dead")))
    (tmp_path / "persist").mkdir()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / ".fb-persist").write_text("somebody else's marker\n", encoding="utf-8")
    pool: FBPool[Any] = FBPool(store, max_items=2)
    other_pool: FBPool[Any] = FBPool(other, max_items=2)
    dead_pool: FBPool[Any] = FBPool(dead, max_items=0)
    closed_handle = pool.insert("closed")
    closed_handle.close()
    dead_handle = dead_pool.insert("written, then the store closes")
    dead_tracked = dead.track_path(tmp_path / "persist")
    dead.finished()
    dead.close()
    ctx = Ctx(
        tmp=tmp_path,
        store=store,
        pool=pool,
        tracked=store.track_path(tmp_path / "persist"),
        handle=pool.insert("the handle"),
        closed_handle=closed_handle,
        other_store=other,
        other_pool=other_pool,
        other_tracked=other.track_path(tmp_path / "persist"),
        other_handle=other_pool.insert("another pool's"),
        dead_store=dead,
        dead_pool=dead_pool,
        dead_handle=dead_handle,
        dead_tracked=dead_tracked,
        foreign_dir=foreign,
    )
    yield ctx
    pool.close()
    other_pool.close()
    store.close()
    other.close()


def still_works(ctx: Ctx) -> None:
    """After a bad call: a round trip through storage works and no background error waits."""
    handles = [ctx.pool.insert(f"value {i}") for i in range(4)]  # two are written back
    ctx.store.finished()
    for i, handle in enumerate(handles):
        with handle.load() as value:
            assert value == f"value {i}"
        handle.close()
    with ctx.handle.load() as value:
        assert value == "the handle"
    ctx.store.finished()


@dataclass(frozen=True)
class Bad:
    """One bad call: what it must raise, and the text that names the culprit."""

    call: Callable[[Ctx], object]
    error: type[BaseException]
    culprit: Callable[[Ctx], str]


def text(value: str) -> Callable[[Ctx], str]:
    return lambda ctx: value


KEY = uuid.UUID(int=0x1234)
SLASHED = "ab/" + "c" * 30
HEX_WITH_SLASH = "0" * 16 + "/" + "0" * 15


CASES: dict[str, Bad] = {
    # -- keys: malformed, or trying to walk the filesystem --------------------------------
    "register-key-dotdot": Bad(
        lambda c: c.pool.register(c.tracked, "../x"), InvalidKeyError, text("'../x'")
    ),
    "register-key-etc-passwd": Bad(
        lambda c: c.pool.register(c.tracked, "/etc/passwd"), InvalidKeyError, text("/etc/passwd")
    ),
    "register-key-with-slash": Bad(
        lambda c: c.pool.register(c.tracked, SLASHED), InvalidKeyError, text(SLASHED)
    ),
    "register-hex-key-with-slash": Bad(
        lambda c: c.pool.register(c.tracked, HEX_WITH_SLASH), InvalidKeyError, text(HEX_WITH_SLASH)
    ),
    "register-key-33-hex": Bad(
        lambda c: c.pool.register(c.tracked, "0" * 33), InvalidKeyError, text("0" * 33)
    ),
    "register-key-with-newline": Bad(
        lambda c: c.pool.register(c.tracked, KEY.hex + "\n"),
        InvalidKeyError,
        text(repr(KEY.hex + "\n")),
    ),
    "register-key-int": Bad(
        lambda c: c.pool.register(c.tracked, 5),  # type: ignore[arg-type]
        TypeError,
        text("int"),
    ),
    "register-key-bytes": Bad(
        lambda c: c.pool.register(c.tracked, KEY.bytes),  # type: ignore[arg-type]
        TypeError,
        text("bytes"),
    ),
    "register-key-none": Bad(
        lambda c: c.pool.register(c.tracked, None),  # type: ignore[arg-type]
        TypeError,
        text("NoneType"),
    ),
    "aregister-key-dotdot": Bad(
        lambda c: asyncio.run(c.pool.aregister(c.tracked, "../../etc")),
        InvalidKeyError,
        text("../../etc"),
    ),
    "delete-persisted-key-etc-passwd": Bad(
        lambda c: c.store.delete_persisted(c.tracked, "/etc/passwd"),
        InvalidKeyError,
        text("/etc/passwd"),
    ),
    "delete-persisted-key-float": Bad(
        lambda c: c.store.delete_persisted(c.tracked, 1.5),  # type: ignore[arg-type]
        TypeError,
        text("float"),
    ),
    "fbstore-load-str-key": Bad(
        lambda c: c.store.strategy.load("../x"),  # type: ignore[arg-type]
        TypeError,
        text("../x"),
    ),
    "fbstore-delete-str-key": Bad(
        lambda c: c.store.strategy.delete("/etc/passwd"),  # type: ignore[arg-type]
        TypeError,
        text("/etc/passwd"),
    ),
    "fbstore-load-missing-key": Bad(
        lambda c: c.store.strategy.load(KEY), BlobNotFoundError, text(KEY.hex)
    ),
    # -- tracked paths and locations ------------------------------------------------------
    "register-tracked-is-a-str": Bad(
        lambda c: c.pool.register(str(c.persist), KEY),  # type: ignore[arg-type]
        TypeError,
        lambda c: str(c.persist),
    ),
    "register-tracked-by-another-store": Bad(
        lambda c: c.pool.register(c.other_tracked, KEY),
        ValueError,
        lambda c: c.other_tracked.path.url,
    ),
    "persist-to-a-str": Bad(
        lambda c: c.handle.persist(str(c.persist)),  # type: ignore[arg-type]
        TypeError,
        lambda c: str(c.persist),
    ),
    "persist-to-a-prepared-path": Bad(
        lambda c: c.handle.persist(PreparedPath(c.persist)),  # type: ignore[arg-type]
        TypeError,
        lambda c: str(c.persist),
    ),
    "fsync-a-str": Bad(
        lambda c: c.store.fsync(str(c.persist)),  # type: ignore[arg-type]
        TypeError,
        lambda c: str(c.persist),
    ),
    "delete-persisted-from-a-str": Bad(
        lambda c: c.store.delete_persisted(str(c.persist), KEY),  # type: ignore[arg-type]
        TypeError,
        lambda c: str(c.persist),
    ),
    "save-to-a-str": Bad(
        lambda c: fb.save([c.handle], str(c.persist), list),  # type: ignore[arg-type]
        TypeError,
        lambda c: str(c.persist),
    ),
    "persist-to-another-stores-tracked": Bad(
        lambda c: c.handle.persist(c.other_tracked),
        ValueError,
        lambda c: c.other_tracked.path.url,
    ),
    "fsync-another-stores-tracked": Bad(
        lambda c: c.store.fsync(c.other_tracked), ValueError, lambda c: c.other_tracked.path.url
    ),
    "persist-to-a-foreign-marker": Bad(
        lambda c: c.handle.persist(c.store.track_path(c.foreign_dir)),
        ForeignLocationError,
        lambda c: str(c.foreign_dir / ".fb-persist"),
    ),
    "track-the-cache-directory": Bad(
        lambda c: c.store.track_path(c.cache), ForeignLocationError, lambda c: str(c.cache)
    ),
    "track-the-cache-through-dotdot": Bad(
        lambda c: c.store.track_path(f"{c.persist}/../cache"),
        ForeignLocationError,
        lambda c: str(c.cache),
    ),
    "track-another-stores-cache": Bad(
        lambda c: c.handle.persist(c.store.track_path(c.tmp / "other")),
        ForeignLocationError,
        lambda c: str(c.tmp / "other"),
    ),
    "track-a-missing-directory": Bad(
        lambda c: c.store.track_path(c.tmp / "nope"),
        FileNotFoundError,
        lambda c: str(c.tmp / "nope"),
    ),
    "track-etc-passwd": Bad(
        lambda c: c.store.track_path("/etc/passwd"), OSError, text("/etc/passwd")
    ),
    "track-an-int": Bad(
        lambda c: c.store.track_path(5),  # type: ignore[arg-type]
        TypeError,
        text("5"),
    ),
    "track-an-empty-path": Bad(lambda c: c.store.track_path(""), ValueError, text("empty")),
    "track-an-unknown-protocol": Bad(
        lambda c: c.store.track_path("nope://x"), ValueError, text("nope")
    ),
    # -- configuration --------------------------------------------------------------------
    "pool-without-budget": Bad(lambda c: FBPool(c.store), ValueError, text("budget")),
    "pool-negative-max-items": Bad(lambda c: FBPool(c.store, max_items=-1), ValueError, text("-1")),
    "pool-max-items-str": Bad(
        lambda c: FBPool(c.store, max_items="3"),  # type: ignore[arg-type]
        TypeError,
        text("'3'"),
    ),
    "pool-max-items-bool": Bad(lambda c: FBPool(c.store, max_items=True), TypeError, text("True")),
    "pool-max-bytes-float": Bad(
        lambda c: FBPool(c.store, max_bytes=1.5),  # type: ignore[arg-type]
        TypeError,
        text("1.5"),
    ),
    "pool-max-pending-negative": Bad(
        lambda c: FBPool(c.store, max_items=1, max_pending_bytes=-5), ValueError, text("-5")
    ),
    "pool-store-is-a-str": Bad(
        lambda c: FBPool("store", max_items=1),  # type: ignore[arg-type]
        TypeError,
        text("'store'"),
    ),
    "pool-sizeof-not-callable": Bad(
        lambda c: FBPool(c.store, max_items=1, sizeof=3),  # type: ignore[arg-type]
        TypeError,
        text("sizeof"),
    ),
    "pool-on-evict-not-callable": Bad(
        lambda c: FBPool(c.store, max_items=1, on_evict="x"),  # type: ignore[arg-type]
        TypeError,
        text("on_evict"),
    ),
    "pool-on-error-not-callable": Bad(
        lambda c: FBPool(c.store, max_items=1, on_error=1),  # type: ignore[arg-type]
        TypeError,
        text("on_error"),
    ),
    "store-zero-workers": Bad(
        lambda c: BackingStore(c.store.strategy, max_workers=0), ValueError, text("0")
    ),
    "store-workers-str": Bad(
        lambda c: BackingStore(c.store.strategy, max_workers="4"),  # type: ignore[arg-type]
        ValueError,
        text("'4'"),
    ),
    "store-strategy-str": Bad(
        lambda c: BackingStore("strategy"),  # type: ignore[arg-type]
        TypeError,
        text("'strategy'"),
    ),
    "store-on-error-not-callable": Bad(
        lambda c: BackingStore(c.store.strategy, on_error=5),  # type: ignore[arg-type]
        TypeError,
        text("on_error"),
    ),
    "fbstore-unknown-codec": Bad(
        lambda c: FBStore("nope", c.tmp / "x"), PluginNotFoundError, text("'nope'")
    ),
    "fbstore-codec-int": Bad(
        lambda c: FBStore(5, c.tmp / "x"),  # type: ignore[arg-type]
        TypeError,
        text("5"),
    ),
    "fbstore-short-secret": Bad(
        lambda c: FBStore("pickle", c.tmp / "x", secret_key=b"short"),
        ValueError,
        text("16 bytes"),
    ),
    "fbstore-secret-int": Bad(
        lambda c: FBStore("pickle", c.tmp / "x", secret_key=7),  # type: ignore[arg-type]
        TypeError,
        text("int"),
    ),
    "fbstore-on-a-locked-cache": Bad(
        lambda c: FBStore("pickle", c.cache), StoreLockedError, lambda c: str(c.cache)
    ),
    "prepared-path-int": Bad(
        lambda c: PreparedPath(5),  # type: ignore[arg-type]
        TypeError,
        text("5"),
    ),
    "get-codec-unknown-compression": Bad(
        lambda c: get_codec("zstd:nope"), PluginNotFoundError, text("'nope'")
    ),
    "open-pool-without-budget": Bad(
        lambda c: fb.open_pool(c.tmp / "y"), ValueError, text("budget")
    ),
    "open-pool-mistyped-keyword": Bad(
        lambda c: fb.open_pool(c.tmp / "y", max_items=3, max_byte=100),  # type: ignore[call-arg]
        TypeError,
        text("did you mean 'max_bytes'?"),
    ),
    "prepared-path-loose-storage-option": Bad(
        lambda c: PreparedPath(c.tmp / "y", anon=True),  # type: ignore[call-arg]
        TypeError,
        text("storage_options={'anon': ...}"),
    ),
    "save-max-concurrency-zero": Bad(
        lambda c: fb.save([c.handle], c.tracked, list, max_concurrency=0), ValueError, text("0")
    ),
    "faults-unknown-operation": Bad(
        lambda c: FaultyStrategy(c.store.strategy).fail("nope"), ValueError, text("'nope'")
    ),
    # -- closed handles, closed stores, other pools ---------------------------------------
    "load-a-closed-handle": Bad(
        lambda c: c.closed_handle.load(), HandleClosedError, lambda c: c.closed_handle.key.hex
    ),
    "aload-a-closed-handle": Bad(
        lambda c: asyncio.run(_aload(c.closed_handle)),
        HandleClosedError,
        lambda c: c.closed_handle.key.hex,
    ),
    "load-mut-a-closed-handle": Bad(
        lambda c: c.closed_handle.load_mut(),
        HandleClosedError,
        lambda c: c.closed_handle.key.hex,
    ),
    "try-load-a-closed-handle": Bad(
        lambda c: c.closed_handle.try_load(),
        HandleClosedError,
        lambda c: c.closed_handle.key.hex,
    ),
    "write-now-a-closed-handle": Bad(
        lambda c: c.closed_handle.write_now(),
        HandleClosedError,
        lambda c: c.closed_handle.key.hex,
    ),
    "persist-a-closed-handle": Bad(
        lambda c: c.closed_handle.persist(c.tracked),
        HandleClosedError,
        lambda c: c.closed_handle.key.hex,
    ),
    "insert-into-a-closed-store": Bad(
        lambda c: c.dead_pool.insert("x"), StoreClosedError, text("closed")
    ),
    "load-from-a-closed-store": Bad(
        lambda c: c.dead_handle.load(), StoreClosedError, lambda c: str(c.tmp / "dead")
    ),
    "spawn-write-now-on-a-closed-store": Bad(
        lambda c: c.dead_handle.spawn_write_now(),
        StoreClosedError,
        lambda c: str(c.tmp / "dead"),
    ),
    "register-on-a-closed-store": Bad(
        lambda c: c.dead_pool.register(c.dead_tracked, KEY), StoreClosedError, text("closed")
    ),
    "track-on-a-closed-store": Bad(
        lambda c: c.dead_store.track_path(c.persist),
        StoreClosedError,
        lambda c: str(c.tmp / "dead"),
    ),
    "prefetch-another-pools-handle": Bad(
        lambda c: c.pool.prefetch([c.other_handle]),
        ValueError,
        lambda c: c.other_handle.key.hex,
    ),
    "prefetch-a-non-handle": Bad(
        lambda c: c.pool.prefetch([42]),  # type: ignore[list-item]
        TypeError,
        text("42"),
    ),
    "second-write-guard-in-one-thread": Bad(
        lambda c: _hold_and_retake(c.handle), RuntimeError, lambda c: c.handle.key.hex
    ),
    "a-released-read-guard": Bad(
        lambda c: _released_guard_value(c.handle), RuntimeError, text("released")
    ),
    "sizeof-returning-a-negative": Bad(
        lambda c: FBPool(c.store, max_items=1, sizeof=lambda v: -1).insert("x"),
        TypeError,
        text("-1"),
    ),
}


async def _aload(handle: Fb[Any]) -> None:
    async with handle.aload():
        pass


def _hold_and_retake(handle: Fb[Any]) -> None:
    with handle.load_mut():
        handle.load_mut()


def _released_guard_value(handle: Fb[Any]) -> object:
    guard = handle.load()
    guard.release()
    return guard.value


@pytest.mark.parametrize(
    "case",
    [pytest.param(bad, id=name) for name, bad in CASES.items()],
)
def test_a_bad_call_raises_a_typed_error_naming_the_culprit(case: Bad, ctx: Ctx) -> None:
    """The bad call raises its typed error naming the culprit; the pool works afterwards."""
    with pytest.raises(case.error) as info:
        case.call(ctx)
    assert case.culprit(ctx) in str(info.value), (
        f"the message does not name the culprit: {info.value}"
    )
    still_works(ctx)
