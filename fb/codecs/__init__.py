"""Codecs turn values into bytes and back; `PickleCodec` is the default."""

from ._pickle_codec import PickleCodec as PickleCodec
from ._registry import available_codecs as available_codecs
from ._registry import get_codec as get_codec
from ._registry import register_codec as register_codec

__all__ = ["PickleCodec", "available_codecs", "get_codec", "register_codec"]
