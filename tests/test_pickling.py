"""Handles, guards, pools, stores and tracked paths refuse pickling with advice, not noise."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fb import BackingStore, FBPool, ReadGuard, WriteGuard
from fb.exceptions import NotPicklableError
from tests.conftest import TIMEOUT

Make = Callable[[FBPool[str], Path], object]

CASES: dict[str, tuple[Make, str]] = {
    "resident-handle": (lambda pool, _: pool.insert("resident"), "pool.register"),
    "stored-handle": (
        # The original failure: "Can't pickle fb._entry._Missing" for a value not in memory.
        lambda pool, _: (pool.insert("stored"), pool.insert("newer"))[0],
        "pool.register",
    ),
    "read-guard": (lambda pool, _: pool.insert("r").load(), "guard.value"),
    "write-guard": (lambda pool, _: pool.insert("w").load_mut(), "guard.value"),
    "pool": (lambda pool, _: pool, "register"),
    "store": (lambda pool, _: pool.store, "register"),
    "tracked-path": (lambda pool, tmp: pool.store.track_path(tmp), "track_path"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_pickling_is_refused_with_advice(
    store: BackingStore[Any], persist_dir: Path, case: str
) -> None:
    """pickle.dumps raises NotPicklableError (a TypeError) saying what to do instead."""
    pool: FBPool[str] = FBPool(store, max_items=1)
    make, advice = CASES[case]
    obj = make(pool, persist_dir)
    store.finished(TIMEOUT)
    for dumps in (pickle.dumps, lambda o: pickle.dumps(o, protocol=2), copy.deepcopy):
        with pytest.raises(NotPicklableError, match="cannot be pickled") as caught:
            dumps(obj)
        assert isinstance(caught.value, TypeError)
        assert advice in str(caught.value)
        assert "_Missing" not in str(caught.value)
        assert "_thread.lock" not in str(caught.value)
    if isinstance(obj, ReadGuard | WriteGuard):
        obj.release()
