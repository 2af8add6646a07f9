"""Fuzzing the blob reader: damaged blob files raise CorruptBlobError or CodecError, nothing else.

Hypothesis writes random bytes, truncated blobs, blobs with flipped bits, garbage headers and
spliced blobs into a blob file, and `FBStore.load` must raise `CorruptBlobError` or
`CodecError` naming the key and the path — never another exception, never garbage, never a
hang. A signed store (``secret_key=``) must refuse *any* change with `CorruptBlobError`.
Blobs with an intact frame around a random payload reach the codec itself: it must decode
something or raise `CodecError`.

The default run tries a few hundred cases per test; the ``stress`` run 12,000.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fb._blob import TRAILER
from fb.backends import FBStore, PreparedPath
from fb.exceptions import CodecError, CorruptBlobError

DEFAULT_CASES = 300
STRESS_CASES = 12_000
SECRET = b"a secret key of more than 16 bytes"
NAME_AT = 6
"""Offset of the header's codec-name length (u16); the codec name follows it."""

SAMPLES: list[Any] = [
    "",
    {"a": [1, 2, 3], "b": "text"},
    list(range(256)) * 8,
    [None, True, 1.5, "é" * 40],
]
"""Values every codec under test can encode (the pickle stores add bytes, below)."""


@dataclass
class Target:
    """A store on a temporary directory and the intact blobs of the sample values."""

    store: FBStore[Any]
    key: UUID
    path: Path
    blobs: list[bytes]
    name_end: int
    """Offset just past the header's codec name."""

    samples: list[Any]

    def load_bytes(self, data: bytes) -> Any:
        """Put ``data`` in place of blob `key` and load it."""
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        self.path.write_bytes(data)
        return self.store.load(self.key)


def make_target(root: Path, codec: str, secret: bytes | None) -> Target:
    store: FBStore[Any] = FBStore(codec, PreparedPath(root), secret_key=secret, segment_max=0)
    samples = SAMPLES + ([b"", bytes(range(256)) * 20] if codec == "pickle" else [])
    blobs = []
    for value in samples:
        key = uuid4()
        store.store(key, value)
        blobs.append(Path(store.blob_path(key)).read_bytes())
        store.delete(key)
    key = uuid4()
    name_end = NAME_AT + 2 + len(store.codec.name.encode())
    return Target(store, key, Path(store.blob_path(key)), blobs, name_end, samples)


@pytest.fixture(name="plain", scope="module")
def fixture_plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    target = make_target(tmp_path_factory.mktemp("plain"), "pickle", None)
    yield target
    target.store.close()


@pytest.fixture(name="signed", scope="module")
def fixture_signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    target = make_target(tmp_path_factory.mktemp("signed"), "pickle", SECRET)
    yield target
    target.store.close()


# -- damage ------------------------------------------------------------------------------------


@st.composite
def damaged(draw: st.DrawFn, blobs: list[bytes]) -> bytes:
    """A damaged copy of one of ``blobs``, or random bytes."""
    blob = draw(st.sampled_from(blobs))
    kind = draw(st.sampled_from(["random", "truncate", "flip", "header", "splice", "pad"]))
    if kind == "random":
        data = draw(st.binary(max_size=700))
    elif kind == "truncate":
        data = blob[: draw(st.integers(0, len(blob) - 1))]
    elif kind == "flip":
        offsets = draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=8, unique=True))
        raw = bytearray(blob)
        for offset in offsets:
            raw[offset] ^= draw(st.integers(1, 255))
        data = bytes(raw)
    elif kind == "header":
        # Garbage over the first bytes (the header and a little beyond).
        start = draw(st.integers(0, 8))
        garbage = draw(st.binary(min_size=1, max_size=24))
        raw = bytearray(blob)
        for offset, byte in enumerate(garbage, start):
            if offset < len(raw):
                raw[offset] = byte
        data = bytes(raw)
    elif kind == "splice":
        at = draw(st.integers(0, len(blob)))
        cut = draw(st.integers(0, min(16, len(blob) - at)))
        data = blob[:at] + draw(st.binary(max_size=16)) + blob[at + cut :]
    else:
        data = blob + draw(st.binary(min_size=1, max_size=32))
    if data == blob:
        # A "mutation" that changed nothing: make it a real one.
        data = blob[:-1]
    return data


def check_refused(target: Target, data: bytes, allowed: tuple[type[Exception], ...]) -> None:
    with pytest.raises(allowed) as info:
        target.load_bytes(data)
    error = info.value
    assert isinstance(error, CorruptBlobError | CodecError)
    assert error.key == target.key, "the error names the key"
    assert error.path == str(target.path), "the error names the path"
    assert target.key.hex in str(error)
    assert str(target.path) in str(error)


def fuzz_settings(cases: int) -> settings:
    return settings(
        max_examples=cases,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def unsigned_case(plain: Target, cases: int) -> None:
    @fuzz_settings(cases)
    @given(data=st.data())
    def case(data: st.DataObject) -> None:
        blob = data.draw(damaged(plain.blobs))
        check_refused(plain, blob, (CorruptBlobError, CodecError))

    case()


def signed_case(signed: Target, cases: int) -> None:
    @fuzz_settings(cases)
    @given(data=st.data())
    def case(data: st.DataObject) -> None:
        blob = data.draw(damaged(signed.blobs))
        check_refused(signed, blob, (CorruptBlobError,))

    case()


@pytest.mark.timeout(300, method="thread")
def test_damaged_blobs_raise_typed_errors(plain: Target) -> None:
    """Random, truncated, bit-flipped, garbage-headed, spliced or padded blobs: typed errors."""
    unsigned_case(plain, DEFAULT_CASES)


@pytest.mark.timeout(300, method="thread")
def test_damaged_signed_blobs_raise_corrupt_blob_error(signed: Target) -> None:
    """A signed store refuses every change to a blob with CorruptBlobError."""
    signed_case(signed, DEFAULT_CASES)


@pytest.mark.stress
@pytest.mark.timeout(3600, method="thread")
def test_damaged_blobs_stress(plain: Target, signed: Target) -> None:
    """12,000 damaged blobs for a plain store and 12,000 for a signed one."""
    unsigned_case(plain, STRESS_CASES)
    signed_case(signed, STRESS_CASES)


def test_intact_blobs_of_the_samples_load(plain: Target, signed: Target) -> None:
    """The fuzzers start from intact blobs: each loads to its sample value."""
    for target in (plain, signed):
        for blob, value in zip(target.blobs, target.samples, strict=True):
            assert target.load_bytes(blob) == value


@pytest.mark.parametrize("which", ["plain", "signed"])
def test_an_altered_codec_name_is_corruption(which: str, request: pytest.FixtureRequest) -> None:
    """Every bit flip in the codec-name field (and its length) raises CorruptBlobError."""
    target: Target = request.getfixturevalue(which)
    blob = target.blobs[1]
    outcome: set[str] = set()
    for offset in range(NAME_AT, target.name_end):
        for bit in range(8):
            raw = bytearray(blob)
            raw[offset] ^= 1 << bit
            try:
                target.load_bytes(bytes(raw))
            except CorruptBlobError:
                outcome.add("corrupt")
            except CodecError:
                outcome.add("codec mismatch")
    assert outcome == {"corrupt"}


# -- an intact frame around a random payload: the codec's own robustness ----------------------

FRAME_CODECS = ["json", "msgpack", "zstd:json", "lz4:msgpack"]
"""Codecs that never run code from their input (unlike pickle)."""


class RawCodec:
    """A codec that writes a payload verbatim under another codec's name (to forge frames)."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def dump(self, value: bytes, file: IO[bytes]) -> None:
        file.write(value)

    def load(self, file: IO[bytes]) -> bytes:
        return file.read()


@dataclass
class Framing:
    """A target store, and a forging store that frames any payload under its codec's name."""

    target: Target
    forger: FBStore[bytes]

    def framed(self, payload: bytes) -> bytes:
        """A blob with an intact header and trailer (length, checksum) around ``payload``."""
        key = uuid4()
        self.forger.store(key, payload)
        data = Path(self.forger.blob_path(key)).read_bytes()
        self.forger.delete(key)
        return data


@pytest.fixture(name="framing", scope="module", params=FRAME_CODECS)
def fixture_framing(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Framing]:
    target = make_target(tmp_path_factory.mktemp("framing"), request.param, None)
    forger: FBStore[bytes] = FBStore(
        RawCodec(target.store.codec.name),
        PreparedPath(tmp_path_factory.mktemp("forger")),
        segment_max=0,
    )
    yield Framing(target, forger)
    forger.close()
    target.store.close()


def framed_case(framing: Framing, cases: int) -> None:
    @fuzz_settings(cases)
    @given(payload=st.binary(max_size=300))
    def case(payload: bytes) -> None:
        try:
            framing.target.load_bytes(framing.framed(payload))
        except CodecError as exc:
            if exc.key != framing.target.key:
                raise AssertionError("the CodecError does not name the key") from exc

    case()


@pytest.mark.timeout(300, method="thread")
def test_random_payloads_in_an_intact_frame_decode_or_raise_codec_error(
    framing: Framing,
) -> None:
    """A random payload with a valid frame decodes to something or raises CodecError."""
    framed_case(framing, DEFAULT_CASES // 3)


@pytest.mark.stress
@pytest.mark.timeout(3600, method="thread")
def test_random_payloads_stress(framing: Framing) -> None:
    """12,000 random payloads in an intact frame for each codec."""
    framed_case(framing, STRESS_CASES)


def test_a_forged_frame_reaches_the_codec(framing: Framing) -> None:
    """The forger frames a payload exactly as the store does: the fuzzer really hits the codec."""
    target = framing.target
    for blob, value in zip(target.blobs, target.samples, strict=True):
        payload = blob[target.name_end : -TRAILER.size]
        assert framing.framed(payload) == blob
        assert target.load_bytes(framing.framed(payload)) == value
