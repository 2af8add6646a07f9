"""How FBStore reads large blobs: every byte checked, a signed blob checked before decoding."""

from __future__ import annotations

import hmac
import io
from pathlib import Path
from typing import IO, Any, cast
from uuid import uuid4

import pytest
import xxhash

from fb._blob import MAC_SIZE, TRAILER
from fb.backends import FBStore
from fb.backends._fbstore import SMALL_BLOB
from fb.blobformat import BlobFormat
from fb.codecs import PickleCodec
from fb.exceptions import CorruptBlobError

SECRET = b"a secret key of at least 16 bytes"


def _tampered(blob: bytes) -> bytes:
    """``blob`` (a signed XXH3 blob) with one payload byte changed and its checksum redone.

    The checksum holds, so only the signature tells the change.
    """
    data = bytearray(blob)
    data[len(data) // 2] ^= 0xFF
    end = len(data) - TRAILER.size - MAC_SIZE
    length, _, magic = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    TRAILER.pack_into(
        data, len(data) - TRAILER.size, length, xxhash.xxh3_64_intdigest(data[:end]), magic
    )
    return bytes(data)


@pytest.fixture(name="signed")
def fixture_signed(tmp_path: Path) -> Any:
    store: FBStore[Any] = FBStore(PickleCodec(), tmp_path / "cache", secret_key=SECRET)
    yield store
    store.close()


def test_a_tampered_large_signed_blob_is_refused(signed: FBStore[Any]) -> None:
    """A large signed blob whose payload changed (checksum redone) fails its signature."""
    key = uuid4()
    signed.store(key, bytes(2 * SMALL_BLOB))
    path = Path(signed.blob_path(key))
    path.write_bytes(_tampered(path.read_bytes()))
    with pytest.raises(CorruptBlobError, match="signature mismatch"):
        signed.load(key)


def test_a_signed_blob_changed_after_its_signature_check_loads_as_signed(
    signed: FBStore[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes written into a large signed blob after its signature check never reach the codec."""
    key = uuid4()
    value = bytes(2 * SMALL_BLOB)
    signed.store(key, value)
    path = Path(signed.blob_path(key))
    tampered = _tampered(path.read_bytes())
    real_compare = hmac.compare_digest
    swaps: list[Path] = []

    def compare_then_swap(a: Any, b: Any) -> bool:
        # The moment an attacker who can write the file would choose: right after the check.
        same = real_compare(a, b)
        if not swaps:
            with path.open("r+b") as file:
                file.write(tampered)
            swaps.append(path)
        return same

    monkeypatch.setattr(hmac, "compare_digest", compare_then_swap)
    assert signed.load(key) == value
    assert swaps == [path]


class _ViewCodec:
    """A codec whose value is a view of the payload it was given (as a zero-copy codec's is)."""

    @property
    def name(self) -> str:
        return "test-view"

    def dump(self, value: bytes, file: IO[bytes]) -> None:
        file.write(value)

    def load(self, file: IO[bytes]) -> Any:
        return file.read()

    def loads(self, data: memoryview) -> Any:
        return data


class _StreamCodec:
    """A codec with no ``loads``: it decodes from a file object, in small and large reads."""

    @property
    def name(self) -> str:
        return "test-stream"

    def dump(self, value: bytes, file: IO[bytes]) -> None:
        file.write(len(value).to_bytes(8, "little"))
        file.write(value)

    def load(self, file: IO[bytes]) -> Any:
        size = int.from_bytes(file.read(8), "little")
        data = bytearray(size)
        assert file.readinto(data) == size  # type: ignore[attr-defined]
        return bytes(data)


def test_a_value_that_views_its_signed_payload_keeps_it(tmp_path: Path) -> None:
    """A buffer a decoded value still views is never reused for the next signed blob."""
    store: FBStore[Any] = FBStore(_ViewCodec(), tmp_path / "cache", secret_key=SECRET)
    first, second = uuid4(), uuid4()
    store.store(first, b"a" * (2 * SMALL_BLOB))
    store.store(second, b"b" * (2 * SMALL_BLOB))
    value = store.load(first)
    assert bytes(store.load(second)) == b"b" * (2 * SMALL_BLOB)
    assert bytes(value) == b"a" * (2 * SMALL_BLOB)
    store.close()


@pytest.mark.parametrize("size", [SMALL_BLOB // 2, 3 * SMALL_BLOB])
def test_a_signed_blob_decodes_through_a_file_for_a_codec_without_loads(
    tmp_path: Path, size: int
) -> None:
    """A codec that only reads files gets the whole checked payload, small or large."""
    store: FBStore[Any] = FBStore(_StreamCodec(), tmp_path / "cache", secret_key=SECRET)
    key = uuid4()
    value = bytes(range(256)) * (size // 256)
    store.store(key, value)
    assert store.load(key) == value
    assert store.load(key) == value  # a second time, from a reused buffer
    store.close()


class _ReadOnlyFile:
    """A seekable file object with ``read`` and ``seek`` but no ``readinto``."""

    def __init__(self, data: bytes) -> None:
        self._file = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)


def test_a_large_signed_blob_reads_from_a_file_without_readinto() -> None:
    """`BlobFormat.read` takes any seekable file with ``read`` for a large signed blob."""
    blobs: BlobFormat[Any] = BlobFormat(PickleCodec(), secret_key=SECRET)
    key = uuid4()
    value = b"v" * (2 * SMALL_BLOB)
    data = blobs.encode(key, value)
    assert blobs.read(key, cast("IO[bytes]", _ReadOnlyFile(data)), len(data)) == value
