"""Named plugins (codecs, backends) found in three places, in the manner of fsspec's registry.

Lookup order for a name:

1. explicit registration (`PluginRegistry.register`, e.g. ``fb.codecs.register_codec``);
2. the entry points of the registry's group (``fb.codecs``, ``fb.backends``), read from the
   installed distributions' metadata on the first lookup that step 1 misses, never at import;
   only the entry point that is asked for is imported;
3. the built-ins: lazy ``"module:attribute"`` strings, so an optional dependency is imported
   only when its plugin is used, and a missing one names the extra that installs it.

An entry point that cannot be loaded is reported, with its distribution's name, only to the
one who asks for it; every other name keeps working.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType
from typing import Generic, TypeVar

import attrs

from .exceptions import PluginNotFoundError

__all__ = ["Builtin", "PluginRegistry"]

_log = logging.getLogger("fb")

F = TypeVar("F", bound=Callable[..., object])


@attrs.frozen(kw_only=True)
class Builtin:
    """A plugin that ships with fb, imported only when it is asked for.

    Attributes:
        target: ``"module:attribute"`` of the factory.
        extra: the extra of ``file-backed`` that installs what it needs, if anything.
        requires: modules that must be importable (checked without importing them), for a
            factory whose own module imports fine without its dependency.
    """

    target: str = attrs.field(validator=attrs.validators.matches_re(r"^[\w.]+:\w+$"))
    extra: str | None = None
    requires: tuple[str, ...] = ()


def _install_hint(extra: str) -> str:
    return f"pip install 'file-backed[{extra}]'"


class PluginRegistry(Generic[F]):
    """Names to factories: explicit registrations, then entry points, then built-ins.

    Args:
        kind: what the plugins are, for messages (``"codec"``, ``"backend"``).
        group: the entry-point group (``"fb.codecs"``).
        builtins: the plugins that ship with fb.

    Notes:
        Thread-safe. Lookups that miss the explicit registrations read the installed
        distributions' metadata once (file I/O); loading a plugin imports its module.
    """

    def __init__(self, kind: str, group: str, builtins: Mapping[str, Builtin]) -> None:
        self.kind = kind
        self.group = group
        self._builtins = dict(builtins)
        self._registered: dict[str, F] = {}
        self._entry_points: dict[str, EntryPoint] | None = None
        self._loaded: dict[str, F] = {}
        self._lock = threading.RLock()
        self.registered: Mapping[str, F] = MappingProxyType(self._registered)
        """Read-only view of the explicit registrations."""

    def __repr__(self) -> str:
        scanned = "not read yet" if self._entry_points is None else len(self._entry_points)
        return (
            f"<PluginRegistry {self.group}: {len(self._registered)} registered, "
            f"entry points {scanned}, {len(self._builtins)} built-in>"
        )

    def register(self, name: str, factory: F, *, clobber: bool = False) -> None:
        """Make ``factory`` known as ``name``, ahead of entry points and built-ins.

        Raises:
            ValueError: ``name`` is registered already and ``clobber`` is false, or it is
                empty.
            TypeError: ``factory`` is not callable.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, not {name!r}")
        if not callable(factory):
            raise TypeError(f"a {self.kind} factory must be callable, not {factory!r}")
        with self._lock:
            if name in self._registered and not clobber:
                raise ValueError(
                    f"{self.kind} {name!r} is registered already; pass clobber=True to replace it"
                )
            self._registered[name] = factory

    def unregister(self, name: str) -> None:
        """Forget the explicit registration of ``name``; entry points and built-ins stay."""
        with self._lock:
            self._registered.pop(name, None)

    def reload_entry_points(self) -> None:
        """Read the entry points again on the next miss (after installing a plugin)."""
        with self._lock:
            self._entry_points = None
            self._loaded.clear()

    def _group(self) -> dict[str, EntryPoint]:
        with self._lock:
            if self._entry_points is None:
                found: dict[str, EntryPoint] = {}
                for entry in entry_points(group=self.group):
                    if entry.name in found and found[entry.name].value != entry.value:
                        _log.warning(
                            "fb: %s %r is provided by two entry points (%s, %s); using %s",
                            self.kind,
                            entry.name,
                            _dist_name(found[entry.name]),
                            _dist_name(entry),
                            _dist_name(entry),
                        )
                    found[entry.name] = entry
                self._entry_points = found
            return self._entry_points

    def names(self) -> list[str]:
        """Return every name that can be asked for, sorted (reads the entry points)."""
        with self._lock:
            return sorted({*self._registered, *self._group(), *self._builtins})

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        with self._lock:
            return name in self._registered or name in self._group() or name in self._builtins

    def get(self, name: str, *, context: str = "") -> F:
        """Return the factory of ``name``.

        Args:
            name: the plugin's name.
            context: added to the message of a `PluginNotFoundError` (e.g. the whole spec).

        Raises:
            PluginNotFoundError: no plugin has that name, or its entry point cannot be
                loaded (the message names the distribution and the error).
            ImportError: a built-in whose optional dependency is missing; the message has
                the ``pip install`` line that fixes it.
        """
        with self._lock:
            factory = self._registered.get(name)
            if factory is not None:
                return factory
            factory = self._loaded.get(name)
            if factory is not None:
                return factory
            entry = self._group().get(name)
        if entry is not None:
            factory = self._load_entry_point(name, entry, context)
            with self._lock:
                self._loaded[name] = factory
            return factory
        builtin = self._builtins.get(name)
        if builtin is None:
            raise PluginNotFoundError(self.kind, name, self.names(), hint=context)
        return self._load_builtin(name, builtin)

    def _load_entry_point(self, name: str, entry: EntryPoint, context: str) -> F:
        dist = _dist_name(entry)
        try:
            factory = entry.load()
        except Exception as exc:
            _log.warning("fb: the %s entry point %r of %s failed to load", self.kind, name, dist)
            hint = (
                f"The entry point {name} = {entry.value!r} of distribution {dist} could not "
                f"be loaded: {type(exc).__name__}: {exc}"
            )
            raise PluginNotFoundError(
                self.kind, name, self.names(), hint=f"{context}. {hint}" if context else hint
            ) from exc
        if not callable(factory):
            raise PluginNotFoundError(
                self.kind,
                name,
                self.names(),
                hint=f"The entry point {name} = {entry.value!r} of distribution {dist} "
                f"is not callable: {factory!r}",
            )
        return factory  # type: ignore[no-any-return]

    def _load_builtin(self, name: str, builtin: Builtin) -> F:
        missing = [module for module in builtin.requires if not _importable(module)]
        if missing and builtin.extra is not None:
            raise ImportError(
                f"{self.kind} {name!r} needs {', '.join(missing)}, which is not installed: "
                f"{_install_hint(builtin.extra)}",
                name=missing[0],
            )
        module_name, _, attribute = builtin.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if builtin.extra is None:
                raise
            raise ImportError(
                f"{self.kind} {name!r} needs an optional dependency that is not installed "
                f"({exc}): {_install_hint(builtin.extra)}",
                name=exc.name,
            ) from exc
        factory: F = getattr(module, attribute)
        return factory


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _dist_name(entry: EntryPoint) -> str:
    dist = getattr(entry, "dist", None)
    name = getattr(dist, "name", None)
    return str(name) if name else "an unknown distribution"
