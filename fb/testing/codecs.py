"""The codec conformance suite: subclass `CodecConformance` and give it a ``codec`` fixture.

Example, in a test module of a plugin::

    import pytest
    from hypothesis import strategies as st
    from fb.testing.codecs import CodecConformance
    from my_plugin import Rot13Codec

    class TestRot13Codec(CodecConformance):
        @pytest.fixture(name="codec")
        def fixture_codec(self) -> Rot13Codec:
            return Rot13Codec()

        @pytest.fixture(name="codec_values")
        def fixture_codec_values(self) -> st.SearchStrategy[str]:
            return st.text()

        @pytest.fixture(name="codec_large_value")
        def fixture_codec_large_value(self) -> str:
            return "x" * (65 << 20)
"""

from __future__ import annotations

import gc
import io
import pickle
import random
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .._sizeof import default_sizeof
from ..backends import FBStore, PreparedPath
from ..codecs import JsonCodec, PickleCodec
from ..exceptions import CodecError, CorruptBlobError
from ..typing import Codec

__all__ = ["LARGE", "CodecConformance"]

LARGE = 64 << 20
"""The large value of the streaming test must take more than this many bytes in memory."""

_THREADS = 8


class _Impostor:
    """A codec that writes arbitrary payloads under another codec's name."""

    def __init__(self, name: str, dump: Callable[[Any, IO[bytes]], None]) -> None:
        self._name = name
        self._dump = dump

    @property
    def name(self) -> str:
        return self._name

    def dump(self, value: Any, file: IO[bytes]) -> None:
        self._dump(value, file)

    def load(self, file: IO[bytes]) -> Any:
        raise NotImplementedError("an impostor only writes")


def _write_raw(value: bytes, file: IO[bytes]) -> None:
    file.write(value)


class _Smuggler:
    """Puts payloads written by an impostor into a store of the codec under test.

    The payloads travel the way blobs from elsewhere do: written by one store, persisted to
    a shared location, registered by the store that reads them.
    """

    def __init__(self, codec: Codec[Any], root: Path) -> None:
        self.location = PreparedPath(root / "shared")
        self.location.prepare()
        self.reader: FBStore[Any] = FBStore(codec, PreparedPath(root / "reader"))
        self._root = root
        self._writers: dict[int, FBStore[Any]] = {}

    def blob(self, impostor: _Impostor, value: Any) -> uuid.UUID:
        """Write ``value`` with ``impostor`` and make it loadable by the reader."""
        writer = self._writers.get(id(impostor))
        if writer is None:
            folder = PreparedPath(self._root / f"writer-{len(self._writers)}")
            writer = self._writers[id(impostor)] = FBStore(impostor, folder)
        key = uuid.uuid4()
        writer.store(key, value)
        writer.persist(key, self.location)
        assert self.reader.register(key, self.location)
        return key

    def close(self) -> None:
        for store in (*self._writers.values(), self.reader):
            store.close()


def _load_foreign(store: FBStore[Any], key: uuid.UUID) -> None:
    """Load a blob of foreign bytes: a value or fb's errors are fine, nothing else is."""
    try:
        store.load(key)
    except (CodecError, CorruptBlobError):
        pass
    except Exception as exc:
        pytest.fail(
            f"loading foreign bytes raised {type(exc).__name__}: {exc}; a codec's errors "
            "must reach the caller as CodecError or CorruptBlobError"
        )


class CodecConformance:
    """What every codec must do, as a pytest base class; fb runs it on each built-in codec.

    A plugin author subclasses it in a test module (the class name must start with
    ``Test``) and provides fixtures; pytest then runs every test of the suite on the codec:

    - ``codec`` (required): the codec instance under test.
    - ``codec_values`` (optional): a hypothesis strategy of the values the codec claims to
      round-trip; the default is ``st.binary()``.
    - ``codec_large_value`` (optional): a value taking more than 64 MiB in memory (as
      the ``sizeof`` method measures), used to check that the codec streams; the default
      is 65 MiB of random bytes. Pick a value whose encoded size is close to its size in
      memory (bytes, arrays, long strings, lists of those).

    The tests check that the codec satisfies `fb.typing.Codec` with a stable name that
    survives pickling; that values round-trip through ``dump``/``load`` on `io.BytesIO`,
    through a real `FBStore` on a temporary directory, and from several threads at once;
    that storing and loading the large value never holds a second full copy (peak memory
    traced by `tracemalloc` during `FBStore.store` and `FBStore.load`, which sees Python
    and numpy allocations but not the private buffers of C libraries); and that foreign
    bytes under the codec's name (random garbage, other codecs' payloads) raise only
    `CodecError` or `CorruptBlobError` from `FBStore.load`, and a blob of another codec is
    refused with a `CodecError` naming both codecs.

    Class attributes tune it: ``max_examples`` (hypothesis examples per test),
    ``dump_overhead`` and ``load_overhead`` (the extra memory allowed while storing and
    loading the large value, as a fraction of its size: 0.5 by default, so one full copy
    fails; a codec whose library cannot stream states its real cost, with a reason). Methods
    too: ``assert_same`` (how two values are compared; the default is ``==``) and
    ``sizeof`` (the size of a value in memory; the default is `fb.default_sizeof`).

    Notes:
        Tests run one at a time; the thread test starts its own threads.
    """

    max_examples: ClassVar[int] = 50
    dump_overhead: ClassVar[float] = 0.5
    load_overhead: ClassVar[float] = 0.5

    @pytest.fixture(name="codec_values")
    def fixture_codec_values(self) -> st.SearchStrategy[Any]:
        """Values the codec round-trips (override for a codec that does not take bytes)."""
        return st.binary()

    @pytest.fixture(name="codec_large_value")
    def fixture_codec_large_value(self) -> Any:
        """A value of more than 64 MiB, for the streaming test (override as needed)."""
        return random.Random(0).randbytes(LARGE + (1 << 20))

    @pytest.fixture(name="codec_store")
    def fixture_codec_store(self, codec: Codec[Any], tmp_path: Path) -> Iterator[FBStore[Any]]:
        """A real FBStore with the codec under test, on a temporary directory."""
        store: FBStore[Any] = FBStore(codec, PreparedPath(tmp_path / "cache"))
        yield store
        store.close()

    @pytest.fixture(name="codec_smuggler")
    def fixture_codec_smuggler(self, codec: Codec[Any], tmp_path: Path) -> Iterator[_Smuggler]:
        """Stores that hand foreign payloads to a store of the codec under test."""
        smuggler = _Smuggler(codec, tmp_path / "smuggled")
        yield smuggler
        smuggler.close()

    def assert_same(self, actual: Any, expected: Any) -> None:
        """Fail unless ``actual`` (what came back) equals ``expected`` (what went in)."""
        assert actual == expected

    def sizeof(self, value: Any) -> int:
        """Return how many bytes ``value`` takes in memory (default: `fb.default_sizeof`)."""
        return default_sizeof(value)

    def _settings(self, share: float = 1.0) -> settings:
        return settings(
            max_examples=max(1, int(self.max_examples * share)),
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )

    # -- the interface -----------------------------------------------------------------------

    def test_is_a_codec(self, codec: Codec[Any]) -> None:
        """The codec satisfies fb.typing.Codec, with a stable name of 1 to 255 UTF-8 bytes."""
        assert isinstance(codec, Codec)
        assert not isinstance(codec, type)
        name = codec.name
        assert isinstance(name, str)
        assert 1 <= len(name.encode("utf-8")) <= 255
        assert codec.name == name
        assert name == name.strip()

    def test_survives_pickling(self, codec: Codec[Any], codec_values: Any) -> None:
        """A pickled copy of the codec (as sent to a worker) has its name and reads its blobs."""
        copy: Codec[Any] = pickle.loads(pickle.dumps(codec))
        assert copy.name == codec.name

        @self._settings()
        @given(codec_values)
        def check(value: Any) -> None:
            buffer = io.BytesIO()
            codec.dump(value, buffer)
            buffer.seek(0)
            self.assert_same(copy.load(buffer), value)

        check()

    # -- round trips ---------------------------------------------------------------------------

    def test_round_trip_in_memory(self, codec: Codec[Any], codec_values: Any) -> None:
        """Values come back equal through dump and load on io.BytesIO, read to its end."""

        @self._settings()
        @given(codec_values)
        def check(value: Any) -> None:
            buffer = io.BytesIO()
            codec.dump(value, buffer)
            written = buffer.tell()
            buffer.seek(0)
            self.assert_same(codec.load(buffer), value)
            assert buffer.tell() == written, "load did not read the whole payload"

        check()

    def test_round_trip_through_a_store(
        self, codec: Codec[Any], codec_values: Any, codec_store: FBStore[Any]
    ) -> None:
        """Values come back equal through a real FBStore on a temporary directory."""

        @self._settings()
        @given(codec_values)
        def check(value: Any) -> None:
            key = uuid.uuid4()
            size = codec_store.store(key, value)
            assert size > 0
            self.assert_same(codec_store.load(key), value)
            codec_store.delete(key)

        check()

    def test_threads(self, codec: Codec[Any], codec_values: Any) -> None:
        """Several threads dumping and loading through one codec each get their own values back."""

        def round_trip(value: Any) -> Any:
            buffer = io.BytesIO()
            for _ in range(3):
                buffer.seek(0)
                buffer.truncate()
                codec.dump(value, buffer)
                buffer.seek(0)
                result = codec.load(buffer)
            return result

        with ThreadPoolExecutor(_THREADS) as pool:

            @self._settings(share=0.2)  # each example is 24 round trips
            @given(st.lists(codec_values, min_size=_THREADS, max_size=_THREADS))
            def check(values: list[Any]) -> None:
                results = list(pool.map(round_trip, values))
                for result, value in zip(results, values, strict=True):
                    self.assert_same(result, value)

            check()

    # -- streaming -----------------------------------------------------------------------------

    def test_large_value_streams(
        self, codec: Codec[Any], codec_large_value: Any, codec_store: FBStore[Any]
    ) -> None:
        """Storing and loading a value of more than 64 MiB never holds a second full copy of it."""
        value = codec_large_value
        size = self.sizeof(value)
        assert size > LARGE, f"the large value takes {size} bytes, not more than {LARGE}"
        key = uuid.uuid4()
        gc.collect()
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            codec_store.store(key, value)
            dumped, dump_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            loaded = codec_store.load(key)
            held, load_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        dump_extra = dump_peak - start
        load_transient = load_peak - held
        load_kept = held - dumped
        assert dump_extra < self.dump_overhead * size, (
            f"storing {size} bytes took {dump_extra} bytes more at its peak "
            f"({dump_extra / size:.2f} of the value; {self.dump_overhead} allowed)"
        )
        assert load_transient < self.load_overhead * size, (
            f"loading {size} bytes held {load_transient} bytes more than the value at its "
            f"peak ({load_transient / size:.2f} of the value; {self.load_overhead} allowed)"
        )
        assert load_kept < (1 + self.load_overhead) * size, (
            f"the loaded value keeps {load_kept} bytes for a value of {size}"
        )
        self.assert_same(loaded, value)

    # -- foreign bytes -------------------------------------------------------------------------

    def test_blob_of_another_codec_is_refused(
        self, codec: Codec[Any], codec_smuggler: _Smuggler
    ) -> None:
        """A blob written by a codec of another name raises CodecError naming both codecs."""
        other = f"other-than-{codec.name}"[:255]
        key = codec_smuggler.blob(_Impostor(other, _write_raw), b"payload")
        with pytest.raises(CodecError) as caught:
            codec_smuggler.reader.load(key)
        assert repr(codec.name) in str(caught.value)
        assert repr(other) in str(caught.value)

    def test_garbage_raises_fb_errors(self, codec: Codec[Any], codec_smuggler: _Smuggler) -> None:
        """Random bytes under the codec's name load as a value or raise fb's errors only."""
        impostor = _Impostor(codec.name, _write_raw)

        @self._settings()
        @given(st.binary(max_size=512))
        def check(garbage: bytes) -> None:
            _load_foreign(codec_smuggler.reader, codec_smuggler.blob(impostor, garbage))

        check()

    def test_other_payloads_raise_fb_errors(
        self, codec: Codec[Any], codec_smuggler: _Smuggler
    ) -> None:
        """Pickle and JSON payloads under the codec's name load as a value or raise fb's errors."""
        impostors = [_Impostor(codec.name, other.dump) for other in (PickleCodec(), JsonCodec())]
        json_values = st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
            lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
            max_leaves=10,
        )

        @self._settings()
        @given(st.sampled_from(impostors), json_values)
        def check(impostor: _Impostor, value: Any) -> None:
            try:
                key = codec_smuggler.blob(impostor, value)
            except CodecError:
                return  # infinities: JSON has no way to write them
            _load_foreign(codec_smuggler.reader, key)

        check()
