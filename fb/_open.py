"""`open_pool`: one line from a URL to a working pool."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import fsspec
from fsspec.utils import get_protocol

from ._keywords import check_keywords, storage_options_dict
from ._pool import FBPool
from ._store import DEFAULT_MAX_WORKERS, BackingStore
from .backends import get_backend
from .backends._prepared_path import OBJECT_STORE_PROTOCOLS
from .backends._registry import fbstore_backend
from .codecs import get_codec
from .exceptions import PluginNotFoundError
from .typing import Codec, Strategy

__all__ = ["open_pool"]

OBJECT_STORE_WORKERS = 16


@check_keywords
def open_pool(
    url: str | os.PathLike[str],
    *,
    codec: str | Codec[Any] = "pickle",
    max_items: int | None = None,
    max_bytes: int | None = None,
    sizeof: Callable[[Any], int] | None = None,
    max_workers: int | None = None,
    secret_key: bytes | str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> FBPool[Any]:
    """Open a pool whose cold items spill to ``url``: a local path or any fsspec URL.

    The URL's protocol picks the backend from the registry (`fb.backends.get_backend`): the
    built-in `FBStore` for ``file``, ``memory``, ``s3`` and any fsspec protocol, or a plugin
    registered for its protocol.

    The pool owns its store: ``pool.close()`` (or leaving ``with open_pool(...) as pool:``)
    closes both, deleting the blobs still referenced. On an object store (``s3://…``) the
    pool writes under a fresh session prefix ``<url>/fb-<32 hex>/``, so several processes
    can share one URL; a local directory is owned by one store at a time (a lock file).

    Args:
        url: where cold items go (``/tmp/spill``, ``file:///…``, ``s3://bucket/prefix``,
            ``memory://…``).
        codec: a codec or a codec name (``"pickle"``, ``"msgpack"``, ``"zstd:pickle"`` …).
        max_items: item budget of the pool.
        max_bytes: byte budget of the pool.
        sizeof: how to measure a value for ``max_bytes``.
        max_workers: background threads (default 4 on local disk, 16 on object stores,
            where write-back is bound by requests in flight).
        secret_key: sign blobs with HMAC-SHA256 and refuse unsigned or altered ones
            (see `fb.backends.FBStore`).
        storage_options: passed to fsspec, in one mapping as pandas, Dask and xarray take
            them (e.g. ``{"client_kwargs": {"endpoint_url": …}}`` for S3). A location that
            ``pool.store.track_path`` is given on the same filesystem reuses them.

    Returns:
        The pool; ``pool.store`` is its `BackingStore`.

    Raises:
        TypeError: a keyword is unknown: the message suggests the parameter it is close to
            (``max_byte`` → ``max_bytes``), or the ``storage_options`` mapping for what
            looks like a storage option. Nothing is opened.
        FileNotFoundError: the bucket of an object-store URL does not exist.
        StoreLockedError: another live store owns the local directory.
    """
    target = os.fspath(url)
    protocol = get_protocol(target)
    options: dict[str, Any] = {}
    # Passed only when given: a plugin backend that takes no storage options never sees them.
    if storage_options is not None:
        options["storage_options"] = storage_options_dict(storage_options, "open_pool()")
    if protocol in OBJECT_STORE_PROTOCOLS:
        target = f"{target.rstrip('/')}/fb-{uuid.uuid4().hex}"
        workers = OBJECT_STORE_WORKERS
    else:
        workers = DEFAULT_MAX_WORKERS
    if secret_key is not None:
        options["secret_key"] = secret_key
    # The backend registry serves the URL's protocol: built-ins (FBStore on fsspec) or a
    # plugin registered under the fb.backends entry point.
    factory: Callable[..., Strategy[Any]]
    try:
        factory = get_backend(protocol)
    except PluginNotFoundError:
        if protocol not in fsspec.available_protocols():
            raise
        factory = fbstore_backend  # any other fsspec filesystem: FBStore over it
    strategy = factory(get_codec(codec), target, **options)
    try:
        store: BackingStore[Any] = BackingStore(strategy, max_workers=max_workers or workers)
        pool: FBPool[Any] = FBPool(store, max_items=max_items, max_bytes=max_bytes, sizeof=sizeof)
    except BaseException:
        strategy.close()
        raise
    pool._owns_store = True
    return pool
