"""Default estimate of how many bytes a value holds in memory (for ``max_bytes``)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["default_sizeof"]

_SAMPLE = 64
_MAX_DEPTH = 4


def default_sizeof(value: Any) -> int:
    """Estimate the memory held by ``value``, in bytes.

    - bytes-like objects: their length (``memoryview.nbytes``);
    - objects with an integer ``nbytes`` (numpy arrays, pyarrow arrays and tables): that;
    - ``str``: ``sys.getsizeof``;
    - lists, tuples, sets, dicts: the container plus its items, sampling 64 items evenly
      in large containers and extrapolating, as dask's ``sizeof`` does;
    - anything else: ``sys.getsizeof`` (which honours ``__sizeof__``, e.g. pandas' deep size).

    The estimate is cheap and never pickles the value.
    """
    if type(value) is bytes:  # the commonest case, without a second call
        return len(value)
    return _sizeof(value, 0)


def _sizeof(value: Any, depth: int) -> int:
    kind = type(value)
    if kind is bytes or kind is bytearray:
        return len(value)
    if kind is memoryview:
        return int(value.nbytes)
    if kind is str:
        return sys.getsizeof(value)
    nbytes = getattr(value, "nbytes", None)
    if type(nbytes) is int:
        return nbytes
    if depth >= _MAX_DEPTH:
        return sys.getsizeof(value)
    if isinstance(value, dict):
        items = list(value.items())
        return sys.getsizeof(value) + _sample(
            items, lambda kv: _sizeof(kv[0], depth + 1) + _sizeof(kv[1], depth + 1)
        )
    if isinstance(value, list | tuple | set | frozenset):
        return sys.getsizeof(value) + _sample(list(value), lambda v: _sizeof(v, depth + 1))
    try:
        return sys.getsizeof(value)
    except TypeError:
        return 64


def _sample(items: list[Any], measure: Any) -> int:
    count = len(items)
    if count <= _SAMPLE:
        return sum(measure(item) for item in items)
    step = count / _SAMPLE
    picked = [items[int(i * step)] for i in range(_SAMPLE)]
    return int(sum(measure(item) for item in picked) * count / _SAMPLE)
