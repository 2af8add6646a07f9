"""What the streaming codecs share: how to cut a big value into pieces, and file adapters."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import IO, Any

__all__ = ["CHUNK", "READ", "Prepend", "RawReader", "big_leaf", "big_size", "read_into", "split"]

CHUNK = 1 << 20
"""Pieces are written in about this many bytes; a value this large is *big*."""

READ = 1 << 16
"""Reads from a payload ask for this many bytes: small payloads are common, and a read
buffer is allocated on every load."""

_WALK_AVERAGE = CHUNK // 16
"""Look at the children of a big container one by one when they average this many bytes."""

_LEAVES = (bytes, bytearray, memoryview, str)
_SAMPLE = 16
_DEPTH = 3


def big_leaf(value: Any) -> bool:
    """Return whether ``value`` is a bytes-like or ``str`` of at least `CHUNK` units."""
    return isinstance(value, _LEAVES) and len(value) >= CHUNK


def estimate(value: Any, depth: int = 0) -> int:
    """Estimate how many bytes ``value`` takes once encoded, cheaply.

    Bytes-like and str count their length, scalars 8, and a list, tuple or dict the sum
    over its first `_SAMPLE` children (evenly spaced ones for a list or tuple) scaled to
    all of them, down to a depth of `_DEPTH`: at most a few thousand steps, however large
    the value.
    """
    if isinstance(value, _LEAVES):
        return len(value)
    if depth >= _DEPTH or not isinstance(value, list | tuple | dict):
        return 8
    count = len(value)
    if not count:
        return 1
    if isinstance(value, dict):
        pairs = list(islice(value.items(), _SAMPLE))
        measured = sum(estimate(key, depth + 1) + estimate(item, depth + 1) for key, item in pairs)
        taken = len(pairs)
    else:
        picked = value[:: max(1, count // _SAMPLE)][:_SAMPLE]
        measured = sum(estimate(item, depth + 1) for item in picked)
        taken = len(picked)
    return 1 + measured * count // taken


def big_size(value: Any) -> int:
    """Return the `estimate` of a list, tuple or dict that is `CHUNK` bytes or more, else 0."""
    if isinstance(value, list | tuple | dict):
        size = estimate(value)
        if size >= CHUNK:
            return size
    return 0


def split(values: Iterable[Any], count: int, size: int) -> Iterator[tuple[int, int, bool]]:
    """Cut the children of a big container into runs to encode in one call, and singles.

    Yields ``(start, stop, is_run)`` in order, covering every child: a run of about `CHUNK`
    bytes to encode in one library call, or a single child that needs a look of its own.
    Children are singles when they average `_WALK_AVERAGE` bytes or more (each may be
    big), or when they are a big bytes-like or str (written straight from its buffer). A
    container of many small records thus takes a few library calls, not one per record.

    Args:
        values: the children (``dict.values()`` for a dict).
        count: how many there are.
        size: the container's estimated size.
    """
    if size // max(count, 1) >= _WALK_AVERAGE:
        for index in range(count):
            yield index, index + 1, False
        return
    limit = max(1, CHUNK * count // max(size, 1))
    # Only a bytes-like or str child can be a big leaf; most containers of records hold
    # none, which set(map(type, ...)) finds without a Python-level loop.
    big: list[int] = []
    if any(issubclass(kind, _LEAVES) for kind in set(map(type, values))):
        big = [
            i
            for i, value in enumerate(values)
            if isinstance(value, _LEAVES) and len(value) >= CHUNK
        ]
    start = 0
    for index in [*big, count]:
        for run in range(start, index, limit):
            yield run, min(run + limit, index), True
        if index < count:
            yield index, index + 1, False
        start = index + 1


def read_into(file: IO[bytes], view: memoryview) -> int:
    """Fill ``view`` from ``file``; return how many bytes arrived (short only at the end)."""
    readinto: Callable[[memoryview], int | None] | None = getattr(file, "readinto", None)
    filled = 0
    total = len(view)
    while filled < total:
        if readinto is not None:
            got = readinto(view[filled:]) or 0
        else:
            data = file.read(min(total - filled, CHUNK))
            got = len(data)
            view[filled : filled + got] = data
        if not got:
            break
        filled += got
    return filled


class Prepend(io.RawIOBase):
    """A read-only file that yields ``head`` and then the rest of ``file``.

    Lets a codec look at the first bytes of its payload and still hand the whole payload to
    a library that reads it from the start.
    """

    def __init__(self, head: bytes, file: IO[bytes]) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._file = file
        self.count = 0
        """How many bytes were handed out."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            got = min(len(view), len(self._head))
            view[:got] = self._head[:got]
            self._head = self._head[got:]
        else:
            got = read_into(self._file, view[: min(len(view), CHUNK)])
        self.count += got
        return got


class RawReader(io.RawIOBase):
    """Adapts a decompressing reader with ``readinto`` to `io.RawIOBase`.

    Wrapped in `io.BufferedReader`, it gives an inner codec every method of a binary file
    (``read``, ``readinto`` that fills, ``readline``, ``peek``), as pickle wants, and large
    reads go straight into the caller's buffer.
    """

    def __init__(self, readinto: Callable[[memoryview], int]) -> None:
        super().__init__()
        self._readinto = readinto

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._readinto(memoryview(buffer).cast("B"))
