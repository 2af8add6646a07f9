"""Keyword checks for fb's public entry points: a mistyped keyword says what was meant.

fb takes fsspec storage options in one mapping, ``storage_options={...}``, as pandas, Dask and
xarray do, never as loose keyword arguments: a loose keyword that fb does not know would
otherwise be taken for a storage option, and ``max_byte=100`` would run without a byte
budget. `check_keywords` turns an unknown keyword into a `TypeError` that suggests the close
parameter name (``max_bytes``) or, for what looks like a storage option, the mapping to put
it in. The messages name keywords only, never their values, which may be credentials.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

__all__ = ["check_keywords", "storage_options_dict", "unknown_keywords_error"]

P = ParamSpec("P")
R = TypeVar("R")

# difflib's default (0.6) would offer ``secret_key`` for s3fs's ``secret``, which is a storage
# option: only near misses (a dropped or swapped letter) are suggested.
_CUTOFF = 0.8


def unknown_keywords_error(where: str, unknown: Iterable[str], known: Iterable[str]) -> TypeError:
    """Return the `TypeError` for keywords ``unknown`` given to ``where``.

    Args:
        where: the callable as the user wrote it (``"open_pool()"``).
        unknown: the keywords it does not take.
        known: the keywords it takes; a close one is suggested for each unknown one.
    """
    names = sorted(unknown)
    known = sorted(known)
    near = {name: close for name in names if (close := _close_match(name, known))}
    options = [name for name in names if name not in near]
    if len(names) == 1 and near:
        hints = [f"did you mean {near[names[0]]!r}?"]
    else:
        hints = [f"did you mean {close!r} for {name!r}?" for name, close in near.items()]
    if options and "storage_options" in known:
        mapping = ", ".join(f"{name!r}: ..." for name in options)
        hints.append(f"fsspec storage options go in one mapping: storage_options={{{mapping}}}")
    elif options:
        hints.append(f"it takes {', '.join(known)}")
    listed = ", ".join(repr(name) for name in names)
    what = "unexpected keyword arguments" if len(names) > 1 else "an unexpected keyword argument"
    hint = "; ".join(hints)
    return TypeError(f"{where} got {what} {listed}; {hint}")


def _close_match(name: str, known: list[str]) -> str | None:
    lowered = {option.lower(): option for option in known}
    close = difflib.get_close_matches(name.lower(), lowered, n=1, cutoff=_CUTOFF)
    return lowered[close[0]] if close else None


def check_keywords(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate ``func`` so that an unknown keyword raises `unknown_keywords_error`'s error.

    The signature (what type checkers, the documentation and `inspect` see) is unchanged;
    the check is a set difference on the keywords of each call.
    """
    signature = inspect.signature(func)
    parameters = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        raise TypeError(f"cannot check the keywords of {func.__qualname__}: it takes **kwargs")
    known = frozenset(
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and p.name != "self"
    )
    # How the user wrote the call: ``open_pool()``, or ``PreparedPath()`` for a constructor.
    owner, _, name = func.__qualname__.rpartition(".")
    where = f"{owner.rpartition('.')[2]}()" if name == "__init__" else f"{func.__name__}()"

    @functools.wraps(func)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        if not known.issuperset(kwargs):
            raise unknown_keywords_error(where, set(kwargs) - known, known)
        return func(*args, **kwargs)

    # ``inspect.getfullargspec`` does not follow ``__wrapped__``; distributed uses it to see
    # whether a worker's ``data`` class takes ``worker_local_directory``.
    checked.__signature__ = signature  # type: ignore[attr-defined]
    return checked


def storage_options_dict(value: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """Return ``value`` (None: no options) as a new dict of storage options.

    Raises:
        TypeError: ``value`` is not a mapping with string keys.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{where}: storage_options is a mapping of fsspec options, not {type(value).__name__}"
        )
    options = dict(value)
    bad = [name for name in options if not isinstance(name, str)]
    if bad:
        raise TypeError(f"{where}: storage option names are strings, not {bad[0]!r}")
    return options
