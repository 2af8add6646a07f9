"""`Shelf.memoize`: stable hashing of a call's arguments and once-per-process computation."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import pickle
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ._shelf import Shelf

__all__ = ["call_digest", "memoize"]

F = TypeVar("F", bound=Callable[..., Any])
_MISSING: Any = object()
PREFIX = "memoize"


def _encode(value: Any, out: list[bytes]) -> None:
    """Append a canonical encoding of ``value`` to ``out``: equal values, equal bytes.

    Built-in scalars and containers are encoded by content with a type tag (``1`` and
    ``1.0`` and ``True`` differ; dict and set order does not matter); numpy arrays by
    dtype, shape and data; anything else by its type's name and its pickle.
    """
    kind = type(value)
    if value is None:
        out.append(b"N")
    elif kind is bool:
        out.append(b"B1" if value else b"B0")
    elif kind is int:
        out.append(b"I%d;" % value)
    elif kind is float:
        out.append(b"F" + float.hex(value).encode() + b";")
    elif kind is complex:
        out.append(b"C" + f"{value.real.hex()},{value.imag.hex()}".encode() + b";")
    elif kind is str:
        data = value.encode("utf-8", "surrogatepass")
        out.append(b"S%d:" % len(data) + data)
    elif kind in (bytes, bytearray):
        out.append(b"Y%d:" % len(value) + bytes(value))
    elif kind in (tuple, list):
        out.append((b"T" if kind is tuple else b"L") + b"%d:" % len(value))
        for item in value:
            _encode(item, out)
    elif kind is dict:
        pairs = sorted((_digest_of(k), _digest_of(v)) for k, v in value.items())
        out.append(b"D%d:" % len(pairs) + b"".join(k + v for k, v in pairs))
    elif kind in (set, frozenset):
        items = sorted(_digest_of(item) for item in value)
        out.append(b"E%d:" % len(items) + b"".join(items))
    elif kind.__module__ == "numpy" and kind.__name__ == "ndarray" and value.dtype != object:
        header = f"{value.dtype.str}{value.shape}".encode()
        data = value.tobytes(order="C")
        out.append(b"A%d:" % len(header) + header + b"%d:" % len(data) + data)
    else:
        name = f"{kind.__module__}.{kind.__qualname__}".encode()
        data = pickle.dumps(value, protocol=5)
        out.append(b"P%d:" % len(name) + name + b"%d:" % len(data) + data)


def _digest_of(value: Any) -> bytes:
    parts: list[bytes] = []
    _encode(value, parts)
    return hashlib.sha256(b"".join(parts)).digest()


def call_digest(
    signature: inspect.Signature, ignore: frozenset[str], args: Any, kwargs: Any
) -> str:
    """Return the hex digest of a call: its arguments bound to ``signature``, defaults filled.

    Raises:
        TypeError: the arguments do not fit the signature (as calling would).
    """
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    parts: list[bytes] = []
    for name, value in bound.arguments.items():
        if name in ignore:
            continue
        _encode(name, parts)
        _encode(value, parts)
    return hashlib.sha256(b"".join(parts)).hexdigest()


def namespace(func: Callable[..., Any], version: str | None) -> str:
    """Return the name prefix of ``func``'s results: module, qualified name, version."""
    module = getattr(func, "__module__", None) or "__unknown__"
    qualname = getattr(func, "__qualname__", None) or repr(func)
    base = f"{PREFIX}/{module}.{qualname}"
    return f"{base}@{version}" if version is not None else base


def memoize(
    shelf: Shelf[Any], *, version: str | None, ignore: tuple[str, ...], expire: float | None
) -> Callable[[F], F]:
    """Return the decorator behind `Shelf.memoize`."""
    if version is not None and not isinstance(version, str):
        raise TypeError(f"version must be a string or None, not {type(version).__name__}")
    for name in ignore:
        if not isinstance(name, str):
            raise TypeError(f"ignore lists parameter names (strings), not {name!r}")

    def decorate(func: F) -> F:
        if not callable(func):
            raise TypeError(f"memoize decorates a function, not {func!r}")
        signature = inspect.signature(func)
        unknown = sorted(set(ignore) - set(signature.parameters))
        if unknown:
            raise ValueError(
                f"ignore names {unknown[0]!r}, which is not a parameter of {func.__qualname__}"
            )
        prefix = namespace(func, version)
        skip = frozenset(ignore)

        def name_for(*args: Any, **kwargs: Any) -> str:
            return f"{prefix}/{call_digest(signature, skip, args, kwargs)}"

        if inspect.iscoroutinefunction(func):
            wrapper: Any = _async_wrapper(shelf, func, name_for, expire)
        else:
            wrapper = _sync_wrapper(shelf, func, name_for, expire)
        wrapper.name_for = name_for
        wrapper.namespace = prefix
        return functools.update_wrapper(wrapper, func)  # type: ignore[return-value]

    return decorate


def _sync_wrapper(
    shelf: Shelf[Any], func: Callable[..., Any], name_for: Callable[..., str], expire: Any
) -> Callable[..., Any]:
    locks: dict[str, tuple[threading.Lock, int]] = {}
    guard = threading.Lock()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        name = name_for(*args, **kwargs)
        value = shelf.get(name, _MISSING)
        if value is not _MISSING:
            return value
        # One lock per name: callers with equal arguments wait for the first to finish,
        # then find its result on the shelf.
        with guard:
            lock, users = locks.get(name, (threading.Lock(), 0))
            locks[name] = (lock, users + 1)
        try:
            with lock:
                value = shelf.get(name, _MISSING)
                if value is _MISSING:
                    value = func(*args, **kwargs)
                    shelf.set(name, value, expire=expire)
                return value
        finally:
            with guard:
                lock, users = locks[name]
                if users == 1:
                    del locks[name]
                else:
                    locks[name] = (lock, users - 1)

    return wrapper


def _async_wrapper(
    shelf: Shelf[Any], func: Callable[..., Any], name_for: Callable[..., str], expire: Any
) -> Callable[..., Any]:
    running: dict[tuple[int, str], asyncio.Future[Any]] = {}

    async def compute(name: str, args: Any, kwargs: Any) -> Any:
        value = await shelf.aget(name, _MISSING)
        if value is _MISSING:
            value = await func(*args, **kwargs)
            await shelf.aset(name, value, expire=expire)
        return value

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        name = name_for(*args, **kwargs)
        # Per event loop: a future belongs to the loop that made it.
        slot = (id(asyncio.get_running_loop()), name)
        task = running.get(slot)
        if task is None:
            task = asyncio.ensure_future(compute(name, args, kwargs))
            running[slot] = task
            task.add_done_callback(lambda _: running.pop(slot, None))
        return await asyncio.shield(task)

    return wrapper
