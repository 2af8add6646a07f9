"""PickleCodec: the default codec, for any picklable Python value."""

from __future__ import annotations

import pickle
from typing import IO, Any

import attrs

__all__ = ["PickleCodec"]


@attrs.frozen
class PickleCodec:
    """Encodes any picklable value with `pickle`, streaming to and from the blob file.

    Protocol 5 writes large buffers (``bytes``, numpy arrays) straight to the file without
    an extra copy, and pickle's framing keeps the number of writes small.

    Pickle runs code while it loads: point a pickle store only at locations you trust, or
    sign blobs (see the Codecs page).

    Args:
        protocol: the pickle protocol (default 5, the highest that exists on Python 3.11).

    Notes:
        Stateless and thread-safe.
    """

    protocol: int = attrs.field(default=5, validator=attrs.validators.in_(range(2, 6)))

    @property
    def name(self) -> str:
        """``"pickle"``: the protocol is recorded inside the pickle stream itself."""
        return "pickle"

    def dump(self, value: Any, file: IO[bytes]) -> None:
        """Pickle ``value`` into ``file``."""
        pickle.dump(value, file, protocol=self.protocol)

    def load(self, file: IO[bytes]) -> Any:
        """Unpickle one value from ``file``."""
        return pickle.load(file)

    def loads(self, data: memoryview) -> Any:
        """Unpickle one value from a buffer that holds exactly what `dump` wrote.

        Optional fast path: a store that holds a whole blob in memory uses it instead of
        `load`, skipping the file-object layer.
        """
        return pickle.loads(data)
