"""MsgpackCodec: compact binary MessagePack, with the ``msgpack`` library."""

from __future__ import annotations

import codecs
import struct
from itertools import islice
from typing import IO, Any

import attrs
import msgpack

from ._stream import CHUNK, READ, Prepend, big_leaf, big_size, split

__all__ = ["MsgpackCodec"]

# Type bytes of the MessagePack spec for bin and str with 8/16/32-bit lengths.
_BIN = {0xC4: ">B", 0xC5: ">H", 0xC6: ">I"}
_STR = {0xD9: ">B", 0xDA: ">H", 0xDB: ">I"}
_MAX_LENGTH = 2**32 - 1


def _head(kind: int, length: int) -> bytes:
    """The type byte and big-endian length of a bin (``kind`` 0xC4) or str (0xD9)."""
    if length > _MAX_LENGTH:
        raise ValueError(f"MessagePack cannot hold {length} bytes in one value (2**32 - 1 max)")
    if length < 0x100:
        return struct.pack(">BB", kind, length)
    if length < 0x10000:
        return struct.pack(">BH", kind + 1, length)
    return struct.pack(">BI", kind + 2, length)


@attrs.frozen
class MsgpackCodec:
    """Encodes None, bool, int, float, str, bytes, list and dict as MessagePack.

    MessagePack is compact, fast, read by many languages, and loading it never runs code.
    What it cannot say comes back changed: tuples come back as lists, and bytearray and
    memoryview as bytes. Integers must fit in 64 bits. Map keys may be any of these types
    that is hashable (msgpack's ``strict_map_key`` is off, so a dict with int keys loads).

    Streaming: a list, tuple or dict estimated at 1 MiB or more once encoded is written a
    run of about 1 MiB of elements at a time, and bytes-like or str values of 1 MiB or more
    in it straight from their own buffer; anything smaller is encoded in one call. The
    payload is plain MessagePack all the same, byte for byte what ``msgpack.packb`` writes.
    Loading reads the payload in 64 KiB pieces, building the value as they come. Bytes at
    the top level are read straight into place; a str, or bytes nested in a container, is
    held twice for a moment while it is decoded.

    Notes:
        Stateless and thread-safe: each call uses its own packer or unpacker.
    """

    @property
    def name(self) -> str:
        """``"msgpack"``."""
        return "msgpack"

    def dump(self, value: Any, file: IO[bytes]) -> None:
        """Write ``value`` as MessagePack to ``file``.

        Raises:
            TypeError: the value holds a type MessagePack cannot represent.
            OverflowError: an integer does not fit in 64 bits.
        """
        writer = _Writer(file)
        writer.value(value)
        writer.flush()

    def load(self, file: IO[bytes]) -> Any:
        """Read one MessagePack value from ``file``, which must hold nothing else.

        Raises:
            ValueError: the bytes are not exactly one MessagePack value.
        """
        first = file.read(1)
        if not first:
            raise ValueError("no MessagePack value: the payload is empty")
        kind = first[0]
        if kind in _BIN or kind in _STR:
            value: Any = _read_raw(file, kind)
            if file.read(1):
                raise ValueError("unexpected bytes after the MessagePack value")
            return value
        source = Prepend(first, file)
        unpacker = msgpack.Unpacker(
            source,
            read_size=READ,
            max_buffer_size=0,  # 2**32 - 1: the largest value MessagePack can describe
            strict_map_key=False,
        )
        try:
            value = unpacker.unpack()
        except msgpack.OutOfData as exc:
            raise ValueError("MessagePack value is truncated") from exc
        if unpacker.tell() != source.count or source.read(1):
            raise ValueError("unexpected bytes after the MessagePack value")
        return value

    def loads(self, data: memoryview) -> Any:
        """Decode one MessagePack value from a buffer that holds exactly what `dump` wrote.

        Optional fast path: a store that holds a whole blob in memory uses it instead of
        `load`, skipping the file-object layer and a copy.

        Raises:
            ValueError: the bytes are not exactly one MessagePack value.
        """
        if not data:
            raise ValueError("no MessagePack value: the payload is empty")
        return msgpack.unpackb(data, strict_map_key=False)


def _read_raw(file: IO[bytes], kind: int) -> bytes | str:
    """Read a top-level bin or str whose type byte was ``kind``, without a second copy."""
    fmt = _BIN.get(kind) or _STR[kind]
    size = struct.calcsize(fmt)
    head = file.read(size)
    if len(head) != size:
        raise ValueError("MessagePack value is truncated in its length")
    (length,) = struct.unpack(fmt, head)
    if kind in _BIN:
        data = file.read(length)
        if len(data) != length:
            raise ValueError(f"MessagePack value is truncated: {len(data)} of {length} bytes")
        return data
    # A slice at a time: the UTF-8 bytes of a long string are never held whole next to it.
    decoder = codecs.getincrementaldecoder("utf-8")()
    pieces: list[str] = []
    left = length
    while left:
        chunk = file.read(min(left, CHUNK))
        if not chunk:
            raise ValueError(f"MessagePack value is truncated: {length - left} of {length} bytes")
        pieces.append(decoder.decode(chunk))
        left -= len(chunk)
    pieces.append(decoder.decode(b"", final=True))
    return "".join(pieces)


class _Writer:
    """Writes MessagePack to ``file`` in pieces of about `CHUNK` bytes."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._packer = msgpack.Packer()
        self._parts: list[bytes | memoryview] = []
        self._size = 0

    def emit(self, data: bytes | memoryview) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            self._file.write(b"".join(self._parts))
            self._parts.clear()
            self._size = 0

    def value(self, value: Any) -> None:
        if big_leaf(value):
            self.leaf(value)
            return
        size = big_size(value)
        if not size:
            self.emit(self._packer.pack(value))
        elif isinstance(value, dict):
            self.map(value, size)
        else:
            self.array(value, size)

    def leaf(self, value: bytes | bytearray | memoryview | str) -> None:
        if isinstance(value, str):
            self.long_string(value)
            return
        view = memoryview(value).cast("B")  # refuses a non-contiguous buffer, as msgpack does
        self.emit(_head(0xC4, view.nbytes))
        self.flush()
        self._file.write(view)

    def long_string(self, text: str) -> None:
        # The length goes first, so a non-ASCII string is encoded twice, a slice at a time,
        # rather than held whole as UTF-8 next to itself.
        slices = range(0, len(text), CHUNK)
        if text.isascii():
            length = len(text)
        else:
            length = sum(len(text[i : i + CHUNK].encode("utf-8")) for i in slices)
        self.emit(_head(0xD9, length))
        for start in slices:
            self.emit(text[start : start + CHUNK].encode("utf-8"))

    def array(self, items: list[Any] | tuple[Any, ...], size: int) -> None:
        self.emit(self._packer.pack_array_header(len(items)))
        for start, stop, is_run in split(items, len(items), size):
            if is_run:
                # A run packed as one array, less that array's own header.
                packed = self._packer.pack(items[start:stop])
                self.emit(memoryview(packed)[_header_size(stop - start) :])
            else:
                self.value(items[start])

    def map(self, mapping: dict[Any, Any], size: int) -> None:
        self.emit(self._packer.pack_map_header(len(mapping)))
        pairs = iter(mapping.items())
        for start, stop, is_run in split(mapping.values(), len(mapping), size):
            if is_run:
                # dict() consumes the pairs as they come: no tuple is kept per entry.
                packed = self._packer.pack(dict(islice(pairs, stop - start)))
                self.emit(memoryview(packed)[_header_size(stop - start) :])
            else:
                key, item = next(pairs)
                self.emit(self._packer.pack(key))
                self.value(item)


def _header_size(count: int) -> int:
    """The size of the header of an array or map of ``count`` entries."""
    if count < 16:
        return 1
    return 3 if count < 0x10000 else 5
