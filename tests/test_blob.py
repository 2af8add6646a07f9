"""The blob format's building blocks (fb._blob): the checksumming reader."""

from __future__ import annotations

import io
from typing import Any

import xxhash

from fb._blob import ChecksumReader


class _CountingFile(io.BytesIO):
    """A file that counts the calls of `readinto` that reach it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.readintos = 0

    def readinto(self, buffer: Any) -> int:
        self.readintos += 1
        return super().readinto(buffer)


class _CountingDigest:
    """An XXH3-64 digest that counts its updates."""

    def __init__(self) -> None:
        self.inner = xxhash.xxh3_64()
        self.updates = 0

    def update(self, data: Any, /) -> None:
        self.updates += 1
        self.inner.update(data)

    def intdigest(self) -> int:
        return self.inner.intdigest()


def test_a_large_read_is_one_read_and_one_hash() -> None:
    """A 4 MiB readinto reaches the file once and the checksum once (pieces cost more)."""
    data = bytes(range(256)) * (4 << 12)
    raw = _CountingFile(data)
    digest = _CountingDigest()
    reader = ChecksumReader(raw, len(data), digest)
    buffer = bytearray(len(data))
    assert reader.readinto(buffer) == len(data)
    assert (raw.readintos, digest.updates) == (1, 1)
    assert bytes(buffer) == data
    assert digest.intdigest() == xxhash.xxh3_64_intdigest(data)


class _ShortReads(io.BytesIO):
    """A file whose `readinto` returns at most 1000 bytes a call, as a pipe or socket may."""

    def readinto(self, buffer: Any) -> int:
        return super().readinto(memoryview(buffer)[:1000])


def test_short_reads_are_continued_and_all_hashed() -> None:
    """A file that returns less than asked is read until the request is filled, all hashed."""
    data = bytes(range(256)) * 40
    reader = ChecksumReader(_ShortReads(data), len(data), xxhash.xxh3_64())
    buffer = bytearray(len(data))
    assert reader.readinto(buffer) == len(data)
    assert bytes(buffer) == data
    assert reader.digest.intdigest() == xxhash.xxh3_64_intdigest(data)
    assert reader.remaining == 0


def test_a_file_shorter_than_its_trailer_claims_ends_the_read() -> None:
    """When the file ends early the reader returns what it got and reports nothing left."""
    data = b"x" * 5000
    reader = ChecksumReader(io.BytesIO(data), 8000, xxhash.xxh3_64())
    buffer = bytearray(8000)
    assert reader.readinto(buffer) == 5000
    assert reader.remaining == 0
    assert reader.digest.intdigest() == xxhash.xxh3_64_intdigest(data)
