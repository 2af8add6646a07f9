"""fb.typing: the interfaces are checkable at run time and by mypy."""

from __future__ import annotations

from typing import Any

from fb.codecs import JsonCodec, PickleCodec, get_codec
from fb.typing import BufferCodec, Codec

# mypy checks these assignments: the built-in codecs with ``loads`` are BufferCodecs.
_PICKLE: BufferCodec[Any] = PickleCodec()
_JSON: BufferCodec[Any] = JsonCodec()


def test_codecs_with_loads_are_buffer_codecs() -> None:
    """A codec with ``loads`` is a BufferCodec at run time; every codec is a Codec."""
    assert isinstance(_PICKLE, BufferCodec)
    assert isinstance(get_codec("zstd:msgpack"), BufferCodec)
    assert isinstance(_JSON, Codec)


def test_a_codec_without_loads_is_not_a_buffer_codec() -> None:
    """A codec that streams only is a Codec but not a BufferCodec."""

    class StreamOnly:
        name = "stream-only"

        def dump(self, value: Any, file: Any) -> None:
            file.write(b"")

        def load(self, file: Any) -> Any:
            return None

    assert isinstance(StreamOnly(), Codec)
    assert not isinstance(StreamOnly(), BufferCodec)
