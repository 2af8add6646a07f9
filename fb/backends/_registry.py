"""The backend registry: URL protocols (``"file"``, ``"memory"``, ``"s3"``) to backend factories.

A backend factory is called as ``factory(codec, path_or_url, **options)`` and returns a
`Strategy`. fsspec storage options, when the caller gives any, arrive in one mapping as
``storage_options={...}``. Every built-in builds an `FBStore` over fsspec; plugins add others
through the ``fb.backends`` entry-point group.

Lookup follows `fb._plugins`: `register_backend` > the ``fb.backends`` entry points (read on
the first miss, not at import) > the built-ins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

from fsspec.utils import get_protocol

from .._keywords import check_keywords
from .._plugins import Builtin, PluginRegistry
from ..codecs import get_codec
from ..typing import Codec, Strategy
from ._fbstore import FBStore
from ._prepared_path import PreparedPath, as_prepared_path

__all__ = [
    "BackendFactory",
    "available_backends",
    "fbstore_backend",
    "get_backend",
    "open_backend",
    "register_backend",
    "registry",
]


class BackendFactory(Protocol):
    """Builds a backend: ``factory(codec, path_or_url, **options) -> Strategy``.

    fb passes fsspec storage options, when the caller gives any, as one keyword,
    ``storage_options={...}``; a factory that takes none may refuse it.
    """

    def __call__(
        self, codec: Codec[Any] | str, path_or_url: Any, /, **options: Any
    ) -> Strategy[Any]:
        """Return a `Strategy` that stores blobs encoded by ``codec`` at ``path_or_url``."""
        ...


@check_keywords
def fbstore_backend(
    codec: Codec[Any] | str,
    path_or_url: PreparedPath | str | os.PathLike[str],
    /,
    *,
    storage_options: Mapping[str, Any] | None = None,
    sweep: bool | None = None,
    secret_key: bytes | str | None = None,
) -> FBStore[Any]:
    """Build an `FBStore`: the factory of the built-in backends (any fsspec filesystem).

    Args:
        codec: a codec or a codec spec.
        path_or_url: a `PreparedPath`, a local path or an fsspec URL.
        storage_options: passed to fsspec through `PreparedPath` (e.g.
            ``{"client_kwargs": …}`` for S3); not allowed with a `PreparedPath`, which
            carries its own.
        sweep: passed to `FBStore`.
        secret_key: passed to `FBStore` (sign and check blobs).

    Raises:
        TypeError: a keyword is unknown (the message suggests the one meant), or storage
            options are given next to a `PreparedPath`.
    """
    path = as_prepared_path(path_or_url, storage_options, "fbstore_backend()")
    return FBStore(codec, path, sweep=sweep, secret_key=secret_key)


_FBSTORE = "fb.backends._registry:fbstore_backend"
_BUILTINS = {
    "file": Builtin(target=_FBSTORE),
    "local": Builtin(target=_FBSTORE),
    "memory": Builtin(target=_FBSTORE),
    "s3": Builtin(target=_FBSTORE, extra="s3", requires=("s3fs",)),
    "s3a": Builtin(target=_FBSTORE, extra="s3", requires=("s3fs",)),
    # Many small objects: blobs in an embedded database (the crate's redb backend).
    "diskcache": Builtin(
        target="fb.backends._diskcache:diskcache_backend",
        extra="diskcache",
        requires=("diskcache",),
    ),
}

REGISTRY: PluginRegistry[BackendFactory] = PluginRegistry("backend", "fb.backends", _BUILTINS)
"""The one backend registry of the process."""

registry: Mapping[str, BackendFactory] = REGISTRY.registered
"""Read-only view of the explicitly registered backends."""


def register_backend(name: str, factory: BackendFactory, *, clobber: bool = False) -> None:
    """Make ``factory`` the backend of URLs whose protocol is ``name``.

    An explicit registration wins over an entry point or a built-in of the same name.

    Args:
        name: a URL protocol (``"myproto"`` for ``myproto://…``).
        factory: called as ``factory(codec, path_or_url, **options)``; returns a `Strategy`.
        clobber: replace an earlier registration of ``name`` instead of raising.

    Raises:
        ValueError: ``name`` is registered already and ``clobber`` is false.
    """
    REGISTRY.register(name, factory, clobber=clobber)


def available_backends() -> list[str]:
    """Return every backend name (URL protocol) that can be asked for.

    A built-in whose optional dependency is missing (``s3`` without s3fs) is listed too;
    asking for it raises an `ImportError` that says what to install.
    """
    return REGISTRY.names()


def get_backend(name: str) -> BackendFactory:
    """Return the backend factory for the URL protocol ``name``.

    Raises:
        PluginNotFoundError: no backend has that name; the message lists those that do.
        ImportError: the backend needs an optional dependency that is missing; the message
            has the ``pip install`` line that fixes it.
    """
    return REGISTRY.get(name)


def open_backend(
    path_or_url: PreparedPath | str | os.PathLike[str],
    codec: Codec[Any] | str = "pickle",
    *,
    storage_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> Strategy[Any]:
    """Build the backend that the protocol of ``path_or_url`` names (a plain path: ``file``).

    Args:
        path_or_url: a local path, a URL, or a `PreparedPath`.
        codec: a codec or a codec spec, resolved by `fb.codecs.get_codec`.
        storage_options: fsspec storage options, passed to the factory as
            ``storage_options=`` (only when given, so a backend that takes none never
            sees them).
        **options: the backend's own options (``sweep``, ``secret_key`` for the
            built-ins), passed to the factory, which refuses those it does not know.

    Raises:
        PluginNotFoundError: no backend serves that protocol.
    """
    if isinstance(path_or_url, PreparedPath):
        protocol = get_protocol(path_or_url.url)
    else:
        protocol = get_protocol(os.fspath(path_or_url))
    if storage_options is not None:
        options["storage_options"] = storage_options
    return get_backend(protocol)(get_codec(codec), path_or_url, **options)
