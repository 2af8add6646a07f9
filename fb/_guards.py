"""The guards that pin a handle's value, and what ``aload``/``aload_mut`` return."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import _janitor
from ._entry import getter, set_value
from .exceptions import NotPicklableError

if TYPE_CHECKING:
    from ._handle import Fb

__all__ = ["Acquisition", "ReadGuard", "WriteGuard", "_Droppable", "read_guard"]

T = TypeVar("T")
G = TypeVar("G", bound="ReadGuard[Any] | WriteGuard[Any]")


class Acquisition(Generic[G]):
    """What `Fb.aload` and `Fb.aload_mut` return: awaitable, and an async context manager.

    ``guard = await handle.aload()`` gives the guard itself (release it yourself, or use it
    in a ``with`` block); ``async with handle.aload() as value:`` enters to what the guard
    enters to (the value for a read guard, the guard for a write guard) and releases it on
    exit. Use it once.

    Notes:
        Not thread-safe: it belongs to the task that awaits it. Waiting never blocks the
        event loop.
    """

    __slots__ = ("_factory", "_guard")

    def __init__(self, factory: Callable[[], Awaitable[G]]) -> None:
        self._factory = factory
        self._guard: G | None = None

    def __await__(self) -> Generator[Any, None, G]:
        return self._factory().__await__()

    async def __aenter__(self) -> Any:
        self._guard = guard = await self._factory()
        return guard.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._guard is not None:
            self._guard.release()


def _released() -> Any:
    raise RuntimeError("the read guard was released")


class ReadGuard(Generic[T]):
    """Pins a value in memory while held; ``with`` enters to the value itself.

    Release it with ``with``, `release`, or by dropping it (then the release is deferred to
    a background thread). An item pushed out of the budget while pinned is re-offered for
    eviction when its last guard goes.

    Notes:
        A guard is meant for one thread or task; the value itself must not be mutated
        through a read guard (use `Fb.load_mut`).
    """

    # The hit path builds a guard per ``with handle.load()``, so what it costs is counted
    # in instructions (docs/performance.md). No __init__: ``_Droppable()`` then costs no
    # Python frame; `read_guard` (and Fb.load, inline) set the slots. ``__enter__`` is a
    # slot, not a method: it holds a C callable that returns the value (fb._entry.getter),
    # which ``with`` calls without a Python frame; once released it holds `_released`.
    # ``_owner`` holds the pin (see fb._entry.owner).
    __slots__ = ("__enter__", "_handle", "_owner")

    _handle: Fb[T]
    _owner: object

    if TYPE_CHECKING:  # what a type checker sees of the slot

        def __enter__(self) -> T: ...

    def __repr__(self) -> str:
        state = "released" if self.__enter__ is _released else "held"
        return f"<ReadGuard key={self._handle.key.hex} {state}>"

    @property
    def value(self) -> T:
        """The value; raises RuntimeError after `release`."""
        return self.__enter__()

    def release(self) -> None:
        """Unpin the value. Idempotent."""
        if self.__enter__ is not _released:
            self.__class__ = ReadGuard  # a _Droppable is never released (see there)
            self.__enter__ = _released  # type: ignore[method-assign]
            handle = self._handle
            handle._pool._release(handle._entry, False, self._owner)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.__enter__ is not _released:
            self.__enter__ = _released  # type: ignore[method-assign]
            entry = self._handle._entry
            # Lock-free: unpin (one atomic list remove), then read the gate; a shut gate
            # means someone waits for the pins to go (see fb._entry.Entry).
            entry.pins.remove(self._owner)
            if not entry.fast:
                self._handle._pool._unpinned(entry)

    async def __aenter__(self) -> T:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __reduce__(self) -> Any:
        raise _guard_pickled(self)


class _Droppable(ReadGuard[T]):
    """A read guard that dropping releases (in the background): what `Fb.load` returns.

    Every release (``__exit__``, `release`) turns it into a plain `ReadGuard` first, so the
    common ``with handle.load()`` pays for no ``__del__`` call when the guard dies, and a
    `_Droppable` always holds its pin.
    """

    __slots__ = ()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # ReadGuard.__exit__, inline (a call would cost a frame), after the class switch;
        # a _Droppable holds its pin, so the check that it was not released goes too.
        self.__class__ = ReadGuard  # type: ignore[assignment]
        self.__enter__ = _released  # type: ignore[method-assign]
        entry = self._handle._entry
        entry.pins.remove(self._owner)
        if not entry.fast:
            self._handle._pool._unpinned(entry)

    def __del__(self) -> None:
        self.__enter__ = _released  # type: ignore[method-assign]
        handle = self._handle
        _janitor.put(functools.partial(handle._pool._release, handle._entry, False, self._owner))


def read_guard(handle: Fb[T], value: T, owner: object) -> ReadGuard[T]:
    """A read guard of ``handle`` holding ``value``, pinned by ``owner``."""
    guard: ReadGuard[T] = _Droppable()
    guard.__enter__ = getter(value)  # type: ignore[method-assign]
    guard._handle = handle
    guard._owner = owner
    return guard


class WriteGuard(Generic[T]):
    """Exclusive access to a value: read, mutate, or replace it through `value`.

    ``with handle.load_mut() as guard:`` enters to the guard. On release the value is
    measured again for the byte budget and, being new, has no blob until it is written.

    Notes:
        A guard is meant for one thread or task.
    """

    __slots__ = ("_handle", "_released")

    def __init__(self, handle: Fb[T]) -> None:
        self._handle = handle
        self._released = False

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"<WriteGuard key={self._handle.key.hex} {state}>"

    @property
    def value(self) -> T:
        """The value; assign to replace it. Raises RuntimeError after `release`."""
        if self._released:
            raise RuntimeError("the write guard was released")
        return self._handle._entry.value  # type: ignore[no-any-return]

    @value.setter
    def value(self, new: T) -> None:
        if self._released:
            raise RuntimeError("the write guard was released")
        set_value(self._handle._entry, new)

    def release(self) -> None:
        """Give the value back to the pool. Idempotent."""
        if not self._released:
            self._released = True
            handle = self._handle
            handle._pool._release(handle._entry, True)

    def __enter__(self) -> WriteGuard[T]:
        if self._released:
            raise RuntimeError("the write guard was released")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> WriteGuard[T]:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __reduce__(self) -> Any:
        raise _guard_pickled(self)

    def __del__(self) -> None:
        if not self._released:
            self._released = True
            handle = self._handle
            _janitor.put(functools.partial(handle._pool._release, handle._entry, True))


def _guard_pickled(guard: ReadGuard[Any] | WriteGuard[Any]) -> NotPicklableError:
    return NotPicklableError(
        f"a guard cannot be pickled ({guard!r}): it pins a value in this process. Pickle "
        "the value instead (guard.value)"
    )
