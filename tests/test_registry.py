"""The codec and backend registries: specs, lookup order, lazy imports and install hints."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import pytest

import fb.backends
import fb.codecs
from fb._plugins import Builtin, PluginRegistry
from fb.backends import (
    FBStore,
    PreparedPath,
    available_backends,
    fbstore_backend,
    get_backend,
    open_backend,
    register_backend,
)
from fb.backends import _registry as backend_registry
from fb.codecs import (
    JsonCodec,
    Lz4Codec,
    MsgpackCodec,
    NumpyCodec,
    PickleCodec,
    ZstdCodec,
    available_codecs,
    get_codec,
    register_codec,
)
from fb.codecs import _registry as codec_registry
from fb.exceptions import CodecError, PluginNotFoundError
from fb.typing import Codec

BUILT_IN_CODECS = ["json", "lz4", "msgpack", "numpy", "pickle", "protobuf", "zstd"]


class UpperCodec:
    """A codec for str written in upper case: enough to tell it from the built-ins."""

    name = "upper"

    def dump(self, value: str, file: IO[bytes]) -> None:
        file.write(value.upper().encode())

    def load(self, file: IO[bytes]) -> str:
        return file.read().decode()


@pytest.fixture(name="registered")
def fixture_registered() -> Iterator[list[str]]:
    """Names a test registers explicitly; they are forgotten afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        codec_registry.REGISTRY.unregister(name)
        backend_registry.REGISTRY.unregister(name)


def _run(code: str) -> str:
    """Run ``code`` in a fresh interpreter; return what it prints."""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


EXPORTS = {
    fb.codecs: {
        "CodecFactory",
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
    },
    fb.backends: {
        "BackendFactory",
        "FBStore",
        "PreparedPath",
        "available_backends",
        "fbstore_backend",
        "get_backend",
        "open_backend",
        "register_backend",
    },
}


@pytest.mark.parametrize("module", list(EXPORTS), ids=lambda module: module.__name__)
def test_exports_are_sorted_complete_and_importable(module: ModuleType) -> None:
    """__all__ is sorted, names the public API, and each name imports (lazy ones included)."""
    assert module.__all__ == sorted(module.__all__)
    assert EXPORTS[module] <= set(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None
        assert name in dir(module)


def test_unknown_attributes_still_raise() -> None:
    """The lazy exports do not turn every missing attribute into an import."""
    with pytest.raises(AttributeError, match="NoSuchCodec"):
        fb.codecs.NoSuchCodec  # noqa: B018


def test_importing_fb_imports_no_optional_library() -> None:
    """import fb and fb.codecs load no codec library and no codec module that needs one."""
    out = _run(
        """
        import sys
        import fsspec  # imports zstandard and lz4 itself when they are installed
        before = set(sys.modules)
        import fb, fb.codecs, fb.backends
        new = set(sys.modules) - before
        print(sorted(m for m in new if m.split(".")[0] in {"msgpack", "numpy", "zstandard",
              "lz4", "google"} or m.startswith("fb.codecs._") and "registry" not in m))
        """
    )
    assert out.split() == [
        "['fb.codecs._json_codec',",
        "'fb.codecs._pickle_codec',",
        "'fb.codecs._stream']",
    ]


def test_codec_classes_are_imported_on_first_use() -> None:
    """from fb.codecs import MsgpackCodec imports msgpack then, not before."""
    out = _run(
        """
        import sys
        import fb.codecs
        print("msgpack" in sys.modules, "fb.codecs._msgpack_codec" in sys.modules)
        from fb.codecs import MsgpackCodec
        print("msgpack" in sys.modules, MsgpackCodec().name)
        """
    )
    assert out.split() == ["False", "False", "True", "msgpack"]


def test_missing_extra_names_the_pip_install_line() -> None:
    """Without msgpack, get_codec and the lazy class both say which extra installs it."""
    out = _run(
        """
        import sys
        sys.modules["msgpack"] = None  # what an environment without msgpack looks like
        from fb.codecs import get_codec
        for attempt in (lambda: get_codec("msgpack"), lambda: get_codec("zstd:msgpack")):
            try:
                attempt()
            except ImportError as exc:
                print(exc)
        try:
            from fb.codecs import MsgpackCodec
        except ImportError as exc:
            print(exc)
        """
    )
    lines = out.splitlines()
    assert len(lines) == 3
    assert all("pip install 'file-backed[msgpack]'" in line for line in lines)


def test_missing_s3fs_names_the_s3_extra() -> None:
    """The s3 backend without s3fs says which extra installs it, before anything is built."""
    out = _run(
        """
        import sys
        sys.modules["s3fs"] = None  # what an environment without s3fs looks like
        from fb.backends import get_backend
        try:
            get_backend("s3")
        except ImportError as exc:
            print(exc)
        """
    )
    assert "pip install 'file-backed[s3]'" in out


@pytest.mark.parametrize("name", [name for name in BUILT_IN_CODECS if name != "protobuf"])
def test_built_in_codecs_are_found(name: str) -> None:
    """Every built-in codec that needs no argument is built from its name alone."""
    codec = get_codec(name)
    assert isinstance(codec, Codec)
    assert codec.name.split(":")[0] == name


def test_available_codecs_lists_the_built_ins() -> None:
    """available_codecs names every built-in, sorted."""
    names = available_codecs()
    assert names == sorted(names)
    assert set(BUILT_IN_CODECS) <= set(names)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("zstd:msgpack", ZstdCodec(MsgpackCodec())),
        ("lz4:json", Lz4Codec(JsonCodec())),
        ("zstd", ZstdCodec(PickleCodec())),
        ("lz4:zstd:numpy", Lz4Codec(ZstdCodec(NumpyCodec()))),
    ],
)
def test_specs_build_wrappers_around_resolved_names(spec: str, expected: Codec[Any]) -> None:
    """A wrapper spec builds wrapper(inner), resolving the inner name (and its own inner)."""
    assert get_codec(spec) == expected


@pytest.mark.parametrize(
    ("codec", "value"),
    [
        (PickleCodec(protocol=4), ("tuple", 1)),
        (JsonCodec(), ["x", 1]),
        (MsgpackCodec(), {"x": b"1"}),
        (ZstdCodec("lz4:json", level=9), ["x", 1]),
    ],
    ids=lambda param: getattr(param, "name", ""),
)
def test_a_codec_name_is_a_spec_that_rebuilds_it(codec: Codec[Any], value: Any) -> None:
    """get_codec(codec.name) reads what codec wrote: a blob header is enough to read a blob."""
    rebuilt = get_codec(codec.name)
    assert rebuilt.name == codec.name
    buffer = io.BytesIO()
    codec.dump(value, buffer)
    buffer.seek(0)
    assert rebuilt.load(buffer) == value


def test_instances_pass_through() -> None:
    """get_codec returns a codec instance as it is."""
    codec = MsgpackCodec()
    assert get_codec(codec) is codec


def test_classes_and_other_objects_are_refused() -> None:
    """A codec class or a non-codec is a TypeError, with a hint for the class."""
    with pytest.raises(TypeError, match="instance"):
        get_codec(MsgpackCodec)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="codec"):
        get_codec(42)  # type: ignore[arg-type]


def test_unknown_names_list_what_is_available() -> None:
    """An unknown codec raises PluginNotFoundError, a LookupError listing the known names."""
    with pytest.raises(PluginNotFoundError) as caught:
        get_codec("nope")
    assert isinstance(caught.value, LookupError)
    assert caught.value.name == "nope"
    assert set(BUILT_IN_CODECS) <= set(caught.value.available)
    assert "available: " in str(caught.value)
    assert "msgpack" in str(caught.value)


def test_unknown_names_inside_specs_are_named() -> None:
    """An unknown wrapper or inner name is reported as the name that is unknown."""
    with pytest.raises(PluginNotFoundError, match=r"'nope'.*spec 'nope:msgpack'") as caught:
        get_codec("nope:msgpack")
    assert caught.value.name == "nope"
    with pytest.raises(PluginNotFoundError) as caught:
        get_codec("zstd:nope")
    assert caught.value.name == "nope"


@pytest.mark.parametrize("spec", ["numpy:x", "pickle:7", ""])
def test_bad_specs_raise_codec_error(spec: str) -> None:
    """An argument a codec does not take, or an empty spec, raises CodecError (a ValueError)."""
    with pytest.raises(CodecError):
        get_codec(spec)


def test_explicit_registration_beats_built_ins(registered: list[str]) -> None:
    """A codec registered as "json" is what get_codec("json") returns, until unregistered."""
    registered.append("json")
    register_codec("json", UpperCodec)
    assert isinstance(get_codec("json"), UpperCodec)
    assert codec_registry.registry["json"] is UpperCodec
    codec_registry.REGISTRY.unregister("json")
    assert isinstance(get_codec("json"), JsonCodec)


def test_registered_codecs_take_spec_arguments(registered: list[str]) -> None:
    """A registered factory receives the argument of "name:argument" and nests in wrappers."""
    registered.append("upper")
    register_codec("upper", UpperCodec)
    assert get_codec("zstd:upper").name == "zstd:upper"
    with pytest.raises(CodecError, match="upper:x"):
        get_codec("upper:x")


def test_registering_twice_needs_clobber(registered: list[str]) -> None:
    """A second registration of a name raises unless clobber=True."""
    registered.append("upper")
    register_codec("upper", UpperCodec)
    with pytest.raises(ValueError, match="clobber"):
        register_codec("upper", UpperCodec)
    register_codec("upper", JsonCodec, clobber=True)
    assert isinstance(get_codec("upper"), JsonCodec)


def test_factories_must_return_codecs(registered: list[str]) -> None:
    """A factory that returns something else raises CodecError naming the spec."""
    registered.append("notacodec")
    register_codec("notacodec", dict)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="notacodec"):
        get_codec("notacodec")


def test_registration_needs_a_name_and_a_callable() -> None:
    """Empty names and non-callable factories are refused."""
    with pytest.raises(ValueError, match="non-empty"):
        register_codec("", UpperCodec)
    with pytest.raises(TypeError, match="callable"):
        register_codec("upper", "not callable")  # type: ignore[arg-type]


# -- the lookup order, on a registry of its own ---------------------------------------------


def test_lookup_order_and_install_hints() -> None:
    """Explicit > entry point > built-in; a built-in with a missing module names its extra."""
    registry: PluginRegistry[Any] = PluginRegistry(
        "gadget",
        "fb.tests-no-such-group",
        {
            "plain": Builtin(target="fb.codecs._json_codec:JsonCodec"),
            "missing": Builtin(target="fb_no_such_module:Thing", extra="gadgets"),
        },
    )
    assert registry.names() == ["missing", "plain"]
    assert registry.get("plain") is JsonCodec
    registry.register("plain", UpperCodec)
    assert registry.get("plain") is UpperCodec
    with pytest.raises(ImportError, match=r"pip install 'file-backed\[gadgets\]'"):
        registry.get("missing")
    with pytest.raises(PluginNotFoundError, match="unknown gadget 'other'; available: missing"):
        registry.get("other")


# -- backends ---------------------------------------------------------------------------------


def test_available_backends_lists_the_built_ins() -> None:
    """file, memory and s3 (with their aliases) are built in."""
    assert {"file", "local", "memory", "s3", "s3a"} <= set(available_backends())


@pytest.mark.parametrize("name", ["file", "local", "memory"])
def test_built_in_backends_build_fbstores(name: str) -> None:
    """Every built-in backend is the FBStore factory."""
    assert get_backend(name) is fbstore_backend


def test_memory_backend_round_trip() -> None:
    """The memory backend, found by name, stores and loads through the codec it is given."""
    store = get_backend("memory")("zstd:json", f"memory://fb-registry/{uuid.uuid4().hex}")
    assert isinstance(store, FBStore)
    key = uuid.uuid4()
    store.store(key, {"a": [1, 2]})
    assert store.load(key) == {"a": [1, 2]}
    store.close()


def test_open_backend_picks_the_backend_from_the_url(tmp_path: Path) -> None:
    """open_backend reads the protocol off a URL or path and passes the codec along."""
    local = open_backend(tmp_path / "cache", codec="msgpack")
    assert isinstance(local, FBStore)
    assert local.codec == MsgpackCodec()
    assert local.path.is_local
    local.close()
    remote = open_backend(PreparedPath(f"memory://fb-registry/{uuid.uuid4().hex}"))
    assert isinstance(remote, FBStore)
    assert remote.codec == PickleCodec()
    remote.close()


def test_storage_options_go_to_fsspec_but_not_next_to_a_prepared_path(tmp_path: Path) -> None:
    """Storage options build the PreparedPath; with a ready PreparedPath they are refused."""
    with pytest.raises(TypeError, match="PreparedPath"):
        fbstore_backend(
            "pickle", PreparedPath(tmp_path / "a"), storage_options={"auto_mkdir": True}
        )
    store = fbstore_backend("pickle", str(tmp_path / "b"), storage_options={"auto_mkdir": True})
    assert store.path.fs.auto_mkdir
    store.close()


def test_unknown_backends_list_what_is_available() -> None:
    """An unknown protocol raises PluginNotFoundError listing the backends."""
    with pytest.raises(PluginNotFoundError, match=r"unknown backend 'nope'; available: .*memory"):
        get_backend("nope")
    with pytest.raises(PluginNotFoundError, match="'gopher'"):
        open_backend("gopher://example.org/cache")


def test_registered_backends_beat_built_ins(registered: list[str], tmp_path: Path) -> None:
    """A backend registered for "file" serves plain paths until it is unregistered."""
    calls: list[tuple[Any, ...]] = []

    def factory(codec: Any, path_or_url: Any, /, **options: Any) -> Any:
        calls.append((codec.name, path_or_url, options))
        return fbstore_backend(codec, path_or_url, **options)

    registered.append("file")
    register_backend("file", factory)
    store = open_backend(str(tmp_path / "c"), codec="json", sweep=False)
    store.close()
    assert calls == [("json", str(tmp_path / "c"), {"sweep": False})]
    backend_registry.REGISTRY.unregister("file")
    assert get_backend("file") is fbstore_backend
