"""Closing, when the interpreter exits, the stores that a program left open.

A script that forgets `BackingStore.close` would leave its cache blobs on disk until the next
store sweeps the directory (a ``ResourceWarning`` says so only under ``-X dev``). An
``atexit`` hook, registered when the first store is made, closes every store still open:
their cache blobs are deleted, persisted copies elsewhere are never touched. It holds the
stores weakly, and closes only those made in the exiting process: a forked child that exits
normally must not delete blobs its parent still uses.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._store import BackingStore

__all__ = ["EXIT_TIMEOUT", "close_all", "track"]

_log = logging.getLogger("fb")

EXIT_TIMEOUT = 10.0
"""Seconds the exit hook waits, for all stores together, for background work to end."""

_OPEN: weakref.WeakKeyDictionary[BackingStore[Any], int] = weakref.WeakKeyDictionary()
"""Every store not yet collected, with the id of the process that made it."""

_registered = False


def track(store: BackingStore[Any]) -> None:
    """Close ``store`` at exit if it is still open then (and this process made it)."""
    global _registered  # noqa: PLW0603 - one hook per process, registered on first use
    _OPEN[store] = os.getpid()
    if not _registered:
        # Two threads racing here register the hook twice: harmless, close is idempotent.
        _registered = True
        atexit.register(_at_exit)


def _at_exit() -> None:
    pid = os.getpid()
    close_all([store for store, made in list(_OPEN.items()) if made == pid], EXIT_TIMEOUT)


def close_all(stores: Iterable[BackingStore[Any]], timeout: float) -> None:
    """Close each open store of ``stores`` once its background work ended; never raises.

    The work of all stores together may take ``timeout`` seconds; a store still busy then
    is left open, with a warning on the ``fb`` logger (its blobs stay until the next store
    on its directory sweeps them). Errors are logged: nobody is left to raise them to.
    """
    deadline = time.monotonic() + timeout
    for store in stores:
        if store.closed:
            continue
        error: Exception | None = None
        try:
            store.finished(max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # a TimeoutError, or background errors finished() raised
            error = exc
        if store.pending_tasks:
            _log.warning(
                "fb: at exit, %r still had background work after %s s: left open, its "
                "cache blobs stay until the next store on its directory sweeps them",
                store,
                timeout,
            )
            continue
        if error is not None:
            _log.warning("fb: at exit, %r: %s", store, error)
        try:
            store.close()
        except Exception as exc:
            _log.warning("fb: at exit, closing %r failed: %s", store, exc)
