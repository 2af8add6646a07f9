"""Errors while a local FBStore writes a blob: the codec's own are told apart from storage's."""

from __future__ import annotations

import errno
import resource
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from uuid import uuid4

import pytest

from fb.backends import FBStore, PreparedPath
from fb.exceptions import CodecError


class OSErrorCodec:
    """Writes a little, then fails with an OSError of its own (not the disk's)."""

    name = "oserror"

    def dump(self, value: Any, file: IO[bytes]) -> None:
        file.write(b"partial")
        raise OSError(errno.EIO, "the codec's own source went away")

    def load(self, file: IO[bytes]) -> Any:
        return file.read()


@pytest.fixture(name="small_file_limit")
def fixture_small_file_limit() -> Iterator[int]:
    """Let this process write files of at most 4 KiB (writes past that fail with EFBIG)."""
    limit = 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_an_oserror_of_the_codec_is_a_codec_error(cache_dir: Path) -> None:
    """A codec raising OSError itself gets CodecError naming it; nothing is left behind."""
    backend: FBStore[Any] = FBStore(OSErrorCodec(), PreparedPath(str(cache_dir)))
    try:
        key = uuid4()
        with pytest.raises(CodecError, match="oserror") as caught:
            backend.store(key, "value")
        assert isinstance(caught.value.__cause__, OSError)
        assert not [p for p in cache_dir.rglob("*") if p.is_file() and p.name != ".fb-lock"]
    finally:
        backend.close()


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_a_storage_failure_is_an_oserror_naming_the_blob(
    cache_dir: Path, small_file_limit: int, kind: type[bytes | bytearray]
) -> None:
    """A write the filesystem refuses raises OSError with the blob's path, not CodecError.

    Immutable bytes are gathered and written after the codec returns; a large mutable
    buffer is written while the codec runs, so its failure comes up through the codec.
    """
    backend: FBStore[Any] = FBStore("pickle", PreparedPath(str(cache_dir)))
    try:
        key = uuid4()
        backend.store(uuid4(), b"fits")  # small blobs still work under the limit
        with pytest.raises(OSError) as caught:
            backend.store(key, kind(64 * small_file_limit))
        assert not isinstance(caught.value, CodecError)
        assert caught.value.errno == errno.EFBIG
        assert key.hex in str(caught.value)
        assert not list(cache_dir.rglob(f"*{key.hex}*"))  # the temporary file is gone too
    finally:
        backend.close()
