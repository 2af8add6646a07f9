"""ProtobufCodec passes the codec conformance suite and keeps message types apart."""

from __future__ import annotations

import io
import pickle
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2
from google.protobuf.message import Message
from hypothesis import strategies as st

from fb.backends import FBStore, PreparedPath
from fb.codecs import ProtobufCodec, get_codec
from fb.exceptions import CodecError, PluginNotFoundError
from fb.testing.codecs import LARGE, CodecConformance

_FIELD = descriptor_pb2.FieldDescriptorProto


def _message_classes() -> tuple[type[Message], type[Message]]:
    """Build fbtest.Record and fbtest.Label at run time, as a generated _pb2 module would."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("fb_tests/record.proto")
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(
            name="fb_tests/record.proto", package="fbtest", syntax="proto3"
        )
        record = proto.message_type.add(name="Record")
        record.field.add(name="name", number=1, type=_FIELD.TYPE_STRING)
        record.field.add(name="id", number=2, type=_FIELD.TYPE_SINT64)
        record.field.add(name="score", number=3, type=_FIELD.TYPE_DOUBLE)
        record.field.add(
            name="chunks", number=4, type=_FIELD.TYPE_BYTES, label=_FIELD.LABEL_REPEATED
        )
        label = proto.message_type.add(name="Label")
        label.field.add(name="text", number=1, type=_FIELD.TYPE_STRING)
        pool.Add(proto)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("fbtest.Record")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("fbtest.Label")),
    )


Record, Label = _message_classes()

RECORDS = st.builds(
    Record,
    name=st.text(),
    id=st.integers(-(2**63), 2**63 - 1),
    score=st.floats(allow_nan=False),
    chunks=st.lists(st.binary(), max_size=4),
)


class TestProtobufCodec(CodecConformance):
    """Messages of one type, built from a descriptor at run time."""

    # protobuf has no streaming API: SerializeToString and ParseFromString hold the whole
    # wire format next to the message.
    dump_overhead: ClassVar[float] = 1.25
    load_overhead: ClassVar[float] = 1.25

    @pytest.fixture(name="codec")
    def fixture_codec(self) -> ProtobufCodec:
        return ProtobufCodec(Record)

    @pytest.fixture(name="codec_values")
    def fixture_codec_values(self) -> st.SearchStrategy[Any]:
        return RECORDS

    @pytest.fixture(name="codec_large_value")
    def fixture_codec_large_value(self) -> Message:
        return Record(name="large", chunks=[bytes(LARGE + (1 << 20))])

    def sizeof(self, value: Any) -> int:
        return int(value.ByteSize())


class TestProtobufWellKnownType(CodecConformance):
    """A generated class shipped with protobuf: google.protobuf.Struct, JSON-like values."""

    dump_overhead: ClassVar[float] = 1.25
    load_overhead: ClassVar[float] = 1.25

    @pytest.fixture(name="codec")
    def fixture_codec(self) -> ProtobufCodec:
        return ProtobufCodec(struct_pb2.Struct)

    @pytest.fixture(name="codec_values")
    def fixture_codec_values(self) -> st.SearchStrategy[Any]:
        leaves = st.none() | st.booleans() | st.floats(allow_nan=False) | st.text()
        values = st.recursive(
            leaves, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=10
        )

        def build(content: dict[str, Any]) -> struct_pb2.Struct:
            message = struct_pb2.Struct()
            message.update(content)
            return message

        return st.dictionaries(st.text(), values, max_size=5).map(build)

    @pytest.fixture(name="codec_large_value")
    def fixture_codec_large_value(self) -> Message:
        message = struct_pb2.Struct()
        message.update({"text": "x" * (LARGE + (1 << 20))})
        return message

    def sizeof(self, value: Any) -> int:
        return int(value.ByteSize())


def test_name_holds_the_full_message_name() -> None:
    """The codec's name, and so every blob header, says which message type it holds."""
    assert ProtobufCodec(Record).name == "protobuf:fbtest.Record"
    assert ProtobufCodec(struct_pb2.Struct).name == "protobuf:google.protobuf.Struct"


def test_get_codec_builds_it_from_its_name() -> None:
    """get_codec resolves "protobuf:<full name>" through the default descriptor pool."""
    codec = get_codec("protobuf:fbtest.Record")
    assert codec == ProtobufCodec(Record)
    assert get_codec("zstd:protobuf:fbtest.Label").name == "zstd:protobuf:fbtest.Label"


def test_unknown_message_names_are_reported() -> None:
    """A message name that no imported module defines raises PluginNotFoundError."""
    with pytest.raises(PluginNotFoundError, match=r"fbtest\.Nope"):
        get_codec("protobuf:fbtest.Nope")


def test_pickled_codec_finds_its_class_by_name() -> None:
    """A codec for a class built at run time pickles by the message's full name."""
    codec = ProtobufCodec(Record)
    assert pickle.loads(pickle.dumps(codec)) == codec


def test_blob_of_another_message_type_is_refused(tmp_path: Path) -> None:
    """A blob written for fbtest.Label is refused by a store for fbtest.Record."""
    location = PreparedPath(tmp_path / "shared")
    location.prepare()
    key = uuid.uuid4()
    writer: FBStore[Any] = FBStore(ProtobufCodec(Label), tmp_path / "writer")
    reader: FBStore[Any] = FBStore(ProtobufCodec(Record), tmp_path / "reader")
    try:
        writer.store(key, Label(text="hello"))
        writer.persist(key, location)
        assert reader.register(key, location)
        with pytest.raises(CodecError, match=r"protobuf:fbtest\.Label.*protobuf:fbtest\.Record"):
            reader.load(key)
    finally:
        writer.close()
        reader.close()


def test_messages_of_another_type_are_refused() -> None:
    """Dumping a message of another type raises TypeError instead of writing it."""
    with pytest.raises(TypeError, match=r"fbtest\.Record"):
        ProtobufCodec(Record).dump(Label(text="x"), io.BytesIO())


def test_classes_that_are_not_messages_are_refused() -> None:
    """The codec needs a message class or a full name."""
    with pytest.raises(TypeError, match="message class"):
        ProtobufCodec(dict)
