"""Stores left open are closed at interpreter exit: cache blobs go, persisted blobs stay."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import fb
from fb import BackingStore, FBPool
from fb._exit import close_all
from fb.backends._segments import SEGMENT_NAME
from tests.conftest import TIMEOUT, CountingStore

_BLOB = re.compile(r"^[0-9a-f]{32}$")

ROOT = Path(fb.__file__).resolve().parents[1]

LEAKY = """
    import json, os, sys
    from fb import BackingStore, FBPool
    from fb.backends import FBStore

    cache, persist = sys.argv[1:3]
    store = BackingStore(FBStore("pickle", cache))
    pool = FBPool(store, max_items=1)
    handles = [pool.insert(os.urandom(200_000)) for _ in range(4)]  # 3 are written back
    kept = pool.insert(b"persisted value")
    tracked = store.track_path(persist)
    key = kept.persist(tracked)
    store.fsync(tracked)
    store.finished()
    print(json.dumps({"key": key.hex}))
    # no close(): the exit hook's turn
"""

REGISTER = """
    import sys
    from fb import BackingStore, FBPool
    from fb.backends import FBStore

    cache, persist, key = sys.argv[1:4]
    with BackingStore(FBStore("pickle", cache)) as store:
        handle = FBPool(store, max_items=1).register(store.track_path(persist), key)
        with handle.load() as value:
            print(value.decode())
        handle.close()
"""

FORKING = """
    import json, os, sys, warnings
    from fb import BackingStore, FBPool
    from fb.backends import FBStore

    parent_cache, child_cache = sys.argv[1:3]

    from fb._inspect import list_location
    from fb.backends import PreparedPath

    def blobs(root):  # blob files and blobs in segment files
        if not os.path.isdir(root):
            return []
        return sorted(blob.key for blob in list_location(PreparedPath(root)).blobs)

    store = BackingStore(FBStore("pickle", parent_cache))
    pool = FBPool(store, max_items=1, write="on_evict")
    handles = [pool.insert(bytes([i]) * 1000) for i in range(4)]
    store.finished()
    before = blobs(parent_cache)
    with warnings.catch_warnings():
        # The store's worker threads are alive at the fork, as in the programs this
        # stands for; Python 3.12+ warns about any fork of a threaded process.
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child exits normally: the exit hook runs in it
        own = BackingStore(FBStore("pickle", child_cache))
        own_pool = FBPool(own, max_items=1, write="on_evict")
        own_handles = [own_pool.insert(b"child") for _ in range(3)]
        own.finished()
        # The parent's store, open in the child too, is not the child's to close, nor to
        # warn about: no ResourceWarning may reach stderr (run() checks).
        sys.exit(0 if len(blobs(child_cache)) == 2 else 3)
    _, status = os.waitpid(pid, 0)
    after = blobs(parent_cache)
    with handles[0].load() as value:  # its blob, written before the fork, is still there
        assert value == bytes([0]) * 1000
    child = os.waitstatus_to_exitcode(status)
    print(json.dumps({"child": child, "before": before, "after": after}))
"""


def run(script: str, *args: object) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter under ``-X dev`` (ResourceWarnings shown)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-c", textwrap.dedent(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def blobs(root: Path) -> list[str]:
    """Names of the blob files under ``root`` (any shard), and of segment files there."""
    return sorted(
        name
        for _, _, names in os.walk(root)
        for name in names
        if _BLOB.match(name) or SEGMENT_NAME.match(name)
    )


def test_exit_deletes_the_cache_blobs_of_an_unclosed_store(tmp_path: Path) -> None:
    """A script that never closes its store leaves no blob in the cache; persisted ones stay."""
    cache, persist = tmp_path / "cache", tmp_path / "persist"
    persist.mkdir()
    key = json.loads(run(LEAKY, cache, persist).stdout)["key"]
    assert blobs(cache) == []
    assert blobs(persist) == [key]
    second = run(REGISTER, tmp_path / "cache2", persist, key)
    assert second.stdout.strip() == "persisted value"
    assert blobs(persist) == [key]


def test_forked_child_closes_only_its_own_stores_at_exit(tmp_path: Path) -> None:
    """A forked child's exit deletes its own cache blobs and none of its parent's."""
    parent_cache, child_cache = tmp_path / "parent", tmp_path / "child"
    report = json.loads(run(FORKING, parent_cache, child_cache).stdout)
    assert report["child"] == 0
    assert len(report["before"]) == 3
    assert report["after"] == report["before"]
    assert blobs(child_cache) == []
    assert blobs(parent_cache) == []  # the parent's own exit closed its store


def test_store_still_busy_is_left_open_with_a_warning(
    store: BackingStore[Any], counting: CountingStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The exit hook waits a bounded time: a store whose write still runs is not closed."""
    pool: FBPool[str] = FBPool(store, max_items=0)
    counting.store_gate = gate = threading.Event()
    handle = pool.insert("slow")
    assert counting.store_started.wait(TIMEOUT)
    try:
        with caplog.at_level(logging.WARNING, logger="fb"):
            close_all([store], 0.01)
        assert not store.closed
        assert "still had background work" in caplog.text
    finally:
        gate.set()
    store.finished(TIMEOUT)
    handle.close()


def test_exit_hook_logs_uncollected_errors_and_closes(
    store: BackingStore[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Background errors nobody collected are logged by the exit hook, which still closes."""
    pool: FBPool[Any] = FBPool(store, max_items=0)
    handle = pool.insert(lambda: 1)  # pickle cannot encode it: the write-back fails
    with caplog.at_level(logging.WARNING, logger="fb"):
        close_all([store], TIMEOUT)
    assert store.closed
    assert "at exit" in caplog.text
    assert "lambda" in caplog.text
    handle.close()
