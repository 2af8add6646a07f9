"""Fresh random keys: version 4 UUIDs, drawn from the OS's randomness in batches.

`uuid.uuid4` asks the OS for 16 bytes per key. A pool makes a key per insert and per write
guard, and each such system call also hands the GIL to any thread that waits for it (a
write-back worker), which costs far more than the call. `new_key` asks for
`BATCH` keys' worth of bytes at once; the keys are as random as ``uuid4``'s, from the same
source. A forked child drops what its parent drew, so the two never hand out the same key.
"""

from __future__ import annotations

import os
from uuid import UUID

__all__ = ["BATCH", "new_key"]

BATCH = 256
"""Keys drawn per system call."""

_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_SET = (0x8000 << 48) | (4 << 76)  # the RFC 4122 variant and version 4, as uuid4 sets them

_drawn: list[int] = []  # list.pop and list.extend are atomic under the GIL


def new_key() -> UUID:
    """Return a fresh random version 4 UUID (thread-safe)."""
    while True:
        try:
            return UUID(int=_drawn.pop())
        except IndexError:
            # Several threads may refill at once: every key drawn is still fresh.
            data = os.urandom(16 * BATCH)
            _drawn.extend(
                (int.from_bytes(data[i : i + 16], "big") & _CLEAR) | _SET
                for i in range(0, len(data), 16)
            )


def _after_fork_in_child() -> None:
    _drawn.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
