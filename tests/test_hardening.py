"""Odd inputs and odd states: one rule for trailing payload bytes, no retry of what cannot be
encoded, short error messages, typed budget errors, and a lock file deleted under a live store.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import pytest

from fb import BackingStore, FBPool
from fb._blob import FLAG_XXH3, checksum, encode_header, encode_trailer
from fb.backends import FBStore, PreparedPath
from fb.backends._fbstore import SMALL_BLOB
from fb.codecs import PickleCodec
from fb.exceptions import CodecError, InvalidKeyError, StoreLockedError
from tests.conftest import CountingStore


def _blob_with_trailing_bytes(value: Any, extra: bytes) -> bytes:
    """An intact blob whose payload is a pickle of ``value`` followed by ``extra``."""
    header = encode_header("pickle")
    payload = pickle.dumps(value, protocol=5) + extra
    digest = checksum(FLAG_XXH3, header + payload)
    return header + payload + encode_trailer(FLAG_XXH3, len(payload), digest)


@pytest.mark.parametrize("size", [16, SMALL_BLOB + 4096], ids=["small", "large"])
def test_trailing_bytes_after_a_value_follow_one_rule_on_every_read_path(
    tmp_path: Path, size: int
) -> None:
    """A verified payload with bytes past the codec's value loads the same, small or large."""
    store: FBStore[Any] = FBStore("pickle", tmp_path / "cache", segment_max=0)
    with BackingStore(store) as backing:
        pool: FBPool[Any] = FBPool(backing, max_items=0)
        item = pool.insert(b"x")
        item.write_now()
        value = b"v" * size
        path = Path(store.blob_path(item.key))
        path.write_bytes(_blob_with_trailing_bytes(value, b"\x00trailing junk"))
        assert store.load(item.key) == value
        item.close()


def test_a_value_its_codec_cannot_encode_is_tried_once_not_on_every_read(
    tmp_path: Path,
) -> None:
    """An unencodable value past the budget stays resident, reported once, never rewritten."""
    counting = CountingStore(
        FBStore(PickleCodec(), PreparedPath(tmp_path / "cache"), segment_max=0)
    )
    store: BackingStore[Any] = BackingStore(counting)
    pool: FBPool[Any] = FBPool(store, max_items=0)
    item = pool.insert(lambda: 42)
    with pytest.raises(CodecError):
        store.finished()
    for _ in range(5):
        with item.load() as value:
            assert value() == 42
    store.finished()  # nothing new was collected
    assert len(counting.stored) == 1
    assert pool.statistics().write_errors == 1
    with item.load_mut() as guard:  # a new value may encode: it is tried again
        guard.value = "now encodable"
    store.finished()
    assert len(counting.stored) == 2
    pool.close()
    store.close()


def test_an_invalid_key_error_quotes_a_short_part_of_a_long_input(tmp_path: Path) -> None:
    """A 10 MB non-key is cut in the message, not repeated whole."""
    with BackingStore(FBStore[Any]("pickle", tmp_path / "cache")) as store:
        pool: FBPool[Any] = FBPool(store, max_items=1)
        (tmp_path / "persist").mkdir()
        tracked = store.track_path(tmp_path / "persist")
        with pytest.raises(InvalidKeyError) as info:
            pool.register(tracked, "z" * 10_000_000)
    assert len(str(info.value)) < 300
    assert "10000000" in str(info.value)


def test_max_pending_bytes_none_is_a_type_error(tmp_path: Path) -> None:
    """`max_pending_bytes=None` is refused like a budget of the wrong type, not taken silently."""
    with (
        BackingStore(FBStore[Any]("pickle", tmp_path / "cache")) as store,
        pytest.raises(TypeError, match="max_pending_bytes"),
    ):
        FBPool(store, max_items=1, max_pending_bytes=None)  # type: ignore[arg-type]


def test_a_lock_file_deleted_under_a_live_store_never_lets_another_store_sweep_its_blobs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store finding fb's blobs but no lock file sweeps nothing; the live owner's load works."""
    cache = tmp_path / "cache"
    first: BackingStore[Any] = BackingStore(FBStore[Any]("pickle", cache))
    pool: FBPool[Any] = FBPool(first, max_items=0)
    item = pool.insert("kept")
    item.write_now()
    (cache / ".fb-lock").unlink()
    with caplog.at_level(logging.WARNING, logger="fb"):
        second: FBStore[Any] = FBStore("pickle", cache, segment_max=0)
    assert "not swept" in caplog.text
    with item.load() as value:
        assert value == "kept"
    second.close()
    pool.close()
    first.close()


def test_an_explicit_sweep_refuses_when_the_lock_file_is_no_longer_this_stores(
    tmp_path: Path,
) -> None:
    """`sweep()` checks that the lock file on disk is still the one this store holds."""
    cache = tmp_path / "cache"
    store: FBStore[Any] = FBStore("pickle", cache, segment_max=0)
    with BackingStore(store) as backing:
        pool: FBPool[Any] = FBPool(backing, max_items=0)
        item = pool.insert("kept")
        item.write_now()
        (cache / ".fb-lock").unlink()
        (cache / ".fb-lock").write_text("someone else\n")
        with pytest.raises(StoreLockedError, match="no longer"):
            store.sweep()
        assert Path(store.blob_path(item.key)).exists()
        item.close()
