"""Keys: fresh version 4 UUIDs, distinct across threads and across fork()."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from fb._keys import BATCH, new_key


def test_keys_are_random_version_4_uuids() -> None:
    """Every key is an RFC 4122 version 4 UUID, and none repeats over many batches."""
    keys = [new_key() for _ in range(20 * BATCH + 7)]
    assert all(type(key) is uuid.UUID for key in keys)
    assert all(key.version == 4 and key.variant == uuid.RFC_4122 for key in keys)
    assert len(set(keys)) == len(keys)


def test_threads_draw_distinct_keys() -> None:
    """Threads drawing at once, across refills, never get the same key."""
    with ThreadPoolExecutor(4) as executor:
        batches = list(executor.map(lambda _: [new_key() for _ in range(3 * BATCH)], range(8)))
    keys = [key for batch in batches for key in batch]
    assert len(set(keys)) == len(keys)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_does_not_repeat_its_parents_keys() -> None:
    """Keys drawn before a fork are the parent's alone: the child draws its own."""
    new_key()  # the parent now holds a batch of drawn keys
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next keys, then leave without running pytest's exit
        try:
            os.write(write, b"".join(new_key().bytes for _ in range(BATCH)))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    child = {uuid.UUID(bytes=data[i : i + 16]) for i in range(0, len(data), 16)}
    parent = {new_key() for _ in range(BATCH)}
    assert len(child) == BATCH
    assert not child & parent
