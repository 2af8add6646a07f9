"""The async twins of `fb.Shelf`'s blocking methods: a mixin, to keep ``_shelf.py`` short."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._guards import Acquisition, ReadGuard
from ._shelf_index import check_name
from .exceptions import BlobNotFoundError, HandleClosedError

if TYPE_CHECKING:
    from ._handle import Fb

__all__ = ["AsyncTwins"]

T = TypeVar("T")
_MISSING: Any = object()
"""The default of ``expire``: the shelf's own (None means never)."""
RETRIES = 64
"""How often a get re-reads a record whose blob was replaced between reading and loading."""


class AsyncTwins(Generic[T]):
    """``aload``, ``aget``, ``aset``, ``adelete``, ``acontains``, ``async_`` and ``aclose``.

    Each runs its blocking twin's storage work on a thread, never blocking the event loop.
    """

    if TYPE_CHECKING:

        def _lookup(self, name: str) -> tuple[Fb[T], Any]: ...
        def _stale(self, name: str, handle: Fb[T]) -> None: ...
        def set(self, name: str, value: T, *, expire: float | None = ...) -> None: ...
        def __delitem__(self, name: str) -> None: ...
        def __contains__(self, name: object) -> bool: ...
        def sync(self) -> None: ...
        def close(self) -> None: ...

    def aload(self, name: str) -> Acquisition[ReadGuard[T]]:
        """Async twin of `load`: ``async with shelf.aload(name) as value:``."""
        check_name(name)
        return Acquisition(lambda: self._aload(name))

    async def _aload(self, name: str) -> ReadGuard[T]:
        for _ in range(RETRIES):
            handle, _ = await asyncio.to_thread(self._lookup, name)
            try:
                return await handle.aload()
            except HandleClosedError:
                continue
            except BlobNotFoundError:
                self._stale(name, handle)  # replaced or deleted meanwhile: look again
        raise KeyError(name)

    async def aget(self, name: str, default: Any = None) -> Any:
        """Async twin of `get`."""
        try:
            async with self.aload(name) as value:
                return value
        except KeyError:
            return default

    async def aset(self, name: str, value: T, *, expire: float | None = _MISSING) -> None:
        """Async twin of `set`."""
        await asyncio.to_thread(self.set, name, value, expire=expire)

    async def adelete(self, name: str) -> None:
        """Async twin of ``del shelf[name]``."""
        await asyncio.to_thread(self.__delitem__, name)

    async def acontains(self, name: str) -> bool:
        """Async twin of ``name in shelf``."""
        return await asyncio.to_thread(self.__contains__, name)

    async def async_(self) -> None:
        """Async twin of `sync` (``async`` is a keyword)."""
        await asyncio.to_thread(self.sync)

    async def aclose(self) -> None:
        """Async twin of `close`."""
        await asyncio.to_thread(self.close)
