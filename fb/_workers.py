"""The worker side of a `BackingStore`: its threads, task accounting, errors, and fork().

`BackingStore` (in ``_store.py``) inherits these steps and keeps the methods built on them
(the internal `_submit_task`, `_spawn` and `_report`, the public `finished`). Here are the
two thread pools, made on first use (the store's workers for I/O; the spawner for work that
waits on other work), the count of
tasks that `finished` waits for, the background errors it raises, and what a fork does to
every live store: its lock is held across ``fork()``, and a child rebuilds its locks and
threads and never deletes the blobs it inherited.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from ._store import BackingStore

__all__ = ["Workers"]

R = TypeVar("R")
P = ParamSpec("P")

_log = logging.getLogger("fb")

_STRIPES = 64

_STORES: weakref.WeakSet[BackingStore[Any]] = weakref.WeakSet()


_FORKING: list[BackingStore[Any]] = []
"""The stores whose locks `_before_fork` took, held strongly until the after-fork step (a
store collected in between would keep its lock held: see ``_core._FORKING``)."""


def _before_fork() -> None:
    # Hold every store's lock across fork() so no child inherits one mid-update.
    _FORKING[:] = list(_STORES)
    for store in _FORKING:
        store._lock.acquire()


def _after_fork_in_parent() -> None:
    stores, _FORKING[:] = list(_FORKING), []
    for store in stores:
        with contextlib.suppress(RuntimeError):
            store._lock.release()


def _after_fork_in_child() -> None:
    stores, _FORKING[:] = list(_FORKING), []
    for store in stores:
        store._lock = threading.Lock()
        store._idle = threading.Condition(store._lock)
        store._tasks = 0  # the parent's tasks do not run in the child
        store._idle_waiters = []
        # Blobs referenced at fork time belong to the parent too: the child never deletes
        # them, whatever its handles do; blobs it writes itself it deletes as usual.
        store._inherited = frozenset(store._refs)
        store._after_fork()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


class Workers:
    """The task and error steps of `BackingStore`, and the state they share with it."""

    # The state is declared as attrs slots on BackingStore; this base only names it. An
    # empty __slots__ keeps a store's instances without a __dict__ (mypy would read it as
    # "no attributes at all", hence hidden from it).
    if not TYPE_CHECKING:
        __slots__ = ()

    max_workers: int
    on_error: Callable[[BaseException], object] | None
    _lock: threading.Lock
    _idle: threading.Condition
    _tasks: int
    _idle_waiters: list[Future[None]]
    _errors: list[BaseException]
    _executor: ThreadPoolExecutor | None
    _spawner: ThreadPoolExecutor | None
    _stripes: tuple[threading.Lock, ...]
    _pid: int

    if TYPE_CHECKING:  # a step of BackingStore these use

        def _check_open(self) -> None: ...

    def _after_fork(self) -> None:
        # A child process after fork inherits no threads and possibly held locks. No thread
        # is started here: this runs inside the fork handlers, and a janitor started now
        # could close a handle of a pool whose lock the pools' own handler (which runs
        # later) has not replaced yet, and wait on it forever. The janitor starts at the
        # child's next flush (finished, close) or new store.
        self._pid = os.getpid()
        self._executor = self._spawner = None
        self._stripes = tuple(threading.Lock() for _ in range(_STRIPES))

    def _get_executor(self) -> ThreadPoolExecutor:
        if self._pid != os.getpid():
            self._after_fork()
        executor = self._executor
        if executor is None:
            executor = self._executor = ThreadPoolExecutor(
                max_workers=self.max_workers, thread_name_prefix="fb-store"
            )
        return executor

    def _get_spawner(self) -> ThreadPoolExecutor:
        if self._pid != os.getpid():
            self._after_fork()
        spawner = self._spawner
        if spawner is None:
            # Composite operations (spawn_persist, spawn_write_now) may wait for work that
            # needs a store worker; they run here so they never occupy one.
            spawner = self._spawner = ThreadPoolExecutor(
                max_workers=max(8, 2 * self.max_workers), thread_name_prefix="fb-spawn"
            )
        return spawner

    def _raise_errors(self) -> None:
        with self._lock:
            errors, self._errors = self._errors, []
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise BaseExceptionGroup(f"{len(errors)} background errors in {self!r}", errors)

    def _submit(
        self,
        pool: Callable[[], ThreadPoolExecutor],
        collect: bool,
        fn: Callable[P, R],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Future[R]:
        """Run ``fn`` on the thread pool ``pool()`` returns, as a task `finished` waits for.

        ``collect``: an exception ``fn`` raises is also collected for `finished`.
        """
        with self._lock:
            self._check_open()
            self._tasks += 1
        try:
            return pool().submit(self._run_task, collect, fn, *args, **kwargs)
        except BaseException:
            self._task_done()
            raise

    def _run_task(
        self, collect: bool, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            if collect:
                self._collect(exc)
            raise
        finally:
            self._task_done()

    def _task_done(self) -> None:
        waiters: list[Future[None]] = []
        with self._lock:
            self._tasks -= 1
            if not self._tasks:
                self._idle.notify_all()
                waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            waiter.set_result(None)

    def _collect(self, exc: BaseException) -> None:
        """Record a background error and tell ``on_error``; never raises."""
        with self._lock:
            self._errors.append(exc)
        _log.error("fb: background error: %s", exc, exc_info=exc)
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                _log.exception("fb: on_error callback failed")
