"""Every error fb raises on purpose.

Each class also inherits the builtin exception it means, so code that already catches
``ValueError`` or ``OSError`` keeps working::

    FbError
    ├── CorruptBlobError(FbError, ValueError)     a blob fails its header or checksum check
    ├── CodecError(FbError, ValueError)           a codec cannot encode/decode, or codecs differ
    ├── InvalidKeyError(FbError, ValueError)      a key that is not a UUID
    ├── ForeignLocationError(FbError, ValueError) a persist location fb does not own
    ├── PluginNotFoundError(FbError, LookupError) an unknown codec or backend name
    ├── BlobNotFoundError(FbError, FileNotFoundError)  a blob that should exist does not
    ├── StoreClosedError(FbError, RuntimeError)   the BackingStore was closed
    ├── HandleClosedError(FbError, RuntimeError)  the Fb handle was closed
    ├── StoreLockedError(FbError, RuntimeError)   another live store owns the cache directory
    ├── GuardConflictError(FbError, RuntimeError) a guard that this thread's own guard blocks
    ├── GuardTimeoutError(FbError, TimeoutError)  a guard not had within ``timeout``
    ├── NotPicklableError(FbError, TypeError)     a handle, guard, pool or store was pickled
    └── UnsafeLocationError(FbError, PermissionError)  a directory or file fb must not trust

Errors raised by storage itself (disk full, permission denied) pass through as the
``OSError`` subclass they are, with the path in the message.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

__all__ = [
    "BlobNotFoundError",
    "CodecError",
    "CorruptBlobError",
    "FbError",
    "ForeignLocationError",
    "GuardConflictError",
    "GuardTimeoutError",
    "HandleClosedError",
    "InvalidKeyError",
    "NotPicklableError",
    "PluginNotFoundError",
    "StoreClosedError",
    "StoreLockedError",
    "UnsafeLocationError",
]


class FbError(Exception):
    """Root of every error fb raises on purpose."""


class CorruptBlobError(FbError, ValueError):
    """A blob failed its integrity check: bad magic, truncated, or a checksum mismatch.

    Attributes:
        key: the blob's key, when known.
        path: where the blob lives.
        source: for a registered item, the persisted blob its cache copy came from.
        reason: the message without the key, path and source.
    """

    def __init__(
        self,
        message: str,
        *,
        key: UUID | None = None,
        path: str | None = None,
        source: str | None = None,
    ) -> None:
        self.key = key
        self.path = path
        self.source = source
        self.reason = message
        where = []
        if key is not None:
            where.append(f"key {key.hex}")
        if path is not None:
            where.append(f"at {path}")
        if source is not None:
            where.append(f"registered from {source}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


class CodecError(FbError, ValueError):
    """A codec could not encode or decode a value, or a blob was written by another codec.

    Attributes:
        codec: the name of the codec involved.
        key: the blob's key, when known.
        path: where the blob lives, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        codec: str | None = None,
        key: UUID | None = None,
        path: str | None = None,
    ) -> None:
        self.codec = codec
        self.key = key
        self.path = path
        where = []
        if codec is not None:
            where.append(f"codec {codec!r}")
        if key is not None:
            where.append(f"key {key.hex}")
        if path is not None:
            where.append(f"at {path}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


class InvalidKeyError(FbError, ValueError):
    """A key that is neither a ``uuid.UUID`` nor 32 hexadecimal digits."""


class ForeignLocationError(FbError, ValueError):
    """A persist location that is not fb's: another marker, a cache, or a directory in use."""


class PluginNotFoundError(FbError, LookupError):
    """An unknown codec or backend name; the message lists what is available.

    Attributes:
        name: the name that was asked for.
        available: the names that are registered.
    """

    def __init__(self, kind: str, name: str, available: Iterable[str], hint: str = "") -> None:
        self.name = name
        self.available = tuple(sorted(available))
        listing = ", ".join(self.available) or "none"
        message = f"unknown {kind} {name!r}; available: {listing}"
        if hint:
            message = f"{message}. {hint}"
        super().__init__(message)

    def __str__(self) -> str:
        # LookupError's str() would show the repr of the args tuple.
        return str(self.args[0])


class BlobNotFoundError(FbError, FileNotFoundError):
    """A blob that a handle refers to is missing from storage."""


class StoreClosedError(FbError, RuntimeError):
    """The BackingStore was closed; no further storage work is possible."""


class HandleClosedError(FbError, RuntimeError):
    """The Fb handle was closed; its value is gone."""


class StoreLockedError(FbError, RuntimeError):
    """Another live store (in this or another process) owns the cache directory."""


class GuardConflictError(FbError, RuntimeError):
    """A guard the calling thread (or task) can never get, because its own guard blocks it.

    Asking for a write guard of an item while holding one of its read guards, or for any
    guard of an item while holding its write guard, would wait for oneself forever.
    """


class GuardTimeoutError(FbError, TimeoutError):
    """A guard could not be had within the ``timeout`` given to ``load`` or ``load_mut``."""


class NotPicklableError(FbError, TypeError):
    """A handle, guard, pool or store was pickled: they hold threads, locks and live state.

    Pickle the value instead, or persist the item and register its key in the other process.
    """


class UnsafeLocationError(FbError, PermissionError):
    """A directory or file fb refuses to use: it could let someone else redirect fb's I/O.

    Raised for a cache directory that another user owns or that group or others can write
    (or one inside such a directory), and for a symbolic link or other non-regular,
    non-directory entry where fb expects its own lock file or shard directory. The message
    names the path and the reason; nothing was created, changed or deleted.
    """
