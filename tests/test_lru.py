"""SegmentedLRU: the crate's cutoff list, generalised to byte weights."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fb._lru import SegmentedLRU, SegmentTaggingLRU


class CutoffModel:
    """The crate's cutoff list: one list of positions, cutoffs at max_items//2 and max_items.

    Position 0 is the most recent. A key's segment is 0 before the first cutoff, 1 before the
    second, 2 after it. A push (or a moving hit) shifts everything in front of the old place
    down by one; a key whose position crosses the second cutoff is offered.
    """

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self.keys: list[int] = []

    def segment(self, key: int) -> int:
        pos = self.keys.index(key)
        if pos < self.max_items // 2:
            return 0
        return 1 if pos < self.max_items else 2

    def _offered(self, before: int) -> list[int]:
        """Keys at positions [max_items, before]: they crossed the second cutoff."""
        if before < self.max_items:
            return []
        return [self.keys[self.max_items]]

    def push_front(self, key: int) -> list[int]:
        self.keys.insert(0, key)
        # Everything shifted by one: the key now at max_items came from max_items - 1.
        return self._offered(len(self.keys) - 1)

    def push_back(self, key: int) -> None:
        self.keys.append(key)

    def touch(self, key: int) -> list[int]:
        pos = self.keys.index(key)
        if pos < self.max_items // 2:
            return []
        self.keys.remove(key)
        self.keys.insert(0, key)
        return self._offered(pos)

    def remove(self, key: int) -> None:
        self.keys.remove(key)


def segments(lru: SegmentedLRU[int]) -> dict[int, int]:
    """Map each key of ``lru`` to its segment."""
    return {key: lru.segment(key) for key in lru.order()}


def check_invariants(
    lru: SegmentedLRU[int],
    max_items: int | None,
    max_bytes: int | None,
    weights: dict[int, int],
) -> None:
    """Assert what must hold after every operation, whatever the sequence."""
    order = lru.order()
    assert len(order) == len(set(order)) == len(lru) == len(weights)
    assert set(order) == set(weights)
    segs = [lru.segment(key) for key in order]
    assert segs == sorted(segs), "segments must be contiguous, 0 then 1 then 2"
    items, nbytes = lru.weights()
    assert items == sum(1 for s in segs if s < 2)
    assert nbytes == sum(weights[k] for k, s in zip(order, segs, strict=True) if s < 2)
    hot = [k for k, s in zip(order, segs, strict=True) if s == 0]
    if max_items is not None:
        assert items <= max_items
        assert len(hot) <= max_items // 2
    if max_bytes is not None:
        assert nbytes <= max_bytes
        assert sum(weights[k] for k in hot) <= max_bytes // 2
    for key in order:
        assert lru.weight(key) == weights[key]


def test_new_keys_go_to_the_front() -> None:
    """Pushed keys are listed most recent first."""
    lru: SegmentedLRU[int] = SegmentedLRU(max_items=10)
    for key in range(5):
        assert lru.push_front(key, 1) == []
    assert lru.order() == [4, 3, 2, 1, 0]
    assert len(lru) == 5
    assert 3 in lru
    assert 7 not in lru
    assert list(lru) == [4, 3, 2, 1, 0]


def test_hit_in_front_half_does_not_move() -> None:
    """A hit in segment 0 leaves the order as it is."""
    lru: SegmentedLRU[int] = SegmentedLRU(max_items=4)
    for key in range(4):
        lru.push_front(key, 1)
    assert lru.order() == [3, 2, 1, 0]
    assert lru.segment(2) == 0
    assert lru.touch(2) == []
    assert lru.order() == [3, 2, 1, 0]


def test_hit_in_back_half_moves_to_front() -> None:
    """A hit in segment 1 moves the key to the very front without offering anything."""
    lru: SegmentedLRU[int] = SegmentedLRU(max_items=4)
    for key in range(4):
        lru.push_front(key, 1)
    assert lru.segment(0) == 1
    assert lru.touch(0) == []
    assert lru.order() == [0, 3, 2, 1]
    assert [lru.segment(k) for k in lru.order()] == [0, 0, 1, 1]


def test_hit_in_cold_segment_offers_the_key_pushed_out() -> None:
    """A hit past the budget moves the key to the front and offers the one it pushes out."""
    lru: SegmentedLRU[int] = SegmentedLRU(max_items=2)
    for key in range(3):
        lru.push_front(key, 1)
    assert lru.segment(0) == 2
    assert lru.touch(0) == [1]
    assert lru.order() == [0, 2, 1]
    assert lru.segment(1) == 2


def test_exactly_one_offered_per_push_past_capacity() -> None:
    """Each push past max_items offers exactly the least recent key within budget."""
    lru: SegmentedLRU[int] = SegmentedLRU(max_items=3)
    assert [lru.push_front(k, 1) for k in range(3)] == [[], [], []]
    for key in range(3, 10):
        assert lru.push_front(key, 1) == [key - 3]
    assert lru.weights() == (3, 3)


def test_max_items_zero_offers_every_key_at_once() -> None:
    """With max_items=0 every pushed or touched key is offered straight away."""
    lru: SegmentedLRU[int] = SegmentedLRU(max_items=0)
    assert lru.push_front(1, 5) == [1]
    assert lru.push_front(2, 5) == [2]
    assert lru.touch(1) == [1]
    assert lru.order() == [1, 2]
    assert lru.weights() == (0, 0)


def test_max_items_one_keeps_one() -> None:
    """With max_items=1 the newest key stays within budget and the previous one is offered."""
    lru: SegmentedLRU[int] = SegmentedLRU(max_items=1)
    assert lru.push_front(1, 1) == []
    assert lru.push_front(2, 1) == [1]
    assert lru.segment(2) == 1
    assert lru.weights() == (1, 1)


def test_remove_pulls_later_keys_up_without_offering() -> None:
    """Removing a key within budget lets the first cold key move back into segment 1."""
    lru: SegmentedLRU[int] = SegmentedLRU(max_items=2)
    for key in range(4):
        lru.push_front(key, 1)
    assert segments(lru) == {3: 0, 2: 1, 1: 2, 0: 2}
    lru.remove(3)
    assert segments(lru) == {2: 0, 1: 1, 0: 2}
    lru.remove(0)
    assert lru.order() == [2, 1]


def test_push_back_starts_at_the_least_recent_end() -> None:
    """push_back puts a key behind every other one, past the budget once it is full."""
    lru: SegmentedLRU[int] = SegmentedLRU(max_items=2)
    lru.push_back(1, 1)
    lru.push_back(2, 1)
    lru.push_back(3, 1)
    assert lru.order() == [1, 2, 3]
    assert segments(lru) == {1: 0, 2: 1, 3: 2}


def test_byte_budget_offers_by_weight() -> None:
    """With only max_bytes, keys are offered once the bytes within budget exceed it."""
    lru: SegmentedLRU[str] = SegmentedLRU(max_bytes=100)
    assert lru.push_front("a", 40) == []
    assert lru.push_front("b", 40) == []
    assert lru.push_front("c", 40) == ["a"]
    assert lru.push_front("big", 100) == ["b", "c"]
    assert lru.weights() == (1, 100)


def test_heavier_than_budget_is_offered_alone() -> None:
    """A key heavier than the whole byte budget goes past it alone; older keys stay."""
    lru: SegmentedLRU[str] = SegmentedLRU(max_bytes=10)
    assert lru.push_front("small", 5) == []
    assert lru.push_front("huge", 11) == ["huge"]
    assert lru.order() == ["small", "huge"]
    assert lru.segment("small") == 0
    assert lru.weights() == (1, 5)


def test_hit_on_a_heavier_than_budget_key_offers_it_alone() -> None:
    """A hit on an oversize key (pinned while cold) keeps it past the budget, alone."""
    lru: SegmentedLRU[str] = SegmentedLRU(max_bytes=10)
    lru.push_front("huge", 11)
    lru.push_front("a", 4)
    assert lru.touch("huge") == ["huge"]
    assert lru.touch("a") == []
    assert (lru.segment("a"), lru.segment("huge")) == (0, 2)


def test_growing_past_the_whole_budget_offers_the_key_alone() -> None:
    """A key whose weight grows past the whole budget leaves it alone; others move up."""
    lru: SegmentedLRU[str] = SegmentedLRU(max_bytes=10)
    lru.push_front("a", 4)
    lru.push_front("b", 4)
    assert lru.set_weight("b", 0) == []
    assert lru.set_weight("a", 20) == ["a"]
    assert (lru.segment("a"), lru.segment("b")) == (2, 0)
    assert lru.weights() == (1, 0)


def test_set_weight_growth_offers_and_shrink_pulls_up() -> None:
    """Growing a key's weight can offer keys; shrinking lets cold keys come back."""
    lru: SegmentedLRU[str] = SegmentedLRU(max_bytes=100)
    lru.push_front("a", 30)
    lru.push_front("b", 30)
    assert lru.set_weight("b", 80) == ["a"]
    assert lru.segment("a") == 2
    assert lru.set_weight("b", 0) == []
    assert lru.segment("a") == 1
    assert lru.weight("b") == 0
    assert lru.set_weight("b", 0) == []


def test_both_budgets_apply_at_once() -> None:
    """The item budget and the byte budget each offer keys when exceeded."""
    lru: SegmentedLRU[str] = SegmentedLRU(max_items=3, max_bytes=100)
    assert lru.push_front("a", 1) == []
    assert lru.push_front("b", 1) == []
    assert lru.push_front("c", 1) == []
    assert lru.push_front("d", 1) == ["a"]
    assert lru.push_front("e", 99) == ["b", "c"]
    assert lru.weights() == (2, 100)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["push_front", "push_back", "touch", "remove", "set_weight"]),
        st.integers(min_value=0, max_value=11),
        st.integers(min_value=0, max_value=40),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(max_items=st.integers(min_value=0, max_value=9), ops=OPS)
def test_matches_the_crate_cutoff_list(max_items: int, ops: list[tuple[str, int, int]]) -> None:
    """With only max_items, order, segments and offers equal the crate's cutoff list."""
    lru: SegmentedLRU[int] = SegmentedLRU(max_items=max_items)
    model = CutoffModel(max_items)
    weights: dict[int, int] = {}
    for op, key, weight in ops:
        present = key in weights
        if op == "push_front" and not present:
            assert lru.push_front(key, weight) == model.push_front(key)
            weights[key] = weight
        elif op == "push_back" and not present:
            lru.push_back(key, weight)
            model.push_back(key)
            weights[key] = weight
        elif op == "touch" and present:
            assert lru.touch(key) == model.touch(key)
        elif op == "remove" and present:
            lru.remove(key)
            model.remove(key)
            del weights[key]
        elif op == "set_weight" and present:
            # Byte weights do not matter without a byte budget.
            assert lru.set_weight(key, weight) == []
            weights[key] = weight
        else:
            continue
        assert lru.order() == model.keys
        assert segments(lru) == {k: model.segment(k) for k in model.keys}
        check_invariants(lru, max_items, None, weights)


@settings(max_examples=300, deadline=None)
@given(
    max_items=st.none() | st.integers(min_value=0, max_value=9),
    max_bytes=st.none() | st.integers(min_value=0, max_value=120),
    ops=OPS,
)
def test_weighted_invariants(
    max_items: int | None, max_bytes: int | None, ops: list[tuple[str, int, int]]
) -> None:
    """Budgets hold, every key is there once, and offers are exactly the keys entering segment 2."""
    lru: SegmentedLRU[int] = SegmentedLRU(max_items=max_items, max_bytes=max_bytes)
    weights: dict[int, int] = {}
    for op, key, weight in ops:
        present = key in weights
        before = segments(lru)
        moved: set[int] = set()
        offered: list[int] | None = None
        if op == "push_front" and not present:
            weights[key] = weight
            offered = lru.push_front(key, weight)
            moved = {key}
        elif op == "push_back" and not present:
            weights[key] = weight
            lru.push_back(key, weight)
            assert lru.order()[-1] == key
        elif op == "touch" and present:
            offered = lru.touch(key)
            if before[key] != 0:
                moved = {key}
                if max_bytes is not None and weights[key] > max_bytes:
                    assert offered == [key]  # heavier than the whole budget: stays past it
                else:
                    assert lru.order()[0] == key
            else:
                assert offered == []
        elif op == "remove" and present:
            lru.remove(key)
            del weights[key]
        elif op == "set_weight" and present:
            weights[key] = weight
            offered = lru.set_weight(key, weight)
        else:
            continue
        check_invariants(lru, max_items, max_bytes, weights)
        after = segments(lru)
        if offered is None:
            # push_back and remove never push a key into segment 2.
            assert not [k for k in after if after[k] == 2 and before.get(k, 2) != 2]
            continue
        assert len(offered) == len(set(offered))
        crossed = {k for k in after if after[k] == 2 and (k in moved or before.get(k) != 2)}
        assert set(offered) == crossed


class TaggedKey:
    """A key that `SegmentTaggingLRU` can write its segment to; hashed by identity."""

    __slots__ = ("fast", "segment")

    def __init__(self) -> None:
        self.segment = -1
        self.fast = True  # as if a pool had opened its hit path's gate


@settings(max_examples=300, deadline=None)
@given(
    max_items=st.none() | st.integers(min_value=0, max_value=9),
    max_bytes=st.none() | st.integers(min_value=0, max_value=120),
    ops=OPS,
)
def test_tagging_keeps_each_keys_segment_on_the_key(
    max_items: int | None, max_bytes: int | None, ops: list[tuple[str, int, int]]
) -> None:
    """After every operation each key's ``segment`` is its segment, and -1 once removed."""
    lru: SegmentTaggingLRU[TaggedKey] = SegmentTaggingLRU(max_items=max_items, max_bytes=max_bytes)
    keys = [TaggedKey() for _ in range(12)]
    for op, index, weight in ops:
        key = keys[index]
        present = key in lru
        if op == "push_front" and not present:
            lru.push_front(key, weight)
        elif op == "push_back" and not present:
            lru.push_back(key, weight)
        elif op == "touch" and present:
            lru.touch(key)
        elif op == "remove" and present:
            lru.remove(key)
        elif op == "set_weight" and present:
            lru.set_weight(key, weight)
        for one in keys:
            assert one.segment == (lru.segment(one) if one in lru else -1)


@settings(max_examples=300, deadline=None)
@given(
    max_items=st.none() | st.integers(min_value=0, max_value=9),
    max_bytes=st.none() | st.integers(min_value=0, max_value=120),
    ops=OPS,
)
def test_tagging_shuts_the_gate_of_a_key_that_leaves_the_hot_segment(
    max_items: int | None, max_bytes: int | None, ops: list[tuple[str, int, int]]
) -> None:
    """A key placed outside segment 0 has ``fast`` false: a hit there must reorder it."""
    lru: SegmentTaggingLRU[TaggedKey] = SegmentTaggingLRU(max_items=max_items, max_bytes=max_bytes)
    keys = [TaggedKey() for _ in range(12)]
    for op, index, weight in ops:
        key = keys[index]
        present = key in lru
        if op == "push_front" and not present:
            lru.push_front(key, weight)
        elif op == "push_back" and not present:
            lru.push_back(key, weight)
        elif op == "touch" and present:
            lru.touch(key)
        elif op == "remove" and present:
            lru.remove(key)
        elif op == "set_weight" and present:
            lru.set_weight(key, weight)
        for one in keys:
            if one in lru and lru.segment(one) != 0:
                assert not one.fast, f"key in segment {lru.segment(one)} left its gate open"
