"""`ShelfStore`: the store of a shelf on local disk, which reads blobs where they are.

A shelf's blobs are immutable files under ``<location>/blobs``: every set writes a blob
under a fresh random key, and a replaced name's old blob is deleted, never rewritten. A blob
found there under a key is therefore that key's value, for as long as it is there. So a get
of a name not in memory needs no copy of the blob in the shelf's cache: registering the key
costs no I/O at all (no existence probe, no hard link, no shard directory), and loading it
reads the blob from the location, with every check a cache blob gets (header, length,
checksum, signature). A handle whose value left memory loads it from there again.

When the blob is gone (another process replaced or deleted the name meanwhile), the load
falls back to the cache, which holds a blob this shelf set itself; failing that it raises
`BlobNotFoundError`, and the shelf reads the name's record again: a get returns the new
value or raises `KeyError`, never an old value it could no longer load nor a wrong one.

Off local disk a shelf keeps the plain `FBStore`: there a blob is downloaded into the cache
once, and later loads of it read local disk instead of sending requests.
"""

from __future__ import annotations

import os
from typing import TypeVar
from uuid import UUID

from .backends import FBStore, PreparedPath
from .exceptions import BlobNotFoundError
from .typing import Codec

__all__ = ["ShelfStore"]

T = TypeVar("T")


class ShelfStore(FBStore[T]):
    """An `FBStore` whose keys registered from the shelf's local blobs stay where they are.

    Args:
        codec: the shelf's codec.
        path: the shelf's cache directory.
        blobs: the shelf's blob location (local).
        secret_key: as for `FBStore`.

    Notes:
        Thread-safe, as `FBStore`; `register` from ``blobs`` does no I/O, the rest blocks.
    """

    def __init__(
        self,
        codec: Codec[T] | str,
        path: PreparedPath | str,
        *,
        blobs: PreparedPath,
        secret_key: bytes | str | None = None,
    ) -> None:
        # No segment files: every blob a shelf sets is persisted into its location, which
        # is a hard link from a blob file and would be a copy from a segment slot.
        super().__init__(codec, path, secret_key=secret_key, segment_max=0)
        if not blobs.is_local:
            raise ValueError(f"a ShelfStore reads local blobs, not {blobs.url}")
        self.blobs = blobs
        self._shards: set[str] = set()
        """Shard directories of ``blobs`` checked to be real directories (sets only add)."""

    def persist(self, key: UUID, location: PreparedPath) -> list[str]:
        """Place blob ``key`` at ``location``: a hard link into the shelf's blobs, unchecked.

        A set links the blob it has just written into this store's own cache (a locked
        0700 directory) into a shard the store has checked once to be a real directory:
        the per-blob checks `FBStore.persist` makes on any location (source and shard
        lstats, an existence probe) are left out. The first placement, another location,
        and any surprise (a shard not checked yet, no hard links) take `FBStore.persist`.
        """
        shard = location.shard_dir(key)
        ours = location is self.blobs or location == self.blobs
        if not ours or shard not in self._shards:
            paths = super().persist(key, location)
            if ours and os.path.isdir(shard) and not os.path.islink(shard):
                self._shards.add(shard)  # made (or checked) by the persist just done
            return paths
        target = location.blob_path(key)
        try:
            os.link(self.path.blob_path(key), target, follow_symlinks=False)
        except FileExistsError:
            pass  # placed before: blobs are immutable
        except OSError:
            return super().persist(key, location)  # names the problem, or copies
        return [target, shard, location.root]

    def register(self, key: UUID, location: PreparedPath) -> bool:
        """Register blob ``key``: from the shelf's blobs, without I/O (`load` reads it there)."""
        if location is self.blobs or location == self.blobs:
            return True
        return super().register(key, location)

    def load(self, key: UUID) -> T:
        """Decode blob ``key`` from the shelf's blobs, or else from the cache.

        Raises:
            BlobNotFoundError: neither holds blob ``key``.
            CorruptBlobError: the blob is truncated, altered, unsigned (with a secret key)
                or not a regular file.
            CodecError: the blob was written by another codec, or the codec failed.
            OSError: storage failed; the message names the path.
        """
        try:
            return self._load_local(key, self.blobs.blob_path(key))
        except BlobNotFoundError:
            # Gone from the location (replaced or deleted since): a blob this shelf set is
            # still in its cache while a handle refers to it.
            return super().load(key)
