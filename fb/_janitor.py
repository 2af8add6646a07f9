"""A process-wide thread that runs work handed over from finalizers.

Finalizers (``weakref.finalize`` callbacks, ``__del__``) can run on any thread at any
allocation, including while that thread holds one of fb's locks. They must not take a lock
or submit to an executor (which takes one). They only ``put`` a callable into a
``queue.SimpleQueue``, whose ``put`` is documented as reentrant and safe in destructors; this
thread takes the callables out and runs them with no lock held.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

__all__ = ["flush", "is_janitor", "put"]

_log = logging.getLogger("fb")

_queue: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
_thread: threading.Thread | None = None
_start_lock = threading.Lock()


def _run() -> None:
    while True:
        job = _queue.get()
        try:
            job()
        except BaseException:  # a finalizer's work has nobody to raise to: log it
            _log.exception("fb: deferred clean-up failed")


def _ensure_thread() -> None:
    global _thread  # noqa: PLW0603 - one janitor per process, rebuilt after fork
    if _thread is not None and _thread.is_alive():
        return
    with _start_lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="fb-janitor", daemon=True)
            _thread.start()


def put(job: Callable[[], object]) -> None:
    """Hand ``job`` to the janitor thread. Safe to call from a finalizer."""
    # Starting a thread takes locks, so a finalizer only queues; `start` runs from ordinary
    # contexts (every BackingStore starts it) and `flush` starts it too.
    _queue.put(job)


def flush() -> Future[None]:
    """Return a future that completes once every job queued before this call has run."""
    _ensure_thread()
    done: Future[None] = Future()
    _queue.put(lambda: done.set_result(None))
    return done


def is_janitor() -> bool:
    """Whether the calling thread is the janitor (which must never wait for a `flush`)."""
    return _thread is not None and threading.current_thread() is _thread


def _after_fork_in_child() -> None:
    global _queue, _thread, _start_lock  # noqa: PLW0603 - the parent's thread is gone in a child
    _queue = queue.SimpleQueue()
    _thread = None
    _start_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def start() -> None:
    """Start the janitor thread from an ordinary (non-finalizer) context."""
    _ensure_thread()
