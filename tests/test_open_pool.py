"""Storage options go in one mapping: a mistyped keyword is a TypeError, never an option.

``open_pool``, `PreparedPath`, `FBStore`, the backend factories and the Dask buffer take
fsspec storage options as ``storage_options={...}`` (pandas', Dask's and xarray's
convention). An unknown keyword raises `TypeError` before anything is opened, suggesting the
parameter it is close to, or the mapping when it looks like a storage option.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from distributed.utils import has_arg
from fsspec.implementations.local import LocalFileSystem

import fb
from fb._keywords import check_keywords
from fb.backends import FBStore, PreparedPath, fbstore_backend, open_backend
from fb.integrations.dask import FbSpillBuffer

CREDENTIAL = "AKIA-do-not-print-me"


@pytest.mark.parametrize(
    ("keywords", "meant"),
    [
        ({"max_items": 3, "max_byte": 100}, "max_bytes"),
        ({"max_itmes": 3}, "max_items"),
        ({"max_items": 3, "codc": "json"}, "codec"),
        ({"max_items": 3, "Max_Workers": 2}, "max_workers"),
        ({"max_items": 3, "storage_option": {}}, "storage_options"),
    ],
)
def test_a_mistyped_keyword_of_open_pool_says_what_was_meant(
    tmp_path: Path, keywords: dict[str, Any], meant: str
) -> None:
    """A keyword close to a parameter name raises TypeError naming it; nothing is created."""
    with pytest.raises(TypeError, match=f"did you mean '{meant}'\\?") as info:
        fb.open_pool(tmp_path / "spill", **keywords)
    (typo,) = set(keywords) - {"max_items"}
    assert repr(typo) in str(info.value)
    assert not (tmp_path / "spill").exists()


def test_a_loose_storage_option_points_to_the_mapping_and_hides_its_value(
    tmp_path: Path,
) -> None:
    """``open_pool(url, key=..., secret=...)`` raises TypeError naming both, never the values."""
    with pytest.raises(
        TypeError, match=r"storage_options=\{'key': \.\.\., 'secret': \.\.\.\}"
    ) as info:
        fb.open_pool(tmp_path / "spill", max_items=1, key=CREDENTIAL, secret=CREDENTIAL)  # type: ignore[call-arg]
    assert CREDENTIAL not in str(info.value)
    assert not (tmp_path / "spill").exists()


def test_typos_and_storage_options_together_get_one_hint_each(tmp_path: Path) -> None:
    """Several unknown keywords: a suggestion for the near miss, the mapping for the rest."""
    with pytest.raises(TypeError) as info:
        fb.open_pool(tmp_path / "spill", max_itmes=1, anon=True)  # type: ignore[call-arg]
    message = str(info.value)
    assert "did you mean 'max_items' for 'max_itmes'?" in message
    assert "storage_options={'anon': ...}" in message


def test_open_pool_passes_the_storage_options_mapping_to_fsspec(tmp_path: Path) -> None:
    """``storage_options={...}`` builds the pool's filesystem; the caller's dict is not changed."""
    options = {"auto_mkdir": True}
    with fb.open_pool(tmp_path / "spill", max_items=0, storage_options=options) as pool:
        fs = pool.store.strategy.path.fs  # type: ignore[attr-defined]
        assert isinstance(fs, LocalFileSystem)
        assert fs.auto_mkdir
        handle = pool.insert("spilled")
        pool.store.finished()
        with handle.load() as value:
            assert value == "spilled"
    assert options == {"auto_mkdir": True}


@pytest.mark.parametrize("bad", [["anon", True], "anon=true", 5])
def test_storage_options_that_are_not_a_mapping_are_a_type_error(
    tmp_path: Path, bad: object
) -> None:
    """``storage_options`` must be a mapping; anything else is refused, naming its type."""
    with pytest.raises(TypeError, match=type(bad).__name__):
        fb.open_pool(tmp_path / "spill", max_items=1, storage_options=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=type(bad).__name__):
        PreparedPath(tmp_path / "x", storage_options=bad)  # type: ignore[arg-type]


def test_prepared_path_takes_storage_options_in_a_mapping(tmp_path: Path) -> None:
    """``PreparedPath(url, storage_options={...})`` builds the filesystem; loose options fail."""
    location = PreparedPath(tmp_path / "x", storage_options={"auto_mkdir": True})
    assert location.fs.auto_mkdir
    positional = PreparedPath(tmp_path / "x", {"auto_mkdir": True})
    assert positional.fs is location.fs
    with pytest.raises(TypeError, match=r"PreparedPath\(\).*storage_options=\{'auto_mkdir'"):
        PreparedPath(tmp_path / "x", auto_mkdir=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="names are strings, not 1"):
        PreparedPath(tmp_path / "x", storage_options={1: True})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="either fs= or storage_options"):
        PreparedPath(tmp_path / "x", storage_options={"auto_mkdir": True}, fs=location.fs)


def test_fbstore_takes_storage_options_for_a_url(tmp_path: Path) -> None:
    """``FBStore(codec, url, storage_options=...)`` builds its location; not with a PreparedPath."""
    store: FBStore[Any] = FBStore(
        "pickle", str(tmp_path / "cache"), storage_options={"auto_mkdir": True}
    )
    try:
        assert store.path.fs.auto_mkdir
    finally:
        store.close()
    with pytest.raises(TypeError, match="PreparedPath"):
        FBStore("pickle", PreparedPath(tmp_path / "b"), storage_options={"auto_mkdir": True})
    with pytest.raises(TypeError, match=r"FBStore\(\).*did you mean 'sweep'\?"):
        FBStore("pickle", tmp_path / "c", sweeep=False)  # type: ignore[call-arg]


def test_backend_factories_take_storage_options_in_a_mapping(tmp_path: Path) -> None:
    """The built-in factory and ``open_backend`` take ``storage_options=``; loose options fail."""
    store = open_backend(str(tmp_path / "a"), storage_options={"auto_mkdir": True})
    try:
        assert isinstance(store, FBStore)
        assert store.path.fs.auto_mkdir
    finally:
        store.close()
    with pytest.raises(TypeError, match=r"fbstore_backend\(\).*storage_options=\{'auto_mkdir'"):
        fbstore_backend("pickle", str(tmp_path / "b"), auto_mkdir=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="did you mean 'secret_key'"):
        open_backend(str(tmp_path / "c"), secret_kye=b"x" * 32)
    assert not (tmp_path / "b").exists()
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    "make",
    [
        lambda url: FbSpillBuffer(url=url, max_bytes=100, max_byte=10),  # type: ignore[call-arg]
        lambda url: FbSpillBuffer(url=url, max_btyes=100),  # type: ignore[call-arg]
    ],
    ids=["extra", "instead"],
)
def test_a_mistyped_keyword_of_the_dask_buffer_says_what_was_meant(
    tmp_path: Path, make: Callable[[str], Any]
) -> None:
    """``FbSpillBuffer(max_byte=...)`` raises TypeError suggesting ``max_bytes``."""
    with pytest.raises(TypeError, match=r"FbSpillBuffer\(\).*did you mean 'max_bytes'\?"):
        make(str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_checked_callable_without_storage_options_lists_what_it_takes() -> None:
    """Where no storage options are taken, an unknown keyword lists the keywords that are."""

    class Thing:
        @check_keywords
        def __init__(self, size: int = 0, *, name: str = "") -> None:
            self.size = size

    with pytest.raises(
        TypeError,
        match=r"^Thing\(\) got an unexpected keyword argument 'colour'; it takes name, size$",
    ):
        Thing(colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"did you mean 'size'\?"):
        Thing(sizes=3)  # type: ignore[call-arg]
    assert Thing(size=3).size == 3


def test_checked_entry_points_keep_their_signature_for_introspection() -> None:
    """distributed still sees that the buffer takes ``worker_local_directory``."""
    assert has_arg(FbSpillBuffer, "worker_local_directory")
    assert "storage_options" in inspect.signature(fb.open_pool).parameters
    assert list(inspect.signature(PreparedPath).parameters) == [
        "path_or_url",
        "storage_options",
        "fs",
    ]


def test_the_dask_buffer_takes_storage_options_in_a_mapping(tmp_path: Path) -> None:
    """``FbSpillBuffer(storage_options={...})`` builds its location with them."""
    url = f"memory://fb-test-{uuid.uuid4().hex}"
    with FbSpillBuffer(url=url, max_bytes=10, storage_options={"skip_instance_cache": True}) as buf:
        buf["x"] = b"0123456789" * 10
        assert buf["x"] == b"0123456789" * 10
    with pytest.raises(TypeError, match=r"storage_options=\{'anon': \.\.\.\}"):
        FbSpillBuffer(url=url, max_bytes=10, anon=True)  # type: ignore[call-arg]
