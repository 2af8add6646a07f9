"""fb.blobformat: the public framing API that backend authors write and read blobs with."""

from __future__ import annotations

import errno
import io
import pickle
import random
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

import pytest

from fb import blobformat
from fb.backends import FBStore, PreparedPath
from fb.blobformat import BlobFormat, blob_not_found, corrupt_blob, read_header
from fb.codecs import PickleCodec
from fb.exceptions import BlobNotFoundError, CodecError, CorruptBlobError

SECRET = b"0123456789abcdef0123456789abcdef"


class _Renamed:
    """Pickle under another name."""

    name = "renamed-pickle"

    def dump(self, value: Any, file: IO[bytes]) -> None:
        pickle.dump(value, file)

    def load(self, file: IO[bytes]) -> Any:
        return pickle.load(file)


class _Sink(io.RawIOBase):
    """A write-only file that records the size of each write."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.writes: list[int] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.writes.append(view.nbytes)
        self.data += view
        return view.nbytes


class _FailingSink(_Sink):
    def write(self, data: Any) -> int:
        if self.writes:
            raise OSError(errno.ENOSPC, "disk full")
        return super().write(data)


@pytest.fixture(name="blobs")
def fixture_blobs() -> BlobFormat[Any]:
    return BlobFormat(PickleCodec())


def test_all_is_sorted_and_importable() -> None:
    """__all__ is sorted (constants first, as ruff sorts it) and every name in it exists."""
    assert blobformat.__all__ == sorted(blobformat.__all__, key=lambda n: (not n.isupper(), n))
    for name in blobformat.__all__:
        assert hasattr(blobformat, name)


def test_blob_is_byte_identical_to_fbstore(tmp_path: Path, blobs: BlobFormat[Any]) -> None:
    """A blob written by BlobFormat is the very bytes FBStore writes for the same value."""
    key = uuid.uuid4()
    value = {"a": list(range(100))}
    store = FBStore(PickleCodec(), PreparedPath(tmp_path), segment_max=0)
    store.store(key, value)
    on_disk = (tmp_path / key.hex[:2] / key.hex).read_bytes()
    store.close()
    assert blobs.encode(key, value) == on_disk


def test_fbstore_loads_what_blobformat_wrote(tmp_path: Path) -> None:
    """FBStore (signed) loads a signed blob written by BlobFormat, and the reverse."""
    key, other = uuid.uuid4(), uuid.uuid4()
    signed = BlobFormat(PickleCodec(), secret_key=SECRET)
    store = FBStore(PickleCodec(), PreparedPath(tmp_path), secret_key=SECRET, segment_max=0)
    (tmp_path / key.hex[:2]).mkdir(exist_ok=True)
    (tmp_path / key.hex[:2] / key.hex).write_bytes(signed.encode(key, "signed"))
    assert store.load(key) == "signed"
    store.store(other, "back")
    assert signed.decode(other, (tmp_path / other.hex[:2] / other.hex).read_bytes()) == "back"
    store.close()


def test_write_streams_the_payload(blobs: BlobFormat[Any]) -> None:
    """Writing a 4 MiB value never hands the sink the blob whole, and the size is exact."""
    value = [random.Random(1).randbytes(1 << 20) for _ in range(4)]
    sink = _Sink()
    size = blobs.write(uuid.uuid4(), value, cast("IO[bytes]", sink))
    assert size == len(sink.data)
    assert max(sink.writes) < size // 2
    assert blobs.decode(uuid.uuid4(), bytes(sink.data)) == value


def test_overhead_is_header_signature_and_trailer() -> None:
    """``overhead`` is the bytes a blob adds to its payload, signed or not."""
    for blobs in (BlobFormat(PickleCodec()), BlobFormat(PickleCodec(), secret_key=SECRET)):
        payload = pickle.dumps(b"x" * 100, protocol=5)
        assert len(blobs.encode(uuid.uuid4(), b"x" * 100)) == len(payload) + blobs.overhead


def test_sink_error_passes_through_unchanged(blobs: BlobFormat[Any]) -> None:
    """An OSError of the sink comes out as that same OSError, not as a codec failure."""
    with pytest.raises(OSError, match="disk full") as caught:
        blobs.write(uuid.uuid4(), b"x" * 100_000, cast("IO[bytes]", _FailingSink()))
    assert caught.value.errno == errno.ENOSPC
    assert not isinstance(caught.value, CodecError)


def test_codec_failure_is_a_codec_error_naming_the_key(blobs: BlobFormat[Any]) -> None:
    """A value the codec cannot encode raises CodecError carrying the key."""
    key = uuid.uuid4()
    with pytest.raises(CodecError, match=key.hex) as caught:
        blobs.encode(key, threading.Lock())
    assert caught.value.key == key


_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda data: b"",
    "header-cut": lambda data: data[:5],
    "payload-cut": lambda data: data[: len(data) // 2],
    "trailer-cut": lambda data: data[:-3],
    "padded": lambda data: data + b"\x00" * 7,
    "bad-magic": lambda data: b"XXXX" + data[4:],
    "payload-flip": lambda data: data[:100] + bytes([data[100] ^ 1]) + data[101:],
}


@pytest.mark.parametrize("damage", sorted(_DAMAGE))
@pytest.mark.parametrize("size", [1000, 3 << 20])
def test_damage_raises_corrupt_blob_error(blobs: BlobFormat[Any], damage: str, size: int) -> None:
    """Damaged blobs, small or streamed, raise CorruptBlobError with the key and the place."""
    key = uuid.uuid4()
    blob = _DAMAGE[damage](blobs.encode(key, random.Random(2).randbytes(size)))
    with pytest.raises(CorruptBlobError, match=f"{key.hex}.*db#row") as caught:
        blobs.decode(key, blob, where="db#row")
    assert caught.value.key == key
    with pytest.raises(CorruptBlobError) as streamed:
        blobs.read(key, io.BytesIO(blob), where="db#row")
    assert streamed.value.key == key


def test_read_streams_a_large_blob(blobs: BlobFormat[Any]) -> None:
    """A blob larger than SMALL_BLOB is read from a file without being given its size."""
    key = uuid.uuid4()
    value = random.Random(3).randbytes(blobformat.SMALL_BLOB * 2)
    assert blobs.read(key, io.BytesIO(blobs.encode(key, value))) == value


def test_other_codec_raises_codec_error_naming_it(blobs: BlobFormat[Any]) -> None:
    """An intact blob of another codec raises CodecError naming the codec that wrote it."""
    key = uuid.uuid4()
    blob = BlobFormat(_Renamed()).encode(key, "x")
    with pytest.raises(CodecError, match="renamed-pickle"):
        blobs.decode(key, blob)


def test_unsigned_blob_is_refused_with_a_secret_key(blobs: BlobFormat[Any]) -> None:
    """A reader with a secret key refuses an unsigned blob before decoding it."""
    key = uuid.uuid4()
    signed = BlobFormat(PickleCodec(), secret_key=SECRET)
    assert signed.signed
    with pytest.raises(CorruptBlobError, match="not signed"):
        signed.decode(key, blobs.encode(key, "plain"))
    other = BlobFormat(PickleCodec(), secret_key=b"another secret key, 16+ bytes")
    with pytest.raises(CorruptBlobError, match="signature"):
        other.decode(key, signed.encode(key, "signed"))


def test_read_header_names_the_codec(blobs: BlobFormat[Any]) -> None:
    """read_header parses a header from bytes or from a file."""
    blob = blobs.encode(uuid.uuid4(), "x")
    for source in (blob, io.BytesIO(blob)):
        header = read_header(source)
        assert (header.codec, header.version, header.flags & 1) == ("pickle", 1, 0)
    with pytest.raises(CorruptBlobError):
        read_header(b"nope")


def test_error_builders_name_the_key() -> None:
    """blob_not_found is a FileNotFoundError and corrupt_blob carries the key; both name it."""
    key = uuid.uuid4()
    missing = blob_not_found(key, "sqlite:///db#blobs")
    assert isinstance(missing, FileNotFoundError)
    assert isinstance(missing, BlobNotFoundError)
    assert key.hex in str(missing)
    assert missing.filename == "sqlite:///db#blobs"
    damaged = corrupt_blob(key, "row holds no bytes", "db")
    assert damaged.key == key
    assert key.hex in str(damaged)


def test_short_secret_key_is_refused() -> None:
    """A secret key under 16 bytes raises ValueError; a non-bytes one TypeError."""
    with pytest.raises(ValueError, match="16 bytes"):
        BlobFormat(PickleCodec(), secret_key=b"short")
    with pytest.raises(TypeError):
        BlobFormat(PickleCodec(), secret_key=12345)  # type: ignore[arg-type]
