"""The interfaces fb is built on.

They are structural (``typing.Protocol``): a plugin satisfies them by having the methods,
without importing fb. In prose we call them *interfaces*; "protocol" means a URL scheme in
the fsspec world.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Protocol, TypeVar, runtime_checkable
from uuid import UUID

if TYPE_CHECKING:
    from .backends import PreparedPath

__all__ = ["BackingStoreT", "BufferCodec", "Codec", "Strategy"]

T = TypeVar("T")


@runtime_checkable
class Codec(Protocol[T]):
    """Turns values into a byte stream and back.

    A codec streams: ``dump`` writes to a binary file object and ``load`` reads from one,
    so a large value is never held twice in memory. ``name`` is stable: it goes into every
    blob's header and a blob written by one codec is refused by another.

    Notes:
        A codec must be safe to call from several threads at once.
    """

    @property
    def name(self) -> str:
        """A short stable name, at most 255 bytes of UTF-8 (e.g. ``"pickle"``)."""
        ...

    def dump(self, value: T, file: IO[bytes]) -> None:
        """Write ``value`` to ``file``."""
        ...

    def load(self, file: IO[bytes]) -> T:
        """Read one value from ``file``, which holds exactly what ``dump`` wrote."""
        ...


@runtime_checkable
class BufferCodec(Codec[T], Protocol[T]):
    """A `Codec` that can also decode a payload held whole in memory (optional).

    A store that holds a whole verified blob in memory (up to 1 MiB) calls ``loads``
    instead of ``load``: no file-object layer, and often no copy. Declaring a codec as a
    ``BufferCodec`` lets mypy check the method's signature.
    """

    def loads(self, data: memoryview) -> T:
        """Read one value from ``data``, exactly what ``dump`` wrote.

        The value must not keep a reference to ``data``: the buffer may be reused.
        """
        ...


@runtime_checkable
class BackingStoreT(Protocol):
    """Low-level blob storage by key: the part of a backend that does not know ``T``.

    Notes:
        Every method may block on I/O; the `BackingStore` calls them from worker threads or
        from the caller's thread, never while it holds a lock. They must be thread-safe.
    """

    def delete(self, key: UUID) -> None:
        """Remove the blob stored under ``key``; a missing blob is not an error."""
        ...

    def close(self) -> None:
        """Release what the backend holds (locks, connections). Idempotent."""
        ...

    def scan(self, location: PreparedPath) -> tuple[set[UUID], list[str]]:
        """Return the keys persisted at ``location`` and the names there it does not own.

        Raises:
            FileNotFoundError: the location does not exist.
            ForeignLocationError: the location is this backend's own cache, or one it
                cannot persist to (`BackingStore.track_path` relies on this refusal).
        """
        ...

    def persist(self, key: UUID, location: PreparedPath) -> list[str]:
        """Place blob ``key`` at ``location``; return the paths a later `fsync` must sync.

        Idempotent; the blob becomes visible at ``location`` only complete.
        """
        ...

    def register(self, key: UUID, location: PreparedPath) -> bool:
        """Make blob ``key`` of ``location`` loadable from this backend; False if absent."""
        ...

    def delete_persisted(self, key: UUID, location: PreparedPath) -> list[str]:
        """Delete blob ``key`` from ``location``; return the paths to sync."""
        ...

    def fsync(self, location: PreparedPath, paths: set[str]) -> None:
        """Make ``paths`` at ``location`` durable (file and directory fsync)."""
        ...


@runtime_checkable
class Strategy(BackingStoreT, Protocol[T]):
    """A `BackingStoreT` that also knows how to store and load values of type ``T``."""

    def store(self, key: UUID, value: T) -> int:
        """Write ``value`` as the blob ``key``; return the number of bytes written.

        The blob must become visible only complete: a crash or an error leaves either no
        blob or the whole one.
        """
        ...

    def load(self, key: UUID) -> T:
        """Read the blob ``key`` back into a value."""
        ...
