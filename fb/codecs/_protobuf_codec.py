"""ProtobufCodec: protocol buffer messages of one type, in their wire format."""

from __future__ import annotations

from typing import IO, Any

import attrs
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from ..exceptions import PluginNotFoundError

__all__ = ["ProtobufCodec"]


def _message_class(spec: type[Message] | str) -> type[Message]:
    """Accept a message class, or a message's full name known to the default pool."""
    if isinstance(spec, type) and issubclass(spec, Message):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a protobuf message class or full name is needed, not {spec!r}")
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(spec)
    except KeyError as exc:
        raise PluginNotFoundError(
            "protobuf message",
            spec,
            (),
            hint="Import the module that defines it (its _pb2 module) before asking for it",
        ) from exc
    return message_factory.GetMessageClass(descriptor)  # type: ignore[no-any-return]


@attrs.frozen
class ProtobufCodec:
    """Encodes protocol buffer messages of one type in the protobuf wire format.

    The codec's name is ``"protobuf:"`` followed by the message's full name (for example
    ``"protobuf:google.protobuf.Struct"``), so it goes into every blob's header and a blob
    written for one message type is refused (`CodecError`) by a codec for another, although
    the wire format itself could not tell them apart. ``get_codec("protobuf:pkg.Msg")``
    builds the codec from that name once the module defining ``pkg.Msg`` is imported.

    Loading never runs code. The protobuf library has no streaming API: a message is
    serialized whole and parsed from the whole payload, so a message is held twice while
    it is encoded or decoded (protobuf limits messages to 2 GiB anyway).

    Args:
        message_class: the generated message class, or its full name (``"pkg.Msg"``).

    Notes:
        Thread-safe: each call builds its own message.
    """

    message_class: type[Message] = attrs.field(converter=_message_class)

    @property
    def name(self) -> str:
        """``"protobuf:<full name of the message>"``."""
        return f"protobuf:{self.message_class.DESCRIPTOR.full_name}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Generated classes are often built at run time and cannot be pickled by reference;
        # the full name rebuilds the codec wherever the message's module is imported.
        return (type(self), (self.message_class.DESCRIPTOR.full_name,))

    def dump(self, value: Message, file: IO[bytes]) -> None:
        """Write ``value`` to ``file`` in the wire format.

        Raises:
            TypeError: ``value`` is not a message of this codec's type.
        """
        if not isinstance(value, self.message_class):
            raise TypeError(
                f"{self.name} stores {self.message_class.DESCRIPTOR.full_name} messages, "
                f"not {type(value).__name__}"
            )
        file.write(value.SerializeToString())

    def load(self, file: IO[bytes]) -> Message:
        """Parse one message from ``file``.

        Raises:
            google.protobuf.message.DecodeError: the bytes are not a message of this type.
        """
        message = self.message_class()
        message.ParseFromString(file.read())
        return message

    def loads(self, data: memoryview) -> Message:
        """Parse one message from a buffer that holds exactly what `dump` wrote.

        Optional fast path: a store that holds a whole blob in memory uses it instead of
        `load`, skipping the file-object layer and a copy.

        Raises:
            google.protobuf.message.DecodeError: the bytes are not a message of this type.
        """
        message = self.message_class()
        message.ParseFromString(data)
        return message
