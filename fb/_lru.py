"""The pool's recency order: a weighted, segmented LRU with no I/O and no locking.

This is the crate's cutoff list, generalised to weights. Every item of a pool is in the
order, resident or not, in one of three segments:

- segment 0, *hot*: the front half of the budget. A hit here does not move the item, so a
  hot item costs no reordering at all.
- segment 1, *warm*: the back half. A hit here moves the item to the very front.
- segment 2, *cold*: past the budget. An item that crosses from segment 1 into segment 2 is
  *offered* for eviction (returned to the caller, which decides what to do with it).

A segment's fullness is measured in items and in bytes at once: segment 0 holds at most
``max_items // 2`` items and ``max_bytes // 2`` bytes; segments 0 and 1 together hold at most
``max_items`` items and ``max_bytes`` bytes. With only ``max_items`` set, pushing one item
past capacity offers exactly one item, as in the crate; ``max_items=0`` offers every item the
moment it is pushed (write-through-and-drop) and ``max_items=1`` keeps one.

A key heavier than the whole byte budget could only fit by pushing every other key out, and
would not fit even then: it goes straight to segment 2, offered alone, whether it is pushed,
hit or grows (zict's ``Buffer`` sends such a value straight to its slow mapping too).

Notes:
    Not thread-safe: the pool calls it under its lock. Every operation is O(1) amortised
    except cascades, which move as many items as the weights require.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ["SegmentTaggingLRU", "SegmentedLRU", "Tagged"]

K = TypeVar("K", bound=Hashable)

_INF = float("inf")

HOT, WARM, COLD = 0, 1, 2


class SegmentedLRU(Generic[K]):
    """Three-segment recency order over hashable keys with (1 item, N bytes) weights.

    Inside each segment's OrderedDict the *last* key is the most recent, so appends and
    pops of the oldest key are O(1).

    Args:
        max_items: the item budget, or None for no item limit.
        max_bytes: the byte budget, or None for no byte limit.
    """

    __slots__ = ("_bytes", "_counts", "_limits", "_seg", "_segs")

    _tagging = False  # SegmentTaggingLRU: also write each key's segment to the key

    def __init__(self, max_items: int | None = None, max_bytes: int | None = None) -> None:
        items = _INF if max_items is None else max_items
        nbytes = _INF if max_bytes is None else max_bytes
        # Cumulative limits: (items, bytes) of segment 0, then of segments 0 and 1.
        self._limits: tuple[tuple[float, float], tuple[float, float]] = (
            (
                items // 2 if max_items is not None else _INF,
                nbytes // 2 if max_bytes is not None else _INF,
            ),
            (items, nbytes),
        )
        self._segs: tuple[OrderedDict[K, int], OrderedDict[K, int], OrderedDict[K, int]] = (
            OrderedDict(),
            OrderedDict(),
            OrderedDict(),
        )
        self._seg: dict[K, int] = {}
        self._counts = [0, 0, 0]
        self._bytes = [0, 0, 0]

    # -- queries -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._seg)

    def __contains__(self, key: object) -> bool:
        return key in self._seg

    def segment(self, key: K) -> int:
        """Return 0 (hot), 1 (warm) or 2 (cold) for ``key``."""
        return self._seg[key]

    def weight(self, key: K) -> int:
        """Return the byte weight recorded for ``key``."""
        return self._segs[self._seg[key]][key]

    def order(self) -> list[K]:
        """Return every key from the most recent to the least recent."""
        out: list[K] = []
        for seg in self._segs:
            out.extend(reversed(seg))
        return out

    def oldest_first(self) -> Iterator[K]:
        """Yield every key from the least recent to the most recent (no copy up front)."""
        for seg in reversed(self._segs):
            yield from seg

    def __iter__(self) -> Iterator[K]:
        return iter(self.order())

    def weights(self) -> tuple[int, int]:
        """Return (items, bytes) held in segments 0 and 1, the part within budget."""
        return self._counts[0] + self._counts[1], self._bytes[0] + self._bytes[1]

    # -- updates -------------------------------------------------------------------------

    def push_front(self, key: K, weight: int) -> list[K]:
        """Insert ``key`` at the most recent end; return the keys pushed into segment 2."""
        if weight > self._limits[WARM][1]:
            self._add(key, COLD, weight)
            return [key]
        self._add(key, HOT, weight)
        return self._cascade()

    def push_back(self, key: K, weight: int) -> None:
        """Insert ``key`` at the least recent end (registered items start cold)."""
        segs = self._segs
        if segs[COLD] or not self._fits(WARM, weight):
            seg = COLD
        elif segs[WARM] or not self._fits(HOT, weight):
            seg = WARM
        else:
            seg = HOT
        self._add(key, seg, weight)
        segs[seg].move_to_end(key, last=False)

    def touch(self, key: K) -> list[K]:
        """Record a hit on ``key``; return the keys pushed into segment 2.

        A hit in segment 0 does nothing; elsewhere the key moves to the most recent end.
        """
        seg = self._seg[key]
        if seg == HOT:
            return []
        weight = self._segs[seg].pop(key)
        self._counts[seg] -= 1
        self._bytes[seg] -= weight
        if weight > self._limits[WARM][1]:
            self._add(key, COLD, weight)
            if seg != COLD:
                self._pull_up()
            return [key]
        self._add(key, HOT, weight)
        return self._cascade()

    def set_weight(self, key: K, weight: int) -> list[K]:
        """Change the byte weight of ``key``; return the keys pushed into segment 2."""
        seg = self._seg[key]
        old = self._segs[seg][key]
        if old == weight:
            return []
        self._segs[seg][key] = weight
        self._bytes[seg] += weight - old
        if seg == COLD:
            return []
        if weight > self._limits[WARM][1]:
            self._segs[seg].pop(key)
            self._counts[seg] -= 1
            self._bytes[seg] -= weight
            self._add(key, COLD, weight)
            self._pull_up()
            return [key]
        if weight > old:
            return self._cascade()
        self._pull_up()
        return []

    def remove(self, key: K) -> None:
        """Remove ``key``; later keys move up to fill its place."""
        seg = self._seg.pop(key)
        weight = self._segs[seg].pop(key)
        self._counts[seg] -= 1
        self._bytes[seg] -= weight
        if seg != COLD:
            self._pull_up()

    # -- internals -----------------------------------------------------------------------

    def _add(self, key: K, seg: int, weight: int) -> None:
        self._segs[seg][key] = weight
        self._seg[key] = seg
        self._counts[seg] += 1
        self._bytes[seg] += weight
        if self._tagging:
            key.segment = seg  # type: ignore[attr-defined]
            if seg != HOT:
                key.fast = False  # type: ignore[attr-defined]

    def _fits(self, seg: int, weight: int) -> bool:
        """Would one more item of ``weight`` fit within the cumulative limit of ``seg``?"""
        items, nbytes = self._limits[seg]
        if seg == HOT:
            return self._counts[0] + 1 <= items and self._bytes[0] + weight <= nbytes
        return (
            self._counts[0] + self._counts[1] + 1 <= items
            and self._bytes[0] + self._bytes[1] + weight <= nbytes
        )

    def _move(self, key: K, src: int, dst: int, weight: int, *, to_front: bool) -> None:
        self._counts[src] -= 1
        self._bytes[src] -= weight
        self._counts[dst] += 1
        self._bytes[dst] += weight
        self._seg[key] = dst
        self._segs[dst][key] = weight
        if not to_front:
            self._segs[dst].move_to_end(key, last=False)
        if self._tagging:
            key.segment = dst  # type: ignore[attr-defined]
            if dst != HOT:
                key.fast = False  # type: ignore[attr-defined]

    def _cascade(self) -> list[K]:
        segs, counts, nbytes = self._segs, self._counts, self._bytes
        (items0, bytes0), (items1, bytes1) = self._limits
        while segs[HOT] and (counts[0] > items0 or nbytes[0] > bytes0):
            key, weight = segs[HOT].popitem(last=False)
            self._move(key, HOT, WARM, weight, to_front=True)
        pushed: list[K] = []
        while segs[WARM] and (counts[0] + counts[1] > items1 or nbytes[0] + nbytes[1] > bytes1):
            key, weight = segs[WARM].popitem(last=False)
            self._move(key, WARM, COLD, weight, to_front=True)
            pushed.append(key)
        return pushed

    def _pull_up(self) -> None:
        segs = self._segs
        while segs[WARM]:
            key = next(reversed(segs[WARM]))
            weight = segs[WARM][key]
            if not self._fits(HOT, weight):
                break
            del segs[WARM][key]
            self._move(key, WARM, HOT, weight, to_front=False)
        while segs[COLD]:
            key = next(reversed(segs[COLD]))
            weight = segs[COLD][key]
            if not self._fits(WARM, weight):
                break
            del segs[COLD][key]
            self._move(key, COLD, WARM, weight, to_front=False)


class Tagged(Hashable, Protocol):
    """A key with room for its own segment and a hit path's gate (see `SegmentTaggingLRU`)."""

    segment: int
    fast: bool


TK = TypeVar("TK", bound=Tagged)


class SegmentTaggingLRU(SegmentedLRU[TK]):
    """A `SegmentedLRU` that also writes each key's segment to ``key.segment`` (-1 once removed).

    The pool reads an item's segment under the lock on every slow load: reading an
    attribute costs less than the dict lookup of `segment`, and the moves that pay for the
    extra write happen on inserts, misses and warm hits, not on hot hits. A key placed
    outside the hot segment also gets ``key.fast = False``: the pool's lock-free hit path
    (see `fb._entry.Entry`) serves only hot items, since a hit elsewhere reorders. Only the
    pool opens the gate again, under its lock.
    """

    __slots__ = ()

    _tagging = True

    def remove(self, key: TK) -> None:
        super().remove(key)
        key.segment = -1
