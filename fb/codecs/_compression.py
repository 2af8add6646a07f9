"""Compression wrappers: `ZstdCodec` and `Lz4Codec` compress what another codec writes.

Small values take the libraries' one-shot calls, which cost far less per call than their
streams; large ones stream, so they are never held twice. Both write one standard frame, so
either reader takes what either writer made.

zstandard and lz4 are imported when a codec is built, not when this module is, so each
codec asks only for its own library.
"""

from __future__ import annotations

import importlib
import io
import struct
import sys
import threading
from collections.abc import Callable
from typing import IO, Any, cast

import attrs

from ..typing import Codec
from ._pickle_codec import PickleCodec
from ._registry import get_codec
from ._stream import CHUNK, READ, Prepend, RawReader

__all__ = ["Lz4Codec", "ZstdCodec"]

_HINT = "pip install 'file-backed[compression]'"

_SMALL = CHUNK
"""A value whose inner encoding stays within this many bytes is compressed in one call, and
a payload this small that says it holds at most this many bytes is decompressed in one."""

_LOCAL = threading.local()
"""Each thread's zstd (de)compressors, reused by the one-shot calls: building a context
costs about as much as compressing 64 KiB. One-shot calls finish before anything else runs
on their thread, so a nested codec cannot find one in use; streams build their own."""


def _require(module: str, codec: str) -> Any:
    # sys.modules first: every call needs the module, and importing even a loaded module
    # costs microseconds.
    loaded = sys.modules.get(module)
    if loaded is not None:
        return loaded
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{codec} needs {module}, which is not installed: {_HINT}") from exc


def _inner(spec: Codec[Any] | str) -> Codec[Any]:
    return get_codec(spec)


def _finish(reader: IO[bytes], wrapper: str) -> None:
    """Refuse decompressed data that the inner codec left unread."""
    if reader.read(1):
        raise ValueError(f"{wrapper}: unexpected data after the inner codec's value")


def _load_all(inner: Codec[Any], data: bytes, wrapper: str) -> Any:
    """Read one value from ``data`` with ``inner``, refusing data left after it."""
    reader = io.BytesIO(data)
    value = inner.load(reader)
    _finish(reader, wrapper)
    return value


def _read_head(file: IO[bytes], limit: int) -> bytes:
    """Read up to ``limit`` bytes of ``file``: fewer only when it ends first."""
    data = file.read(limit) or b""
    if not data or len(data) >= limit:
        return data
    parts = [data]
    total = len(data)
    while total < limit:
        more = file.read(limit - total)
        if not more:
            break
        parts.append(more)
        total += len(more)
    return b"".join(parts)


def _zstd_compressor(zstd: Any, level: int) -> Any:
    cache: dict[int, Any] | None = getattr(_LOCAL, "compressors", None)
    if cache is None:
        cache = _LOCAL.compressors = {}
    compressor = cache.get(level)
    if compressor is None:
        compressor = cache[level] = zstd.ZstdCompressor(level=level)
    return compressor


def _zstd_decompressor(zstd: Any) -> Any:
    decompressor = getattr(_LOCAL, "decompressor", None)
    if decompressor is None:
        decompressor = _LOCAL.decompressor = zstd.ZstdDecompressor()
    return decompressor


class _ViewReader(io.RawIOBase):
    """A read-only file over a buffer, without copying it as `io.BytesIO` would."""

    def __init__(self, data: Any) -> None:
        super().__init__()
        self._view = memoryview(data).cast("B")
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        got = min(len(view), len(self._view) - self._position)
        view[:got] = self._view[self._position : self._position + got]
        self._position += got
        return got


class _Spill(io.RawIOBase):
    """A writable file that holds what it gets in memory until that passes `_SMALL` bytes.

    Then it calls ``start`` for a streaming compressor's file, hands it what it held, and
    passes everything after straight on: a small value ends up in `held`, for a one-shot
    call, and a large one is never held whole.
    """

    def __init__(self, start: Callable[[], IO[bytes]]) -> None:
        super().__init__()
        self._start = start
        self.held = bytearray()
        self._sink: IO[bytes] | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = view.nbytes
        sink = self._sink
        if sink is None:
            if len(self.held) + size <= _SMALL:
                self.held += view
                return size
            sink = self._sink = self._start()
            if self.held:
                sink.write(self.held)
            self.held = bytearray()
        sink.write(view)
        return size


class _Slicer(io.RawIOBase):
    """A writable file that feeds ``compress`` pieces of about `CHUNK` bytes.

    Compressors return all their output for the input they get: slicing a large buffer (a
    memoryview, so nothing is copied) keeps each output piece small, and gathering small
    writes keeps the compressor's calls few. `drain` hands over what is still gathered.
    """

    def __init__(self, compress: Any, file: IO[bytes]) -> None:
        super().__init__()
        self._compress = compress
        self._file = file
        self._pending = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = view.nbytes
        if len(self._pending) + size < CHUNK:
            self._pending += view
            return size
        self.drain()
        for start in range(0, size, CHUNK):
            self._feed(view[start : start + CHUNK])
        return size

    def _feed(self, data: Any) -> None:
        out = self._compress(data)
        if out:
            self._file.write(out)

    def drain(self) -> None:
        """Compress what small writes left gathered."""
        if self._pending:
            self._feed(self._pending)
            self._pending = bytearray()


class _OneShotLoads:
    """``load``/``loads`` shared by the wrappers: one call for a small frame, else a stream.

    A subclass provides ``inner``, ``name``, ``_decompress`` (None: leave it to the stream)
    and ``_stream``.
    """

    __slots__ = ()

    inner: Codec[Any]

    @property
    def name(self) -> str:
        raise NotImplementedError

    def _decompress(self, data: Any) -> bytes | None:
        raise NotImplementedError

    def _stream(self, file: IO[bytes]) -> Any:
        raise NotImplementedError

    def load(self, file: IO[bytes]) -> Any:
        """Decompress ``file`` and read one value from it with the inner codec."""
        head = _read_head(file, _SMALL + 1)
        if len(head) <= _SMALL:
            data = self._decompress(head)
            if data is not None:
                return _load_all(self.inner, data, self.name)
            return self._stream(io.BytesIO(head))
        return self._stream(cast("IO[bytes]", Prepend(head, file)))

    def loads(self, data: memoryview) -> Any:
        """Read one value from a buffer that holds exactly what `dump` wrote.

        The fast path of a store that holds a whole blob in memory: the inner codec's own
        ``loads``, when it has one, gets the decompressed bytes.
        """
        view = memoryview(data).cast("B")
        if len(view) <= _SMALL:
            plain = self._decompress(view)
            if plain is not None:
                loads = getattr(self.inner, "loads", None)
                if loads is not None:
                    return loads(memoryview(plain))
                return _load_all(self.inner, plain, self.name)
        return self._stream(cast("IO[bytes]", _ViewReader(view)))


@attrs.frozen
class ZstdCodec(_OneShotLoads):
    """Compresses another codec's stream with Zstandard (good ratio, fast both ways).

    The name is ``"zstd:"`` followed by the inner codec's name (``"zstd:msgpack"``), so a
    blob written through one inner codec is refused by a wrapper around another.
    ``get_codec("zstd:msgpack")`` builds ``ZstdCodec("msgpack")``.

    Small values (the inner codec writes at most 1 MiB) are compressed in one call, with
    their size in the frame header, and such frames are decompressed in one call. Larger
    ones stream: the inner codec writes into a zstd stream writer that passes compressed
    pieces to the file, and reads from a stream reader that decompresses straight into the
    inner codec's buffers. Safety is the inner codec's: decompressing never runs code.

    Args:
        inner: the codec whose output is compressed, or its spec (default: pickle).
        level: the zstd compression level, from -131072 (fastest) to 22 (smallest); the
            level does not change the name, every level reads every other.

    Notes:
        Thread-safe when the inner codec is: each thread reuses its own one-shot
        (de)compressors, and each stream is built for its call.
    """

    inner: Codec[Any] = attrs.field(factory=PickleCodec, converter=_inner)
    level: int = attrs.field(
        default=3,
        kw_only=True,
        validator=[attrs.validators.ge(-(1 << 17)), attrs.validators.le(22)],
    )

    def __attrs_post_init__(self) -> None:
        _require("zstandard", "ZstdCodec")

    @property
    def name(self) -> str:
        """``"zstd:<inner name>"``."""
        return f"zstd:{self.inner.name}"

    def dump(self, value: Any, file: IO[bytes]) -> None:
        """Write ``value`` through the inner codec, compressed, to ``file``."""
        zstd = _require("zstandard", "ZstdCodec")
        writer: Any = None

        def start() -> IO[bytes]:
            nonlocal writer
            compressor = zstd.ZstdCompressor(level=self.level)
            writer = compressor.stream_writer(file, closefd=False)
            return cast("IO[bytes]", writer)

        spill = _Spill(start)
        self.inner.dump(value, cast("IO[bytes]", spill))
        if writer is None:
            file.write(_zstd_compressor(zstd, self.level).compress(spill.held))
        else:
            # Not a with-block: after a failure nothing more should reach the file.
            writer.flush(zstd.FLUSH_FRAME)

    def _decompress(self, data: Any) -> bytes | None:
        """Decompress a whole small payload in one call, or None to leave it to the stream.

        Only one frame that states a size of at most `_SMALL` bytes qualifies, which keeps
        memory bounded; anything else, errors included, goes the streaming way, which says
        what is wrong.
        """
        zstd = _require("zstandard", "ZstdCodec")
        try:
            size = zstd.frame_content_size(data)
            if not 0 <= size <= _SMALL:
                return None
            plain: bytes = _zstd_decompressor(zstd).decompress(data, allow_extra_data=False)
        except zstd.ZstdError:
            return None
        return plain

    def _stream(self, file: IO[bytes]) -> Any:
        zstd = _require("zstandard", "ZstdCodec")
        source = zstd.ZstdDecompressor().stream_reader(
            file, read_size=READ, read_across_frames=True, closefd=False
        )
        reader = io.BufferedReader(RawReader(source.readinto), buffer_size=READ)
        value = self.inner.load(reader)
        _finish(reader, self.name)
        return value


@attrs.frozen
class Lz4Codec(_OneShotLoads):
    """Compresses another codec's stream with LZ4 frames (very fast, lighter compression).

    The name is ``"lz4:"`` followed by the inner codec's name (``"lz4:pickle"``), so a blob
    written through one inner codec is refused by a wrapper around another.
    ``get_codec("lz4:msgpack")`` builds ``Lz4Codec("msgpack")``.

    Small values (the inner codec writes at most 1 MiB) are compressed in one call, with
    their size in the frame header, and such frames are decompressed in one call. Larger
    ones stream, in pieces of at most 1 MiB of uncompressed data. Safety is the inner
    codec's: decompressing never runs code.

    Args:
        inner: the codec whose output is compressed, or its spec (default: pickle).
        level: the LZ4 compression level: 0 (default, fast), negative values trade ratio
            for speed, 3 to 16 use LZ4-HC; the level does not change the name.

    Notes:
        Thread-safe when the inner codec is: each call builds its own (de)compressor.
    """

    inner: Codec[Any] = attrs.field(factory=PickleCodec, converter=_inner)
    level: int = attrs.field(default=0, kw_only=True, validator=attrs.validators.le(16))

    def __attrs_post_init__(self) -> None:
        _require("lz4.frame", "Lz4Codec")

    @property
    def name(self) -> str:
        """``"lz4:<inner name>"``."""
        return f"lz4:{self.inner.name}"

    def dump(self, value: Any, file: IO[bytes]) -> None:
        """Write ``value`` through the inner codec, compressed, to ``file``."""
        frame = _require("lz4.frame", "Lz4Codec")
        compressor = frame.LZ4FrameCompressor(compression_level=self.level)
        slicer: _Slicer | None = None

        def start() -> IO[bytes]:
            nonlocal slicer
            file.write(compressor.begin())
            slicer = _Slicer(compressor.compress, file)
            return cast("IO[bytes]", slicer)

        spill = _Spill(start)
        self.inner.dump(value, cast("IO[bytes]", spill))
        if slicer is None:
            file.write(frame.compress(spill.held, compression_level=self.level))
        else:
            slicer.drain()
            file.write(compressor.flush())

    def _decompress(self, data: Any) -> bytes | None:
        """Decompress a whole small payload in one call, or None to leave it to the stream.

        Only exactly one frame that states a size of 1 to `_SMALL` bytes qualifies, which
        keeps memory bounded; anything else, errors included, goes the streaming way, which
        says what is wrong.
        """
        frame = _require("lz4.frame", "Lz4Codec")
        size = _lz4_content_size(data)
        if not 0 < size <= _SMALL:
            return None
        try:
            plain, used = frame.decompress(data, return_bytes_read=True)
        except RuntimeError:
            return None
        if used != len(data) or len(plain) != size:
            return None
        return cast("bytes", plain)

    def _stream(self, file: IO[bytes]) -> Any:
        frame = _require("lz4.frame", "Lz4Codec")
        source = _Lz4Source(frame.LZ4FrameDecompressor(), file)
        reader = io.BufferedReader(RawReader(source.readinto), buffer_size=READ)
        value = self.inner.load(reader)
        _finish(reader, self.name)
        source.finish()
        return value


_LZ4_HEAD = struct.Struct("<IBxQ")
"""An LZ4 frame header's start: magic, FLG, (BD), then the content size if FLG says so."""
_LZ4_MAGIC = 0x184D2204
_LZ4_HAS_SIZE = 0x08


def _lz4_content_size(data: Any) -> int:
    """The content size an LZ4 frame header states, or -1 if it states none.

    Read from the header's bytes: ``get_frame_info`` builds a dictionary, which costs a
    good part of what decompressing a small frame does. The decompressor still checks the
    whole frame, header checksum included.
    """
    if len(data) < _LZ4_HEAD.size:
        return -1
    magic, flags, size = _LZ4_HEAD.unpack_from(data)
    if magic != _LZ4_MAGIC or not flags & _LZ4_HAS_SIZE:
        return -1
    return int(size)


class _Lz4Source:
    """Decompresses an LZ4 frame from ``file`` into the caller's buffers, `CHUNK` at a time."""

    def __init__(self, decompressor: Any, file: IO[bytes]) -> None:
        self._decompressor = decompressor
        self._file = file
        self._input = b""

    def readinto(self, view: memoryview) -> int:
        decompressor = self._decompressor
        while not decompressor.eof:
            if decompressor.needs_input and not self._input:
                self._input = self._file.read(READ)
                if not self._input:
                    raise ValueError("the LZ4 frame is truncated")
            data = decompressor.decompress(self._input, max_length=min(len(view), CHUNK))
            self._input = b""
            if data:
                view[: len(data)] = data
                return len(data)
        return 0

    def finish(self) -> None:
        """Refuse bytes after the end of the frame."""
        if self._decompressor.unused_data or self._file.read(1):
            raise ValueError("unexpected bytes after the LZ4 frame")
