"""FdSink: what a codec writes reaches the file whole, in order, in few system calls."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fb.backends._fdsink import GATHER, SMALL_PIECE, FdSink


@pytest.fixture(name="target")
def fixture_target(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "blob"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    yield path, fd
    os.close(fd)


def counting_writev(monkeypatch: pytest.MonkeyPatch, limit: int | None = None) -> list[int]:
    """Count the writev calls FdSink makes; with ``limit``, write at most that many bytes."""
    calls: list[int] = []
    real = os.writev

    def writev(fd: int, parts: list[Any]) -> int:
        calls.append(len(parts))
        if limit is None:
            return real(fd, parts)
        data = b"".join(bytes(part) for part in parts)[:limit]
        return os.write(fd, data)

    monkeypatch.setattr(os, "writev", writev)
    return calls


def write_all(fd: int, pieces: list[Any]) -> None:
    """Write ``pieces`` through one FdSink and close it, as a store writes one blob."""
    sink = FdSink(fd)
    for piece in pieces:
        assert sink.write(piece) == len(piece)
    sink.close()


def test_a_small_blob_takes_one_system_call(
    target: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Header, a 64 KiB payload and a trailer go out in a single writev at close."""
    path, fd = target
    calls = counting_writev(monkeypatch)
    sink = FdSink(fd)
    payload = os.urandom(SMALL_PIECE)
    for piece in (b"header", payload, b"trailer"):
        sink.write(piece)
    assert calls == []
    sink.close()
    assert len(calls) == 1
    assert path.read_bytes() == b"header" + payload + b"trailer"


def test_a_reused_buffer_is_written_before_write_returns(target: tuple[Path, int]) -> None:
    """A codec may overwrite its buffer once write returns: the file keeps what was passed."""
    path, fd = target
    sink = FdSink(fd)
    small, large = bytearray(b"a" * 100), bytearray(b"b" * SMALL_PIECE)
    sink.write(small)
    sink.write(large)
    small[:] = b"x" * 100
    large[:] = b"y" * SMALL_PIECE
    sink.write(memoryview(small))
    sink.close()
    assert path.read_bytes() == b"a" * 100 + b"b" * SMALL_PIECE + b"x" * 100


def test_a_large_blob_goes_out_in_pieces(
    target: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gathering stops at GATHER bytes: memory stays bounded for a large value."""
    path, fd = target
    calls = counting_writev(monkeypatch)
    pieces = [os.urandom(SMALL_PIECE) for _ in range(3 * GATHER // SMALL_PIECE)]
    write_all(fd, pieces)
    assert len(calls) == 3
    assert path.read_bytes() == b"".join(pieces)


def test_many_tiny_pieces_are_gathered(
    target: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten thousand tiny writes (a record at a time) make one system call, not 10,000."""
    path, fd = target
    calls = counting_writev(monkeypatch)
    pieces = [b"%d," % index for index in range(10_000)]
    write_all(fd, pieces)
    assert len(calls) == 1
    assert path.read_bytes() == b"".join(pieces)


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.lists(
        st.one_of(
            st.binary(max_size=200),
            st.integers(1, 3).map(lambda n: os.urandom(n * SMALL_PIECE // 2)),
            st.binary(min_size=1, max_size=300).map(bytearray),
        ),
        max_size=40,
    ),
    limit=st.one_of(st.none(), st.integers(1, 70_000)),
)
def test_short_writes_carry_on_where_they_stopped(
    tmp_path_factory: pytest.TempPathFactory, pieces: list[Any], limit: int | None
) -> None:
    """Whatever the pieces and however short each writev is, the file is their concatenation."""
    path = tmp_path_factory.mktemp("sink") / "blob"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with pytest.MonkeyPatch.context() as monkeypatch:
        counting_writev(monkeypatch, limit)
        try:
            write_all(fd, pieces)
        finally:
            os.close(fd)
    assert path.read_bytes() == b"".join(bytes(piece) for piece in pieces)
