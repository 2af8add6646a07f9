"""default_sizeof: cheap estimates of the memory a value holds, for max_bytes."""

from __future__ import annotations

import sys
from collections import OrderedDict, defaultdict
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fb import default_sizeof


class WithNbytes:
    """Anything exposing an integer ``nbytes``, like a pyarrow table."""

    nbytes = 12_345


class WithFloatNbytes:
    """An ``nbytes`` that is not an int is not trusted."""

    nbytes = 1e9


class WithSizeof:
    """An object that reports its own deep size."""

    def __sizeof__(self) -> int:
        return 5_000


class BrokenSizeof:
    """An object whose ``__sizeof__`` is broken, so sys.getsizeof raises TypeError."""

    def __sizeof__(self) -> Any:
        return "many"


class Pair(NamedTuple):
    """A tuple subclass holding a large payload."""

    left: bytes
    right: bytes


def test_bytes_like_values_count_their_length() -> None:
    """bytes, bytearray and memoryview count exactly their payload."""
    assert default_sizeof(b"") == 0
    assert default_sizeof(bytes(1000)) == 1000
    assert default_sizeof(bytearray(300)) == 300
    view = memoryview(bytes(400)).cast("I")
    assert len(view) == 100
    assert default_sizeof(view) == 400
    assert default_sizeof(memoryview(bytes(400))[100:150]) == 50


def test_numpy_arrays_count_nbytes() -> None:
    """A numpy array counts its nbytes, not the small object header."""
    assert default_sizeof(np.zeros(1000, dtype=np.float64)) == 8000
    assert default_sizeof(np.zeros((10, 10), dtype=np.uint8)) == 100


def test_objects_with_integer_nbytes() -> None:
    """Any object with an int ``nbytes`` counts that; a non-int one is ignored."""
    assert default_sizeof(WithNbytes()) == 12_345
    assert default_sizeof(WithFloatNbytes()) == sys.getsizeof(WithFloatNbytes())


def test_str_counts_getsizeof() -> None:
    """A str counts sys.getsizeof, which grows with its length."""
    text = "x" * 1000
    assert default_sizeof(text) == sys.getsizeof(text)
    assert default_sizeof(text) >= 1000


def test_containers_add_their_items() -> None:
    """Lists, tuples, sets and dicts count themselves plus their items."""
    items = [bytes(100), bytes(200)]
    assert default_sizeof(items) == sys.getsizeof(items) + 300
    assert default_sizeof(tuple(items)) == sys.getsizeof(tuple(items)) + 300
    blobs = {bytes(10), bytes(20)}
    assert default_sizeof(blobs) == sys.getsizeof(blobs) + 30
    mapping = {b"k": bytes(500)}
    assert default_sizeof(mapping) == sys.getsizeof(mapping) + 1 + 500
    nested = {"a": [bytes(1000)]}
    assert default_sizeof(nested) > 1000


def test_large_containers_are_sampled() -> None:
    """A large container of similar items is estimated from a sample, close to the truth."""
    items = [bytes(10) for _ in range(10_000)]
    assert default_sizeof(items) == sys.getsizeof(items) + 100_000
    mixed = [bytes(10) if i % 2 else bytes(30) for i in range(10_001)]
    truth = sys.getsizeof(mixed) + sum(len(b) for b in mixed)
    assert abs(default_sizeof(mixed) - truth) <= truth // 10


def test_self_referencing_container_terminates() -> None:
    """A container that holds itself is measured in bounded time."""
    loop: list[Any] = [bytes(10)]
    loop.append(loop)
    assert default_sizeof(loop) >= 10


def test_other_objects_use_getsizeof() -> None:
    """Other objects count sys.getsizeof, which honours ``__sizeof__``."""
    assert default_sizeof(WithSizeof()) >= 5_000
    assert default_sizeof(12) == sys.getsizeof(12)


def test_broken_sizeof_gets_a_fallback() -> None:
    """An object sys.getsizeof cannot measure gets a small positive guess."""
    assert default_sizeof(BrokenSizeof()) > 0


@pytest.mark.parametrize(
    "value",
    [
        defaultdict(bytes, {1: bytes(100_000)}),
        OrderedDict({1: bytes(100_000)}),
        Pair(bytes(50_000), bytes(50_000)),
    ],
    ids=["defaultdict", "OrderedDict", "namedtuple"],
)
def test_container_subclasses_add_their_items(value: Any) -> None:
    """Subclasses of the built-in containers count their items too."""
    assert default_sizeof(value) >= 100_000


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@given(JSON)
def test_estimate_is_a_non_negative_int(value: Any) -> None:
    """Whatever the value, the estimate is an int >= 0."""
    size = default_sizeof(value)
    assert type(size) is int
    assert size >= 0
