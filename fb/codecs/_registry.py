"""The codec registry: names and specs such as ``"zstd:msgpack"`` to codec instances.

A *spec* is a codec name, optionally followed by ``":"`` and an argument that the codec's
factory receives as a string: ``"zstd:msgpack"`` builds ``ZstdCodec("msgpack")``, which
resolves ``"msgpack"`` through this registry in turn, and ``"protobuf:pkg.Msg"`` builds
``ProtobufCodec("pkg.Msg")``. The name of every built-in codec is a spec that rebuilds it,
so the codec name in a blob's header is enough to read the blob.

Lookup follows `fb._plugins`: `register_codec` > the ``fb.codecs`` entry points (read on the
first miss, not at import) > the built-ins (imported lazily, with an install hint when the
extra they need is missing).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .._plugins import Builtin, PluginRegistry
from ..exceptions import CodecError
from ..typing import Codec

__all__ = ["CodecFactory", "available_codecs", "get_codec", "register_codec", "registry"]

CodecFactory = Callable[..., Codec[Any]]
"""A codec class, or any callable returning a codec; called with no argument for a plain
name and with the argument string for ``"name:argument"``."""

_BUILTINS = {
    "dask": Builtin(
        target="fb.codecs._dask_codec:DaskCodec", extra="dask", requires=("distributed",)
    ),
    "json": Builtin(target="fb.codecs._json_codec:JsonCodec"),
    "lz4": Builtin(target="fb.codecs._compression:Lz4Codec", extra="compression"),
    "msgpack": Builtin(target="fb.codecs._msgpack_codec:MsgpackCodec", extra="msgpack"),
    "numpy": Builtin(target="fb.codecs._numpy_codec:NumpyCodec", extra="numpy"),
    "pickle": Builtin(target="fb.codecs._pickle_codec:PickleCodec"),
    "protobuf": Builtin(target="fb.codecs._protobuf_codec:ProtobufCodec", extra="protobuf"),
    "zstd": Builtin(target="fb.codecs._compression:ZstdCodec", extra="compression"),
}

REGISTRY: PluginRegistry[CodecFactory] = PluginRegistry("codec", "fb.codecs", _BUILTINS)
"""The one codec registry of the process."""

registry: Mapping[str, CodecFactory] = REGISTRY.registered
"""Read-only view of the explicitly registered codecs."""


def register_codec(name: str, factory: CodecFactory, *, clobber: bool = False) -> None:
    """Make ``factory`` (a codec class or any callable returning a codec) known as ``name``.

    An explicit registration wins over an entry point or a built-in of the same name.

    Args:
        name: the name `get_codec` will know it by.
        factory: called with no argument for ``name``, and with the argument string for
            a spec ``"name:argument"``.
        clobber: replace an earlier registration of ``name`` instead of raising.

    Raises:
        ValueError: ``name`` is registered already and ``clobber`` is false.
    """
    REGISTRY.register(name, factory, clobber=clobber)


def available_codecs() -> list[str]:
    """Return every codec name that can be asked for (registered, entry points, built-ins).

    A built-in whose optional dependency is missing is listed too; asking for it raises an
    `ImportError` that says what to install.
    """
    return REGISTRY.names()


def get_codec(spec: str | Codec[Any]) -> Codec[Any]:
    """Return a codec for a spec such as ``"pickle"`` or ``"zstd:msgpack"``.

    Args:
        spec: a codec name, ``"name:argument"`` (the argument may itself be a spec), or a
            codec instance, which is returned as it is.

    Returns:
        A new codec instance (codecs are small, immutable and thread-safe).

    Raises:
        PluginNotFoundError: no codec has the name; the message lists those that exist.
        ImportError: the codec needs an optional dependency that is missing; the message
            has the ``pip install`` line that fixes it.
        CodecError: the codec exists but cannot be built from this spec (e.g. an argument
            it does not take).
        TypeError: ``spec`` is neither a string nor a codec.
    """
    if isinstance(spec, str):
        return _build(spec)
    if isinstance(spec, type):
        raise TypeError(f"a codec instance is needed, not the class {spec.__qualname__}")
    if isinstance(spec, Codec):
        return spec
    raise TypeError(f"a codec or a codec spec is needed, not {spec!r}")


def _build(spec: str) -> Codec[Any]:
    if not spec:
        raise CodecError("an empty string is not a codec spec")
    if ":" not in spec or spec in REGISTRY:
        return _call(spec, REGISTRY.get(spec), ())
    name, _, argument = spec.partition(":")
    factory = REGISTRY.get(name, context=f"It is the codec of the spec {spec!r}")
    return _call(spec, factory, (argument,))


def _call(spec: str, factory: CodecFactory, args: tuple[str, ...]) -> Codec[Any]:
    try:
        codec = factory(*args)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, CodecError):
            raise
        raise CodecError(f"cannot build codec {spec!r}: {exc}", codec=spec) from exc
    if isinstance(codec, type) or not isinstance(codec, Codec):
        raise CodecError(
            f"the factory of codec {spec!r} returned {codec!r}, which is not a codec "
            "(it needs a name property, dump and load)",
            codec=spec,
        )
    return codec
