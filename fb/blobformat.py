"""fb's blob format, for backend authors: write a framed blob, read and verify one.

Every blob a backend keeps is framed the same way, whatever holds it (a file, an object, a
database row): a header naming the codec, the codec's payload, an optional HMAC-SHA256
signature and a trailer with the payload length and an XXH3-64 checksum. The byte layout is
specified, per format version, in ``docs/blob-format.md``.

A backend needs no more than a `BlobFormat` for its codec::

    blobs = BlobFormat(codec, secret_key=secret_key)
    size = blobs.write(key, value, sink)          # streams: never holds the blob whole
    value = blobs.decode(key, data, where=url)    # bytes from a database row, verified
    value = blobs.read(key, file, where=url)      # a seekable file, streamed if large
    raise blob_not_found(key, where=url)          # BlobNotFoundError naming key.hex

`BlobFormat` checks exactly what `fb.backends.FBStore` checks, in the same order, and raises
the same errors: `CorruptBlobError` (naming the key and ``where``) for a blob that is
truncated, padded, altered, unsigned or of an unknown format; `CodecError` for an intact blob
of another codec, or a codec that fails on intact bytes.
"""

from __future__ import annotations

import errno
import io
import os
from typing import IO, TypeVar, cast
from uuid import UUID

from ._blob import (
    FORMAT_VERSION,
    HEADER_MAGIC,
    MAC_SIZE,
    TRAILER,
    TRAILER_MAGIC,
    BlobHeader,
    ChecksumWriter,
    SinkError,
    check_secret,
    encode_header,
    encode_trailer,
    finish_mac,
    new_checksum,
    new_mac,
)
from ._blob import read_header as _read_header
from .backends._decode import BlobReader
from .exceptions import BlobNotFoundError, CodecError, CorruptBlobError
from .typing import Codec

__all__ = [
    "FORMAT_VERSION",
    "HEADER_MAGIC",
    "SMALL_BLOB",
    "TRAILER_MAGIC",
    "BlobFormat",
    "BlobHeader",
    "blob_not_found",
    "corrupt_blob",
    "read_header",
]

T = TypeVar("T")

SMALL_BLOB = 1 << 20
"""`BlobFormat.read` reads blobs up to this size whole and checks them before decoding."""


def blob_not_found(key: UUID, where: str) -> BlobNotFoundError:
    """Return the error a backend raises for a missing blob: it names ``key.hex`` and ``where``.

    Args:
        key: the key that was asked for.
        where: where the blob was looked for (a path, a URL, a database and its table).
    """
    return BlobNotFoundError(errno.ENOENT, f"no blob for key {key.hex} (was it deleted?)", where)


def corrupt_blob(key: UUID, message: str, where: str | None = None) -> CorruptBlobError:
    """Return a `CorruptBlobError` for blob ``key``, naming ``key.hex`` and ``where``.

    Its ``key`` attribute is set, as the conformance suite checks. `BlobFormat` raises
    these itself; a backend builds one when it finds damage of its own
    (a database row whose value is not bytes, a length that disagrees with its index).
    """
    return CorruptBlobError(message, key=key, path=where)


def read_header(data: bytes | IO[bytes]) -> BlobHeader:
    """Parse the header at the start of ``data`` (bytes, or a binary file at offset 0).

    Returns:
        The header: ``codec``, ``version``, ``flags`` (``signed`` is ``flags & 1``) and
        ``size``, the offset where the payload starts. Nothing past the header is checked.

    Raises:
        CorruptBlobError: the bytes do not start with a header of a known format version.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        return _read_header(io.BytesIO(bytes(data[: 8 + 255])))
    return _read_header(data)


class BlobFormat(BlobReader[T]):
    """Frames the blobs of one codec: write them, and read them back verified.

    Args:
        codec: the codec whose payloads the blobs carry (its name goes into every header).
        secret_key: sign every blob written with HMAC-SHA256 under this key (at least 16
            bytes), and refuse, before the codec sees a byte, any blob read whose signature
            is missing or wrong. A backend factory receives it as ``secret_key=`` from
            `fb.open_pool`.

    Notes:
        Thread-safe and stateless between calls: one instance serves every thread of a
        backend. `write` and `read` block on the file they are given.
    """

    def __init__(self, codec: Codec[T], *, secret_key: bytes | str | None = None) -> None:
        self.codec: Codec[T] = codec
        self._secret = check_secret(secret_key)
        self._header = encode_header(codec.name, signed=self._secret is not None)

    def __repr__(self) -> str:
        signed = ", signed" if self._secret is not None else ""
        return f"BlobFormat({self.codec!r}{signed})"

    @property
    def signed(self) -> bool:
        """True when blobs are signed on write and their signatures checked on read."""
        return self._secret is not None

    @property
    def overhead(self) -> int:
        """Bytes a blob adds to its payload: header, signature (if signed) and trailer."""
        return len(self._header) + (MAC_SIZE if self._secret is not None else 0) + TRAILER.size

    def write(self, key: UUID, value: T, file: IO[bytes]) -> int:
        """Write ``value`` framed as blob ``key`` to ``file``, in one forward pass.

        The codec streams its payload to ``file`` through a counting, checksumming wrapper
        (no copy of the payload is held), then the signature and trailer follow. ``file``
        needs only ``write``: it may be a socket, an upload, or a database blob handle.

        Returns:
            The blob's size in bytes.

        Raises:
            CodecError: the codec failed (``file`` holds a partial blob: discard it).
            OSError: ``file`` failed; the exception is the one ``file.write`` raised.
        """
        header = self._header
        flags = header[5]
        file.write(header)
        mac = None if self._secret is None else new_mac(self._secret, header)
        writer = ChecksumWriter(file, new_checksum(flags, header), mac)
        try:
            self.codec.dump(value, cast("IO[bytes]", writer))
        except SinkError as failure:
            # The sink's own error, as it raised it (the wrapper only told it apart).
            raise failure.exc from None
        except Exception as exc:
            raise CodecError(
                f"cannot encode a {type(value).__name__}: {exc}", codec=self.codec.name, key=key
            ) from exc
        tail = b"" if mac is None else finish_mac(mac, writer.length)
        file.write(tail + encode_trailer(flags, writer.length, writer.digest.intdigest()))
        return len(header) + writer.length + len(tail) + TRAILER.size

    def encode(self, key: UUID, value: T) -> bytes:
        """Return ``value`` framed as blob ``key``, whole (for small values and databases).

        Raises:
            CodecError: the codec failed.
        """
        buffer = io.BytesIO()
        self.write(key, value, buffer)
        return buffer.getvalue()

    def decode(self, key: UUID, data: bytes, *, where: str | None = None) -> T:
        """Check the whole blob ``data`` of key ``key``, then decode its payload.

        Every check (header, length, checksum, signature) runs before the codec sees a
        byte; trailing or missing bytes fail the length check.

        Args:
            key: the blob's key, for the errors.
            data: the blob's bytes.
            where: where the blob was read from, for the errors.

        Raises:
            CorruptBlobError: the blob is damaged, unsigned (with a secret key) or not an
                fb blob; ``.key`` is ``key``.
            CodecError: an intact blob of another codec, or a codec that fails on it.
        """
        return self._decode_buffer(key, bytes(data), cast("str", where))

    def read(
        self, key: UUID, file: IO[bytes], size: int | None = None, *, where: str | None = None
    ) -> T:
        """Check and decode blob ``key`` from a seekable binary ``file`` positioned at 0.

        A blob of up to `SMALL_BLOB` bytes is read whole and checked first, like `decode`.
        A larger one is streamed to the codec, which reads through a window that ends at the
        payload's end while the checksum is computed; the checksum is compared when the
        codec is done (a signature, if required, is checked before the codec starts).

        Args:
            key: the blob's key, for the errors.
            file: the blob, readable and seekable.
            size: the blob's size; measured by seeking to the end when not given.
            where: where the blob was read from, for the errors.

        Raises:
            CorruptBlobError: as `decode`.
            CodecError: as `decode`.
            OSError: ``file`` failed.
        """
        if size is None:
            size = file.seek(0, os.SEEK_END)
            file.seek(0)
        if size <= SMALL_BLOB:
            return self._decode_buffer(key, file.read(size), cast("str", where))
        return self._decode(key, file, size, cast("str", where))
