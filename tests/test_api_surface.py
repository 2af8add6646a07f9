"""The public surface: what the API reference shows is what users may call, and nothing else."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import fb

ROOT = Path(__file__).resolve().parent.parent

STORE_API = {
    "aclose",
    "adelete_persisted",
    "afinished",
    "afsync",
    "atrack_path",
    "blob_keys",
    "close",
    "closed",
    "delete_persisted",
    "finished",
    "fsync",
    "max_workers",
    "on_error",
    "pending_errors",
    "pending_tasks",
    "statistics",
    "strategy",
    "track_path",
}
"""BackingStore's public names: reference counts, task submission and error reporting are
fb's own (a user who calls them can delete blobs that live handles need)."""


def test_backing_store_shows_only_what_users_may_call() -> None:
    """No refcount, submit or report method of the store is public."""
    public = {name for name in dir(fb.BackingStore) if not name.startswith("_")}
    assert public == STORE_API


@pytest.mark.parametrize(
    "cls", [fb.Fb, fb.FBPool, fb.BackingStore, fb.Shelf, fb.TrackedPath, fb.ReadGuard]
)
def test_public_signatures_name_no_private_types(cls: type) -> None:
    """A public method's annotations use public types only (no ``_Acquire[...]``)."""
    private = re.compile(r"(?<![\w.])_[A-Za-z]\w*")
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") or not callable(member):
            continue
        annotations = getattr(member, "__annotations__", {})
        for annotation in annotations.values():
            assert not private.search(str(annotation)), f"{cls.__name__}.{name}: {annotation}"


def test_the_api_reference_starts_with_open_pool_fbpool_and_fb() -> None:
    """The reference leads with the three names most programs need."""
    blocks = re.findall(r"^::: (\S+)", (ROOT / "docs" / "api.md").read_text(), re.M)
    assert blocks[:3] == ["fb.open_pool", "fb.FBPool", "fb.Fb"]
    assert "fb.Acquisition" in blocks


def test_the_api_reference_hides_private_bases() -> None:
    """PoolCore and Workers (the bases of FBPool and BackingStore) are not shown."""
    assert re.search(r"^\s+show_bases: false$", (ROOT / "mkdocs.yml").read_text(), re.M)
