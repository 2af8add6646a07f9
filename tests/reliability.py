"""Helpers shared by the reliability tests: injected errors, fault accounting, deadlines.

The reliability tests (``test_faults.py``, ``test_faults_targeted.py``, ``test_model.py``,
``test_stress.py``, ``test_crash_random.py``, ``test_fuzz_blob.py``, ``test_bad_input.py``,
``test_backpressure.py``) prove the guarantees listed in ``docs/guarantees.md``. A hang in
them fails loudly through pytest-timeout's ``thread`` method (every stack dumped, then the
run ends), since a deadlocked pool leaves threads no test can stop.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from uuid import UUID

from fb._inspect import list_location
from fb.backends import PreparedPath
from fb.testing.faults import EACCES, EIO, ENOSPC, S3_CONNECTION, S3_SLOW_DOWN, ErrorFactory

ERRORS: dict[str, ErrorFactory] = {
    "ENOSPC": ENOSPC,
    "EIO": EIO,
    "EACCES": EACCES,
    "S3_SLOW_DOWN": S3_SLOW_DOWN,
    "S3_CONNECTION": S3_CONNECTION,
}
"""The storage errors the fault tests inject, by name."""

_INJECTED = re.compile(r"injected into (\w+)")
_BLOB = re.compile(r"(?:^|/)([0-9a-f]{2})/([0-9a-f]{32})$")


def injected_op(exc: BaseException) -> str | None:
    """Return the operation a `fb.testing.faults` error was injected into, or None."""
    found = _INJECTED.search(str(exc))
    return found.group(1) if found else None


def leaves(exc: BaseException) -> list[BaseException]:
    """Return the exceptions inside ``exc``, flattening (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def drain(call: Callable[[], object]) -> list[BaseException]:
    """Run ``call`` (``store.finished`` or ``store.close``); return what it raised, flattened."""
    try:
        call()
    except Exception as exc:
        return leaves(exc)
    return []


def blob_keys_on_storage(location: PreparedPath) -> set[UUID]:
    """Return the keys of every complete blob under ``location`` (temporary names excluded).

    On local disk that includes the blobs in segment files (their slot heads are read).
    """
    if location.is_local:
        if not os.path.isdir(location.root):
            return set()
        return {UUID(hex=blob.key) for blob in list_location(location).blobs}
    fs = location.fs
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache()
    keys: set[UUID] = set()
    for path in fs.find(location.root):
        found = _BLOB.search(str(path))
        if found and found.group(2).startswith(found.group(1)):
            keys.add(UUID(hex=found.group(2)))
    return keys


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ``predicate()`` holds, polling, or fail naming ``what`` after ``timeout`` s.

    This waits for a condition (with a deadline), never for a fixed time.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        pause.wait(0.002)


def join_all(threads: list[threading.Thread], timeout: float) -> None:
    """Join ``threads``; if any is still alive after ``timeout`` s, dump stacks and fail."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [thread for thread in threads if thread.is_alive()]
    if stuck:
        raise AssertionError(
            f"deadlock: {len(stuck)} thread(s) still running after {timeout} s\n" + stacks()
        )


def stacks() -> str:
    """Return the current stack of every thread of this process, as text."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f"--- thread {names.get(ident, ident)} ---\n")
        parts.extend(traceback.format_stack(frame))
    return "".join(parts)
