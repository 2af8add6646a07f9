"""A hypothesis state machine drives two shelves on one directory against a dict model.

Two `Shelf` objects on one location stand for two processes: each operation runs on one of
them, chosen at random, and both must agree with one dict at every step. The operations are
set, get, delete, pop, setdefault, a guard held across other operations, a restart (close a
shelf and open a new one on the location) and a sync. Small pools (0 to 2 items) make gets
load from storage often. The machine runs once per kind of name index (SQLite, record files).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fb import ReadGuard, Shelf

names = st.sampled_from(["a", "b", "c/d", "../e", "é"])
values = st.binary(max_size=64) | st.integers() | st.lists(st.integers(), max_size=4)
sides = st.integers(min_value=0, max_value=1)


class ShelfModel(RuleBasedStateMachine):
    """Two shelves on one directory against a dict."""

    def __init__(self, root: Path, index: str) -> None:
        super().__init__()
        self.index = index
        self.location = Path(tempfile.mkdtemp(prefix="example-", dir=root)) / "shelf"
        self.shelves: list[Shelf[Any]] = [self._open(n) for n in (0, 2)]
        self.model: dict[str, Any] = {}
        self.guards: list[tuple[ReadGuard[Any], Any]] = []

    def _open(self, max_items: int) -> Shelf[Any]:
        return Shelf(self.location, max_items=max_items, index=self.index)

    @rule(side=sides, name=names, value=values)
    def set(self, side: int, name: str, value: Any) -> None:
        """Set a name on one shelf."""
        self.shelves[side][name] = value
        self.model[name] = value

    @rule(side=sides, name=names)
    def get(self, side: int, name: str) -> None:
        """Get a name: the model's value, or KeyError."""
        assert self.shelves[side].get(name, KeyError) == self.model.get(name, KeyError)

    @rule(side=sides, name=names)
    def delete(self, side: int, name: str) -> None:
        """Delete a name: KeyError if the model has none."""
        try:
            del self.shelves[side][name]
        except KeyError:
            assert name not in self.model
        else:
            del self.model[name]

    @rule(side=sides, name=names)
    def pop(self, side: int, name: str) -> None:
        """Pop a name with a default."""
        assert self.shelves[side].pop(name, None) == self.model.pop(name, None)

    @rule(side=sides, name=names, value=values)
    def setdefault(self, side: int, name: str, value: Any) -> None:
        """setdefault returns what the model holds, setting it first if absent."""
        assert self.shelves[side].setdefault(name, value) == self.model.setdefault(name, value)

    @precondition(lambda self: len(self.guards) < 3)
    @rule(side=sides, name=names)
    def hold(self, side: int, name: str) -> None:
        """Take a guard; its value must not change while held, whatever happens."""
        if name in self.model:
            guard = self.shelves[side].load(name)
            assert guard.value == self.model[name]
            self.guards.append((guard, self.model[name]))

    @precondition(lambda self: bool(self.guards))
    @rule()
    def release(self) -> None:
        """Release the oldest guard, checking its value stayed."""
        guard, value = self.guards.pop(0)
        assert guard.value == value
        guard.release()

    @precondition(lambda self: not self.guards)
    @rule(side=sides)
    def restart(self, side: int) -> None:
        """Close one shelf and open a new one on the location (a process restart)."""
        self.shelves[side].close()
        self.shelves[side] = self._open(side * 2)

    @rule(side=sides)
    def sync(self, side: int) -> None:
        """The barrier never changes what is stored."""
        self.shelves[side].sync()

    @invariant()
    def listings_match(self) -> None:
        """Both shelves list exactly the model's names."""
        for shelf in self.shelves:
            assert sorted(shelf) == sorted(self.model)
            assert len(shelf) == len(self.model)

    def teardown(self) -> None:
        for guard, _ in self.guards:
            guard.release()
        for shelf in self.shelves:
            shelf.close()
        blobs = list((self.location / "blobs").glob("??/*"))
        assert len(blobs) == len(self.model)  # no blob left over, none missing
        assert (self.location / "names.db").exists() == (self.index == "sqlite")
        shutil.rmtree(self.location.parent, ignore_errors=True)


@pytest.mark.parametrize("index", ["sqlite", "files"])
def test_two_shelves_on_one_directory_agree_with_a_dict(tmp_path: Path, index: str) -> None:
    """Any sequence of operations on two shelves of one location matches one dict."""

    class OnRoot(ShelfModel):
        def __init__(self) -> None:
            super().__init__(tmp_path, index)

    run_state_machine_as_test(
        OnRoot, settings=settings(max_examples=40, stateful_step_count=25, deadline=None)
    )
