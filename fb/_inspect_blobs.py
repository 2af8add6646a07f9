"""Checking fb's blobs without a store: headers, trailers, checksums and signatures.

Part of `fb._inspect` (which re-exports every name here): the listings there say which
files are blobs, the functions here read them as bytes and never hand a payload to a codec.
"""

from __future__ import annotations

import hmac
import io
import os
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any, Literal

import attrs

from ._blob import (
    _HEAD,
    FLAG_SIGNED,
    MAC_SIZE,
    MAX_CODEC_NAME,
    ChecksumReader,
    checksum_name,
    decode_trailer,
    finish_mac,
    new_checksum,
    new_mac,
    read_header,
)
from .backends._locations import remote_errors
from .backends._prepared_path import PreparedPath
from .backends._safety import open_regular
from .exceptions import CorruptBlobError

if TYPE_CHECKING:
    from ._inspect import StoredFile  # _inspect imports this module: no cycle at run time

__all__ = ["BlobInfo", "Usage", "check_blob", "read_blob_header", "usage"]

_HEADER_MAX = _HEAD.size + MAX_CODEC_NAME
_CHUNK = 1 << 20


@attrs.frozen(kw_only=True)
class BlobInfo:
    """What one blob says about itself, and whether it holds together.

    Fields the check did not get to are None; ``error`` names the first problem found.

    Attributes:
        key: the blob's key, 32 hex digits.
        name: its name relative to the root.
        path: its path inside the location's filesystem.
        size: its size in bytes.
        mtime: when it was last modified, if known.
        version: the blob format version.
        flags: the header's flags byte.
        codec: the name of the codec that wrote the payload.
        signed: whether the blob carries an HMAC.
        header_size: the header's length in bytes.
        payload_length: the payload's length, from the trailer.
        checksum_algorithm: ``"xxh3-64"`` (what fb writes) or ``"crc32"`` (earlier builds).
        checksum: the checksum of header and payload, from the trailer.
        checksum_ok: whether header and payload match the checksum (None: not checked).
        signature_ok: whether the HMAC matches the key given (None: not checked).
        error: the first problem found, or None for a sound blob.
    """

    key: str
    name: str
    path: str
    size: int
    mtime: float | None
    version: int | None = None
    flags: int | None = None
    codec: str | None = None
    signed: bool | None = None
    header_size: int | None = None
    payload_length: int | None = None
    checksum_algorithm: str | None = None
    checksum: int | None = None
    checksum_ok: bool | None = None
    signature_ok: bool | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return self.error is None

    @property
    def status(self) -> Literal["ok", "unsigned", "corrupt"]:
        """``ok``, ``unsigned`` (sound, but a signature was asked for), or ``corrupt``."""
        if self.error is None:
            return "ok"
        return "unsigned" if self.signed is False and self.signature_ok is False else "corrupt"


@attrs.frozen(kw_only=True)
class Usage:
    """Blobs and bytes of one group (a codec or a shard)."""

    name: str
    blobs: int
    bytes: int


# -- blobs ------------------------------------------------------------------------------------


def _read_range(location: PreparedPath, file: StoredFile, start: int, end: int) -> bytes:
    path = file.path
    if file.offset is not None:  # a blob in a segment file: a window of that file
        with open(open_regular(path), "rb") as segment:
            segment.seek(file.offset + start)
            return segment.read(min(end, file.size) - start)
    if location.is_local:
        with open(open_regular(path), "rb") as raw:  # no link followed, no FIFO waited on
            raw.seek(start)
            return raw.read(end - start)
    with remote_errors(location.fs.unstrip_protocol(path)):
        data: bytes = location.fs.cat_file(path, start=start, end=end)
    return data


def _open(location: PreparedPath, file: StoredFile) -> IO[bytes]:
    if file.offset is not None:
        # A blob in a segment file is small (a slot): read whole, then checked from memory.
        return io.BytesIO(_read_range(location, file, 0, file.size))
    path = file.path
    if location.is_local:
        return open(open_regular(path), "rb")
    with remote_errors(location.fs.unstrip_protocol(path)):
        remote: IO[bytes] = location.fs.open(path, "rb", block_size=4 * _CHUNK)
    return remote


def _base(file: StoredFile) -> dict[str, Any]:
    return {
        "key": file.key,
        "name": file.name,
        "path": file.path,
        "size": file.size,
        "mtime": file.mtime,
    }


def read_blob_header(location: PreparedPath, file: StoredFile) -> BlobInfo:
    """Read only the header of blob ``file`` (one small read): version, flags, codec.

    A header that is not fb's gives a record whose ``error`` says why.

    Raises:
        FileNotFoundError: the blob is gone.
        OSError: storage failed.
    """
    fields = _base(file)
    try:
        header = read_header(
            io.BytesIO(_read_range(location, file, 0, min(file.size, _HEADER_MAX)))
        )
    except CorruptBlobError as exc:
        return BlobInfo(**fields, error=str(exc))
    return BlobInfo(
        **fields,
        version=header.version,
        flags=header.flags,
        codec=header.codec,
        signed=bool(header.flags & FLAG_SIGNED),
        header_size=header.size,
    )


def check_blob(
    location: PreparedPath, file: StoredFile, *, secret: bytes | None = None
) -> BlobInfo:
    """Check blob ``file`` as a store would before decoding it, without decoding it.

    Reads the header, the trailer and the whole payload (its checksum); with ``secret``,
    also checks the HMAC, and an unsigned blob is an error (a store with that key would
    refuse it).

    Raises:
        FileNotFoundError: the blob is gone.
        OSError: storage failed.
    """
    fields = _base(file)
    with _open(location, file) as raw:
        local_file = location.is_local and file.offset is None
        size = os.fstat(raw.fileno()).st_size if local_file else file.size
        fields["size"] = size
        try:
            header = read_header(raw)
        except CorruptBlobError as exc:
            return BlobInfo(**fields, error=str(exc))
        signed = bool(header.flags & FLAG_SIGNED)
        fields.update(
            version=header.version,
            flags=header.flags,
            codec=header.codec,
            signed=signed,
            header_size=header.size,
        )
        # An unsigned blob is still read through: damage is worth telling from a missing HMAC.
        unsigned = secret is not None and not signed
        trailer_size = header.trailer_size
        payload = header.payload_length(size)
        if payload < 0:
            return BlobInfo(**fields, error=f"blob is truncated: {size} bytes")
        raw.seek(size - trailer_size)
        try:
            length, digest = decode_trailer(header.flags, raw.read(trailer_size))
        except CorruptBlobError as exc:
            return BlobInfo(**fields, error=str(exc))
        fields.update(
            payload_length=length,
            checksum_algorithm=checksum_name(header.flags),
            checksum=digest,
        )
        if length != payload:
            return BlobInfo(
                **fields,
                error=f"blob is truncated or padded: trailer says {length} payload bytes, "
                f"the file holds {payload}",
            )
        mac = None if secret is None or unsigned else new_mac(secret, header.raw)
        raw.seek(header.size)
        # The checksum covers the header too: a damaged codec name is damage, not another codec.
        reader = ChecksumReader(raw, payload, new_checksum(header.flags, header.raw))
        got = 0
        while chunk := reader.read(_CHUNK):
            got += len(chunk)
            if mac is not None:
                mac.update(chunk)
        fields["checksum_ok"] = reader.digest.intdigest() == digest and got == payload
        if mac is not None:
            fields["signature_ok"] = hmac.compare_digest(
                finish_mac(mac, payload), raw.read(MAC_SIZE)
            )
    if not fields["checksum_ok"]:
        return BlobInfo(**fields, error="checksum mismatch")
    if unsigned:
        return BlobInfo(**fields, signature_ok=False, error="blob is not signed")
    if fields.get("signature_ok") is False:
        return BlobInfo(**fields, error="signature mismatch (altered, or signed with another key)")
    return BlobInfo(**fields)


def usage(infos: Iterable[BlobInfo], by: Literal["codec", "shard"]) -> tuple[Usage, ...]:
    """Return blobs and bytes per codec (unreadable headers: ``?``) or per shard, sorted."""
    totals: dict[str, list[int]] = {}
    for info in infos:
        name = (info.codec or "?") if by == "codec" else info.name.partition("/")[0]
        entry = totals.setdefault(name, [0, 0])
        entry[0] += 1
        entry[1] += info.size
    return tuple(
        Usage(name=name, blobs=blobs, bytes=nbytes)
        for name, (blobs, nbytes) in sorted(totals.items())
    )
