"""The values and the direct library calls that ``benchmarks/codecs.py`` measures fb against.

`make_values` builds the shared values (``array``, ``bytes``, ``records``); `make_cases` maps
each codec spec to the values it takes and, for each, a `Direct`: how a user calls that
codec's library directly, in memory and on an open file. Libraries that are not installed
are left out and named in ``_MISSING``.
"""

from __future__ import annotations

import io
import json
import pickle
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

_MISSING: list[str] = []

try:
    import msgpack
except ImportError:  # pragma: no cover - the benchmark says what it skipped
    msgpack = None
    _MISSING.append("msgpack")
try:
    import zstandard
except ImportError:  # pragma: no cover
    zstandard = None  # type: ignore[assignment]
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


# -- the libraries, called directly ---------------------------------------------------------


@dataclass(frozen=True)
class Direct:
    """How a user calls a library directly: in memory, and on an open file."""

    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]
    write: Callable[[Any, IO[bytes]], Any] | None = None
    """Write the value to a file; default ``f.write(dumps(value))``."""
    read: Callable[[IO[bytes]], Any] | None = None
    """Read the value from a file; default ``loads(f.read())``."""
    convert: Callable[[Any], Any] | None = None
    """Turn the shared value into what the codec takes (protobuf messages), untimed."""

    def dump_file(self, value: Any, file: IO[bytes]) -> None:
        if self.write is None:
            file.write(self.dumps(value))
        else:
            self.write(value, file)

    def load_file(self, file: IO[bytes]) -> Any:
        if self.read is None:
            return self.loads(file.read())
        return self.read(file)


def _npy_bytes(array: Any) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _pickle_bytes(value: Any) -> bytes:
    return pickle.dumps(value, protocol=5)


def _msgpack_loads(data: bytes) -> Any:
    return msgpack.unpackb(data, strict_map_key=False)


def _compressed(
    dumps: Callable[[Any], bytes],
    loads: Callable[[bytes], Any],
    compress: Callable[[bytes], bytes],
    decompress: Callable[[bytes], bytes],
) -> Direct:
    """The inner library's bytes through a one-shot compressor, and back."""
    return Direct(lambda v: compress(dumps(v)), lambda data: loads(decompress(data)))


def make_cases() -> dict[str, dict[str, Direct]]:
    """Return codec spec -> value name -> how its library is called directly."""
    pickled = Direct(
        _pickle_bytes,
        pickle.loads,
        write=lambda v, f: pickle.dump(v, f, protocol=5),
        read=pickle.load,
    )
    numpy = Direct(
        _npy_bytes,
        lambda data: np.load(io.BytesIO(data)),
        write=lambda v, f: np.save(f, v, allow_pickle=False),
        read=np.load,
    )
    cases: dict[str, dict[str, Direct]] = {
        "pickle": dict.fromkeys(("array", "bytes", "records"), pickled),
        "json": {"records": Direct(_json_bytes, json.loads)},
        "numpy": {"array": numpy},
    }
    if msgpack is not None:
        packed = Direct(msgpack.packb, _msgpack_loads)
        cases["msgpack"] = {"bytes": packed, "records": packed}
    if wrappers_pb2 is not None:

        def as_struct(value: Any) -> Any:
            message = struct_pb2.Struct()
            message.update(value)
            return message

        def serialize(message: Any) -> bytes:
            return message.SerializeToString()  # type: ignore[no-any-return]

        cases["protobuf:google.protobuf.BytesValue"] = {
            "bytes": Direct(
                serialize,
                wrappers_pb2.BytesValue.FromString,
                convert=lambda v: wrappers_pb2.BytesValue(value=v),
            )
        }
        cases["protobuf:google.protobuf.Struct"] = {
            "records": Direct(serialize, struct_pb2.Struct.FromString, convert=as_struct)
        }
    inners: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any], tuple[str, ...]]] = {
        "pickle": (_pickle_bytes, pickle.loads, ("array", "bytes", "records")),
        "numpy": (_npy_bytes, lambda data: np.load(io.BytesIO(data)), ("array",)),
    }
    if msgpack is not None:
        inners["msgpack"] = (msgpack.packb, _msgpack_loads, ("bytes", "records"))
    if zstandard is not None:
        compressor, decompressor = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
        for inner, (dumps, loads, names) in inners.items():
            zstd_case = _compressed(dumps, loads, compressor.compress, decompressor.decompress)
            cases[f"zstd:{inner}"] = dict.fromkeys(names, zstd_case)
    if lz4 is not None:
        for inner, (dumps, loads, names) in inners.items():
            if inner == "msgpack":
                continue  # as before: lz4 rows for pickle and numpy only
            lz4_case = _compressed(dumps, loads, lz4.frame.compress, lz4.frame.decompress)
            cases[f"lz4:{inner}"] = dict.fromkeys(names, lz4_case)
    return cases
