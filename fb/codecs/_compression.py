"""Streaming compression wrappers: `ZstdCodec` and `Lz4Codec` compress what another codec writes.

zstandard and lz4 are imported when a codec is built, not when this module is, so each
codec asks only for its own library.
"""

from __future__ import annotations

import io
from typing import IO, Any, cast

import attrs

from ..typing import Codec
from ._pickle_codec import PickleCodec
from ._registry import get_codec
from ._stream import CHUNK, READ, RawReader

__all__ = ["Lz4Codec", "ZstdCodec"]

_HINT = "pip install 'file-backed[compression]'"


def _require(module: str, codec: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise ImportError(f"{codec} needs {module}, which is not installed: {_HINT}") from exc


def _inner(spec: Codec[Any] | str) -> Codec[Any]:
    return get_codec(spec)


def _finish(reader: IO[bytes], wrapper: str) -> None:
    """Refuse decompressed data that the inner codec left unread."""
    if reader.read(1):
        raise ValueError(f"{wrapper}: unexpected data after the inner codec's value")


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


@attrs.frozen
class ZstdCodec:
    """Compresses another codec's stream with Zstandard (good ratio, fast both ways).

    The name is ``"zstd:"`` followed by the inner codec's name (``"zstd:msgpack"``), so a
    blob written through one inner codec is refused by a wrapper around another.
    ``get_codec("zstd:msgpack")`` builds ``ZstdCodec("msgpack")``.

    Both ways stream: the inner codec writes into a zstd stream writer that passes
    compressed pieces to the file, and reads from a stream reader that decompresses
    straight into the inner codec's buffers. Safety is the inner codec's: decompressing
    never runs code.

    Args:
        inner: the codec whose output is compressed, or its spec (default: pickle).
        level: the zstd compression level, from -131072 (fastest) to 22 (smallest); the
            level does not change the name, every level reads every other.

    Notes:
        Thread-safe when the inner codec is: each call builds its own (de)compressor.
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
        writer = zstd.ZstdCompressor(level=self.level).stream_writer(file, closefd=False)
        self.inner.dump(value, writer)
        # Not a with-block: after a failure nothing more should reach the file.
        writer.flush(zstd.FLUSH_FRAME)

    def load(self, file: IO[bytes]) -> Any:
        """Decompress ``file`` and read one value from it with the inner codec."""
        zstd = _require("zstandard", "ZstdCodec")
        source = zstd.ZstdDecompressor().stream_reader(
            file, read_size=READ, read_across_frames=True, closefd=False
        )
        reader = io.BufferedReader(RawReader(source.readinto), buffer_size=READ)
        value = self.inner.load(reader)
        _finish(reader, self.name)
        return value


@attrs.frozen
class Lz4Codec:
    """Compresses another codec's stream with LZ4 frames (very fast, lighter compression).

    The name is ``"lz4:"`` followed by the inner codec's name (``"lz4:pickle"``), so a blob
    written through one inner codec is refused by a wrapper around another.
    ``get_codec("lz4:msgpack")`` builds ``Lz4Codec("msgpack")``.

    Both ways stream, in pieces of at most 1 MiB of uncompressed data. Safety is the inner
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
        file.write(compressor.begin())
        writer = _Slicer(compressor.compress, file)
        self.inner.dump(value, cast("IO[bytes]", writer))
        writer.drain()
        file.write(compressor.flush())

    def load(self, file: IO[bytes]) -> Any:
        """Decompress ``file`` and read one value from it with the inner codec."""
        frame = _require("lz4.frame", "Lz4Codec")
        source = _Lz4Source(frame.LZ4FrameDecompressor(), file)
        reader = io.BufferedReader(RawReader(source.readinto), buffer_size=READ)
        value = self.inner.load(reader)
        _finish(reader, self.name)
        source.finish()
        return value


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
