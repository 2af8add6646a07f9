"""A toy fb plugin: `Rot13Codec` (str as rot13 UTF-8) and `DictStore` (blobs in a dict).

Both are found by fb through the entry points declared in this distribution's
pyproject.toml: ``fb.codecs.get_codec("rot13")`` and ``fb.backends.get_backend("dictmem")``.
"""

from __future__ import annotations

import codecs
import io
import threading
from typing import IO, Any
from uuid import UUID

from fb.backends import PreparedPath
from fb.exceptions import BlobNotFoundError
from fb.typing import Codec

__all__ = ["DictStore", "Rot13Codec", "dict_backend"]

_SLICE = 1 << 20


class Rot13Codec:
    """Stores a str as its rot13 in UTF-8: a toy that shows the codec interface.

    It streams: text goes out and comes back a slice at a time, so its UTF-8 is never held
    whole next to the string (the slices read back are joined into one string at the end).

    Notes:
        Stateless and thread-safe.
    """

    @property
    def name(self) -> str:
        """``"rot13"``: it goes into every blob header."""
        return "rot13"

    def dump(self, value: str, file: IO[bytes]) -> None:
        """Write ``value`` rot13-ed, as UTF-8."""
        if not isinstance(value, str):
            raise TypeError(f"Rot13Codec stores str, not {type(value).__name__}")
        for start in range(0, len(value), _SLICE):
            file.write(codecs.encode(value[start : start + _SLICE], "rot13").encode("utf-8"))

    def load(self, file: IO[bytes]) -> str:
        """Read the whole payload back into a str."""
        decoder = codecs.getincrementaldecoder("utf-8")()
        pieces = []
        while chunk := file.read(_SLICE):
            pieces.append(codecs.decode(decoder.decode(chunk), "rot13"))
        pieces.append(decoder.decode(b"", final=True))
        return "".join(pieces)


_BUCKETS: dict[str, dict[UUID, bytes]] = {}
_BUCKETS_LOCK = threading.Lock()


class DictStore:
    """A `Strategy` keeping encoded blobs in a process-wide dict per ``dictmem://`` URL.

    Two stores on one URL share their blobs, like fsspec's ``memory://``. It holds the cache
    tier only: the persistence methods raise `NotImplementedError`.

    Notes:
        Thread-safe: one lock guards the buckets; encoding and decoding happen outside it.
    """

    def __init__(self, codec: Codec[Any], url: str) -> None:
        self.codec = codec
        self.url = url
        with _BUCKETS_LOCK:
            self._blobs = _BUCKETS.setdefault(url, {})

    def __repr__(self) -> str:
        return f"DictStore({self.codec!r}, {self.url!r})"

    def raw(self, key: UUID) -> bytes:
        """Return the encoded bytes of blob ``key`` (for tests and curiosity)."""
        with _BUCKETS_LOCK:
            return self._blobs[key]

    def store(self, key: UUID, value: Any) -> int:
        """Encode ``value`` and keep it as blob ``key``; return its size."""
        buffer = io.BytesIO()
        self.codec.dump(value, buffer)
        data = buffer.getvalue()
        with _BUCKETS_LOCK:
            self._blobs[key] = data
        return len(data)

    def load(self, key: UUID) -> Any:
        """Decode blob ``key``."""
        with _BUCKETS_LOCK:
            data = self._blobs.get(key)
        if data is None:
            raise BlobNotFoundError(f"no blob {key.hex} in {self.url}")
        return self.codec.load(io.BytesIO(data))

    def delete(self, key: UUID) -> None:
        """Forget blob ``key``; a missing blob is not an error."""
        with _BUCKETS_LOCK:
            self._blobs.pop(key, None)

    def close(self) -> None:
        """Nothing to release."""

    def scan(self, location: PreparedPath) -> tuple[set[UUID], list[str]]:
        """Not supported: a dict has no durable locations."""
        raise NotImplementedError("DictStore keeps blobs in memory only")

    def persist(self, key: UUID, location: PreparedPath) -> list[str]:
        """Not supported: a dict has no durable locations."""
        raise NotImplementedError("DictStore keeps blobs in memory only")

    def register(self, key: UUID, location: PreparedPath) -> bool:
        """Not supported: a dict has no durable locations."""
        raise NotImplementedError("DictStore keeps blobs in memory only")

    def delete_persisted(self, key: UUID, location: PreparedPath) -> list[str]:
        """Not supported: a dict has no durable locations."""
        raise NotImplementedError("DictStore keeps blobs in memory only")

    def fsync(self, location: PreparedPath, paths: set[str]) -> None:
        """Not supported: a dict has no durable locations."""
        raise NotImplementedError("DictStore keeps blobs in memory only")


def dict_backend(codec: Codec[Any] | str, path_or_url: Any, /, **options: Any) -> DictStore:
    """The ``fb.backends`` entry point: build a `DictStore` for a ``dictmem://`` URL.

    A codec name is resolved with fb's registry, so ``get_backend("dictmem")("rot13", url)``
    works too.
    """
    from fb.codecs import get_codec

    if options:
        raise TypeError(f"DictStore takes no options, not {sorted(options)}")
    return DictStore(get_codec(codec), str(path_or_url))
