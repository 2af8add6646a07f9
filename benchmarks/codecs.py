"""fb's codecs through an FBStore round trip against their libraries called directly.

    .venv/bin/python benchmarks/codecs.py [--seconds 0.3] [--dir /some/disk]

The same values go through every codec that takes them:

- ``array``: a 4 MiB float64 numpy array;
- ``bytes``: 64 KiB of random bytes;
- ``records``: a dict of 10,000 small records (an int, a str, a float, a short list).

For each codec and value, in one run:

- store: ``FBStore.store`` (encode, checksum, write a temporary file, rename it into place)
  and ``FBStore.load`` (open, check header and trailer, decode) on a local directory;
- codec: fb's codec alone, ``dump`` to and ``load`` from an ``io.BytesIO``;
- direct: the library's own one-shot calls in memory (``pickle.dumps``/``loads``,
  ``msgpack.packb``/``unpackb``, ``json.dumps``/``loads``, ``np.save``/``np.load`` on a
  BytesIO, ``zstd``/``lz4.frame`` ``compress`` of the inner library's bytes, protobuf's
  ``SerializeToString``/``FromString``).

Throughput is in MB/s (10^6 bytes per second) of the value's size, measured the same way for
every codec: its pickle's length. Each figure is the best of as many runs as fit in
``--seconds``. The ratio is store/direct: 1.0 means fb adds nothing, but a store also writes
and reads a file, which the direct calls do not; the codec column shows what the codec alone
costs next to its library.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from fb.backends import FBStore, PreparedPath
from fb.codecs import get_codec

_MISSING: list[str] = []

try:
    import msgpack
except ImportError:  # pragma: no cover - the benchmark says what it skipped
    msgpack = None
    _MISSING.append("msgpack")
try:
    import zstandard
except ImportError:  # pragma: no cover
    zstandard = None
    _MISSING.append("zstandard")
try:
    import lz4.frame
except ImportError:  # pragma: no cover
    lz4 = None
    _MISSING.append("lz4")
try:
    from google.protobuf import struct_pb2, wrappers_pb2
except ImportError:  # pragma: no cover
    struct_pb2 = wrappers_pb2 = None
    _MISSING.append("protobuf")


def make_values() -> dict[str, Any]:
    rng = random.Random(1)
    return {
        "array": np.random.default_rng(1).random(1 << 19),
        "bytes": rng.randbytes(64 << 10),
        "records": {
            f"r{i:05d}": {"id": i, "name": f"item-{i}", "score": i / 7, "tags": ["a", "bc"]}
            for i in range(10_000)
        },
    }


def _npy_bytes(array: Any) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


# codec spec -> value name -> (convert the value for the codec, direct encode, direct decode)
Case = tuple[Callable[[Any], Any], Callable[[Any], bytes], Callable[[bytes], Any]]


def _same(value: Any) -> Any:
    return value


def make_cases() -> dict[str, dict[str, Case]]:
    def pickled() -> Case:
        return (_same, lambda v: pickle.dumps(v, protocol=5), pickle.loads)

    cases: dict[str, dict[str, Case]] = {
        "pickle": {name: pickled() for name in ("array", "bytes", "records")},
        "json": {"records": (_same, _json_bytes, json.loads)},
        "numpy": {"array": (_same, _npy_bytes, lambda data: np.load(io.BytesIO(data)))},
    }
    if msgpack is not None:
        packed: Case = (
            _same,
            msgpack.packb,
            lambda data: msgpack.unpackb(data, strict_map_key=False),
        )
        cases["msgpack"] = {"bytes": packed, "records": packed}
    if wrappers_pb2 is not None:

        def as_struct(value: Any) -> Any:
            message = struct_pb2.Struct()
            message.update(value)
            return message

        cases["protobuf:google.protobuf.BytesValue"] = {
            "bytes": (
                lambda v: wrappers_pb2.BytesValue(value=v),
                lambda m: m.SerializeToString(),
                wrappers_pb2.BytesValue.FromString,
            )
        }
        cases["protobuf:google.protobuf.Struct"] = {
            "records": (as_struct, lambda m: m.SerializeToString(), struct_pb2.Struct.FromString)
        }
    if zstandard is not None:
        compressor, decompressor = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
        cases["zstd:pickle"] = {
            name: (
                _same,
                lambda v: compressor.compress(pickle.dumps(v, protocol=5)),
                lambda data: pickle.loads(decompressor.decompress(data)),
            )
            for name in ("array", "bytes", "records")
        }
        cases["zstd:numpy"] = {
            "array": (
                _same,
                lambda v: compressor.compress(_npy_bytes(v)),
                lambda data: np.load(io.BytesIO(decompressor.decompress(data))),
            )
        }
        if msgpack is not None:
            cases["zstd:msgpack"] = {
                name: (
                    _same,
                    lambda v: compressor.compress(msgpack.packb(v)),
                    lambda data: msgpack.unpackb(
                        decompressor.decompress(data), strict_map_key=False
                    ),
                )
                for name in ("bytes", "records")
            }
    if lz4 is not None:
        cases["lz4:pickle"] = {
            name: (
                _same,
                lambda v: lz4.frame.compress(pickle.dumps(v, protocol=5)),
                lambda data: pickle.loads(lz4.frame.decompress(data)),
            )
            for name in ("array", "bytes", "records")
        }
        cases["lz4:numpy"] = {
            "array": (
                _same,
                lambda v: lz4.frame.compress(_npy_bytes(v)),
                lambda data: np.load(io.BytesIO(lz4.frame.decompress(data))),
            )
        }
    return cases


def best_time(action: Callable[[], Any], seconds: float) -> float:
    """Return the fastest of as many runs of ``action`` as fit in ``seconds`` (at least 3)."""
    best = float("inf")
    deadline = time.perf_counter() + seconds
    runs = 0
    while runs < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
        runs += 1
    return best


def measure(store: FBStore[Any], value: Any, case: Case, seconds: float) -> dict[str, float]:
    convert, encode, decode = case
    value = convert(value)
    payload = encode(value)
    decode(payload)  # warm up, and prove the direct path works
    key = uuid.uuid4()
    store.store(key, value)
    store.load(key)
    codec = store.codec
    encoded = io.BytesIO()
    codec.dump(value, encoded)

    def codec_dump() -> None:
        codec.dump(value, io.BytesIO())

    def codec_load() -> None:
        encoded.seek(0)
        codec.load(encoded)

    def fb_store() -> None:
        fresh = uuid.uuid4()
        store.store(fresh, value)
        store.delete(fresh)

    return {
        "fb_enc": best_time(fb_store, seconds),
        "codec_enc": best_time(codec_dump, seconds),
        "dir_enc": best_time(lambda: encode(value), seconds),
        "fb_dec": best_time(lambda: store.load(key), seconds),
        "codec_dec": best_time(codec_load, seconds),
        "dir_dec": best_time(lambda: decode(payload), seconds),
        "payload": len(encoded.getvalue()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="time budget per figure")
    parser.add_argument("--dir", default=None, help="directory for the FBStore (default: tmp)")
    args = parser.parse_args()

    values = make_values()
    sizes = {name: len(pickle.dumps(value, protocol=5)) for name, value in values.items()}
    cases = make_cases()
    header = (
        f"{'codec':<36} {'value':<8} {'payload':>9} |"
        f"{'encode: store':>14} {'codec':>6} {'direct':>6} {'ratio':>5} |"
        f"{'decode: store':>14} {'codec':>6} {'direct':>6} {'ratio':>5}"
    )
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        print(
            f"MB/s of the value's pickled size. store: FBStore round trip on {root}; "
            "codec: fb's codec on a BytesIO; direct: the library in memory; "
            "ratio: store / direct"
        )
        print(header)
        print("-" * len(header))
        for index, (spec, by_value) in enumerate(cases.items()):
            store: FBStore[Any] = FBStore(get_codec(spec), PreparedPath(f"{root}/{index}"))
            try:
                for name, case in by_value.items():
                    result = measure(store, values[name], case, args.seconds)
                    rate = {key: sizes[name] / 1e6 / seconds for key, seconds in result.items()}
                    print(
                        f"{spec:<36} {name:<8} {result['payload']:>9} |"
                        f"{rate['fb_enc']:>14.0f} {rate['codec_enc']:>6.0f} "
                        f"{rate['dir_enc']:>6.0f} {rate['fb_enc'] / rate['dir_enc']:>5.2f} |"
                        f"{rate['fb_dec']:>14.0f} {rate['codec_dec']:>6.0f} "
                        f"{rate['dir_dec']:>6.0f} {rate['fb_dec'] / rate['dir_dec']:>5.2f}"
                    )
            finally:
                store.close()
    if _MISSING:
        print(f"skipped (not installed): {', '.join(_MISSING)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
