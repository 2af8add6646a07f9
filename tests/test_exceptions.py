"""fb.exceptions: every error is an FbError and also the builtin exception it means."""

from __future__ import annotations

import errno
import inspect
from uuid import uuid4

import pytest

from fb import exceptions
from fb.codecs import get_codec
from fb.exceptions import (
    BlobNotFoundError,
    CodecError,
    CorruptBlobError,
    FbError,
    ForeignLocationError,
    GuardConflictError,
    GuardTimeoutError,
    HandleClosedError,
    InvalidKeyError,
    NotPicklableError,
    PluginNotFoundError,
    StoreClosedError,
    StoreLockedError,
    UnsafeLocationError,
)

MEANING: list[tuple[type[FbError], type[Exception]]] = [
    (CorruptBlobError, ValueError),
    (CodecError, ValueError),
    (InvalidKeyError, ValueError),
    (ForeignLocationError, ValueError),
    (PluginNotFoundError, LookupError),
    (BlobNotFoundError, FileNotFoundError),
    (StoreClosedError, RuntimeError),
    (HandleClosedError, RuntimeError),
    (StoreLockedError, RuntimeError),
    (GuardConflictError, RuntimeError),
    (GuardTimeoutError, TimeoutError),
    (NotPicklableError, TypeError),
    (UnsafeLocationError, PermissionError),
]


def make(cls: type[FbError]) -> FbError:
    """An instance of ``cls`` built the way fb builds it."""
    if cls is PluginNotFoundError:
        return PluginNotFoundError("codec", "nope", ["pickle"])
    if cls is BlobNotFoundError:
        return BlobNotFoundError(errno.ENOENT, "no blob", "/tmp/x")
    return cls("message")


@pytest.mark.parametrize(("cls", "builtin"), MEANING, ids=[c.__name__ for c, _ in MEANING])
def test_error_inherits_the_builtin_it_means(cls: type[FbError], builtin: type[Exception]) -> None:
    """Each error is an FbError and is caught by ``except <builtin>``."""
    assert issubclass(cls, FbError)
    assert issubclass(cls, builtin)
    with pytest.raises(builtin):
        raise make(cls)
    with pytest.raises(FbError):
        raise make(cls)


def test_every_error_is_listed() -> None:
    """__all__ is sorted and names exactly the FbError classes of the module."""
    assert exceptions.__all__ == sorted(exceptions.__all__)
    defined = {
        name
        for name, obj in inspect.getmembers(exceptions, inspect.isclass)
        if issubclass(obj, FbError) and obj.__module__ == exceptions.__name__
    }
    assert set(exceptions.__all__) == defined
    assert {cls.__name__ for cls, _ in MEANING} | {"FbError"} == defined


def test_blob_not_found_is_an_os_error_with_the_path() -> None:
    """BlobNotFoundError carries errno and filename like any OSError."""
    error = BlobNotFoundError(errno.ENOENT, "no blob", "/tmp/x")
    assert isinstance(error, OSError)
    assert error.errno == errno.ENOENT
    assert error.filename == "/tmp/x"


def test_corrupt_blob_error_names_key_and_path() -> None:
    """CorruptBlobError keeps key and path and shows both in its message."""
    key = uuid4()
    error = CorruptBlobError("checksum mismatch", key=key, path="/c/ab/x")
    assert (error.key, error.path) == (key, "/c/ab/x")
    assert "checksum mismatch" in str(error)
    assert key.hex in str(error)
    assert "/c/ab/x" in str(error)
    assert str(CorruptBlobError("bare")) == "bare"


def test_corrupt_blob_error_names_the_source_of_a_registered_blob() -> None:
    """CorruptBlobError keeps the persisted blob a cache copy came from, and shows it."""
    key = uuid4()
    error = CorruptBlobError("checksum mismatch", key=key, path="/c/x", source="/p/x")
    assert (error.source, error.reason) == ("/p/x", "checksum mismatch")
    assert str(error).endswith("(key " + key.hex + ", at /c/x, registered from /p/x)")
    assert CorruptBlobError("bare").source is None


def test_codec_error_names_codec_key_and_path() -> None:
    """CodecError keeps codec, key and path and shows them in its message."""
    key = uuid4()
    error = CodecError("cannot decode", codec="pickle", key=key, path="/c/p")
    assert (error.codec, error.key, error.path) == ("pickle", key, "/c/p")
    for part in ("cannot decode", "'pickle'", key.hex, "/c/p"):
        assert part in str(error)


def test_plugin_not_found_lists_what_is_available() -> None:
    """PluginNotFoundError's message lists the names that exist, sorted."""
    error = PluginNotFoundError("codec", "nope", ["zeta", "alpha"], hint="try pip")
    assert error.name == "nope"
    assert error.available == ("alpha", "zeta")
    assert str(error) == "unknown codec 'nope'; available: alpha, zeta. try pip"


def test_unknown_codec_name_raises_plugin_not_found() -> None:
    """get_codec with an unknown name raises PluginNotFoundError listing pickle."""
    with pytest.raises(PluginNotFoundError) as info:
        get_codec("no-such-codec")
    assert isinstance(info.value, LookupError)
    assert "pickle" in info.value.available
    assert "pickle" in str(info.value)
    assert "no-such-codec" in str(info.value)
