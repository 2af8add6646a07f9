"""A write-only sink over a file descriptor that gathers pieces into few system calls."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["FdSink"]

GATHER = 1 << 20
"""Pieces are gathered up to this many bytes before a system call writes them."""
SMALL_PIECE = 64 << 10
"""Pieces below this size are copied into a gathering buffer; larger ones are not copied."""
MAX_PARTS = 512
"""At most this many parts go to one ``writev`` (the system's limit is at least 1024)."""


class FdSink:
    """Write what a codec produces to ``fd`` in as few ``write``/``writev`` calls as it can.

    A blob of up to `GATHER` bytes takes one ``writev`` at `close`; a larger one goes out in
    pieces of about that size. Immutable ``bytes`` are kept by reference until written;
    a small piece of any other buffer is copied (its owner may reuse it as soon as
    ``write`` returns), and a large one is written at once, without a copy. Each system
    call releases the GIL once, so a write-back thread that competes with a busy caller
    for it waits fewer times per blob.
    """

    __slots__ = ("_buffer", "_fd", "_parts", "_pending")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._parts: list[Any] = []
        self._buffer = bytearray()
        self._pending = 0

    def write(self, data: Any) -> int:
        view = data if isinstance(data, memoryview) else memoryview(data)
        size = view.nbytes
        if size < SMALL_PIECE:
            self._buffer += view
        elif isinstance(view.obj, bytes) and view.c_contiguous:
            self._push_buffer()
            self._parts.append(view)
        else:
            self._push_buffer()
            self._parts.append(view)
            self._pending += size
            self._flush()  # the owner may change these bytes once we return
            return size
        self._pending += size
        if self._pending >= GATHER or len(self._parts) >= MAX_PARTS:
            self._push_buffer()
            self._flush()
        return size

    def close(self) -> None:
        """Write everything still gathered (the descriptor stays open)."""
        self._push_buffer()
        self._flush()

    def _push_buffer(self) -> None:
        if self._buffer:
            self._parts.append(self._buffer)
            self._buffer = bytearray()

    def _flush(self) -> None:
        parts = self._parts
        if not parts:
            return
        left = self._pending  # every byte written since the last flush, buffer included
        self._parts = []
        self._pending = 0
        written = os.writev(self._fd, parts)
        while written < left:  # a short write: carry on from where it stopped
            left -= written
            rest: list[Any] = []
            for part in parts:
                view = memoryview(part).cast("B")
                if written >= view.nbytes:
                    written -= view.nbytes
                    continue
                rest.append(view[written:])
                written = 0
            parts = rest
            written = os.writev(self._fd, parts)
