"""Reading fb's locations without a store: listings and blob checks (clean-up: ``_gc.py``).

The ``fb`` command line (``ls``, ``inspect``, ``du``, ``verify``, ``gc``) is built on these
functions. They read blobs as bytes and never hand a payload to a codec, so inspecting a
location that others can write never unpickles anything. Every record is frozen.

A location holds three kinds of names fb owns, in the layout `fb.backends.FBStore` writes:
blobs ``xx/<32 hex>`` (``xx`` the key's first two digits), temporary files
``xx/.<32 hex>.<hex>.tmp`` of writes in progress (or of writers that crashed), and at the top
either a cache directory's lock file, the leases of a store on a non-local filesystem
(``.fb-lease.<16 hex>``, see `fb.backends._lease`), or a persist location's marker. Every
other name is foreign: it is reported, and nothing here ever deletes it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hmac
import io
import os
import re
import stat
from collections.abc import Iterable, Iterator
from typing import IO, Any, Literal
from uuid import UUID

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
from ._persist import parse_key
from .backends._fbstore import _BLOB_NAME, _TEMP_NAME, LOCK_NAME
from .backends._lease import LEASE_NAME
from .backends._locations import MARKER_NAME, MARKER_TEXT, remote_errors
from .backends._prepared_path import SHARDS, PreparedPath
from .exceptions import CorruptBlobError

__all__ = [
    "BlobInfo",
    "Listing",
    "StoredFile",
    "Usage",
    "check_blob",
    "find_blob",
    "hold_lock",
    "list_location",
    "lock_owner",
    "read_blob_header",
    "usage",
]

Kind = Literal["cache", "persist", "unknown"]

_HEADER_MAX = _HEAD.size + MAX_CODEC_NAME
_SESSION = re.compile(r"^fb-(?:dask-)?[0-9a-f]{32}$")
"""A session prefix of `fb.open_pool` or, on an object store, of the Dask buffer."""
_CHUNK = 1 << 20
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


@attrs.frozen(kw_only=True)
class StoredFile:
    """One file at a location.

    Attributes:
        name: its name relative to the location's root, ``/``-separated.
        path: its path inside the location's filesystem.
        size: its size in bytes.
        mtime: when it was last modified (seconds since the epoch), if the filesystem says.
    """

    name: str
    path: str
    size: int
    mtime: float | None

    @property
    def shard(self) -> str:
        """The first component of the name (a shard, for blobs and temporary files)."""
        return self.name.partition("/")[0]

    @property
    def key(self) -> str:
        """The 32-hex key a blob or temporary file belongs to."""
        base = self.name.rpartition("/")[2]
        return base if _BLOB_NAME.match(base) else base[1:33]


@attrs.frozen(kw_only=True)
class Listing:
    """What a location holds, sorted by name.

    Attributes:
        url: the location.
        local: whether it is on the local filesystem (only there can a lock be checked).
        blobs: files named like blobs, in their shards.
        temp_files: temporary files of writes, in their shards.
        foreign: every name fb does not own (never touched).
        lock_file: whether the cache directory's lock file is there.
        marker: whether the persist marker fb writes is there.
        leases: the leases of stores using the location (not on local disk, where the
            lock file serves).
    """

    url: str
    local: bool
    blobs: tuple[StoredFile, ...]
    temp_files: tuple[StoredFile, ...]
    foreign: tuple[StoredFile, ...]
    lock_file: bool
    marker: bool
    leases: tuple[StoredFile, ...] = ()

    @property
    def kind(self) -> Kind:
        """``cache`` (a lock file or leases), ``persist`` (fb's marker) or ``unknown``."""
        if self.lock_file or (self.leases and not (self.local or self.marker)):
            return "cache"
        return "persist" if self.marker else "unknown"

    @property
    def blob_bytes(self) -> int:
        """The total size of the blobs."""
        return sum(blob.size for blob in self.blobs)

    @property
    def sessions(self) -> tuple[str, ...]:
        """Prefixes ``fb-<32 hex>`` below the root, each a location of its own.

        `fb.open_pool` makes one per pool on an object store (the Dask buffer's are
        ``fb-dask-<32 hex>``); their names count as foreign.
        """
        tops = {file.name.partition("/")[0] for file in self.foreign if "/" in file.name}
        return tuple(sorted(top for top in tops if _SESSION.match(top)))


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


@attrs.frozen(kw_only=True)
class Usage:
    """Blobs and bytes of one group (a codec or a shard)."""

    name: str
    blobs: int
    bytes: int


# -- listing ---------------------------------------------------------------------------------


def _mtime(info: dict[str, Any]) -> float | None:
    for field in ("mtime", "LastModified", "last_modified", "created"):
        value = info.get(field)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
    return None


def _walk_local(root: str) -> Iterator[tuple[str, str, os.stat_result]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        # os.walk does not descend into symbolic links to directories; report them as names.
        names = sorted(filenames + [d for d in dirnames if os.path.islink(f"{dirpath}/{d}")])
        for name in names:
            path = f"{dirpath}/{name}"
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # deleted since the directory was read (a live store's blob)
            yield prefix + name, path, st


def _classify(rel: str, *, regular: bool) -> str:
    """Return ``blob``, ``temp``, ``lock``, ``lease``, ``marker`` or ``foreign`` for a name."""
    if not regular:
        return "foreign"  # fb never writes links or special files
    shard, sep, base = rel.partition("/")
    if not sep:
        if LEASE_NAME.match(rel):
            return "lease"
        return {LOCK_NAME: "lock", MARKER_NAME: "marker"}.get(rel, "foreign")
    if shard not in SHARDS or "/" in base:
        return "foreign"
    if _BLOB_NAME.match(base) and base.startswith(shard):
        return "blob"
    if _TEMP_NAME.match(base) and base[1:3] == shard:
        return "temp"
    return "foreign"


def _read_marker(location: PreparedPath, path: str) -> bytes:
    if location.is_local:
        with open(path, "rb") as file:
            return file.read(len(MARKER_TEXT) + 1)
    with remote_errors(location.url):
        data: bytes = location.fs.cat_file(path)
    return data


def list_location(location: PreparedPath) -> Listing:
    """List every file at ``location`` and sort the names fb owns from the others.

    Raises:
        FileNotFoundError: the location (or its bucket) does not exist.
        OSError: the location cannot be read; the message names it.
    """
    root = location.root
    groups: dict[str, list[StoredFile]] = {"blob": [], "temp": [], "foreign": []}
    if location.is_local:
        if not os.path.isdir(root):
            raise FileNotFoundError(errno.ENOENT, "location does not exist", root)
        for rel, path, st in _walk_local(root):
            file = StoredFile(name=rel, path=path, size=st.st_size, mtime=st.st_mtime)
            groups.setdefault(_classify(rel, regular=stat.S_ISREG(st.st_mode)), []).append(file)
    else:
        fs = location.fs
        with remote_errors(location.url):
            fs.invalidate_cache(root)
            if location.is_object_store:
                location.check_bucket()
            elif not fs.exists(root):
                raise FileNotFoundError(errno.ENOENT, "location does not exist", location.url)
            entries: dict[str, dict[str, Any]] = fs.find(root, detail=True)
        prefix = root.rstrip("/") + "/"
        for path, info in sorted(entries.items()):
            if not path.startswith(prefix) or info.get("type") == "directory":
                continue
            rel = path[len(prefix) :]
            file = StoredFile(
                name=rel, path=path, size=int(info.get("size") or 0), mtime=_mtime(info)
            )
            groups.setdefault(_classify(rel, regular=True), []).append(file)
    marker = False
    if "marker" in groups:
        marker_file = groups["marker"][0]
        marker = _read_marker(location, marker_file.path) == MARKER_TEXT
        if not marker:
            groups["foreign"].append(marker_file)  # someone else's marker: not fb's name
    return Listing(
        url=location.url,
        local=location.is_local,
        blobs=tuple(groups["blob"]),
        temp_files=tuple(groups["temp"]),
        foreign=tuple(sorted(groups["foreign"], key=lambda file: file.name)),
        lock_file="lock" in groups,
        marker=marker,
        leases=tuple(groups.get("lease", ())),
    )


def find_blob(location: PreparedPath, key: UUID | str) -> StoredFile | None:
    """Return blob ``key`` of ``location`` without listing the location, or None.

    Raises:
        InvalidKeyError: ``key`` is not a key.
    """
    hexkey = parse_key(key).hex
    name = f"{hexkey[:2]}/{hexkey}"
    path = f"{location.root}/{name}"
    if location.is_local:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return StoredFile(name=name, path=path, size=st.st_size, mtime=st.st_mtime)
    with remote_errors(location.url):
        try:
            info: dict[str, Any] = location.fs.info(path)
        except FileNotFoundError:
            return None
    if info.get("type") == "directory":
        return None
    return StoredFile(name=name, path=path, size=int(info.get("size") or 0), mtime=_mtime(info))


# -- locks ------------------------------------------------------------------------------------


@contextlib.contextmanager
def hold_lock(location: PreparedPath) -> Iterator[bool | None]:
    """Hold a cache directory's lock while the block runs, if no live store holds it.

    Yields True when a live store holds the lock (the directory is in use), False when the
    lock was free and is now held by this process (no store can open the directory until
    the block ends), and None when there is nothing to check: no lock file, or a location
    that is not on the local filesystem (``flock`` needs a local file).
    """
    if not location.is_local:
        yield None
        return
    try:
        # flock works on a read-only descriptor; nothing is ever written to the file here.
        fd = os.open(f"{location.root}/{LOCK_NAME}", os.O_RDONLY | _O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield True
            return
        yield False
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def lock_owner(location: PreparedPath) -> int | None:
    """Return the process id the lock file names (its last owner's), if it names one."""
    if not location.is_local:
        return None
    try:
        with open(f"{location.root}/{LOCK_NAME}", "rb") as file:
            text = file.read(32).decode("ascii", "replace").strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


# -- blobs ------------------------------------------------------------------------------------


def _read_range(location: PreparedPath, path: str, start: int, end: int) -> bytes:
    if location.is_local:
        with open(path, "rb") as file:
            file.seek(start)
            return file.read(end - start)
    with remote_errors(location.fs.unstrip_protocol(path)):
        data: bytes = location.fs.cat_file(path, start=start, end=end)
    return data


def _open(location: PreparedPath, path: str) -> IO[bytes]:
    if location.is_local:
        return open(path, "rb")
    with remote_errors(location.fs.unstrip_protocol(path)):
        file: IO[bytes] = location.fs.open(path, "rb", block_size=4 * _CHUNK)
    return file


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
            io.BytesIO(_read_range(location, file.path, 0, min(file.size, _HEADER_MAX)))
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
    with _open(location, file.path) as raw:
        size = os.fstat(raw.fileno()).st_size if location.is_local else file.size
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
        if secret is not None and not signed:
            return BlobInfo(**fields, signature_ok=False, error="blob is not signed")
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
        mac = None if secret is None else new_mac(secret, header.raw)
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
