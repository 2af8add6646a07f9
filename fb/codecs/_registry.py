"""The codec registry, in the manner of fsspec's ``registry.py``.

Lookup order for a name: explicit `register_codec` > the ``fb.codecs`` entry-point group
(loaded on the first miss, not at import) > the built-ins, which are lazy
``"module:Name"`` strings so an optional dependency is imported only when used.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

from ..exceptions import PluginNotFoundError
from ..typing import Codec

__all__ = ["available_codecs", "get_codec", "register_codec", "registry"]

_log = logging.getLogger("fb")

CodecFactory = Callable[[], Codec[Any]]

# name -> (import string, extra that provides its dependency)
_BUILTIN: dict[str, tuple[str, str | None]] = {
    "pickle": ("fb.codecs._pickle_codec:PickleCodec", None),
}

_registry: dict[str, CodecFactory] = {}
_entry_points: dict[str, Any] | None = None
_lock = threading.Lock()

registry: Mapping[str, CodecFactory] = MappingProxyType(_registry)
"""Read-only view of the explicitly registered codecs."""


def register_codec(name: str, factory: CodecFactory, *, clobber: bool = False) -> None:
    """Make ``factory`` (a codec class or any callable returning a codec) known as ``name``.

    Raises:
        ValueError: ``name`` is registered already and ``clobber`` is false.
    """
    with _lock:
        if name in _registry and not clobber:
            raise ValueError(f"codec {name!r} is registered already; pass clobber=True")
        _registry[name] = factory


def _load_entry_points() -> dict[str, Any]:
    global _entry_points  # noqa: PLW0603 - loaded once, on the first miss
    with _lock:
        if _entry_points is None:
            _entry_points = {ep.name: ep for ep in entry_points(group="fb.codecs")}
        return _entry_points


def available_codecs() -> list[str]:
    """Return every codec name that can be asked for: registered, entry points, built-ins."""
    return sorted({*_registry, *_load_entry_points(), *_BUILTIN})


def _import(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_codec(spec: str | Codec[Any]) -> Codec[Any]:
    """Return a codec instance for a name such as ``"pickle"``, or ``spec`` itself if it is one.

    Raises:
        PluginNotFoundError: no codec of that name exists; the message lists those that do.
        ImportError: the codec exists but its optional dependency is missing (with the
            ``pip install`` line that fixes it).
    """
    if not isinstance(spec, str):
        if isinstance(spec, Codec):
            return spec
        raise TypeError(f"a codec or a codec name is needed, not {spec!r}")
    factory = _registry.get(spec)
    if factory is not None:
        return factory()
    entry = _load_entry_points().get(spec)
    if entry is not None:
        try:
            return entry.load()()  # type: ignore[no-any-return]
        except Exception as exc:
            dist = getattr(getattr(entry, "dist", None), "name", "an unknown distribution")
            raise PluginNotFoundError(
                "codec", spec, available_codecs(), hint=f"its entry point in {dist} failed: {exc}"
            ) from exc
    builtin = _BUILTIN.get(spec)
    if builtin is not None:
        target, extra = builtin
        try:
            cls = _import(target)
        except ImportError as exc:
            raise ImportError(
                f"codec {spec!r} needs an optional dependency: pip install 'file-backed[{extra}]'"
            ) from exc
        return cls()  # type: ignore[no-any-return]
    raise PluginNotFoundError("codec", spec, available_codecs())
