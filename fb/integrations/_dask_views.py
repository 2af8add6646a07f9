"""Views of an FbSpillBuffer for distributed: its keys in memory or on storage, spilled bytes."""

from __future__ import annotations

from collections.abc import Iterator, Set
from typing import TYPE_CHECKING, NamedTuple

from dask.typing import Key

if TYPE_CHECKING:
    from ._dask_buffer import FbSpillBuffer

__all__ = ["KeyView", "SpilledSize"]


class SpilledSize(NamedTuple):
    """Bytes spilled out of memory now, as distributed's ``SpillBuffer.spilled_total``.

    Attributes:
        memory: the ``sizeof`` total of the values that are on storage only.
        disk: the size of their blobs on storage, as written (header and checksum
            included); a value whose blob this pool did not write counts its ``sizeof``.
    """

    memory: int
    disk: int


class KeyView(Set[Key]):
    """A live view of the keys whose values are in memory (or only on storage).

    What `FbSpillBuffer.fast` and `FbSpillBuffer.slow` return: distributed tests ``fast``
    for emptiness before each ``evict``, and counts ``slow`` for its metrics.

    Notes:
        Thread-safe; no I/O. Each call looks at a snapshot of the buffer's handles.
    """

    __slots__ = ("_buffer", "_resident")

    def __init__(self, buffer: FbSpillBuffer, *, resident: bool) -> None:
        self._buffer = buffer
        self._resident = resident

    def _keys(self) -> list[Key]:
        return [
            key
            for key, handle in self._buffer._snapshot()
            if handle.resident is self._resident and not handle.closed
        ]

    def __contains__(self, key: object) -> bool:
        handle = self._buffer._handle(key)
        return handle is not None and handle.resident is self._resident

    def __iter__(self) -> Iterator[Key]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __bool__(self) -> bool:
        return any(h.resident is self._resident for _, h in self._buffer._snapshot())

    def __repr__(self) -> str:
        return f"<{'fast' if self._resident else 'slow'} keys={len(self)}>"
