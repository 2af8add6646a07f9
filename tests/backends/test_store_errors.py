"""Errors while a local FBStore writes a blob: the codec's own are told apart from storage's."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
from pathlib import Path
from typing import IO, Any
from uuid import UUID, uuid4

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


LIMIT = 4096
"""The file size limit (RLIMIT_FSIZE) the child process writes under."""


def store_under_a_size_limit(backend: FBStore[Any], key: UUID, value: Any) -> dict[str, Any]:
    """Store ``value`` in a forked child whose files may not pass `LIMIT` bytes.

    The limit holds for every file the process writes (pytest's own output included), so
    only a child takes it. Returns what the store raised there: its type, errno and text.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on, and never return
        outcome: dict[str, Any] = {"raised": None}
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
            resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))
            backend.store(uuid4(), b"fits")  # small blobs still work under the limit
            backend.store(key, value)
        except BaseException as exc:  # reported to the parent as data
            outcome = {
                "raised": type(exc).__name__,
                "oserror": isinstance(exc, OSError),
                "codec_error": isinstance(exc, CodecError),
                "errno": getattr(exc, "errno", None),
                "text": str(exc),
            }
        finally:
            os.write(write, json.dumps(outcome).encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data))


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


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork() and RLIMIT_FSIZE")
@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_a_storage_failure_is_an_oserror_naming_the_blob(
    cache_dir: Path, kind: type[bytes | bytearray]
) -> None:
    """A write the filesystem refuses raises OSError with the blob's path, not CodecError.

    Immutable bytes are gathered and written after the codec returns; a large mutable
    buffer is written while the codec runs, so its failure comes up through the codec.
    """
    backend: FBStore[Any] = FBStore("pickle", PreparedPath(str(cache_dir)))
    try:
        key = uuid4()
        outcome = store_under_a_size_limit(backend, key, kind(64 * LIMIT))
        assert outcome["raised"] is not None, "the store went through despite the limit"
        assert outcome["oserror"], outcome
        assert not outcome["codec_error"], outcome
        assert outcome["errno"] == errno.EFBIG
        assert key.hex in outcome["text"]
        assert not list(cache_dir.rglob(f"*{key.hex}*"))  # the temporary file is gone too
    finally:
        backend.close()
