r"""The blob format: a small header, the codec's payload, and a trailer.

::

    header   magic b"\x93FBB" | version u8 | flags u8 | codec-name length u16 | codec name
    payload  whatever the codec wrote
    [mac]    signed blobs only (flag bit 0): HMAC-SHA256 of header, payload and its length
    trailer  payload length u64 | checksum of header and payload | magic b"\x93FBE"

The checksum is XXH3-64 (u64) when flag bit 1 is set, which is what fb writes, else CRC-32
(u32), which earlier builds of fb wrote and which is still read. XXH3 runs at tens of GB/s, so
checking every load costs a small fraction of reading the bytes; zlib's CRC-32 cost more
than the read itself. All integers are little-endian.

The length and checksum sit in a trailer rather than the header so a blob can be written in
one forward pass to any sink, including object-store uploads that cannot seek back; a reader
knows the blob's size before it reads, so it checks the trailer first and hands the codec a
stream bounded to exactly the payload.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import struct
import zlib
from typing import IO, Any, Protocol

import attrs
import xxhash

from .exceptions import CorruptBlobError

__all__ = [
    "HEADER_MAGIC",
    "TRAILER",
    "TRAILER_MAGIC",
    "BlobHeader",
    "Checksum",
    "ChecksumReader",
    "ChecksumWriter",
    "Crc32",
    "SinkError",
    "check_secret",
    "checksum",
    "checksum_name",
    "decode_trailer",
    "encode_trailer",
    "finish_mac",
    "new_checksum",
    "new_mac",
    "read_header",
    "trailer_struct",
    "write_header",
]

HEADER_MAGIC = b"\x93FBB"
TRAILER_MAGIC = b"\x93FBE"
FORMAT_VERSION = 1

_HEAD = struct.Struct("<4sBBH")
TRAILER_CRC32 = struct.Struct("<QI4s")
TRAILER_XXH3 = struct.Struct("<QQ4s")
TRAILER = TRAILER_XXH3  # what fb writes
MAX_CODEC_NAME = 255


@attrs.frozen(kw_only=True)
class BlobHeader:
    """What the header of a blob says.

    Attributes:
        version: the blob format version.
        flags: bit 0 set for a signed blob, bit 1 for an XXH3-64 checksum (else CRC-32);
            the others are reserved (0).
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

    @property
    def trailer_size(self) -> int:
        """The length of the trailer of a blob with this header."""
        return trailer_struct(self.flags).size

    def payload_length(self, blob_size: int) -> int:
        """Payload bytes in a blob of ``blob_size`` bytes with this header (< 0: truncated)."""
        mac_size = MAC_SIZE if self.flags & FLAG_SIGNED else 0
        return blob_size - self.size - mac_size - self.trailer_size


FLAG_SIGNED = 0x01
FLAG_XXH3 = 0x02
_KNOWN_FLAGS = FLAG_SIGNED | FLAG_XXH3
MAC_SIZE = 32


class Checksum(Protocol):
    """A running checksum: `xxhash.xxh3_64` or `Crc32`."""

    def update(self, data: Any, /) -> None: ...

    def intdigest(self) -> int: ...


class Crc32:
    """zlib's CRC-32 behind the interface of `xxhash.xxh3_64` (blobs of earlier builds)."""

    __slots__ = ("_crc",)

    def __init__(self, data: Any = b"") -> None:
        self._crc = zlib.crc32(data)

    def update(self, data: Any, /) -> None:
        self._crc = zlib.crc32(data, self._crc)

    def intdigest(self) -> int:
        return self._crc


def new_checksum(flags: int, data: Any = b"") -> Checksum:
    """Start the checksum a blob with header ``flags`` carries, over ``data`` first."""
    return xxhash.xxh3_64(data) if flags & FLAG_XXH3 else Crc32(data)


def checksum(flags: int, data: Any) -> int:
    """Return the checksum of ``data`` in one call, as a blob with header ``flags`` uses it."""
    return xxhash.xxh3_64_intdigest(data) if flags & FLAG_XXH3 else zlib.crc32(data)


def checksum_name(flags: int) -> str:
    """Name the checksum of a blob with header ``flags``: ``"xxh3-64"`` or ``"crc32"``."""
    return "xxh3-64" if flags & FLAG_XXH3 else "crc32"


def trailer_struct(flags: int) -> struct.Struct:
    """Return the layout of the trailer of a blob with header ``flags``."""
    return TRAILER_XXH3 if flags & FLAG_XXH3 else TRAILER_CRC32


def encode_header(codec: str, *, signed: bool = False) -> bytes:
    """Return the header bytes for a payload written by ``codec``."""
    name = codec.encode()
    if not name or len(name) > MAX_CODEC_NAME:
        raise ValueError(f"codec name must be 1 to {MAX_CODEC_NAME} bytes of UTF-8: {codec!r}")
    flags = FLAG_XXH3 | (FLAG_SIGNED if signed else 0)
    return _HEAD.pack(HEADER_MAGIC, FORMAT_VERSION, flags, len(name)) + name


def write_header(file: IO[bytes], codec: str) -> int:
    """Write the header for ``codec`` to ``file``; return its length."""
    header = encode_header(codec)
    file.write(header)
    return len(header)


def new_mac(secret: bytes, header: bytes | memoryview) -> hmac.HMAC:
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
    if flags & ~_KNOWN_FLAGS:
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


def encode_trailer(flags: int, length: int, digest: int) -> bytes:
    """Return the trailer for a payload of ``length`` bytes with checksum ``digest``."""
    return trailer_struct(flags).pack(length, digest, TRAILER_MAGIC)


def decode_trailer(flags: int, data: bytes | memoryview) -> tuple[int, int]:
    """Return (payload length, checksum) from the trailer of a blob with header ``flags``.

    Raises:
        CorruptBlobError: the trailer is missing or damaged (a truncated blob).
    """
    layout = trailer_struct(flags)
    if len(data) != layout.size:
        raise CorruptBlobError("blob is truncated: no complete trailer")
    length, digest, magic = layout.unpack(data)
    if magic != TRAILER_MAGIC:
        raise CorruptBlobError("blob is truncated or damaged: bad trailer magic")
    return length, digest


class SinkError(Exception):
    """An OSError raised by the file under a `ChecksumWriter`, told apart from the codec's own."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(exc)
        self.exc = exc


class ChecksumWriter(io.RawIOBase):
    """A write-only file object that counts and checksums what passes to ``raw``.

    Codecs see an ordinary binary file; buffers are passed through, never copied. An
    OSError of ``raw`` comes out as `SinkError`, so that a store can tell a failing disk
    from a codec that raised OSError itself.
    """

    def __init__(self, raw: IO[bytes], digest: Checksum, mac: hmac.HMAC | None = None) -> None:
        # io.RawIOBase.__init__ does nothing, and one of these is made per blob written.
        self._write = raw.write
        self._update = digest.update
        self._mac = mac
        self.digest = digest
        self.length = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = data if type(data) is memoryview else memoryview(data)
        if view.ndim != 1 or view.format not in ("B", "b", "c"):
            view = view.cast("B")
        self._update(view)
        if self._mac is not None:
            self._mac.update(view)
        size = view.nbytes
        self.length += size
        try:
            self._write(view)
        except OSError as exc:
            raise SinkError(exc) from exc
        return size


class ChecksumReader(io.RawIOBase):
    """A read-only file object over exactly ``length`` bytes of ``raw``, checksummed.

    A codec cannot read past the payload into the trailer, and every byte it reads is
    counted into ``digest``. `finish` reads what the codec left, so the checksum always covers
    the whole payload.
    """

    def __init__(self, raw: IO[bytes], length: int, digest: Checksum) -> None:
        super().__init__()
        self._raw = raw
        self.remaining = length
        self.digest = digest

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > self.remaining:
            size = self.remaining
        if size == 0:
            return b""
        data = self._raw.read(size)
        self.remaining -= len(data)
        self.digest.update(data)
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
            self.digest.update(view[:got])
        else:
            # One read, then one hash of what it brought. Hashing in small pieces while
            # each is still in the CPU cache did not pay: on a 4 MiB array, 256 KiB pieces
            # cost 0.67x raw `pickle.load` against 0.78x for one read and one hash, as the
            # per-piece Python steps outweigh what the cache saves (benchmarks/verify_read.py).
            got = 0
            while got < size:
                piece = readinto(view[got:size]) or 0
                if not piece:
                    break
                got += piece
            self.digest.update(view[:got])
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
        self.digest.update(data)
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


def check_secret(secret: bytes | str | None) -> bytes | None:
    """Return ``secret`` as bytes, checked: a str is UTF-8 encoded; at least 16 bytes.

    Raises:
        TypeError: not bytes or str.
        ValueError: shorter than 16 bytes.
    """
    if secret is None:
        return None
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, bytes | bytearray | memoryview):
        raise TypeError(f"secret_key must be bytes or str, not {type(secret).__name__}")
    secret = bytes(secret)
    if len(secret) < 16:
        raise ValueError("secret_key must be at least 16 bytes (32 random bytes are best)")
    return secret
