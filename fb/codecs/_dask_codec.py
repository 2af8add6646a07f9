"""DaskCodec: encodes values as distributed spills them (``distributed.protocol``)."""

from __future__ import annotations

from typing import IO, Any, Literal

import attrs

__all__ = ["DaskCodec"]

_SPILL_COMPRESSION = "distributed.worker.memory.spill-compression"


@attrs.frozen
class DaskCodec:
    """Encodes any value with Dask's own serialization, as a Dask worker spills it.

    ``distributed.protocol.serialize_bytelist`` picks the serializer Dask would use for the
    value (its registered dask serializers, pickle protocol 5 with out-of-band buffers, and
    cloudpickle for what plain pickle refuses, such as classes and functions defined in a
    script or notebook) and compresses the frames as distributed's
    ``distributed.worker.memory.spill-compression`` setting says, read each time a value is
    encoded. Decoding reads the frames back with ``deserialize_bytes``, which records the
    compression in the frames' header. Serialization and compression report their time
    to Dask's performance metrics (``serialize``, ``compress``…) in the thread that calls
    the codec.

    Pickle runs code while it loads: as with `PickleCodec`, point it only at locations you
    trust, or sign blobs.

    Args:
        compression: a compression name Dask knows (``"lz4"``, ``"zstd"``…), ``False`` for
            none, or None (default) for distributed's spill setting.

    Notes:
        Stateless and thread-safe. Needs ``distributed`` (the ``dask`` extra). ``dump``
        writes each frame of the value without joining them first; ``load`` reads the whole
        blob into one buffer, as distributed's own spill files do.
    """

    compression: str | Literal[False] | None = None

    @property
    def name(self) -> str:
        """``"dask"``: the frames' header records serializer and compression."""
        return "dask"

    def dump(self, value: Any, file: IO[bytes]) -> None:
        """Serialize ``value`` as distributed does and write its frames to ``file``."""
        from distributed.protocol.compression import get_compression_settings
        from distributed.protocol.serialize import serialize_bytelist

        compression = self.compression
        if compression is None:
            compression = get_compression_settings(_SPILL_COMPRESSION)
        for frame in serialize_bytelist(value, compression=compression, on_error="raise"):
            file.write(frame)

    def load(self, file: IO[bytes]) -> Any:
        """Read back one value that `dump` wrote."""
        return self.loads(memoryview(file.read()))

    def loads(self, data: memoryview) -> Any:
        """Decode a buffer that holds exactly what `dump` wrote (the in-memory fast path)."""
        from distributed.protocol.serialize import deserialize_bytes

        return deserialize_bytes(data)
