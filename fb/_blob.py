r"""The blob format: a small header, the codec's payload, and a trailer.

::

    header   magic b"\x93FBB" | version u8 | flags u8 | codec-name length u16 | codec name
    payload  whatever the codec wrote
    [mac]    signed blobs only (flag bit 0): HMAC-SHA256 of header, payload and its length
    trailer  payload length u64 | crc32 of header and payload u32 | magic b"\x93FBE"

All integers are little-endian. The length and checksum sit in a trailer rather than the
header so a blob can be written in one forward pass to any sink, including object-store
uploads that cannot seek back; a reader knows the blob's size before it reads, so it checks
the trailer first and hands the codec a stream bounded to exactly the payload.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import struct
import zlib
from typing import IO, Any

import attrs

from .exceptions import CorruptBlobError

__all__ = [
    "HEADER_MAGIC",
    "TRAILER",
    "TRAILER_MAGIC",
    "BlobHeader",
    "ChecksumReader",
    "ChecksumWriter",
    "finish_mac",
    "new_mac",
    "read_header",
    "write_header",
]

HEADER_MAGIC = b"\x93FBB"
TRAILER_MAGIC = b"\x93FBE"
FORMAT_VERSION = 1

_HEAD = struct.Struct("<4sBBH")
TRAILER = struct.Struct("<QI4s")
MAX_CODEC_NAME = 255


@attrs.frozen(kw_only=True)
class BlobHeader:
    """What the header of a blob says.

    Attributes:
        version: the blob format version.
        flags: bit 0 set for a signed blob; the others are reserved (0).
        codec: the name of the codec that wrote the payload.
        size: the header's length in bytes; the payload starts there.
        raw: the header's bytes (the checksum covers them, so a damaged codec name is
            told apart from a blob of another codec).
    """

    version: int
    flags: int
    codec: str
    size: int
    raw: bytes


FLAG_SIGNED = 0x01
MAC_SIZE = 32


def encode_header(codec: str, *, signed: bool = False) -> bytes:
    """Return the header bytes for a payload written by ``codec``."""
    name = codec.encode()
    if not name or len(name) > MAX_CODEC_NAME:
        raise ValueError(f"codec name must be 1 to {MAX_CODEC_NAME} bytes of UTF-8: {codec!r}")
    flags = FLAG_SIGNED if signed else 0
    return _HEAD.pack(HEADER_MAGIC, FORMAT_VERSION, flags, len(name)) + name


def write_header(file: IO[bytes], codec: str) -> int:
    """Write the header for ``codec`` to ``file``; return its length."""
    header = encode_header(codec)
    file.write(header)
    return len(header)


def new_mac(secret: bytes, header: bytes) -> hmac.HMAC:
    """Start the HMAC of a signed blob: it covers the header, the payload and its length."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    mac.update(header)
    return mac


def finish_mac(mac: hmac.HMAC, length: int) -> bytes:
    """Return the MAC once the payload of ``length`` bytes went through ``mac``."""
    mac.update(struct.pack("<Q", length))
    return mac.digest()


def read_header(file: IO[bytes]) -> BlobHeader:
    """Read and check a header from ``file``.

    Raises:
        CorruptBlobError: the bytes are not an fb blob header of a known version.
    """
    head = file.read(_HEAD.size)
    if len(head) < _HEAD.size:
        raise CorruptBlobError(f"blob is truncated: {len(head)} bytes, no complete header")
    magic, version, flags, name_len = _HEAD.unpack(head)
    if magic != HEADER_MAGIC:
        raise CorruptBlobError(f"not an fb blob: bad magic {magic!r}")
    if version != FORMAT_VERSION:
        raise CorruptBlobError(f"unsupported blob format version {version}")
    if flags & ~FLAG_SIGNED:
        raise CorruptBlobError(f"unknown blob flags {flags:#04x}")
    name = file.read(name_len)
    if len(name) < name_len:
        raise CorruptBlobError("blob is truncated inside its header")
    try:
        codec = name.decode()
    except UnicodeDecodeError as exc:
        raise CorruptBlobError("blob header holds an invalid codec name") from exc
    return BlobHeader(
        version=version, flags=flags, codec=codec, size=_HEAD.size + name_len, raw=head + name
    )


def encode_trailer(length: int, crc: int) -> bytes:
    """Return the trailer for a payload of ``length`` bytes with checksum ``crc``."""
    return TRAILER.pack(length, crc, TRAILER_MAGIC)


def decode_trailer(data: bytes) -> tuple[int, int]:
    """Return (payload length, crc32) from trailer bytes.

    Raises:
        CorruptBlobError: the trailer is missing or damaged (a truncated blob).
    """
    if len(data) != TRAILER.size:
        raise CorruptBlobError("blob is truncated: no complete trailer")
    length, crc, magic = TRAILER.unpack(data)
    if magic != TRAILER_MAGIC:
        raise CorruptBlobError("blob is truncated or damaged: bad trailer magic")
    return length, crc


class ChecksumWriter(io.RawIOBase):
    """A write-only file object that counts and checksums what passes to ``raw``.

    Codecs see an ordinary binary file; buffers are passed through, never copied.
    """

    def __init__(self, raw: IO[bytes], mac: hmac.HMAC | None = None, crc: int = 0) -> None:
        super().__init__()
        self._raw = raw
        self._mac = mac
        self.crc = crc
        self.length = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        if view.ndim != 1 or view.format not in ("B", "b", "c"):
            view = view.cast("B")
        self.crc = zlib.crc32(view, self.crc)
        if self._mac is not None:
            self._mac.update(view)
        self.length += view.nbytes
        self._raw.write(view)
        return view.nbytes


class ChecksumReader(io.RawIOBase):
    """A read-only file object over exactly ``length`` bytes of ``raw``, checksummed.

    A codec cannot read past the payload into the trailer, and every byte it reads is
    counted into ``crc``. `finish` reads what the codec left, so the checksum always covers
    the whole payload.
    """

    def __init__(self, raw: IO[bytes], length: int, crc: int = 0) -> None:
        super().__init__()
        self._raw = raw
        self.remaining = length
        self.crc = crc

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > self.remaining:
            size = self.remaining
        if size == 0:
            return b""
        data = self._raw.read(size)
        self.remaining -= len(data)
        self.crc = zlib.crc32(data, self.crc)
        if len(data) < size:
            # The file is shorter than its trailer claims: it changed under us.
            self.remaining = 0
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        size = min(len(view), self.remaining)
        if size == 0:
            return 0
        readinto = getattr(self._raw, "readinto", None)
        if readinto is None:
            data = self._raw.read(size)
            got = len(data)
            view[:got] = data
        else:
            got = readinto(view[:size]) or 0
        self.crc = zlib.crc32(view[:got], self.crc)
        self.remaining -= got
        if got < size:
            self.remaining = 0
        return got

    def readline(self, size: int | None = -1) -> bytes:
        limit = self.remaining if size is None or size < 0 else min(size, self.remaining)
        if limit == 0:
            return b""
        data = self._raw.readline(limit)
        self.remaining -= len(data)
        self.crc = zlib.crc32(data, self.crc)
        if not data:
            self.remaining = 0  # the file is shorter than its trailer claims
        return data

    def finish(self, chunk: int = 1 << 20) -> int:
        """Read and checksum whatever the codec left unread; return how many bytes that was."""
        left = 0
        while self.remaining:
            data = self.read(min(chunk, self.remaining))
            if not data:
                break
            left += len(data)
        return left
