"""Shelf.memoize: stable argument hashing, namespaces, sync and async, compute once."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fb import Shelf
from fb._memoize import call_digest

CALLS: Counter[str] = Counter()


def embed(corpus_id: str, model: str = "small", *, scale: float = 1.0) -> list[float]:
    """A stand-in for an expensive function (module level: its namespace is stable)."""
    CALLS[f"{corpus_id}/{model}/{scale}"] += 1
    return [len(corpus_id) * scale, len(model) * scale]


@pytest.fixture(name="location")
def fixture_location(tmp_path: Path) -> Path:
    """Where the test's shelf lives."""
    CALLS.clear()
    return tmp_path / "shelf"


def test_positional_and_keyword_calls_share_one_result(location: Path) -> None:
    """f(1), f(x=1) and f(1, default) are one call; different arguments are another."""
    with Shelf[Any](location, max_items=4) as shelf:
        cached = shelf.memoize()(embed)
        assert cached("abc") == [3.0, 5.0]
        assert cached("abc", "small") == [3.0, 5.0]
        assert cached(corpus_id="abc", model="small", scale=1.0) == [3.0, 5.0]
        assert cached("abc", scale=2.0) == [6.0, 10.0]
        assert CALLS == {"abc/small/1.0": 1, "abc/small/2.0": 1}


def test_memoized_results_survive_a_restart(location: Path) -> None:
    """A new shelf on the same location returns the stored result without calling again."""
    with Shelf[Any](location, max_items=4) as shelf:
        assert shelf.memoize()(embed)("corpus") == [6.0, 5.0]
    with Shelf[Any](location, max_items=4) as shelf:
        assert shelf.memoize()(embed)("corpus") == [6.0, 5.0]
    assert CALLS["corpus/small/1.0"] == 1


def test_a_version_is_a_new_namespace(location: Path) -> None:
    """Changing version= recomputes; the namespace names module, qualname and version."""
    with Shelf[Any](location, max_items=4) as shelf:
        one = shelf.memoize(version="1")(embed)
        two = shelf.memoize(version="2")(embed)
        one("x")
        two("x")
        one("x")
        assert CALLS["x/small/1.0"] == 2
        assert one.namespace == f"memoize/{__name__}.embed@1"  # type: ignore[attr-defined]
        assert one.name_for("x") in shelf  # type: ignore[attr-defined]


def test_ignored_arguments_do_not_change_the_key(location: Path) -> None:
    """Arguments named in ignore= do not take part in the hash."""
    calls: list[Any] = []
    with Shelf[Any](location, max_items=4) as shelf:

        @shelf.memoize(ignore=["log"])
        def double(x: int, log: Any = None) -> int:
            calls.append(x)
            return 2 * x

        assert double(3, log=object()) == 6
        assert double(3, log=print) == 6
        assert calls == [3]
        with pytest.raises(ValueError, match="nope"):
            shelf.memoize(ignore=["nope"])(double)


def test_argument_hashing_is_stable_and_typed() -> None:
    """Equal arguments hash equally (dict and set order aside); 1, 1.0 and True differ."""
    import inspect

    sig = inspect.signature(lambda x: x)
    none: frozenset[str] = frozenset()

    def digest(value: Any) -> str:
        return call_digest(sig, none, (value,), {})

    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})
    assert digest({3, 1, 2}) == digest({2, 3, 1})
    assert len({digest(1), digest(1.0), digest(True), digest("1"), digest(b"1")}) == 5
    assert digest([1, [2]]) != digest([[1], 2])
    assert digest((1, 2)) != digest([1, 2])
    # a known value: the encoding must not drift between versions
    assert digest("abc") == call_digest(sig, none, (), {"x": "abc"})


def test_numpy_arguments_hash_by_content(location: Path) -> None:
    """Arrays hash by dtype, shape and data."""
    np = pytest.importorskip("numpy")
    import inspect

    sig = inspect.signature(lambda x: x)
    none: frozenset[str] = frozenset()
    a = np.arange(6, dtype=np.int64)
    assert call_digest(sig, none, (a,), {}) == call_digest(sig, none, (a.copy(),), {})
    assert call_digest(sig, none, (a,), {}) != call_digest(sig, none, (a.reshape(2, 3),), {})


def test_concurrent_equal_calls_compute_once(location: Path) -> None:
    """Threads calling with equal arguments at once run the function once."""
    started = threading.Event()
    release = threading.Event()
    calls: list[int] = []
    with Shelf[Any](location, max_items=4) as shelf:

        @shelf.memoize()
        def slow(x: int) -> int:
            calls.append(x)
            started.set()
            assert release.wait(10)
            return x + 1

        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(slow(1))) for _ in range(4)]
        for thread in threads:
            thread.start()
        assert started.wait(10)
        release.set()
        for thread in threads:
            thread.join(10)
        assert results == [2, 2, 2, 2]
        assert calls == [1]


def test_async_functions_are_memoized_and_computed_once(location: Path) -> None:
    """Concurrent awaits of an async memoized function with equal arguments run it once."""
    calls: list[int] = []

    async def main(shelf: Shelf[Any]) -> None:
        gate = asyncio.Event()

        @shelf.memoize()
        async def fetch(x: int) -> int:
            calls.append(x)
            await gate.wait()
            return x * 10

        tasks = [asyncio.ensure_future(fetch(2)) for _ in range(3)]
        await asyncio.sleep(0)
        gate.set()
        assert await asyncio.gather(*tasks) == [20, 20, 20]
        assert await fetch(2) == 20

    with Shelf[Any](location, max_items=4) as shelf:
        asyncio.run(main(shelf))
    assert calls == [2]


def test_a_function_returning_none_is_cached(location: Path) -> None:
    """None is a result like any other: the second call does not run the function."""
    calls: list[int] = []
    with Shelf[Any](location, max_items=4) as shelf:

        @shelf.memoize()
        def nothing(x: int) -> None:
            calls.append(x)

        nothing(1)
        nothing(1)
    assert calls == [1]


MEMO_MODULE = """
import os
import sys

import fb

shelf = fb.Shelf(sys.argv[1], max_items=4)


@shelf.memoize(version="1")
def square(x: int) -> int:
    with open(sys.argv[2], "a") as log:
        log.write(f"computed {x}\\n")
    return x * x


print(square(7), square(x=7), square(8))
shelf.close()
"""


def test_memoized_results_survive_a_process_restart(tmp_path: Path) -> None:
    """A second process running the same memoized function reads the first one's results."""
    import subprocess
    import sys

    module = tmp_path / "memo_job.py"
    module.write_text(MEMO_MODULE)
    log = tmp_path / "computed.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-W", "error", str(module), str(tmp_path / "shelf"), str(log)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["49", "49", "64"]
    assert log.read_text().splitlines() == ["computed 7", "computed 8"]
