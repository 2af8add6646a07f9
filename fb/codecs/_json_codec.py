"""JsonCodec: JSON text in UTF-8, with the standard library's `json`."""

from __future__ import annotations

import json
from itertools import islice
from typing import IO, Any

import attrs

from ._stream import CHUNK, big_leaf, big_size, split

__all__ = ["JsonCodec"]

# One encoder for every thread: JSONEncoder keeps only its options, each encode() call builds
# its own C encoder.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_escape = json.encoder.encode_basestring  # the C escaper, ensure_ascii=False flavour
_KEYWORDS = {True: "true", False: "false", None: "null"}


@attrs.frozen
class JsonCodec:
    """Encodes JSON values (dict, list, str, int, float, bool, None) as compact UTF-8 JSON.

    The output is strict JSON that any tool reads: NaN and infinities are refused (a
    `CodecError` from the store), non-ASCII text is written as UTF-8. What JSON cannot say
    comes back changed, as with `json` itself: tuples come back as lists, and dict keys
    that are int, float, bool or None come back as strings.

    Loading never runs code. Writing streams: a list, tuple or dict estimated at 1 MiB or
    more is written a run of about 1 MiB of elements at a time, a long string in slices,
    anything smaller through the C encoder in one call; the text is byte for byte what
    ``json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))``
    writes. Reading cannot stream with the standard library: it holds the whole JSON text
    and the value it builds at once.

    Notes:
        Stateless and thread-safe.
    """

    @property
    def name(self) -> str:
        """``"json"``."""
        return "json"

    def dump(self, value: Any, file: IO[bytes]) -> None:
        """Write ``value`` as JSON to ``file``.

        Raises:
            TypeError: the value holds something JSON cannot represent.
            ValueError: a NaN or infinite float, or a string that is not valid Unicode.
        """
        writer = _Writer(file)
        writer.value(value)
        writer.flush()

    def load(self, file: IO[bytes]) -> Any:
        """Read one JSON value from ``file``.

        Raises:
            ValueError: the bytes are not UTF-8 JSON holding exactly one value.
        """
        data = file.read()
        text = data.decode("utf-8")
        del data  # the bytes and the text need not live together past this point
        return json.loads(text)

    def loads(self, data: memoryview) -> Any:
        """Decode one JSON value from a buffer that holds exactly what `dump` wrote.

        Optional fast path: a store that holds a whole blob in memory uses it instead of
        `load`, skipping the file-object layer and a copy.

        Raises:
            ValueError: the bytes are not UTF-8 JSON holding exactly one value.
        """
        return json.loads(str(data, "utf-8"))


class _Writer:
    """Buffers JSON text and writes it to ``file`` as UTF-8 in pieces of about `CHUNK`."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._parts: list[str] = []
        self._size = 0

    def emit(self, text: str) -> None:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            self._file.write("".join(self._parts).encode("utf-8"))
            self._parts.clear()
            self._size = 0

    def value(self, value: Any) -> None:
        if isinstance(value, str) and big_leaf(value):
            self.long_string(value)
            return
        size = big_size(value)
        if not size:
            self.emit(_ENCODER.encode(value))
        elif isinstance(value, dict):
            self.object(value, size)
        else:
            self.array(value, size)

    def long_string(self, text: str) -> None:
        # JSON escapes character by character, so slices escape independently.
        self.emit('"')
        for start in range(0, len(text), CHUNK):
            self.emit(_escape(text[start : start + CHUNK])[1:-1])
        self.emit('"')

    def array(self, items: list[Any] | tuple[Any, ...], size: int) -> None:
        self.emit("[")
        for start, stop, is_run in split(items, len(items), size):
            if start:
                self.emit(",")
            if is_run:
                # A run encoded as one array, less its brackets.
                self.emit(_ENCODER.encode(items[start:stop])[1:-1])
            else:
                self.value(items[start])
        self.emit("]")

    def object(self, mapping: dict[Any, Any], size: int) -> None:
        self.emit("{")
        pairs = iter(mapping.items())
        for start, stop, is_run in split(mapping.values(), len(mapping), size):
            if start:
                self.emit(",")
            if is_run:
                # dict() consumes the pairs as they come: no tuple is kept per entry.
                self.emit(_ENCODER.encode(dict(islice(pairs, stop - start)))[1:-1])
            else:
                key, item = next(pairs)
                self.emit(f"{_ENCODER.encode(_key(key))}:")
                self.value(item)
        self.emit("}")


def _key(key: Any) -> str:
    """Turn a dict key into a string the way `json` does."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return _KEYWORDS[key]
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return _ENCODER.encode(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")
