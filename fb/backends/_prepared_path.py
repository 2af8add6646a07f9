"""PreparedPath: a location for blobs on any fsspec filesystem, with fb's key layout."""

from __future__ import annotations

import os
from typing import Any
from uuid import UUID

import fsspec
from fsspec.implementations.local import LocalFileSystem

__all__ = ["PreparedPath"]

SHARDS = tuple(f"{i:02x}" for i in range(256))


class PreparedPath:
    """A directory (or object-store prefix) that holds blobs as ``root/xx/<32 hex>``.

    ``xx`` is the first two hex digits of the key, so a directory holds 256 shards and no
    shard grows past a fraction of the blobs. Creating a `PreparedPath` does no I/O;
    `prepare` creates the directories (object stores need none).

    Args:
        path_or_url: a local path, a ``file://`` URL, or any fsspec URL.
        fs: an fsspec filesystem object; ``path_or_url`` is then a path inside it.
        **storage_options: passed to fsspec to build the filesystem (never shown in reprs).

    Notes:
        Immutable and thread-safe.
    """

    __slots__ = ("_url", "fs", "root")

    fs: Any
    root: str

    def __init__(self, path_or_url: str | os.PathLike[str], *, fs: Any = None, **storage_options: Any):
        if not isinstance(path_or_url, str | os.PathLike):
            raise TypeError(f"a path or URL is needed, not {path_or_url!r}")
        target = os.fspath(path_or_url)
        if not target:
            raise ValueError("an empty path is not a location")
        if fs is None:
            fs, root = fsspec.core.url_to_fs(target, **storage_options)
        else:
            if storage_options:
                raise TypeError("pass either fs= or storage options, not both")
            root = fs._strip_protocol(target)
        if isinstance(fs, LocalFileSystem):
            root = os.path.abspath(root)
        self.fs = fs
        self.root = str(root).rstrip("/") or "/"
        self._url = fs.unstrip_protocol(self.root)

    @property
    def url(self) -> str:
        """The location as a URL (``file:///…``, ``s3://…``, ``memory://…``)."""
        return self._url

    @property
    def is_local(self) -> bool:
        """True when the location is on the local filesystem."""
        return isinstance(self.fs, LocalFileSystem)

    def shard_dir(self, key: UUID) -> str:
        """Return the directory (or prefix) that holds blob ``key``."""
        return f"{self.root}/{key.hex[:2]}"

    def blob_path(self, key: UUID) -> str:
        """Return the path of blob ``key`` inside `fs`."""
        hexkey = key.hex
        return f"{self.root}/{hexkey[:2]}/{hexkey}"

    def prepare(self) -> None:
        """Create the root and its 256 shard directories (mode 0700) where directories exist."""
        if self.is_local:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            for shard in SHARDS:
                try:
                    os.mkdir(f"{self.root}/{shard}", 0o700)
                except FileExistsError:
                    pass
        else:
            self.fs.makedirs(self.root, exist_ok=True)

    def __repr__(self) -> str:
        return f"PreparedPath({self._url!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PreparedPath):
            return NotImplemented
        return self._url == other._url and self.fs == other.fs

    def __hash__(self) -> int:
        return hash(self._url)
