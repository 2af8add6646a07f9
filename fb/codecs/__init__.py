"""Codecs turn values into bytes and back; `PickleCodec` is the default.

The codecs that need an optional library (msgpack, numpy, protobuf, zstandard, lz4,
distributed) are imported on first use, so ``import fb.codecs`` imports none of those libraries:
``from fb.codecs import MsgpackCodec`` works, and raises an `ImportError` naming the extra
to install when msgpack is missing. `get_codec` builds codecs from names and specs such as
``"zstd:msgpack"``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._json_codec import JsonCodec as JsonCodec
from ._pickle_codec import PickleCodec as PickleCodec
from ._registry import CodecFactory as CodecFactory
from ._registry import available_codecs as available_codecs
from ._registry import get_codec as get_codec
from ._registry import register_codec as register_codec

if TYPE_CHECKING:
    from ._compression import Lz4Codec as Lz4Codec
    from ._compression import ZstdCodec as ZstdCodec
    from ._dask_codec import DaskCodec as DaskCodec
    from ._msgpack_codec import MsgpackCodec as MsgpackCodec
    from ._numpy_codec import NumpyCodec as NumpyCodec
    from ._protobuf_codec import ProtobufCodec as ProtobufCodec

__all__ = [
    "CodecFactory",
    "DaskCodec",
    "JsonCodec",
    "Lz4Codec",
    "MsgpackCodec",
    "NumpyCodec",
    "PickleCodec",
    "ProtobufCodec",
    "ZstdCodec",
    "available_codecs",
    "get_codec",
    "register_codec",
]

# name -> (module, extra that installs its dependency)
_LAZY = {
    "DaskCodec": ("._dask_codec", "dask"),
    "Lz4Codec": ("._compression", "compression"),
    "MsgpackCodec": ("._msgpack_codec", "msgpack"),
    "NumpyCodec": ("._numpy_codec", "numpy"),
    "ProtobufCodec": ("._protobuf_codec", "protobuf"),
    "ZstdCodec": ("._compression", "compression"),
}


def __getattr__(name: str) -> Any:
    lazy = _LAZY.get(name)
    if lazy is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, extra = lazy
    try:
        module = importlib.import_module(module_name, __name__)
    except ImportError as exc:
        raise ImportError(
            f"{name} needs an optional dependency that is not installed ({exc}): "
            f"pip install 'file-backed[{extra}]'",
            name=exc.name,
        ) from exc
    value = getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
