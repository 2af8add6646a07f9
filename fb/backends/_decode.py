"""How an `FBStore` checks and decodes a blob it has read (the read half of the format)."""

from __future__ import annotations

import hmac
import io
from typing import IO, Any, Generic, TypeVar, cast
from uuid import UUID

import xxhash

from .._blob import (
    FLAG_SIGNED,
    MAC_SIZE,
    TRAILER,
    TRAILER_MAGIC,
    BlobHeader,
    ChecksumReader,
    checksum,
    decode_trailer,
    finish_mac,
    new_checksum,
    new_mac,
    read_header,
)
from ..exceptions import CodecError, CorruptBlobError, FbError
from ..typing import Codec

__all__ = ["HEADER_PEEK", "BlobReader"]

T = TypeVar("T")

HEADER_PEEK = 8 + 255
"""The most bytes a header can take: its fixed part and the longest codec name."""

_COPY_MAX = 1 << 20
"""Payloads up to this size are decoded from an `io.BytesIO` (a copy); larger ones not."""
_SPARE_MAX = 32 << 20
"""Buffers for signed blobs up to this size are kept for reuse (see `_give_back`)."""
_SPARES = 2
_SPARE: list[bytearray] = []
"""Buffers that signed blobs were read into, kept for the next ones: a fresh buffer of
some MiB costs a page fault per 4 KiB, more than the read itself on a virtual machine,
and freeing it next to the decoded value can have the allocator hand both back to the
system. ``pop`` and ``append`` are atomic under the GIL: no lock, which a fork could leave
held."""


class BlobReader(Generic[T]):
    """The checks and decoding of `FBStore.load`, apart from finding and opening the blob.

    Every check runs before the codec sees a byte of a blob held in memory, as every signed
    blob is; an unsigned blob too large for that streams: it is checked as the codec reads
    it, and its checksum compared when the codec is done (before a value is returned).
    """

    codec: Codec[T]
    _secret: bytes | None
    _header: bytes

    def _decode_buffer(self, key: UUID, data: bytes | memoryview, path: str) -> T:
        """Check a whole blob held in memory, then decode it (checks before the codec runs)."""
        view = memoryview(data)
        size = len(data)
        start = len(self._header)
        end = size - TRAILER.size
        if self._secret is None and end >= start and view[:start] == self._header:
            # The common case, a blob this store wrote: its header is known byte for byte.
            # Anything amiss goes the general way below, which names the problem.
            length, digest, magic = TRAILER.unpack_from(data, end)
            if (
                magic == TRAILER_MAGIC
                and length == end - start
                and xxhash.xxh3_64_intdigest(view[:end]) == digest
            ):
                return self._decode_payload(key, view[start:end], path)
        try:
            header = read_header(io.BytesIO(data[:HEADER_PEEK]))
            signed = bool(header.flags & FLAG_SIGNED)
            payload = header.payload_length(size)
            if payload < 0:
                raise CorruptBlobError(f"blob is truncated: {size} bytes")
            length, digest = decode_trailer(header.flags, data[size - header.trailer_size :])
            if length != payload:
                raise CorruptBlobError(
                    f"blob is truncated or padded: trailer says {length} payload bytes, "
                    f"the file holds {payload}"
                )
            end = header.size + payload
            if checksum(header.flags, view[:end]) != digest:
                raise CorruptBlobError("checksum mismatch")
        except CorruptBlobError as exc:
            raise CorruptBlobError(str(exc), key=key, path=path) from None
        if header.codec != self.codec.name:
            raise self._wrong_codec(header.codec, key, path)
        if self._secret is not None:
            if not signed:
                raise self._unsigned(key, path)
            mac = new_mac(self._secret, data[: header.size])
            mac.update(view[header.size : end])
            if not hmac.compare_digest(finish_mac(mac, payload), data[end : end + MAC_SIZE]):
                raise self._bad_signature(key, path)
        return self._decode_payload(key, view[header.size : end], path)

    def _decode_payload(self, key: UUID, body: memoryview, path: str) -> T:
        """Decode a verified payload held in memory.

        Bytes the codec leaves after its value are not an error, on this path as on the
        streamed one: the checksum (and signature) cover the whole payload, and whether a
        codec reads all that it wrote is for the codec suite to check (``fb.testing``), not
        for every load to pay for (pickle's ``loads`` cannot tell).
        """
        try:
            loads = getattr(self.codec, "loads", None)
            if loads is not None:
                return loads(body)  # type: ignore[no-any-return]
            # BytesIO copies what it is given first: a copy a large payload can do without.
            file = io.BytesIO(body) if len(body) <= _COPY_MAX else _ViewReader(body)
            return self.codec.load(cast("IO[bytes]", file))
        except Exception as exc:
            raise self._codec_failed(exc, key, path) from exc

    def _decode(self, key: UUID, file: IO[bytes], size: int, path: str) -> T:
        """Check and decode a blob too large to read whole before decoding, from ``file``.

        With a secret key the blob is read whole all the same, once, and checked and
        decoded from memory: reading it a second time for the codec, after the signature
        check, would let bytes written into the file meanwhile reach the codec unsigned.
        """
        if self._secret is not None:
            buffer = _take_buffer(size)
            try:
                file.seek(0)
                got = _read_into(file, buffer, size)
                return self._decode_buffer(key, memoryview(buffer)[:got], path)
            finally:
                _give_back(buffer)
        try:
            header = read_header(file)
        except CorruptBlobError as exc:
            raise CorruptBlobError(str(exc), key=key, path=path) from exc
        if header.codec != self.codec.name:
            self._check_intact(key, file, header, size, path)
            raise self._wrong_codec(header.codec, key, path)
        trailer_size = header.trailer_size
        payload = header.payload_length(size)
        if payload < 0:
            raise CorruptBlobError(f"blob is truncated: {size} bytes", key=key, path=path)
        file.seek(size - trailer_size)
        try:
            length, digest = decode_trailer(header.flags, file.read(trailer_size))
        except CorruptBlobError as exc:
            raise CorruptBlobError(str(exc), key=key, path=path) from exc
        if length != payload:
            raise CorruptBlobError(
                f"blob is truncated or padded: trailer says {length} payload bytes, "
                f"the file holds {payload}",
                key=key,
                path=path,
            )
        file.seek(header.size)
        reader = ChecksumReader(file, payload, new_checksum(header.flags, header.raw))
        try:
            value = self.codec.load(cast("IO[bytes]", reader))
        except Exception as exc:
            if isinstance(exc, OSError) and not isinstance(exc, FbError):
                raise
            reader.finish()
            if reader.digest.intdigest() != digest:
                raise CorruptBlobError("checksum mismatch", key=key, path=path) from exc
            raise self._codec_failed(exc, key, path) from exc
        reader.finish()  # what the codec left is checksummed too (see `_decode_payload`)
        if reader.digest.intdigest() != digest:
            raise CorruptBlobError("checksum mismatch", key=key, path=path)
        return value

    def _wrong_codec(self, written_by: str, key: UUID, path: str) -> CodecError:
        return CodecError(
            f"blob was written by codec {written_by!r} and cannot be read by "
            f"codec {self.codec.name!r}",
            codec=self.codec.name,
            key=key,
            path=path,
        )

    @staticmethod
    def _unsigned(key: UUID, path: str) -> CorruptBlobError:
        return CorruptBlobError(
            "blob is not signed and this store requires signed blobs", key=key, path=path
        )

    @staticmethod
    def _bad_signature(key: UUID, path: str) -> CorruptBlobError:
        return CorruptBlobError(
            "signature mismatch: the blob was altered, or written without this store's key",
            key=key,
            path=path,
        )

    def _codec_failed(self, exc: Exception, key: UUID, path: str) -> CodecError:
        return CodecError(
            f"cannot decode an intact blob: {exc}", codec=self.codec.name, key=key, path=path
        )

    def _check_intact(
        self, key: UUID, file: IO[bytes], header: BlobHeader, size: int, path: str
    ) -> None:
        """Raise CorruptBlobError unless the blob's checksum holds (header included).

        Tells a damaged codec name apart from a blob that another codec wrote.
        """
        trailer_size = header.trailer_size
        payload = header.payload_length(size)
        try:
            if payload < 0:
                raise CorruptBlobError("blob is truncated")
            file.seek(size - trailer_size)
            length, digest = decode_trailer(header.flags, file.read(trailer_size))
            file.seek(header.size)
            reader = ChecksumReader(file, payload, new_checksum(header.flags, header.raw))
            reader.finish()
            if length != payload or reader.digest.intdigest() != digest:
                raise CorruptBlobError("checksum mismatch")
        except CorruptBlobError as exc:
            raise CorruptBlobError(str(exc), key=key, path=path) from None


class _ViewReader(io.RawIOBase):
    """A read-only file over a buffer that it does not copy (`io.BytesIO` would)."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        count = min(len(target), len(self._view) - self._pos)
        target[:count] = self._view[self._pos : self._pos + count]
        self._pos += count
        return count


def _read_into(file: IO[bytes], buffer: bytearray, size: int) -> int:
    """Read up to ``size`` bytes of ``file`` into ``buffer``; fewer only at the file's end."""
    view = memoryview(buffer)
    readinto = getattr(file, "readinto", None)
    got = 0
    while got < size:
        if readinto is not None:
            piece = readinto(view[got:size]) or 0
        else:  # any seekable file with `read` will do, as on the streamed path
            data = file.read(min(size - got, 1 << 20))
            piece = len(data)
            view[got : got + piece] = data
        if not piece:
            break
        got += piece
    return got


def _take_buffer(size: int) -> bytearray:
    """A buffer of at least ``size`` bytes: a spare one if one is big enough, else a new one."""
    try:
        buffer = _SPARE.pop()
    except IndexError:
        return bytearray(size)
    return buffer if len(buffer) >= size else bytearray(size)


def _give_back(buffer: bytearray) -> None:
    """Keep ``buffer`` for the next signed blob, unless it is too large or still in use."""
    if len(buffer) > _SPARE_MAX or len(_SPARE) >= _SPARES:
        return
    try:
        # Refused while anything still views the buffer (a codec whose value is a view of
        # its payload): such a buffer belongs to that value now and is never reused.
        del buffer[-1]
    except BufferError:
        return
    buffer.append(0)  # back to its size, within its allocation: no copy
    _SPARE.append(buffer)
