"""PreparedPath: a location for blobs on any fsspec filesystem, with fb's key layout."""

from __future__ import annotations

import copy
import errno
import os
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import get_protocol

from .._keywords import check_keywords, storage_options_dict

__all__ = ["OBJECT_STORE_PROTOCOLS", "PreparedPath", "as_prepared_path", "location_like"]

SHARDS = tuple(f"{i:02x}" for i in range(256))

OBJECT_STORE_PROTOCOLS = frozenset(
    {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss", "r2", "tos"}
)
"""Protocols whose writes are atomic PUTs and whose "directories" are only key prefixes."""

# S3 defaults, merged under what the caller passes: fresh listings (another process may
# have written since), bounded timeouts so an unreachable endpoint fails fast, and
# botocore's standard retry mode (exponential backoff with jitter) for transient errors.
_S3_DEFAULTS: dict[str, Any] = {
    "use_listings_cache": False,
    "skip_instance_cache": True,
    "config_kwargs": {
        "connect_timeout": 5,
        "read_timeout": 60,
        "retries": {"max_attempts": 3, "mode": "standard"},
    },
}


def _merge(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(defaults)
    for name, value in given.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = _merge(merged[name], value)
        else:
            merged[name] = value
    return merged


def _hex(key: UUID) -> str:
    if type(key) is not UUID and not isinstance(key, UUID):
        raise TypeError(f"a blob key is a uuid.UUID, not {type(key).__name__}: {key!r}")
    return key.hex


def _protocols(fs: Any) -> set[str]:
    protocol = getattr(fs, "protocol", ())
    return {protocol} if isinstance(protocol, str) else set(protocol)


_LOCAL_OPTIONS = frozenset(
    {"auto_mkdir", "skip_instance_cache", "use_listings_cache", "listings_expiry_time"}
)
"""What fsspec's LocalFileSystem does something with; it ignores any other keyword."""

class PreparedPath:
    """A directory (or object-store prefix) that holds blobs as ``root/xx/<32 hex>``.

    ``xx`` is the first two hex digits of the key, so a directory holds 256 shards and no
    shard grows past a fraction of the blobs. Creating a `PreparedPath` does no I/O;
    `prepare` creates the directories (object stores need none).

    On S3 fb sets ``use_listings_cache=False``, ``skip_instance_cache=True``, a 5 s connect
    timeout, a 60 s read timeout and botocore's standard retries (3 attempts, backoff with
    jitter) unless the storage options say otherwise.

    Args:
        path_or_url: a local path, a ``file://`` URL, or any fsspec URL.
        storage_options: passed to fsspec to build the filesystem (for S3, e.g.
            ``{"client_kwargs": {"endpoint_url": ...}}``). They may hold credentials, so they
            never appear in reprs or logs.
        fs: an fsspec filesystem object; ``path_or_url`` is then a path inside it.

    Raises:
        TypeError: ``path_or_url`` is not a path, ``storage_options`` is not a mapping, both
            ``storage_options`` and ``fs`` are given, or a keyword is unknown (storage options
            go in the ``storage_options`` mapping, never loose).

    Notes:
        Thread-safe. Fork-safe: a child process rebuilds its own filesystem object on first
        use, and a pickled PreparedPath rebuilds it where it is unpickled.
    """

    __slots__ = ("_fs", "_options", "_pid", "_url", "root")

    root: str

    @check_keywords
    def __init__(
        self,
        path_or_url: str | os.PathLike[str],
        storage_options: Mapping[str, Any] | None = None,
        fs: Any = None,
    ) -> None:
        if not isinstance(path_or_url, str | os.PathLike):
            raise TypeError(f"a path or URL is needed, not {path_or_url!r}")
        options = storage_options_dict(storage_options, "PreparedPath()")
        target = os.fspath(path_or_url)
        if not target:
            raise ValueError("an empty path is not a location")
        if fs is None:
            protocol = target.split("://", 1)[0] if "://" in target else "file"
            if protocol in ("s3", "s3a"):
                options = _merge(_S3_DEFAULTS, options)
            elif protocol in ("file", "local") and not options.keys() <= _LOCAL_OPTIONS:
                # LocalFileSystem swallows any keyword: a typo would pass unnoticed.
                unknown = sorted(options.keys() - _LOCAL_OPTIONS)
                raise TypeError(
                    f"storage options {unknown} mean nothing for the local path {target}; "
                    f"the local filesystem takes {sorted(_LOCAL_OPTIONS)}"
                )
            fs, root = fsspec.core.url_to_fs(target, **options)
        else:
            if options:
                raise TypeError("pass either fs= or storage_options, not both")
            root = fs._strip_protocol(target)
        if isinstance(fs, LocalFileSystem):
            root = os.path.abspath(root)
        self._fs = fs
        self._pid = os.getpid()
        self._options: dict[str, Any] = options
        self.root = str(root).rstrip("/") or "/"
        self._url = str(fs.unstrip_protocol(self.root))

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (rebuilt in a child process after ``fork``)."""
        if self._pid != os.getpid():
            # Sessions, sockets and event loops of the parent are not usable in a child.
            fs = self._fs
            self._fs = type(fs)(
                *fs.storage_args, **{**fs.storage_options, "skip_instance_cache": True}
            )
            self._pid = os.getpid()
        return self._fs

    @property
    def url(self) -> str:
        """The location as a URL (``file:///…``, ``s3://…``, ``memory://…``)."""
        return self._url

    @property
    def is_local(self) -> bool:
        """True when the location is on the local filesystem."""
        return isinstance(self._fs, LocalFileSystem)

    @property
    def is_object_store(self) -> bool:
        """True on object stores (S3 and the like): atomic PUTs, no real directories."""
        return bool(_protocols(self._fs) & OBJECT_STORE_PROTOCOLS)

    def shard_dir(self, key: UUID) -> str:
        """Return the directory (or prefix) that holds blob ``key``."""
        return f"{self.root}/{_hex(key)[:2]}"

    def blob_path(self, key: UUID) -> str:
        """Return the path of blob ``key`` inside `fs`.

        Raises:
            TypeError: ``key`` is not a `uuid.UUID` (no path is ever built from a string).
        """
        hexkey = _hex(key)
        return f"{self.root}/{hexkey[:2]}/{hexkey}"

    def child(self, name: str) -> PreparedPath:
        """Return the location ``name`` below this one, on the same filesystem."""
        return PreparedPath(f"{self.root}/{name}", fs=self.fs)

    def prepare(self) -> None:
        """Create the root directory (mode 0700) where directories exist.

        Shard directories (mode 0700) are created when their first blob is written. On an
        object store nothing is created; the bucket must exist.

        Raises:
            FileNotFoundError: the bucket of an object-store location does not exist.
        """
        if self.is_local:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        elif self.is_object_store:
            self.check_bucket()
        else:
            self.fs.makedirs(self.root, exist_ok=True)

    def check_bucket(self) -> None:
        """Raise unless the bucket of this object-store location exists and answers.

        ``fs.exists`` would answer False for an unreachable endpoint too; this tells them
        apart, naming the URL either way.

        Raises:
            FileNotFoundError: the bucket does not exist.
            OSError: the endpoint cannot be reached or refuses access.
        """
        from ._locations import remote_errors

        bucket = self.root.split("/", 1)[0]
        with remote_errors(self._url):
            try:
                self.fs.info(bucket)
            except FileNotFoundError:
                raise FileNotFoundError(errno.ENOENT, "bucket does not exist", self._url) from None

    def __repr__(self) -> str:
        return f"PreparedPath({self._url!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PreparedPath):
            return NotImplemented
        return self._url == other._url and self._fs == other._fs

    def __hash__(self) -> int:
        return hash(self._url)

    def __getstate__(self) -> dict[str, Any]:
        fs = self._fs
        return {
            "root": self.root,
            "url": self._url,
            "fs_class": type(fs),
            "storage_args": fs.storage_args,
            "storage_options": fs.storage_options,
            "options": self._options,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.root = state["root"]
        self._url = state["url"]
        self._options = state["options"]
        self._fs = state["fs_class"](*state["storage_args"], **state["storage_options"])
        self._pid = os.getpid()


def as_prepared_path(
    path_or_url: PreparedPath | str | os.PathLike[str],
    storage_options: Mapping[str, Any] | None,
    where: str,
) -> PreparedPath:
    """Return ``path_or_url`` as a `PreparedPath`, built with ``storage_options`` if needed.

    Raises:
        TypeError: storage options are given next to a ready `PreparedPath`, which carries
            its own.
    """
    if isinstance(path_or_url, PreparedPath):
        if storage_options:
            raise TypeError(f"{where}: storage options belong in the PreparedPath, not next to it")
        return path_or_url
    return PreparedPath(path_or_url, storage_options=storage_options)


def location_like(
    location: PreparedPath | str | os.PathLike[str], like: PreparedPath | None
) -> PreparedPath:
    """Return ``location`` as a `PreparedPath`, on the filesystem of ``like`` if it is there.

    A path or URL on the same filesystem as ``like`` (same protocol: a local path next to a
    local cache, another ``s3://`` prefix next to an S3 cache) reuses ``like``'s filesystem
    object, so it gets the same endpoint, credentials and other storage options. A ready
    `PreparedPath` is used as it is: options given explicitly win.
    """
    if isinstance(location, PreparedPath):
        return location
    # Only the protocol is compared: another bucket of one object store is the same
    # filesystem, reached with the same client.
    if (
        like is not None
        and isinstance(location, str | os.PathLike)  # else PreparedPath names the culprit
        and get_protocol(os.fspath(location)) in _protocols(like.fs)
    ):
        return PreparedPath(location, fs=like.fs)
    return PreparedPath(location)
